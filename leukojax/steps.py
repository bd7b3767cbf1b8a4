"""Pure train and eval steps over an explicit train state, jitted by the train loop.

The model lives as (graphdef, params, model_state): the graphdef is static (it also fixes whether
BatchNorm uses batch or running statistics), params and model_state are arrays. Three graphdefs of
one model exist: `train`, `frozen` (backbones' BatchNorm on running statistics, as Keras does for a
frozen layer) and `eval`.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax
import jax
import jax.numpy as jnp
import optax
from flax import nnx

from leukojax import optim
from leukojax.models.factory import backbone_modules


@flax.struct.dataclass
class TrainState:
  params: Any
  model_state: Any
  opt_state: Any
  step: jax.Array


@dataclasses.dataclass(frozen=True)
class ModelGraphs:
  train: Any
  frozen: Any
  eval: Any


def split_model(model: nnx.Module) -> tuple[ModelGraphs, Any, Any]:
  """(graphdefs, params, model_state) of a freshly built or loaded model."""
  model.train()
  train = nnx.graphdef(model)
  for backbone in backbone_modules(model).values():
    backbone.eval()
  frozen = nnx.graphdef(model)
  model.eval()
  eval_ = nnx.graphdef(model)
  _, params, model_state = nnx.split(model, nnx.Param, ...)
  model.train()
  return ModelGraphs(train=train, frozen=frozen, eval=eval_), params, model_state


def merge(graphdef, params, model_state) -> nnx.Module:
  # Fresh Variables at the current trace level, so BatchNorm may update its statistics under grad.
  return nnx.merge(graphdef, params, jax.tree.map(lambda x: x, model_state))


def classification_loss(logits: jax.Array, labels: jax.Array, class_weights: jax.Array) -> jax.Array:
  """Sigmoid BCE for one output, softmax CE otherwise, each example weighted by its class (Keras style)."""
  if logits.shape[-1] == 1:
    per_example = optax.sigmoid_binary_cross_entropy(logits[:, 0], labels.astype(logits.dtype))
  else:
    per_example = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
  return jnp.mean(per_example * class_weights[labels])


def predictions(logits: jax.Array) -> tuple[jax.Array, jax.Array]:
  """(probabilities, predicted class): P(positive) [B] for one output, softmax [B, K] otherwise."""
  if logits.shape[-1] == 1:
    probs = jax.nn.sigmoid(logits[:, 0])
    return probs, (probs >= 0.5).astype(jnp.int32)
  probs = jax.nn.softmax(logits, axis=-1)
  return probs, jnp.argmax(probs, axis=-1).astype(jnp.int32)


def train_step(state: TrainState, batch: dict[str, jax.Array], *, graphdef, tx: optax.GradientTransformation,
               class_weights: jax.Array, frozen: bool,
               compute_shardings: Any = None) -> tuple[TrainState, dict[str, jax.Array]]:
  """One optimiser step on a global batch; a non-finite loss or gradient leaves the state unchanged.

  `compute_shardings` (FSDP): where the parameters live during the forward pass. Stored sharded,
  they are gathered to these shardings first (ZeRO-3: all-gather forward, reduce-scatter backward),
  so XLA never partitions activations along a parameter's sharded axis.
  """
  labels = optim.param_labels(state.params)

  def loss_fn(params):
    if compute_shardings is not None:
      params = jax.lax.with_sharding_constraint(params, compute_shardings)
    if frozen:  # no backbone gradients at all: XLA drops the backbone's backward pass
      params = jax.tree.map(lambda p, l: jax.lax.stop_gradient(p) if l == "backbone" else p,
                            params, labels)
    model = merge(graphdef, params, state.model_state)
    logits = model(batch["image"])
    loss = classification_loss(logits, batch["label"], class_weights)
    return loss, (logits, nnx.state(model, nnx.Not(nnx.Param)))

  (loss, (logits, model_state)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  grad_norm = optax.global_norm(grads)
  finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
  keep = lambda new, old: jax.tree.map(lambda n, o: jnp.where(finite, n, o), new, old)
  new_state = TrainState(params=keep(params, state.params), model_state=keep(model_state, state.model_state),
                         opt_state=keep(opt_state, state.opt_state), step=state.step + 1)
  _, predicted = predictions(logits)
  metrics = {"loss": loss, "accuracy": jnp.mean(predicted == batch["label"]), "grad_norm": grad_norm,
             "finite": finite}
  return new_state, metrics


def batch_norm_stats_from_batch(state: TrainState, batch: dict[str, jax.Array], *, graphdef) -> Any:
  """The model state with every BatchNorm's moving statistics set to those of `batch`.

  A model trained from scratch starts with moving mean 0 and variance 1, while e.g. a depthwise
  convolution's outputs start with a variance near 1e-3: even 0.9**40 (4%) of that initial 1 then
  outweighs the true statistics, and evaluation mode collapses to a constant output for the first
  hundreds of steps. Starting the moving averages from real batch statistics removes that residue.
  """
  model = merge(graphdef, state.params, state.model_state)
  for _, module in nnx.iter_graph(model):
    if isinstance(module, nnx.BatchNorm):
      module.momentum = 0.0  # the moving statistics become this batch's
  model(batch["image"])
  return nnx.state(model, nnx.Not(nnx.Param))


def eval_step(state: TrainState, batch: dict[str, jax.Array], *, graphdef,
              class_weights: jax.Array) -> dict[str, jax.Array]:
  """Probabilities and masked loss sums of one padded eval batch."""
  model = merge(graphdef, state.params, state.model_state)
  logits = model(batch["image"])
  probs, predicted = predictions(logits)
  mask = batch["mask"].astype(jnp.float32)
  if logits.shape[-1] == 1:
    per_example = optax.sigmoid_binary_cross_entropy(logits[:, 0], batch["label"].astype(jnp.float32))
  else:
    per_example = optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"])
  return {"probs": probs, "loss_sum": jnp.sum(per_example * mask),
          "correct_sum": jnp.sum((predicted == batch["label"]) * mask), "count": jnp.sum(mask)}
