"""Pure train and eval steps over an explicit state, jitted by the train loop and by evaluation.

The loss and the decision rule come from `models.outputs`, the one place that says what the
classifier's outputs mean; the graphdef (`state.ModelGraphs`) fixes BatchNorm's mode.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from leukojax.models import outputs
from leukojax.training import optimizer
from leukojax.training.state import TrainState, merge


def train_step(state: TrainState, batch: dict[str, jax.Array], *, graphdef, tx: optax.GradientTransformation,
               class_weights: jax.Array, frozen: bool,
               compute_shardings: Any = None) -> tuple[TrainState, dict[str, jax.Array]]:
  """One optimiser step on a global batch, applied unconditionally; `metrics["finite"]` says if it was sound.

  No per-step guard: selecting the old state on a non-finite step (`jnp.where` over every leaf)
  made XLA copy each Adam moment every step (10-20% of the step, docs/benchmarks.md). The train
  loop checks `finite` on the host instead, at every metric flush and before every checkpoint
  save, so a non-finite state is never saved, validated or trained on past the flush.

  The loss weighs each example by its class (`class_weights`, ones unless the config asks for
  class weighting). `compute_shardings` (FSDP): where the parameters live during the forward pass.
  Stored sharded, they are gathered to these shardings first (ZeRO-3: all-gather forward,
  reduce-scatter backward), so XLA never partitions activations along a parameter's sharded axis.
  """
  labels = optimizer.param_labels(state.params)

  def loss_fn(params):
    if compute_shardings is not None:
      params = jax.lax.with_sharding_constraint(params, compute_shardings)
    if frozen:  # no backbone gradients at all: XLA drops the backbone's backward pass
      params = jax.tree.map(lambda p, l: jax.lax.stop_gradient(p) if l == "backbone" else p,
                            params, labels)
    model = merge(graphdef, params, state.model_state)
    logits = model(batch["image"])
    loss = jnp.mean(outputs.per_example_loss(logits, batch["label"]) * class_weights[batch["label"]])
    return loss, (logits, nnx.state(model, nnx.Not(nnx.Param)))

  (loss, (logits, model_state)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  grad_norm = optax.global_norm(grads)
  finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
  new_state = TrainState(params=params, model_state=model_state, opt_state=opt_state, step=state.step + 1)
  predicted = outputs.decide(outputs.probabilities(logits))
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


def masked_loss_sums(logits: jax.Array, batch: dict[str, jax.Array]) -> dict[str, jax.Array]:
  """The unweighted loss summed over the real (unpadded) examples of an eval batch, and their count."""
  mask = batch["mask"].astype(jnp.float32)
  return {"loss_sum": jnp.sum(outputs.per_example_loss(logits, batch["label"]) * mask), "count": jnp.sum(mask)}


def eval_step(variables: Any, batch: dict[str, jax.Array], *, graphdef) -> dict[str, jax.Array]:
  """Probabilities and masked loss sums of one padded eval batch (`variables`: params, model_state)."""
  logits = merge(graphdef, variables.params, variables.model_state)(batch["image"])
  return {"probs": outputs.probabilities(logits), **masked_loss_sums(logits, batch)}
