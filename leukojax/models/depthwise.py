"""Depthwise convolution as shifted slices and per-channel sums, not XLA's grouped convolution.

Why: XLA lowers the gradients of a grouped convolution (`feature_group_count = C`) badly on CPU.
The kernel gradient becomes a *dense* `C x C` convolution followed by a diagonal mask (C times the
needed FLOPs: 728x in Xception's middle flow) and the input gradient of a strided one a slow
base-dilated grouped convolution; XLA's GPU depthwise backward pass is known to be slow too. With
the convolution written as `y = sum_ij slice_ij(x) * k[i, j]`, the kernel gradient is nine
per-channel reductions `sum(slice_ij(x) * dy)` and the input gradient nine padded, scaled copies of
`dy`: fused elementwise loops. Measured on CPU, 75 px batch 8 (docs/benchmarks.md,
`python -m benchmarks.depthwise --size cpu`): Xception's train step 1.9x faster than with `xla`
with these gradients alone, 2.6x with the shifted forward too; MobileNet's 2.1x and 3.3x.

`IMPLEMENTATION` (default from the environment variable LEUKOJAX_DEPTHWISE, read at trace time):
* `shifted`: the forward pass as shifted slices too, with the same explicit gradients. On CPU
  XLA's grouped-convolution forward is itself slow (Xception's and MobileNet's train steps 1.3x
  slower than with slices, docs/benchmarks.md; jax 0.10.2). XLA then fuses BatchNorm's reductions
  into the slices and rounds differently: single near-zero BatchNorm updates differ by ~3%
  between batch layouts, inside tests/test_sharding.py's 10% bound;
* `shifted_grads`: XLA's grouped convolution forward (bit for bit as `xla`), gradients as above;
  the default on CPU until 2026-12-07, so the way to rerun older CPU results bit for bit;
* `xla`: the grouped convolution and XLA's own gradients;
* `auto` (default): `shifted` on CPU, where it is measured to win; `xla` elsewhere until a GPU/TPU
  run of `benchmarks.depthwise` says otherwise.
The arithmetic is the convolution's (float32 accumulation), only the summation order differs, and
parameters keep the Keras layout: this is only the `conv_general_dilated` that `nnx.Conv` calls.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp

IMPLEMENTATIONS = ("auto", "shifted_grads", "shifted", "xla")
IMPLEMENTATION = os.environ.get("LEUKOJAX_DEPTHWISE", "auto")
if IMPLEMENTATION not in IMPLEMENTATIONS:
  raise ValueError(f"LEUKOJAX_DEPTHWISE={IMPLEMENTATION!r}; expected one of {IMPLEMENTATIONS}.")

_NHWC = jax.lax.conv_dimension_numbers((1, 1, 1, 1), (1, 1, 1, 1), ("NHWC", "HWIO", "NHWC"))
Pads = tuple[tuple[int, int], tuple[int, int]]


def implementation() -> str:
  """The implementation traces use from now on ('auto' resolved for the default backend)."""
  if IMPLEMENTATION == "auto":
    return "shifted" if jax.default_backend() == "cpu" else "xla"
  return IMPLEMENTATION


def _windows(x: jax.Array, kh: int, kw: int, strides: Sequence[int], padding: Pads, out_hw=None):
  """Yields (i, j, the strided slice of padded `x` that kernel tap (i, j) multiplies)."""
  x = jnp.pad(x, ((0, 0), tuple(padding[0]), tuple(padding[1]), (0, 0)))
  sh, sw = strides
  out_h, out_w = out_hw or ((x.shape[1] - kh) // sh + 1, (x.shape[2] - kw) // sw + 1)
  for i in range(kh):
    for j in range(kw):
      yield i, j, jax.lax.slice(x, (0, i, j, 0), (x.shape[0], i + (out_h - 1) * sh + 1,
                                                  j + (out_w - 1) * sw + 1, x.shape[3]), (1, sh, sw, 1))


# Jitted so that an eager call (a model run outside `jax.jit`, as tests and notebooks do) compiles
# one program per layer shape, not one per slice, product and sum; inside a jit it is inlined.
@functools.partial(jax.jit, static_argnums=(2, 3, 4))
def shifted_depthwise(x: jax.Array, kernel: jax.Array, strides: Sequence[int], padding: Pads,
                      out_dtype: Any) -> jax.Array:
  """NHWC `x` [B,H,W,C], kernel [kh,kw,1,C] -> [B,H',W',C]: nine strided slices times weights."""
  acc_dtype = jnp.promote_types(x.dtype, jnp.float32)  # bfloat16 inputs accumulate in float32
  weights = kernel[:, :, 0, :].astype(acc_dtype)
  out = None
  for i, j, window in _windows(x, kernel.shape[0], kernel.shape[1], strides, padding):
    term = window.astype(acc_dtype) * weights[i, j]
    out = term if out is None else out + term
  return out.astype(out_dtype)


def _grouped(x: jax.Array, kernel: jax.Array, strides: Sequence[int], padding: Pads) -> jax.Array:
  return jax.lax.conv_general_dilated(x, kernel, strides, padding, dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                      feature_group_count=x.shape[-1])


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def grouped_with_shifted_grads(x: jax.Array, kernel: jax.Array, strides: tuple[int, int],
                               padding: Pads) -> jax.Array:
  """XLA's grouped convolution forward; input and kernel gradients in the shifted-slices form."""
  return _grouped(x, kernel, strides, padding)


def _forward(x, kernel, strides, padding):
  return _grouped(x, kernel, strides, padding), (x, kernel)


def _backward(strides, padding, residuals, dy):
  x, kernel = residuals
  _, input_vjp = jax.vjp(lambda x_: shifted_depthwise(x_, kernel, strides, padding, x.dtype), x)
  (dx,) = input_vjp(dy)
  acc = jnp.promote_types(x.dtype, jnp.float32)
  kh, kw = kernel.shape[:2]
  taps = [jnp.sum(window.astype(acc) * dy.astype(acc), axis=(0, 1, 2))
          for _, _, window in _windows(x, kh, kw, strides, padding, out_hw=dy.shape[1:3])]
  return dx, jnp.stack(taps).reshape(kh, kw, 1, -1).astype(kernel.dtype)


grouped_with_shifted_grads.defvjp(_forward, _backward)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def shifted_with_shifted_grads(x: jax.Array, kernel: jax.Array, strides: tuple[int, int],
                               padding: Pads) -> jax.Array:
  """The shifted-slices forward with `shifted_grads`' explicit gradients (one backward for both
  forms), keeping only `x` and the kernel as residuals; autodiff of the slices gave the same peak
  memory and speed (docs/benchmarks.md), this is the smaller program."""
  return shifted_depthwise(x, kernel, strides, padding, x.dtype)


def _forward_shifted(x, kernel, strides, padding):
  return shifted_depthwise(x, kernel, strides, padding, x.dtype), (x, kernel)


shifted_with_shifted_grads.defvjp(_forward_shifted, _backward)


def _pairs(padding: str | Sequence[tuple[int, int]], in_shape: Sequence[int], window: Sequence[int],
           strides: Sequence[int]) -> Pads:
  if isinstance(padding, str):
    padding = jax.lax.padtype_to_pads(in_shape, window, strides, padding)
  return tuple(tuple(int(v) for v in p) for p in padding)


def conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation=None, rhs_dilation=None,
                         dimension_numbers=None, feature_group_count=1, batch_group_count=1,
                         precision=None, preferred_element_type=None, **kwargs):
  """`lax.conv_general_dilated`, with depthwise NHWC convolutions per `implementation()`.

  Anything else (dilations, depth multipliers, other layouts, a preferred element type, explicit
  output shardings, or the 'xla' implementation) goes to `lax.conv_general_dilated` unchanged.
  """
  def plain():
    return jax.lax.conv_general_dilated(
        lhs, rhs, window_strides, padding, lhs_dilation=lhs_dilation, rhs_dilation=rhs_dilation,
        dimension_numbers=dimension_numbers, feature_group_count=feature_group_count,
        batch_group_count=batch_group_count, precision=precision,
        preferred_element_type=preferred_element_type, **kwargs)

  impl = implementation()
  channels = lhs.shape[-1] if lhs.ndim == 4 else None
  dilated = any(d != 1 for d in (lhs_dilation or ())) or any(d != 1 for d in (rhs_dilation or ()))
  numbers = (jax.lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers)
             if dimension_numbers is not None else None)
  depthwise = (channels is not None and feature_group_count == channels > 1 and batch_group_count == 1
               and rhs.shape[2:] == (1, channels) and numbers == _NHWC)
  if (impl == "xla" or not depthwise or dilated or preferred_element_type is not None
      or kwargs.get("out_sharding") is not None or lhs.dtype != rhs.dtype):
    return plain()
  pads = _pairs(padding, lhs.shape[1:3], rhs.shape[:2], window_strides)
  strides = tuple(int(s) for s in window_strides)
  if impl == "shifted":
    return shifted_with_shifted_grads(lhs, rhs, strides, pads)
  return grouped_with_shifted_grads(lhs, rhs, strides, pads)
