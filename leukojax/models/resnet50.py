"""ResNet50 (v1), a port of `keras.applications.ResNet50` (caffe preprocessing).

Keras's v1 keeps conv biases in front of every BatchNorm, uses BatchNorm epsilon 1.001e-5 and puts
the stride on the first 1x1 convolution of a stage; all of that is reproduced here.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
from flax import nnx

from leukojax.models import layers

RESNET_BN_EPSILON = 1.001e-5
# (stage name, bottleneck filters, blocks, stride of the first block)
_STAGES = (("conv2", 64, 3, 1), ("conv3", 128, 4, 2), ("conv4", 256, 6, 2), ("conv5", 512, 3, 2))


class Bottleneck(nnx.Module):
  """Keras `residual_block_v1`: 1x1 (stride) -> 3x3 -> 1x1 (x4), plus a projection or identity."""

  def __init__(
    self, in_features: int, filters: int, *, stride: int, shortcut: bool, dtype: Any, rngs: nnx.Rngs
  ):
    def unit(cin: int, cout: int, kernel: int, strides: int = 1, padding: str = "VALID") -> tuple:
      kw = dict(strides=strides, padding=padding, dtype=dtype, rngs=rngs)
      conv = layers.conv2d(cin, cout, kernel, **kw)
      return conv, layers.batch_norm(cout, epsilon=RESNET_BN_EPSILON, dtype=dtype, rngs=rngs)

    self.has_shortcut = shortcut
    if shortcut:
      self.shortcut_conv, self.shortcut_bn = unit(in_features, 4 * filters, 1, stride)
    self.conv1, self.bn1 = unit(in_features, filters, 1, stride)
    self.conv2, self.bn2 = unit(filters, filters, 3, padding="SAME")
    self.conv3, self.bn3 = unit(filters, 4 * filters, 1)

  def keras_order(self) -> tuple[str, ...]:
    """Keras file order inside the block: the projection sits between the 3x3 and the last 1x1."""
    if self.has_shortcut:
      return ("conv1", "bn1", "conv2", "bn2", "shortcut_conv", "conv3", "shortcut_bn", "bn3")
    return ("conv1", "bn1", "conv2", "bn2", "conv3", "bn3")

  def __call__(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Returns the sum before the final ReLU (Keras `_add`) and the block output (`_out`)."""
    shortcut = self.shortcut_bn(self.shortcut_conv(x)) if self.has_shortcut else x
    y = jax.nn.relu(self.bn1(self.conv1(x)))
    y = jax.nn.relu(self.bn2(self.conv2(y)))
    y = self.bn3(self.conv3(y))
    added = shortcut + y
    return added, jax.nn.relu(added)


class ResNet50(layers.Backbone):
  """ResNet50 v1 (He et al. 2016), identical to `keras.applications.ResNet50`.

  Returns logits `[B, num_classes]` with the top (global average pooling, `predictions`), else the
  `conv5_block3_out` map `[B, h, w, 2048]`. Taps and their shapes at 224x224: `conv1_relu`
  112x112x64; `pool1_pool` 56x56x64; `conv2_block{1,2,3}_{add,out}` 56x56x256;
  `conv3_block{1..4}_{add,out}` 28x28x512; `conv4_block{1..6}_{add,out}` 14x14x1024;
  `conv5_block{1,2,3}_{add,out}` 7x7x2048 (`_add` is the residual sum before the ReLU).
  """

  name: ClassVar[str] = "resnet50"
  min_input_size: ClassVar[int] = 32
  keras_top_layers: ClassVar[tuple[str, ...]] = ("predictions",)

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
    self.num_features = 2048
    self.conv1_conv = layers.conv2d(3, 64, 7, strides=2, padding="VALID", dtype=dtype, rngs=rngs)
    self.conv1_bn = layers.batch_norm(64, epsilon=RESNET_BN_EPSILON, dtype=dtype, rngs=rngs)
    blocks, taps = [], ["conv1_relu", "pool1_pool"]
    in_features = 64
    for stage, filters, count, stride in _STAGES:
      for i in range(1, count + 1):
        block_name = f"{stage}_block{i}"
        block = Bottleneck(
          in_features,
          filters,
          stride=stride if i == 1 else 1,
          shortcut=i == 1,
          dtype=dtype,
          rngs=rngs,
        )
        setattr(self, block_name, block)
        blocks.append(block_name)
        taps += [f"{block_name}_add", f"{block_name}_out"]
        in_features = 4 * filters
    self._blocks = tuple(blocks)
    self.tap_names = tuple(taps)
    if include_top:
      self.predictions = layers.dense(2048, num_classes, dtype=dtype, rngs=rngs)

  def keras_layers(self) -> list[str]:
    order = ["conv1_conv", "conv1_bn"]
    for block_name in self._blocks:
      order += [f"{block_name}/{m}" for m in getattr(self, block_name).keras_order()]
    return order

  def __call__(
    self, x: jax.Array, taps: Sequence[str] = ()
  ) -> tuple[jax.Array, dict[str, jax.Array]]:
    self._check_input(x)
    rec = layers.Taps(taps, self.tap_names, self.name)
    x = self.conv1_conv(layers.zero_pad(x, ((3, 3), (3, 3))))
    x = rec("conv1_relu", jax.nn.relu(self.conv1_bn(x)))
    # Zero padding then a VALID max pool, as Keras (not -inf padding; equal after the ReLU).
    x = rec("pool1_pool", layers.max_pool(layers.zero_pad(x, ((1, 1), (1, 1))), 3, 2))
    for block_name in self._blocks:
      added, x = getattr(self, block_name)(x)
      rec(f"{block_name}_add", added)
      x = rec(f"{block_name}_out", x)  # fed forward, so Grad-CAM can target it
    if self.include_top:
      x = self.predictions(layers.global_avg_pool(x))
    return x, rec.result()
