"""Test-time augmentation: the model's probabilities averaged over the 8 dihedral transforms.

A blood cell has no canonical orientation, so the four 90-degree rotations of the image and of its
mirror image (the dihedral group D4) are equally valid views; Prellberg & Kramer's challenge entry
averaged rotations the same way. Everything happens inside one jitted step on device: the 8 views
are stacked and `jax.lax.map` runs the model on one view at a time (one compiled forward pass, the
memory of one batch).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from leukojax.models import outputs
from leukojax.training import steps
from leukojax.training.state import ModelGraphs, merge

NUM_VIEWS = 8


def dihedral_views(images: jax.Array) -> jax.Array:
  """[B, H, W, C] square images -> [8, B, H, W, C]: rotations by 0/90/180/270 degrees, then mirrored."""
  if images.shape[1] != images.shape[2]:
    raise ValueError(f"Dihedral TTA needs square images; got {images.shape[1]}x{images.shape[2]}.")
  rotations = [jnp.rot90(images, k, axes=(1, 2)) for k in range(4)]
  mirrored = [jnp.flip(r, axis=2) for r in rotations]
  return jnp.stack(rotations + mirrored)


def tta_eval_step(variables: Any, batch: dict[str, jax.Array], *, graphdef) -> dict[str, jax.Array]:
  """`steps.eval_step` with probabilities averaged over the 8 views; the loss is that of the average."""
  model = merge(graphdef, variables.params, variables.model_state)
  views = dihedral_views(batch["image"])
  probs = jax.lax.map(lambda x: outputs.probabilities(model(x)), views).mean(axis=0)
  return {"probs": probs, **steps.masked_loss_sums(outputs.logits_of(probs), batch)}


def make_tta_eval_fn(graphs: ModelGraphs) -> Callable:
  """The jitted TTA counterpart of `inference.make_eval_fn` (same inputs and outputs)."""
  return jax.jit(functools.partial(tta_eval_step, graphdef=graphs.eval))
