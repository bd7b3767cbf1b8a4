"""Xception, a port of `keras.applications.Xception` (tf preprocessing).

Separable convolutions are depthwise then pointwise, without bias; the strided residual
projections are 1x1 'same' convolutions with BatchNorm. Keras leaves those projection layers
unnamed (`conv2d_3`, `batch_normalization_3`, numbered per session), hence the order table.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
from flax import nnx

from leukojax.models import layers

# Entry flow blocks 2-4 and exit block 13: (block, sepconv1 filters, sepconv2 filters).
_STRIDED = ((2, 128, 128), (3, 256, 256), (4, 728, 728), (13, 728, 1024))
_MIDDLE = tuple(range(5, 13))


class StridedBlock(nnx.Module):
  """Two separable convs, a 3x3/2 'same' max pool, plus a strided 1x1 projection of the input."""

  def __init__(
    self, in_features: int, mid: int, out: int, *, first_relu: bool, dtype: Any, rngs: nnx.Rngs
  ):
    self.first_relu = first_relu  # block2 follows block1_conv2_act, which already applied it.
    self.residual_conv = layers.conv2d(
      in_features, out, 1, strides=2, use_bias=False, dtype=dtype, rngs=rngs
    )
    self.residual_bn = layers.batch_norm(out, dtype=dtype, rngs=rngs)
    self.sepconv1 = layers.SeparableConv2D(in_features, mid, dtype=dtype, rngs=rngs)
    self.sepconv1_bn = layers.batch_norm(mid, dtype=dtype, rngs=rngs)
    self.sepconv2 = layers.SeparableConv2D(mid, out, dtype=dtype, rngs=rngs)
    self.sepconv2_bn = layers.batch_norm(out, dtype=dtype, rngs=rngs)

  # Keras file order: the main path first, the projection last.
  keras_order = (
    "sepconv1", "sepconv1_bn", "sepconv2", "sepconv2_bn", "residual_conv", "residual_bn"
  )

  def __call__(self, x: jax.Array) -> jax.Array:
    residual = self.residual_bn(self.residual_conv(x))
    if self.first_relu:
      x = jax.nn.relu(x)
    x = self.sepconv1_bn(self.sepconv1(x))
    x = self.sepconv2_bn(self.sepconv2(jax.nn.relu(x)))
    return layers.max_pool(x, 3, 2, "SAME") + residual


class MiddleBlock(nnx.Module):
  """Three (ReLU -> separable conv -> BN) units around an identity shortcut, 728 channels."""

  keras_order = ("sepconv1", "sepconv1_bn", "sepconv2", "sepconv2_bn", "sepconv3", "sepconv3_bn")

  def __init__(self, features: int = 728, *, dtype: Any, rngs: nnx.Rngs):
    for i in (1, 2, 3):
      setattr(self, f"sepconv{i}", layers.SeparableConv2D(features, features, dtype=dtype, rngs=rngs))
      setattr(self, f"sepconv{i}_bn", layers.batch_norm(features, dtype=dtype, rngs=rngs))

  def __call__(self, x: jax.Array) -> jax.Array:
    y = x
    for i in (1, 2, 3):
      y = getattr(self, f"sepconv{i}_bn")(getattr(self, f"sepconv{i}")(jax.nn.relu(y)))
    return y + x


class Xception(layers.Backbone):
  """Xception (Chollet 2017), identical to `keras.applications.Xception`.

  Returns logits `[B, num_classes]` with the top (global average pooling, `predictions`), else the
  `block14_sepconv2_act` map `[B, h, w, 2048]`. Taps and their shapes at 299x299 (Keras layer):
  `block1_conv2_act` 147x147x64; `entry_stride4` (`add`) 74x74x128; `entry_stride8` (`add_1`)
  37x37x256; `entry_stride16` (`add_2`) 19x19x728; `middle_out` (`add_10`, after block12)
  19x19x728; `exit_stride32` (`add_11`, after block13) 10x10x1024; `block14_sepconv1_act`
  10x10x1536; `block14_sepconv2_act` 10x10x2048.
  """

  name: ClassVar[str] = "xception"
  min_input_size: ClassVar[int] = 71
  keras_top_layers: ClassVar[tuple[str, ...]] = ("predictions",)
  _STRIDED_TAPS = {2: "entry_stride4", 3: "entry_stride8", 4: "entry_stride16", 13: "exit_stride32"}

  def __init__(
    self,
    *,
    include_top: bool = False,
    num_classes: int = 1000,
    dtype: Any = jnp.float32,
    width_divisor: int = 1,
    rngs: nnx.Rngs,
  ):
    """`width_divisor` > 1 narrows every convolution (tests only: no weight file fits it)."""
    w = self._widths(include_top, width_divisor)
    self.include_top = include_top
    self.num_classes = num_classes
    self.num_features = w(2048)
    kw = dict(dtype=dtype, rngs=rngs)
    self.block1_conv1 = layers.conv2d(3, w(32), 3, strides=2, padding="VALID", use_bias=False, **kw)
    self.block1_conv1_bn = layers.batch_norm(w(32), **kw)
    self.block1_conv2 = layers.conv2d(w(32), w(64), 3, padding="VALID", use_bias=False, **kw)
    self.block1_conv2_bn = layers.batch_norm(w(64), **kw)
    in_features = w(64)
    for block, mid, out in _STRIDED:
      strided = StridedBlock(in_features, w(mid), w(out), first_relu=block != 2, **kw)
      setattr(self, f"block{block}", strided)
      in_features = w(out)
      if block == 4:  # the middle flow sits between the entry flow and block 13
        for m in _MIDDLE:
          setattr(self, f"block{m}", MiddleBlock(w(728), **kw))
    self.block14_sepconv1 = layers.SeparableConv2D(w(1024), w(1536), **kw)
    self.block14_sepconv1_bn = layers.batch_norm(w(1536), **kw)
    self.block14_sepconv2 = layers.SeparableConv2D(w(1536), w(2048), **kw)
    self.block14_sepconv2_bn = layers.batch_norm(w(2048), **kw)
    self.tap_names = (
      "block1_conv2_act",
      "entry_stride4",
      "entry_stride8",
      "entry_stride16",
      "middle_out",
      "exit_stride32",
      "block14_sepconv1_act",
      "block14_sepconv2_act",
    )
    if include_top:
      self.predictions = layers.dense(2048, num_classes, **kw)

  def keras_layers(self) -> list[str]:
    order = ["block1_conv1", "block1_conv1_bn", "block1_conv2", "block1_conv2_bn"]
    for block in (2, 3, 4, *_MIDDLE, 13):
      order += [f"block{block}/{m}" for m in getattr(self, f"block{block}").keras_order]
    order += ["block14_sepconv1", "block14_sepconv1_bn", "block14_sepconv2", "block14_sepconv2_bn"]
    return order

  def __call__(
    self, x: jax.Array, taps: Sequence[str] = ()
  ) -> tuple[jax.Array, dict[str, jax.Array]]:
    self._check_input(x)
    rec = layers.Taps(taps, self.tap_names, self.name)
    x = jax.nn.relu(self.block1_conv1_bn(self.block1_conv1(x)))
    x = rec("block1_conv2_act", jax.nn.relu(self.block1_conv2_bn(self.block1_conv2(x))))
    for block in (2, 3, 4):
      x = rec(self._STRIDED_TAPS[block], getattr(self, f"block{block}")(x))
    for block in _MIDDLE:
      x = getattr(self, f"block{block}")(x)
    x = rec("middle_out", x)  # fed forward, so Grad-CAM can target it
    x = rec("exit_stride32", self.block13(x))
    x = rec("block14_sepconv1_act", jax.nn.relu(self.block14_sepconv1_bn(self.block14_sepconv1(x))))
    x = rec("block14_sepconv2_act", jax.nn.relu(self.block14_sepconv2_bn(self.block14_sepconv2(x))))
    if self.include_top:
      x = self.predictions(layers.global_avg_pool(x))
    return x, rec.result()
