"""InceptionV3, a port of `keras.applications.InceptionV3` (tf preprocessing).

Every convolution is Keras's `conv2d_bn`: conv without bias, BatchNorm with `scale=False`
(epsilon 1e-3), ReLU. The pooling branches use 3x3 'same' average pooling that excludes the
padding from the average. Keras names these layers `conv2d_N` / `batch_normalization_N`, numbered
per session, and writes them to the weight file in topological (depth) order, not in creation
order; each block below therefore carries the explicit Keras order of its units.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
from flax import nnx

from leukojax.models import layers


def _units(block: nnx.Module, in_features: int, specs, dtype: Any, rngs: nnx.Rngs, divisor: int = 1,
           *, narrow_input: bool = True) -> None:
  """Adds `conv2d_bn` units given as `(name, in, out, kernel, strides, padding)`, in Keras's widths.

  `in` None means the block's input features. Every width is divided by `divisor` (a narrowed
  backbone for tests), the block's input too unless it is the image (`narrow_input=False`).
  """
  w = functools.partial(layers.narrowed, divisor=divisor)
  block_input = w(in_features) if narrow_input else in_features
  for name, cin, cout, kernel, strides, padding in specs:
    cin = block_input if cin is None else w(cin)
    unit = layers.ConvBN(
      cin, w(cout), kernel, strides=strides, padding=padding, bn_scale=False, dtype=dtype, rngs=rngs
    )
    setattr(block, name, unit)


def _order(units: tuple[str, ...], pattern: str) -> tuple[str, ...]:
  """Expands 'c3 b3 c1' (conv / bn of unit 3, conv of unit 1) to sub-module paths."""
  kinds = {"c": "conv", "b": "bn"}
  return tuple(f"{units[int(t[1:])]}/{kinds[t[0]]}" for t in pattern.split())


class InceptionA(nnx.Module):
  """mixed0-2 (35x35): 1x1 | 1x1-5x5 | 1x1-3x3-3x3 | avgpool-1x1."""

  units = ("branch1x1", "branch5x5_1", "branch5x5_2", "branch3x3dbl_1", "branch3x3dbl_2",
           "branch3x3dbl_3", "branch_pool")  # fmt: skip
  keras_order = _order(units, "c3 b3 c1 c4 b1 b4 c0 c2 c5 c6 b0 b2 b5 b6")

  def __init__(self, in_features: int, pool_features: int, *, divisor: int, dtype: Any, rngs: nnx.Rngs):
    _units(self, in_features, (
      ("branch1x1", None, 64, 1, 1, "SAME"),
      ("branch5x5_1", None, 48, 1, 1, "SAME"),
      ("branch5x5_2", 48, 64, 5, 1, "SAME"),
      ("branch3x3dbl_1", None, 64, 1, 1, "SAME"),
      ("branch3x3dbl_2", 64, 96, 3, 1, "SAME"),
      ("branch3x3dbl_3", 96, 96, 3, 1, "SAME"),
      ("branch_pool", None, pool_features, 1, 1, "SAME"),
    ), dtype, rngs, divisor)  # fmt: skip

  def __call__(self, x: jax.Array) -> jax.Array:
    b1 = self.branch1x1(x)
    b5 = self.branch5x5_2(self.branch5x5_1(x))
    b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
    bp = self.branch_pool(layers.avg_pool_same(x, 3))
    return jnp.concatenate([b1, b5, b3, bp], axis=-1)


class InceptionB(nnx.Module):
  """mixed3 (35 -> 17): 3x3/2 | 1x1-3x3-3x3/2 | maxpool/2."""

  units = ("branch3x3", "branch3x3dbl_1", "branch3x3dbl_2", "branch3x3dbl_3")
  keras_order = _order(units, "c1 b1 c2 b2 c0 c3 b0 b3")

  def __init__(self, in_features: int, *, divisor: int, dtype: Any, rngs: nnx.Rngs):
    _units(self, in_features, (
      ("branch3x3", None, 384, 3, 2, "VALID"),
      ("branch3x3dbl_1", None, 64, 1, 1, "SAME"),
      ("branch3x3dbl_2", 64, 96, 3, 1, "SAME"),
      ("branch3x3dbl_3", 96, 96, 3, 2, "VALID"),
    ), dtype, rngs, divisor)  # fmt: skip

  def __call__(self, x: jax.Array) -> jax.Array:
    b3 = self.branch3x3(x)
    bd = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
    return jnp.concatenate([b3, bd, layers.max_pool(x, 3, 2)], axis=-1)


class InceptionC(nnx.Module):
  """mixed4-7 (17x17): 1x1 | 1x1-1x7-7x1 | 1x1-7x1-1x7-7x1-1x7 | avgpool-1x1."""

  units = ("branch1x1", "branch7x7_1", "branch7x7_2", "branch7x7_3", "branch7x7dbl_1",
           "branch7x7dbl_2", "branch7x7dbl_3", "branch7x7dbl_4", "branch7x7dbl_5",
           "branch_pool")  # fmt: skip
  keras_order = _order(units, "c4 b4 c5 b5 c1 c6 b1 b6 c2 c7 b2 b7 c0 c3 c8 c9 b0 b3 b8 b9")

  def __init__(self, in_features: int, c7: int, *, divisor: int, dtype: Any, rngs: nnx.Rngs):
    _units(self, in_features, (
      ("branch1x1", None, 192, 1, 1, "SAME"),
      ("branch7x7_1", None, c7, 1, 1, "SAME"),
      ("branch7x7_2", c7, c7, (1, 7), 1, "SAME"),
      ("branch7x7_3", c7, 192, (7, 1), 1, "SAME"),
      ("branch7x7dbl_1", None, c7, 1, 1, "SAME"),
      ("branch7x7dbl_2", c7, c7, (7, 1), 1, "SAME"),
      ("branch7x7dbl_3", c7, c7, (1, 7), 1, "SAME"),
      ("branch7x7dbl_4", c7, c7, (7, 1), 1, "SAME"),
      ("branch7x7dbl_5", c7, 192, (1, 7), 1, "SAME"),
      ("branch_pool", None, 192, 1, 1, "SAME"),
    ), dtype, rngs, divisor)  # fmt: skip

  def __call__(self, x: jax.Array) -> jax.Array:
    b1 = self.branch1x1(x)
    b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
    bd = self.branch7x7dbl_1(x)
    for i in (2, 3, 4, 5):
      bd = getattr(self, f"branch7x7dbl_{i}")(bd)
    bp = self.branch_pool(layers.avg_pool_same(x, 3))
    return jnp.concatenate([b1, b7, bd, bp], axis=-1)


class InceptionD(nnx.Module):
  """mixed8 (17 -> 8): 1x1-3x3/2 | 1x1-1x7-7x1-3x3/2 | maxpool/2."""

  units = ("branch3x3_1", "branch3x3_2", "branch7x7x3_1", "branch7x7x3_2", "branch7x7x3_3",
           "branch7x7x3_4")  # fmt: skip
  keras_order = _order(units, "c2 b2 c3 b3 c0 c4 b0 b4 c1 c5 b1 b5")

  def __init__(self, in_features: int, *, divisor: int, dtype: Any, rngs: nnx.Rngs):
    _units(self, in_features, (
      ("branch3x3_1", None, 192, 1, 1, "SAME"),
      ("branch3x3_2", 192, 320, 3, 2, "VALID"),
      ("branch7x7x3_1", None, 192, 1, 1, "SAME"),
      ("branch7x7x3_2", 192, 192, (1, 7), 1, "SAME"),
      ("branch7x7x3_3", 192, 192, (7, 1), 1, "SAME"),
      ("branch7x7x3_4", 192, 192, 3, 2, "VALID"),
    ), dtype, rngs, divisor)  # fmt: skip

  def __call__(self, x: jax.Array) -> jax.Array:
    b3 = self.branch3x3_2(self.branch3x3_1(x))
    b7 = self.branch7x7x3_1(x)
    for unit in (self.branch7x7x3_2, self.branch7x7x3_3, self.branch7x7x3_4):
      b7 = unit(b7)
    return jnp.concatenate([b3, b7, layers.max_pool(x, 3, 2)], axis=-1)


class InceptionE(nnx.Module):
  """mixed9-10 (8x8): 1x1 | 1x1-(1x3 & 3x1) | 1x1-3x3-(1x3 & 3x1) | avgpool-1x1."""

  units = ("branch1x1", "branch3x3_1", "branch3x3_2a", "branch3x3_2b", "branch3x3dbl_1",
           "branch3x3dbl_2", "branch3x3dbl_3a", "branch3x3dbl_3b", "branch_pool")  # fmt: skip
  keras_order = _order(units, "c4 b4 c1 c5 b1 b5 c2 c3 c6 c7 c0 b2 b3 b6 b7 c8 b0 b8")

  def __init__(self, in_features: int, *, divisor: int, dtype: Any, rngs: nnx.Rngs):
    _units(self, in_features, (
      ("branch1x1", None, 320, 1, 1, "SAME"),
      ("branch3x3_1", None, 384, 1, 1, "SAME"),
      ("branch3x3_2a", 384, 384, (1, 3), 1, "SAME"),
      ("branch3x3_2b", 384, 384, (3, 1), 1, "SAME"),
      ("branch3x3dbl_1", None, 448, 1, 1, "SAME"),
      ("branch3x3dbl_2", 448, 384, 3, 1, "SAME"),
      ("branch3x3dbl_3a", 384, 384, (1, 3), 1, "SAME"),
      ("branch3x3dbl_3b", 384, 384, (3, 1), 1, "SAME"),
      ("branch_pool", None, 192, 1, 1, "SAME"),
    ), dtype, rngs, divisor)  # fmt: skip

  def __call__(self, x: jax.Array) -> jax.Array:
    b1 = self.branch1x1(x)
    b3 = self.branch3x3_1(x)
    b3 = jnp.concatenate([self.branch3x3_2a(b3), self.branch3x3_2b(b3)], axis=-1)
    bd = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
    bd = jnp.concatenate([self.branch3x3dbl_3a(bd), self.branch3x3dbl_3b(bd)], axis=-1)
    bp = self.branch_pool(layers.avg_pool_same(x, 3))
    return jnp.concatenate([b1, b3, bd, bp], axis=-1)


class InceptionV3(layers.Backbone):
  """InceptionV3 (Szegedy et al. 2016), identical to `keras.applications.InceptionV3`.

  Returns logits `[B, num_classes]` with the top (global average pooling, `predictions`), else the
  `mixed10` map `[B, h, w, 2048]`. Taps and their shapes at 299x299 (Keras layer):
  `stem_pool1` (`max_pooling2d`) 73x73x64; `stem_pool2` (`max_pooling2d_1`) 35x35x192;
  `mixed0` 35x35x256; `mixed1`, `mixed2` 35x35x288; `mixed3`..`mixed7` 17x17x768;
  `mixed8` 8x8x1280; `mixed9`, `mixed10` 8x8x2048.
  """

  name: ClassVar[str] = "inception_v3"
  min_input_size: ClassVar[int] = 75
  keras_top_layers: ClassVar[tuple[str, ...]] = ("predictions",)
  _STEM = ("stem1", "stem2", "stem3", "stem4", "stem5")

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
    self.include_top = include_top
    self.num_classes = num_classes
    self.num_features = self._widths(include_top, width_divisor)(2048)
    kw = dict(divisor=width_divisor, dtype=dtype, rngs=rngs)
    _units(self, 3, (
      ("stem1", None, 32, 3, 2, "VALID"),
      ("stem2", 32, 32, 3, 1, "VALID"),
      ("stem3", 32, 64, 3, 1, "SAME"),
      ("stem4", 64, 80, 1, 1, "VALID"),
      ("stem5", 80, 192, 3, 1, "VALID"),
    ), dtype, rngs, width_divisor, narrow_input=False)  # fmt: skip
    self.mixed0 = InceptionA(192, 32, **kw)
    self.mixed1 = InceptionA(256, 64, **kw)
    self.mixed2 = InceptionA(288, 64, **kw)
    self.mixed3 = InceptionB(288, **kw)
    self.mixed4 = InceptionC(768, 128, **kw)
    self.mixed5 = InceptionC(768, 160, **kw)
    self.mixed6 = InceptionC(768, 160, **kw)
    self.mixed7 = InceptionC(768, 192, **kw)
    self.mixed8 = InceptionD(768, **kw)
    self.mixed9 = InceptionE(1280, **kw)
    self.mixed10 = InceptionE(2048, **kw)
    self.tap_names = ("stem_pool1", "stem_pool2", *(f"mixed{i}" for i in range(11)))
    if include_top:
      self.predictions = layers.dense(2048, num_classes, dtype=dtype, rngs=rngs)

  def keras_layers(self) -> list[str]:
    order = [f"{unit}/{m}" for unit in self._STEM for m in ("conv", "bn")]
    for i in range(11):
      order += [f"mixed{i}/{path}" for path in getattr(self, f"mixed{i}").keras_order]
    return order

  def __call__(
    self, x: jax.Array, taps: Sequence[str] = ()
  ) -> tuple[jax.Array, dict[str, jax.Array]]:
    self._check_input(x)
    rec = layers.Taps(taps, self.tap_names, self.name)
    x = self.stem3(self.stem2(self.stem1(x)))
    x = rec("stem_pool1", layers.max_pool(x, 3, 2))
    x = self.stem5(self.stem4(x))
    x = rec("stem_pool2", layers.max_pool(x, 3, 2))
    for i in range(11):
      x = rec(f"mixed{i}", getattr(self, f"mixed{i}")(x))
    if self.include_top:
      x = self.predictions(layers.global_avg_pool(x))
    return x, rec.result()
