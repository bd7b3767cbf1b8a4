"""Builds the classifier a config names: the hybrid, ALLNet, or a single-backbone baseline."""

from __future__ import annotations

import jax.numpy as jnp
import ml_collections
from flax import nnx

from leukojax.models.classifier import BackboneClassifier
from leukojax.models.hybrid import HybridCNN

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def create_model(model_config: ml_collections.ConfigDict, *, image_size: int, num_outputs: int,
                 rngs: nnx.Rngs) -> nnx.Module:
  """`model_config.name` is `hybrid` (backbones listed in `model_config.backbones`) or a backbone name."""
  model = _create(model_config, image_size=image_size, num_outputs=num_outputs, rngs=rngs)
  if model_config.get("bn_momentum") is not None:
    set_batch_norm_momentum(model, float(model_config.bn_momentum))
  return model


def set_batch_norm_momentum(model: nnx.Module, momentum: float) -> None:
  """Sets every BatchNorm's moving-average momentum (Keras's 0.99 is in the weight files' layers).

  From scratch, 0.99 leaves the initial statistics (mean 0, var 1) in the moving averages for
  hundreds of steps: 0.99**300 = 5%, enough to swamp a true variance of 0.01 and make evaluation
  mode output a constant. 0.9 (PyTorch's default) forgets them in tens of steps.
  """
  if not 0.0 <= momentum < 1.0:
    raise ValueError(f"model.bn_momentum must be in [0, 1); got {momentum}.")
  for _, module in nnx.iter_graph(model):
    if isinstance(module, nnx.BatchNorm):
      module.momentum = momentum


def _create(model_config: ml_collections.ConfigDict, *, image_size: int, num_outputs: int,
            rngs: nnx.Rngs) -> nnx.Module:
  dtype = DTYPES[model_config.get("dtype", "float32")]
  if model_config.name == "hybrid":
    return HybridCNN(
        image_size=image_size, num_outputs=num_outputs,
        backbone_names=tuple(model_config.backbones),
        tap_width=model_config.tap_width, fuse_widths=tuple(model_config.fuse_widths),
        post_pool_width=model_config.post_pool_width, dense_widths=tuple(model_config.dense_widths),
        backbone_width_divisor=model_config.get("backbone_width_divisor", 1), dtype=dtype, rngs=rngs)
  head = model_config.get("head_widths", None)
  return BackboneClassifier(backbone=model_config.name, num_outputs=num_outputs,
                            head_widths=None if head is None else tuple(head),
                            dtype=dtype, rngs=rngs)


def backbone_modules(model: nnx.Module) -> dict[str, nnx.Module]:
  """The pretrained parts of a classifier, by backbone name (for weight loading and freezing)."""
  if isinstance(model, HybridCNN):
    return {name: model.backbones[name] for name in model.backbone_names}
  return {model.backbone_name: model.backbone}
