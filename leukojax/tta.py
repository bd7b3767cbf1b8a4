"""Test-time augmentation: the model's probabilities averaged over the 8 dihedral transforms.

A blood cell has no canonical orientation, so the four 90-degree rotations of the image and of its
mirror image (the dihedral group D4) are equally valid views; Prellberg & Kramer's challenge entry
averaged rotations the same way. Everything happens inside one jitted step on device: the 8 views
are stacked and `jax.lax.map` runs the model on one view at a time (one compiled forward pass, the
memory of one batch).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from leukojax import steps

NUM_VIEWS = 8
_EPS = 1e-7


def dihedral_views(images: jax.Array) -> jax.Array:
  """[B, H, W, C] square images -> [8, B, H, W, C]: rotations by 0/90/180/270 degrees, then mirrored."""
  if images.shape[1] != images.shape[2]:
    raise ValueError(f"Dihedral TTA needs square images; got {images.shape[1]}x{images.shape[2]}.")
  rotations = [jnp.rot90(images, k, axes=(1, 2)) for k in range(4)]
  mirrored = [jnp.flip(r, axis=2) for r in rotations]
  return jnp.stack(rotations + mirrored)


def tta_eval_step(state: steps.TrainState, batch: dict[str, jax.Array], *, graphdef,
                  class_weights: jax.Array) -> dict[str, jax.Array]:
  """`steps.eval_step` with probabilities averaged over the 8 views; the loss is that of the average."""
  del class_weights  # as in eval_step, the reported loss is unweighted
  model = steps.merge(graphdef, state.params, state.model_state)
  views = dihedral_views(batch["image"])
  probs = jax.lax.map(lambda x: steps.predictions(model(x))[0], views).mean(axis=0)
  labels = batch["label"]
  mask = batch["mask"].astype(jnp.float32)
  clipped = jnp.clip(probs, _EPS, 1.0 - _EPS)
  if probs.ndim == 1:
    per_example = -(labels * jnp.log(clipped) + (1 - labels) * jnp.log1p(-clipped))
    predicted = (probs >= 0.5).astype(jnp.int32)
  else:
    per_example = -jnp.log(jnp.take_along_axis(clipped, labels[:, None], axis=1)[:, 0])
    predicted = jnp.argmax(probs, axis=-1).astype(jnp.int32)
  return {"probs": probs, "loss_sum": jnp.sum(per_example * mask),
          "correct_sum": jnp.sum((predicted == labels) * mask), "count": jnp.sum(mask)}


def make_tta_eval_fn(graphs: steps.ModelGraphs, class_weights: np.ndarray):
  """The jitted TTA counterpart of `train.make_eval_fn` (same inputs and outputs)."""
  return jax.jit(functools.partial(tta_eval_step, graphdef=graphs.eval,
                                   class_weights=jnp.asarray(class_weights)))
