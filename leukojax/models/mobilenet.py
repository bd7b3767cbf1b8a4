"""MobileNet v1 (alpha 1.0, depth multiplier 1), a port of `keras.applications.MobileNet` (tf mode).

Keras pads the strided depthwise convolutions by one pixel at the bottom/right (`ZeroPadding2D`)
and then convolves 'valid'; the stride-1 ones are 'same'. All activations are ReLU6.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
from flax import nnx

from leukojax.models import layers

# (pointwise filters, depthwise stride) of conv blocks 1..13.
_BLOCKS = (
  (64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2),
  (512, 1), (512, 1), (512, 1), (512, 1), (512, 1), (1024, 2), (1024, 1),
)  # fmt: skip
DROPOUT_RATE = 1e-3  # Keras's default `dropout` in front of the classifier.


class DepthwiseBlock(nnx.Module):
  """Keras `_depthwise_conv_block`: depthwise 3x3 -> BN -> ReLU6 -> pointwise 1x1 -> BN -> ReLU6."""

  def __init__(
    self, in_features: int, out_features: int, *, stride: int, dtype: Any, rngs: nnx.Rngs
  ):
    self.stride = stride
    padding = "SAME" if stride == 1 else "VALID"
    kw = dict(dtype=dtype, rngs=rngs)
    self.conv_dw = layers.depthwise_conv2d(in_features, 3, strides=stride, padding=padding, **kw)
    self.conv_dw_bn = layers.batch_norm(in_features, **kw)
    self.conv_pw = layers.conv2d(in_features, out_features, 1, use_bias=False, **kw)
    self.conv_pw_bn = layers.batch_norm(out_features, **kw)

  def __call__(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Returns the depthwise and pointwise activations (`conv_dw_i_relu`, `conv_pw_i_relu`)."""
    if self.stride != 1:
      x = layers.zero_pad(x, ((0, 1), (0, 1)))
    dw = layers.relu6(self.conv_dw_bn(self.conv_dw(x)))
    return dw, layers.relu6(self.conv_pw_bn(self.conv_pw(dw)))


class MobileNet(layers.Backbone):
  """MobileNet v1 (Howard et al. 2017), alpha 1.0, identical to `keras.applications.MobileNet`.

  Returns logits `[B, num_classes]` with the top (global average pooling, dropout 1e-3, 1x1
  `conv_preds`), else the `conv_pw_13_relu` map `[B, h, w, 1024]`. Taps and their shapes at 224x224:
  `conv1_relu` 112x112x32; `conv_dw_1_relu` 112x112x32, `conv_pw_1_relu` 112x112x64;
  `conv_dw_2_relu` 56x56x64, `conv_pw_2_relu` 56x56x128; `conv_dw_3_relu`, `conv_pw_3_relu`
  56x56x128; `conv_dw_4_relu` 28x28x128, `conv_pw_4_relu` 28x28x256; `conv_dw_5_relu`,
  `conv_pw_5_relu` 28x28x256; `conv_dw_6_relu` 14x14x256, `conv_pw_6_relu` 14x14x512;
  `conv_dw_{7..11}_relu`, `conv_pw_{7..11}_relu` 14x14x512; `conv_dw_12_relu` 7x7x512,
  `conv_pw_12_relu` 7x7x1024; `conv_dw_13_relu`, `conv_pw_13_relu` 7x7x1024.
  """

  name: ClassVar[str] = "mobilenet"
  min_input_size: ClassVar[int] = 32
  keras_top_layers: ClassVar[tuple[str, ...]] = ("conv_preds",)

  def __init__(
    self,
    *,
    include_top: bool = False,
    num_classes: int = 1000,
    dtype: Any = jnp.float32,
    rngs: nnx.Rngs,
  ):
    self.include_top = include_top
    self.num_classes = num_classes
    self.num_features = 1024
    self.conv1 = layers.conv2d(3, 32, 3, strides=2, use_bias=False, dtype=dtype, rngs=rngs)
    self.conv1_bn = layers.batch_norm(32, dtype=dtype, rngs=rngs)
    taps = ["conv1_relu"]
    in_features = 32
    for i, (features, stride) in enumerate(_BLOCKS, start=1):
      block = DepthwiseBlock(in_features, features, stride=stride, dtype=dtype, rngs=rngs)
      setattr(self, f"block{i}", block)
      taps += [f"conv_dw_{i}_relu", f"conv_pw_{i}_relu"]
      in_features = features
    self.tap_names = tuple(taps)
    if include_top:
      self.dropout = nnx.Dropout(DROPOUT_RATE, rngs=rngs)
      self.conv_preds = layers.conv2d(1024, num_classes, 1, dtype=dtype, rngs=rngs)

  def keras_layers(self) -> list[str]:
    order = ["conv1", "conv1_bn"]
    for i in range(1, len(_BLOCKS) + 1):
      order += [f"block{i}/{m}" for m in ("conv_dw", "conv_dw_bn", "conv_pw", "conv_pw_bn")]
    return order

  def __call__(
    self, x: jax.Array, taps: Sequence[str] = ()
  ) -> tuple[jax.Array, dict[str, jax.Array]]:
    self._check_input(x)
    rec = layers.Taps(taps, self.tap_names, self.name)
    x = rec("conv1_relu", layers.relu6(self.conv1_bn(self.conv1(x))))
    for i in range(1, len(_BLOCKS) + 1):
      dw, x = getattr(self, f"block{i}")(x)
      rec(f"conv_dw_{i}_relu", dw)
      x = rec(f"conv_pw_{i}_relu", x)  # fed forward, so Grad-CAM can target it
    if self.include_top:
      x = self.dropout(layers.global_avg_pool(x, keepdims=True))
      x = self.conv_preds(x).reshape(x.shape[0], self.num_classes)
    return x, rec.result()
