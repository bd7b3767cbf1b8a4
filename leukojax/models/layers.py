"""Keras-equivalent building blocks shared by the backbone ports.

Every helper here reproduces one `keras.layers` behaviour exactly (padding, epsilon, pooling
semantics, initialisers), so the ports in this package can load the official Keras ImageNet weights
and give the same numbers. All layers compute in `dtype` and keep float32 parameters.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
from flax import nnx

from leukojax.models import depthwise

Dtype = Any
Padding = str | Sequence[tuple[int, int]]

# Keras `BatchNormalization` defaults. Both frameworks update the running statistics as
# `new = momentum * old + (1 - momentum) * batch`, so Keras's 0.99 is Flax's 0.99.
KERAS_BN_MOMENTUM = 0.99
KERAS_BN_EPSILON = 1e-3

# Keras's default kernel initialiser for Conv2D, SeparableConv2D, DepthwiseConv2D and Dense, so
# training from scratch starts from the same distribution as Keras.
glorot_uniform = nnx.initializers.glorot_uniform()


def narrowed(channels: int, divisor: int) -> int:
  """`channels / divisor`: a backbone narrowed for tests (`model.backbone_width_divisor`).

  Every width of the hybrid's three backbones is a multiple of 8, so divisors 1, 2, 4 and 8 keep
  each layer's wiring (concatenations, residual sums) exactly as at full width.
  """
  if divisor < 1 or channels % divisor:
    raise ValueError(f"backbone width divisor {divisor} does not divide {channels} channels: use 1, 2, 4 or 8.")
  return channels // divisor


def conv2d(
  in_features: int,
  out_features: int,
  kernel_size: int | tuple[int, int],
  *,
  strides: int = 1,
  padding: Padding = "SAME",
  use_bias: bool = True,
  dtype: Dtype = jnp.float32,
  rngs: nnx.Rngs,
) -> nnx.Conv:
  """A Keras `Conv2D` (HWIO kernel, TF 'SAME' padding semantics, glorot-uniform kernel)."""
  if isinstance(kernel_size, int):  # nnx.Conv reads a bare int as a 1-D kernel.
    kernel_size = (kernel_size, kernel_size)
  return nnx.Conv(
    in_features,
    out_features,
    kernel_size,
    strides=strides,
    padding=padding,
    use_bias=use_bias,
    dtype=dtype,
    param_dtype=jnp.float32,
    kernel_init=glorot_uniform,
    rngs=rngs,
  )


def depthwise_conv2d(
  features: int,
  kernel_size: int = 3,
  *,
  strides: int = 1,
  padding: Padding = "SAME",
  use_bias: bool = False,
  dtype: Dtype = jnp.float32,
  rngs: nnx.Rngs,
) -> nnx.Conv:
  """A Keras `DepthwiseConv2D` with depth multiplier 1.

  Keras stores the kernel as `(kh, kw, C, 1)`; here it is `(kh, kw, 1, C)` with
  `feature_group_count=C` (the loader reshapes, as Keras's own JAX backend does). Its gradients
  run as shifted slices where that is faster (`leukojax.models.depthwise`: XLA's grouped-convolution
  gradients cost up to C times the FLOPs on CPU); the forward pass and parameters are unchanged.
  """
  return nnx.Conv(
    features,
    features,
    (kernel_size, kernel_size),
    strides=strides,
    padding=padding,
    feature_group_count=features,
    conv_general_dilated=depthwise.conv_general_dilated,
    use_bias=use_bias,
    dtype=dtype,
    param_dtype=jnp.float32,
    kernel_init=glorot_uniform,
    rngs=rngs,
  )


def batch_norm(
  features: int,
  *,
  epsilon: float = KERAS_BN_EPSILON,
  use_scale: bool = True,
  dtype: Dtype = jnp.float32,
  rngs: nnx.Rngs,
) -> nnx.BatchNorm:
  """A Keras `BatchNormalization` (epsilon 1e-3 unless given; Flax's default is 1e-5).

  `use_fast_variance=False` computes the batch variance as Keras does (mean of squared
  deviations) rather than E[x^2] - E[x]^2, which loses precision on large activations.
  """
  return nnx.BatchNorm(
    features,
    momentum=KERAS_BN_MOMENTUM,
    epsilon=epsilon,
    use_scale=use_scale,
    use_fast_variance=False,
    dtype=dtype,
    param_dtype=jnp.float32,
    rngs=rngs,
  )


def dense(
  in_features: int, out_features: int, *, dtype: Dtype = jnp.float32, rngs: nnx.Rngs
) -> nnx.Linear:
  """A Keras `Dense` (glorot-uniform kernel, zero bias)."""
  return nnx.Linear(
    in_features,
    out_features,
    dtype=dtype,
    param_dtype=jnp.float32,
    kernel_init=glorot_uniform,
    rngs=rngs,
  )


class SeparableConv2D(nnx.Module):
  """A Keras `SeparableConv2D`: depthwise conv (with the padding and stride), then a 1x1 conv."""

  def __init__(
    self,
    in_features: int,
    out_features: int,
    kernel_size: int = 3,
    *,
    strides: int = 1,
    padding: Padding = "SAME",
    use_bias: bool = False,
    dtype: Dtype = jnp.float32,
    rngs: nnx.Rngs,
  ):
    self.depthwise = depthwise_conv2d(
      in_features, kernel_size, strides=strides, padding=padding, dtype=dtype, rngs=rngs
    )
    self.pointwise = conv2d(
      in_features, out_features, 1, padding="VALID", use_bias=use_bias, dtype=dtype, rngs=rngs
    )

  def __call__(self, x: jax.Array) -> jax.Array:
    return self.pointwise(self.depthwise(x))


class ConvBN(nnx.Module):
  """Conv2D -> BatchNormalization -> activation, the unit most Keras applications repeat."""

  def __init__(
    self,
    in_features: int,
    out_features: int,
    kernel_size: int | tuple[int, int],
    *,
    strides: int = 1,
    padding: Padding = "SAME",
    use_bias: bool = False,
    bn_epsilon: float = KERAS_BN_EPSILON,
    bn_scale: bool = True,
    activation: Callable[[jax.Array], jax.Array] | None = jax.nn.relu,
    dtype: Dtype = jnp.float32,
    rngs: nnx.Rngs,
  ):
    self.conv = conv2d(
      in_features,
      out_features,
      kernel_size,
      strides=strides,
      padding=padding,
      use_bias=use_bias,
      dtype=dtype,
      rngs=rngs,
    )
    self.bn = batch_norm(
      out_features, epsilon=bn_epsilon, use_scale=bn_scale, dtype=dtype, rngs=rngs
    )
    self.activation = activation

  def __call__(self, x: jax.Array) -> jax.Array:
    x = self.bn(self.conv(x))
    return x if self.activation is None else self.activation(x)


def relu6(x: jax.Array) -> jax.Array:
  """Keras `ReLU(6.0)`."""
  return jnp.minimum(jax.nn.relu(x), 6.0)


def zero_pad(x: jax.Array, pads: tuple[tuple[int, int], tuple[int, int]]) -> jax.Array:
  """Keras `ZeroPadding2D(((top, bottom), (left, right)))` on NHWC."""
  return jnp.pad(x, ((0, 0), pads[0], pads[1], (0, 0)))


def max_pool(x: jax.Array, window: int, strides: int, padding: str = "VALID") -> jax.Array:
  """Keras `MaxPooling2D`; 'SAME' pads with -inf, like Keras."""
  return nnx.max_pool(x, (window, window), (strides, strides), padding)


def avg_pool_same(x: jax.Array, window: int, strides: int = 1) -> jax.Array:
  """Keras `AveragePooling2D(padding='same')`: the border average excludes the padding."""
  return nnx.avg_pool(x, (window, window), (strides, strides), "SAME", count_include_pad=False)


def global_avg_pool(x: jax.Array, keepdims: bool = False) -> jax.Array:
  """Keras `GlobalAveragePooling2D` on NHWC."""
  return jnp.mean(x, axis=(1, 2), keepdims=keepdims)


class _Interception:
  """The offsets of an active `intercept_taps` block and the activations it has seen."""

  def __init__(self, offsets: Mapping[str, jax.Array]):
    self.offsets = dict(offsets)
    self.seen: dict[str, jax.Array] = {}


_INTERCEPTION: contextvars.ContextVar[_Interception | None] = contextvars.ContextVar(
  "leukojax_tap_interception", default=None
)


@contextlib.contextmanager
def intercept_taps(offsets: Mapping[str, jax.Array]) -> Iterator[dict[str, jax.Array]]:
  """Adds `offsets["<backbone>/<tap>"]` to those taps' activations in every backbone run inside.

  Why: the gradient of a model's output with respect to a zero offset added at a tap is the gradient
  with respect to that activation, which Grad-CAM needs at any layer, without changing a backbone's
  signature or its numbers (with no block active, or a zero offset, nothing changes). The yielded
  dict receives each offset activation under its key. An offset broadcasts, so a scalar 0.0 is a
  valid offset for finding the shapes (`jax.eval_shape`). Only taps whose returned value the
  backbone feeds forward are affected; a tap recorded beside the main path (e.g. inside a block)
  receives the offset in the yielded dict but not downstream (see `leukojax.explanation.gradcam`).
  An offset that no backbone reached is an error, so a misspelt backbone name cannot pass silently.
  """
  interception = _Interception(offsets)
  token = _INTERCEPTION.set(interception)
  try:
    yield interception.seen
  finally:
    _INTERCEPTION.reset(token)
  missed = sorted(set(interception.offsets) - set(interception.seen))
  if missed:
    raise ValueError(f"intercept_taps: no backbone produced {missed}; keys are '<backbone>/<tap>' "
                     "with the backbone's `name` and one of its `tap_names`.")


class Taps:
  """Collects requested intermediate activations during one forward pass.

  Names are validated up front, so a typo fails before any compute rather than returning a dict
  without the key. Inside `intercept_taps`, it also adds the offsets addressed to this model.
  """

  def __init__(self, requested: Sequence[str], available: Sequence[str], model: str):
    if isinstance(requested, str):
      raise TypeError(f"{model}: taps must be a sequence of names, got the string {requested!r}.")
    unknown = [t for t in requested if t not in available]
    if unknown:
      raise ValueError(
        f"{model}: unknown tap name(s) {unknown}; available taps: {list(available)}."
      )
    self._requested = tuple(dict.fromkeys(requested))
    self._out: dict[str, jax.Array] = {}
    self._model = model
    self._interception = _INTERCEPTION.get()
    if self._interception is not None:
      prefix = f"{model}/"
      mine = [k[len(prefix):] for k in self._interception.offsets if k.startswith(prefix)]
      unknown = [t for t in mine if t not in available]
      if unknown:
        raise ValueError(
          f"{model}: cannot offset unknown tap(s) {unknown}; available taps: {list(available)}."
        )

  def __call__(self, name: str, x: jax.Array) -> jax.Array:
    if self._interception is not None:
      key = f"{self._model}/{name}"
      if key in self._interception.offsets:
        x = x + jnp.asarray(self._interception.offsets[key], x.dtype)
        self._interception.seen[key] = x
    if name in self._requested:
      self._out[name] = x
    return x

  def result(self) -> dict[str, jax.Array]:
    return {name: self._out[name] for name in self._requested}


class Backbone(nnx.Module):
  """Common surface of the backbone ports.

  Subclasses set the class attributes below and implement `keras_layers()`, the explicit table
  that maps the Keras weight file (weighted layers in file order) onto this module's sub-modules.
  """

  name: ClassVar[str]
  min_input_size: ClassVar[int]
  # Flax attribute names of the classification top, in Keras file order.
  keras_top_layers: ClassVar[tuple[str, ...]]

  include_top: bool
  num_classes: int
  num_features: int
  tap_names: tuple[str, ...]

  def keras_layers(self) -> list[str]:
    """Paths ('a/b/c') of the sub-modules that take the file's weighted layers, in file order.

    Covers the body only; `keras_top_layers` follows it when the model has a top.
    """
    raise NotImplementedError

  def _widths(self, include_top: bool, width_divisor: int):
    """`channels -> channels / width_divisor` for a narrowed body; a top needs full width (weights)."""
    if include_top and width_divisor != 1:
      raise ValueError(f"{self.name}: the classification top needs full width (width_divisor 1).")
    return lambda channels: narrowed(channels, width_divisor)

  def _check_input(self, x: jax.Array) -> None:
    if x.ndim != 4 or x.shape[-1] != 3:
      raise ValueError(f"{self.name}: expected NHWC input [B, H, W, 3], got shape {x.shape}.")
    if min(x.shape[1:3]) < self.min_input_size:
      raise ValueError(
        f"{self.name}: input {x.shape[1]}x{x.shape[2]} is smaller than the minimum "
        f"{self.min_input_size}x{self.min_input_size} that keras.applications accepts."
      )
