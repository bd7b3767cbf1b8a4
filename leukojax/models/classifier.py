"""Single-backbone classifiers with the papers' heads (the baselines)."""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from leukojax.models import backbones as backbones_lib

# The heads the papers give: Helwan et al. (C-NMC) for VGG16 (GAP -> 512 -> 512) and Xception
# (GAP -> 2048). Kim et al. do not state VGG19's or MobileNet's heads: VGG19 takes VGG16's, and
# MobileNet, ResNet50 and InceptionV3 take Keras's own (GAP -> classifier).
PAPER_HEADS: dict[str, tuple[int, ...]] = {
    "vgg16": (512, 512),
    "vgg19": (512, 512),
    "xception": (2048,),
    "mobilenet": (),
    "resnet50": (),
    "inception_v3": (),
    "efficientnet_lite0": (),  # not in the papers: pooled features -> logits, as MobileNet
    "efficientnet_lite1": (),
    "efficientnet_lite2": (),
}


class BackboneClassifier(nnx.Module):
  """backbone -> global average pooling -> ReLU dense layers -> logits.

  Takes pixels already in the backbone's ImageNet mode (the pipeline applies it: `data.preprocessing`
  equals `PREPROCESSING_MODE[backbone]` in the baseline configs).
  """

  def __init__(self, *, backbone: str, num_outputs: int, head_widths: Sequence[int] | None = None,
               dtype=jnp.float32, rngs: nnx.Rngs):
    widths = PAPER_HEADS[backbone] if head_widths is None else tuple(head_widths)
    self.backbone_name = backbone
    self.dtype = dtype
    self.backbone = backbones_lib.create_backbone(backbone, include_top=False, dtype=dtype, rngs=rngs)
    sizes = [self.backbone.num_features, *widths]
    self.head = nnx.List([
        nnx.Linear(a, b, dtype=dtype, param_dtype=jnp.float32, rngs=rngs)
        for a, b in zip(sizes[:-1], sizes[1:])
    ])
    self.out = nnx.Linear(sizes[-1], num_outputs, dtype=dtype, param_dtype=jnp.float32, rngs=rngs)

  def features(self, x: jax.Array, taps: Sequence[str] = ()) -> tuple[jax.Array, dict[str, jax.Array]]:
    """The backbone's last feature map and the requested taps (Grad-CAM reads these)."""
    return self.backbone(x.astype(self.dtype), taps=taps)

  def head_logits(self, feature_map: jax.Array) -> jax.Array:
    y = jnp.mean(feature_map, axis=(1, 2))
    for layer in self.head:
      y = nnx.relu(layer(y))
    return self.out(y).astype(jnp.float32)

  def __call__(self, x: jax.Array) -> jax.Array:
    feature_map, _ = self.features(x)
    return self.head_logits(feature_map)
