"""The hybrid CNN of the C-NMC 2019 paper (and its ALLNet variant): three ImageNet backbones, one input.

The paper's text cannot be followed literally, so this module makes the choices of SCIENCE.md:

* Xception taps. The paper names `pool1_pool` and `conv4_block1_add`, which are Keras ResNet50 layer
  names left over from ALLNet. We use the Xception layers with the same strides: `entry_stride4`
  (Keras `add`, stride 4) and `entry_stride16` (Keras `add_2`, stride 16).
* One grid. The taps and the final feature maps have different spatial sizes, so every branch is
  brought to one grid of `g x g` cells by adaptive max pooling (PyTorch's AdaptiveMaxPool2d windows),
  where `g` is the smallest final feature map of the three backbones. Max pooling is the paper's
  own operation on the tap branches; it is used for the final features too.

Data flow (widths are config fields; shapes for VGG16 + InceptionV3 + Xception at 299x299):

  input [B,299,299,3] pixels in [0,255] --(each branch applies its own Keras ImageNet mode)
  taps: vgg16/block1_pool [B,149,149,64]   vgg16/block3_pool [B,37,37,256]
        inception_v3/stem_pool2 [B,35,35,192]  inception_v3/mixed5 [B,17,17,768]
        xception/entry_stride4 [B,74,74,128]   xception/entry_stride16 [B,19,19,728]
  each tap -> adaptive max pool to [B,8,8,C] -> 1x1 conv (tap_width=128) + ReLU
  concatenate1 [B,8,8,768] -> 1x1 conv (256) + ReLU -> 1x1 conv (256) + ReLU
  finals: vgg16 [B,9,9,512], inception_v3 [B,8,8,2048], xception [B,10,10,2048]
  concatenate2 = adaptive max pool of each to [B,8,8,.] -> [B,8,8,4608]
  concatenate3 = [B,8,8,4864] -> 3x3 max pool stride 2 'SAME' [B,4,4,4864] -> 1x1 conv (512) + ReLU
  -> flatten [B,8192] -> dense 512 ReLU -> dense 256 ReLU -> dense num_outputs (logits)

At 75x75 (the smoke config) the grid is 1x1 (InceptionV3's mixed10) and the pooled map 1x1.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from leukojax.models import backbones as backbones_lib
from leukojax.models.preprocessing import preprocess_input

# Two taps per backbone: (stride ~4 or ~8, stride 16), as the paper uses them.
HYBRID_TAPS: dict[str, tuple[str, str]] = {
    "vgg16": ("block1_pool", "block3_pool"),
    "inception_v3": ("stem_pool2", "mixed5"),
    "xception": ("entry_stride4", "entry_stride16"),
    "resnet50": ("pool1_pool", "conv4_block1_add"),  # ALLNet
}


def adaptive_max_pool(x: jax.Array, grid: int) -> jax.Array:
  """Max-pools an NHWC map to `grid x grid` cells with PyTorch's adaptive windows.

  Cell i covers rows [floor(i*H/g), ceil((i+1)*H/g)), so windows overlap when H is not a multiple
  of g and every input row is used.
  """
  def pool_axis(y: jax.Array, axis: int) -> jax.Array:
    size = y.shape[axis]
    if size == grid:
      return y
    cells = []
    for i in range(grid):
      start, stop = (i * size) // grid, math.ceil((i + 1) * size / grid)
      window = jax.lax.slice_in_dim(y, start, stop, axis=axis)
      cells.append(jnp.max(window, axis=axis, keepdims=True))
    return jnp.concatenate(cells, axis=axis)

  return pool_axis(pool_axis(x, 1), 2)


class ConvReLU(nnx.Module):
  """A 1x1 convolution with bias followed by ReLU: the hybrid's only convolution kind."""

  def __init__(self, in_features: int, out_features: int, *, dtype, rngs: nnx.Rngs):
    self.conv = nnx.Conv(in_features, out_features, (1, 1), dtype=dtype, param_dtype=jnp.float32,
                         rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    return nnx.relu(self.conv(x))


class HybridCNN(nnx.Module):
  """VGG16 + InceptionV3 + Xception (or ResNet50 for ALLNet) fused as in the hybrid paper.

  `__call__` takes RGB pixels in [0, 255] (the pipeline's `preprocessing='none'`), because each
  branch needs its own ImageNet mode (caffe for VGG/ResNet, tf for Inception/Xception).
  """

  def __init__(
      self,
      *,
      image_size: int,
      num_outputs: int,
      backbone_names: Sequence[str] = ("vgg16", "inception_v3", "xception"),
      tap_width: int = 128,
      fuse_widths: tuple[int, int] = (256, 256),
      post_pool_width: int = 512,
      dense_widths: Sequence[int] = (512, 256),
      backbone_width_divisor: int = 1,
      dtype=jnp.float32,
      rngs: nnx.Rngs,
  ):
    """`backbone_width_divisor` > 1 narrows the three backbones: the same wiring, for tests."""
    for name in backbone_names:
      if name not in HYBRID_TAPS:
        raise ValueError(f"Hybrid backbone {name!r} has no tap table; known: {sorted(HYBRID_TAPS)}.")
    self.backbone_names = tuple(backbone_names)
    self.dtype = dtype
    self.backbones = nnx.Dict({
        name: backbones_lib.create_backbone(name, include_top=False, dtype=dtype,
                                            width_divisor=backbone_width_divisor, rngs=rngs)
        for name in self.backbone_names
    })
    # Shapes at the configured size, found by tracing the backbones abstractly (no FLOPs spent).
    tap_shapes, final_shapes = self._feature_shapes(image_size)
    self.grid = min(shape[1] for shape in final_shapes.values())
    self.tap_convs = nnx.Dict({
        f"{name}__{tap}": ConvReLU(tap_shapes[name][tap][-1], tap_width, dtype=dtype, rngs=rngs)
        for name in self.backbone_names for tap in HYBRID_TAPS[name]
    })
    concat1_width = tap_width * len(self.tap_convs)
    self.fuse1 = ConvReLU(concat1_width, fuse_widths[0], dtype=dtype, rngs=rngs)
    self.fuse2 = ConvReLU(fuse_widths[0], fuse_widths[1], dtype=dtype, rngs=rngs)
    concat3_width = fuse_widths[1] + sum(shape[-1] for shape in final_shapes.values())
    self.post_pool = ConvReLU(concat3_width, post_pool_width, dtype=dtype, rngs=rngs)
    pooled = math.ceil(self.grid / 2)
    widths = [pooled * pooled * post_pool_width, *dense_widths]
    self.dense = nnx.List([
        nnx.Linear(a, b, dtype=dtype, param_dtype=jnp.float32, rngs=rngs)
        for a, b in zip(widths[:-1], widths[1:])
    ])
    self.out = nnx.Linear(widths[-1], num_outputs, dtype=dtype, param_dtype=jnp.float32, rngs=rngs)

  def _feature_shapes(self, image_size: int):
    """Tap and final shapes per backbone at `image_size`, by abstract evaluation (no FLOPs)."""
    graphdef, state = nnx.split(self.backbones)

    def run(state, x):
      backbones = nnx.merge(graphdef, state)  # a copy, so the mode change below touches nothing real
      # Evaluation mode: no BatchNorm statistic is written, since every write of a traced value
      # costs flax ~15 ms (660 of them made building the hybrid 12 s slower).
      backbones.eval()
      taps, finals = {}, {}
      for name in self.backbone_names:
        finals[name], taps[name] = backbones[name](x, taps=HYBRID_TAPS[name])
      return taps, finals

    x = jax.ShapeDtypeStruct((1, image_size, image_size, 3), jnp.float32)
    taps, finals = jax.eval_shape(run, state, x)
    shape = lambda tree: jax.tree.map(lambda a: tuple(a.shape), tree)
    return shape(taps), shape(finals)

  def branch_features(self, x: jax.Array) -> tuple[dict[str, jax.Array], dict[str, dict[str, jax.Array]]]:
    """Runs each backbone on its own preprocessing of `x`: (final maps, taps) per backbone."""
    finals, taps = {}, {}
    for name in self.backbone_names:
      branch_input = preprocess_input(x.astype(jnp.float32), backbones_lib.PREPROCESSING_MODE[name],
                                      xp=jnp)
      finals[name], taps[name] = self.backbones[name](branch_input.astype(self.dtype),
                                                      taps=HYBRID_TAPS[name])
    return finals, taps

  def __call__(self, x: jax.Array) -> jax.Array:
    return self.fuse(*self.branch_features(x))

  def fuse(self, finals: dict[str, jax.Array], taps: dict[str, dict[str, jax.Array]]) -> jax.Array:
    """The fusion head on `branch_features`' output -> logits `[B, num_outputs]`.

    A method of its own so Grad-CAM can differentiate the logits directly w.r.t. each branch's
    final map (`leukojax.explanation.gradcam`).
    """
    concat1 = jnp.concatenate([
        self.tap_convs[f"{name}__{tap}"](adaptive_max_pool(taps[name][tap], self.grid))
        for name in self.backbone_names for tap in HYBRID_TAPS[name]
    ], axis=-1)
    fused = self.fuse2(self.fuse1(concat1))
    concat2 = jnp.concatenate([adaptive_max_pool(finals[n], self.grid) for n in self.backbone_names],
                              axis=-1)
    concat3 = jnp.concatenate([fused, concat2.astype(fused.dtype)], axis=-1)
    y = nnx.max_pool(concat3, window_shape=(3, 3), strides=(2, 2), padding="SAME")
    y = self.post_pool(y).reshape(y.shape[0], -1)
    for layer in self.dense:
      y = nnx.relu(layer(y))
    return self.out(y).astype(jnp.float32)
