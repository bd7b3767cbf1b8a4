"""VGG16 and VGG19, ports of `keras.applications.VGG16` / `VGG19` (caffe preprocessing).

Layer names follow Keras (`block1_conv1`, ..., `fc1`, `fc2`, `predictions`), which are stable in
the official weight files, so the Keras-order table is just the construction order.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
from flax import nnx

from leukojax.models import layers

_CONFIGS = {
  "vgg16": ((64, 2), (128, 2), (256, 3), (512, 3), (512, 3)),
  "vgg19": ((64, 2), (128, 2), (256, 4), (512, 4), (512, 4)),
}


class VGG(layers.Backbone):
  """Shared VGG implementation; use `VGG16` or `VGG19`."""

  min_input_size: ClassVar[int] = 32
  keras_top_layers: ClassVar[tuple[str, ...]] = ("fc1", "fc2", "predictions")

  def __init__(
    self,
    *,
    include_top: bool = False,
    num_classes: int = 1000,
    input_size: int = 224,
    dtype: Any = jnp.float32,
    width_divisor: int = 1,
    rngs: nnx.Rngs,
  ):
    """`input_size` only matters with the top: Keras flattens the last map into `fc1`.

    `width_divisor` > 1 narrows every convolution (tests only: no weight file fits it).
    """
    w = self._widths(include_top, width_divisor)
    self.include_top = include_top
    self.num_classes = num_classes
    self.num_features = w(512)
    self.input_size = input_size
    blocks, taps = [], []
    in_features = 3
    for b, (features, repeats) in enumerate(_CONFIGS[self.name], start=1):
      features = w(features)
      names = tuple(f"block{b}_conv{c}" for c in range(1, repeats + 1))
      for conv_name in names:
        setattr(self, conv_name, layers.conv2d(in_features, features, 3, dtype=dtype, rngs=rngs))
        in_features = features
      blocks.append(names)
      taps += [*names, f"block{b}_pool"]
    self._blocks = tuple(blocks)
    if include_top:
      if input_size < self.min_input_size:
        raise ValueError(f"{self.name}: input_size {input_size} < {self.min_input_size}.")
      side = input_size // 32
      self.fc1 = layers.dense(side * side * 512, 4096, dtype=dtype, rngs=rngs)
      self.fc2 = layers.dense(4096, 4096, dtype=dtype, rngs=rngs)
      self.predictions = layers.dense(4096, num_classes, dtype=dtype, rngs=rngs)
      taps += ["fc1", "fc2"]
    self.tap_names = tuple(taps)

  def keras_layers(self) -> list[str]:
    return [conv_name for names in self._blocks for conv_name in names]

  def __call__(
    self, x: jax.Array, taps: Sequence[str] = ()
  ) -> tuple[jax.Array, dict[str, jax.Array]]:
    self._check_input(x)
    if self.include_top and x.shape[1:3] != (self.input_size, self.input_size):
      raise ValueError(
        f"{self.name} with top was built for {self.input_size}x{self.input_size} inputs "
        f"(fc1 flattens the last map), got {x.shape[1]}x{x.shape[2]}."
      )
    rec = layers.Taps(taps, self.tap_names, self.name)
    for b, names in enumerate(self._blocks, start=1):
      for conv_name in names:
        x = rec(conv_name, jax.nn.relu(getattr(self, conv_name)(x)))
      x = rec(f"block{b}_pool", layers.max_pool(x, 2, 2))
    if self.include_top:
      x = x.reshape(x.shape[0], -1)  # NHWC flatten, as Keras's channels_last `Flatten`.
      x = rec("fc1", jax.nn.relu(self.fc1(x)))
      x = rec("fc2", jax.nn.relu(self.fc2(x)))
      x = self.predictions(x)
    return x, rec.result()


class VGG16(VGG):
  """VGG16 (Simonyan & Zisserman 2015), identical to `keras.applications.VGG16`.

  Returns logits `[B, num_classes]` with the top, else the `block5_pool` map `[B, h, w, 512]`.
  Taps and their shapes at 224x224: `block1_conv1`, `block1_conv2` 224x224x64, `block1_pool`
  112x112x64; `block2_conv1..2` 112x112x128, `block2_pool` 56x56x128; `block3_conv1..3`
  56x56x256, `block3_pool` 28x28x256; `block4_conv1..3` 28x28x512, `block4_pool` 14x14x512;
  `block5_conv1..3` 14x14x512, `block5_pool` 7x7x512; with the top also `fc1`, `fc2` (4096).
  """

  name = "vgg16"


class VGG19(VGG):
  """VGG19 (Simonyan & Zisserman 2015), identical to `keras.applications.VGG19`.

  As VGG16 with four convolutions in blocks 3-5. Taps and their shapes at 224x224:
  `block1_conv1..2` 224x224x64, `block1_pool` 112x112x64; `block2_conv1..2` 112x112x128,
  `block2_pool` 56x56x128; `block3_conv1..4` 56x56x256, `block3_pool` 28x28x256;
  `block4_conv1..4` 28x28x512, `block4_pool` 14x14x512; `block5_conv1..4` 14x14x512,
  `block5_pool` 7x7x512; with the top also `fc1`, `fc2` (4096).
  """

  name = "vgg19"
