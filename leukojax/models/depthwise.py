"""Depthwise convolution as a sum of shifted, per-channel-scaled slices of the input.

Why: XLA lowers the gradients of a grouped convolution (`feature_group_count = C`) badly on CPU.
The kernel gradient becomes a *dense* `C x C` convolution followed by a diagonal mask (C times the
needed FLOPs: 728x in Xception's middle flow) and the input gradient of a strided one a slow
base-dilated grouped convolution; XLA's GPU depthwise backward pass is known to be slow as well.
Written as `sum_ij slice_ij(x) * k[i, j]`, the forward pass is one fused elementwise loop and its
autodiff gradients are fused elementwise loops and per-channel reductions: measured 5-50x faster
for Xception's and MobileNet's depthwise layers (fwd + bwd) on CPU (docs/benchmarks.md).

The arithmetic is the same as the convolution's (products summed in float32), only the order of
the nine additions differs, so outputs match `lax.conv_general_dilated` to float rounding and
Keras weights load unchanged: this is only the `conv_general_dilated` that `nnx.Conv` calls.

`IMPLEMENTATION` picks it: 'shifted', 'xla' (the grouped convolution), or 'auto' (default;
shifted on CPU, where it is measured to win, XLA's elsewhere until a GPU/TPU run says otherwise).
The environment variable LEUKOJAX_DEPTHWISE sets the default, so benchmarks can compare the two.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp

IMPLEMENTATIONS = ("auto", "shifted", "kernel_grad", "grads", "xla")
IMPLEMENTATION = os.environ.get("LEUKOJAX_DEPTHWISE", "auto")
if IMPLEMENTATION not in IMPLEMENTATIONS:
  raise ValueError(f"LEUKOJAX_DEPTHWISE={IMPLEMENTATION!r}; expected one of {IMPLEMENTATIONS}.")

_NHWC = jax.lax.conv_dimension_numbers((1, 1, 1, 1), (1, 1, 1, 1), ("NHWC", "HWIO", "NHWC"))


def use_shifted() -> bool:
  """Whether traces from now on use the shifted-slices form (read at trace time)."""
  if IMPLEMENTATION == "auto":
    return jax.default_backend() == "cpu"
  return IMPLEMENTATION in ("shifted", "kernel_grad", "grads")


def _pairs(padding: str | Sequence[tuple[int, int]], in_shape: Sequence[int], window: Sequence[int],
           strides: Sequence[int]) -> list[tuple[int, int]]:
  if isinstance(padding, str):
    return list(jax.lax.padtype_to_pads(in_shape, window, strides, padding))
  return [tuple(p) for p in padding]


def shifted_depthwise(x: jax.Array, kernel: jax.Array, strides: Sequence[int],
                      padding: Sequence[tuple[int, int]], out_dtype: Any) -> jax.Array:
  """NHWC `x` [B,H,W,C], kernel [kh,kw,1,C] -> [B,H',W',C]: nine strided slices times weights."""
  kh, kw = kernel.shape[:2]
  acc_dtype = jnp.promote_types(x.dtype, jnp.float32)  # bfloat16 inputs accumulate in float32
  x = jnp.pad(x, ((0, 0), tuple(padding[0]), tuple(padding[1]), (0, 0)))
  sh, sw = strides
  out_h = (x.shape[1] - kh) // sh + 1
  out_w = (x.shape[2] - kw) // sw + 1
  weights = kernel[:, :, 0, :].astype(acc_dtype)
  out = None
  for i in range(kh):
    for j in range(kw):
      window = jax.lax.slice(x, (0, i, j, 0), (x.shape[0], i + (out_h - 1) * sh + 1,
                                               j + (out_w - 1) * sw + 1, x.shape[3]), (1, sh, sw, 1))
      term = window.astype(acc_dtype) * weights[i, j]
      out = term if out is None else out + term
  return out.astype(out_dtype)


def _grouped(x: jax.Array, kernel: jax.Array, strides, padding) -> jax.Array:
  return jax.lax.conv_general_dilated(x, kernel, strides, padding, dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                      feature_group_count=x.shape[-1])


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def kernel_grad_shifted(x: jax.Array, kernel: jax.Array, strides: tuple[int, int],
                        padding: tuple[tuple[int, int], tuple[int, int]]) -> jax.Array:
  """XLA's grouped convolution and input gradient; the kernel gradient as nine per-channel reductions."""
  return _grouped(x, kernel, strides, padding)


def _kernel_grad_fwd(x, kernel, strides, padding):
  return _grouped(x, kernel, strides, padding), (x, kernel)


def _kernel_grad_bwd(strides, padding, residuals, g):
  x, kernel = residuals
  if IMPLEMENTATION == "grads":
    _, input_vjp = jax.vjp(lambda x_: shifted_depthwise(x_, kernel, strides, padding, x.dtype), x)
  else:
    _, input_vjp = jax.vjp(lambda x_: _grouped(x_, kernel, strides, padding), x)
  (dx,) = input_vjp(g)
  kh, kw = kernel.shape[:2]
  acc = jnp.promote_types(x.dtype, jnp.float32)
  xp = jnp.pad(x, ((0, 0), padding[0], padding[1], (0, 0)))
  sh, sw = strides
  taps = []
  for i in range(kh):
    for j in range(kw):
      window = jax.lax.slice(xp, (0, i, j, 0), (xp.shape[0], i + (g.shape[1] - 1) * sh + 1,
                                                j + (g.shape[2] - 1) * sw + 1, xp.shape[3]), (1, sh, sw, 1))
      taps.append(jnp.sum(window.astype(acc) * g.astype(acc), axis=(0, 1, 2)))
  dk = jnp.stack(taps).reshape(kh, kw, 1, -1).astype(kernel.dtype)
  return dx, dk


kernel_grad_shifted.defvjp(_kernel_grad_fwd, _kernel_grad_bwd)


def conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation=None, rhs_dilation=None,
                         dimension_numbers=None, feature_group_count=1, batch_group_count=1,
                         precision=None, preferred_element_type=None, **kwargs):
  """`lax.conv_general_dilated`, with depthwise NHWC convolutions done by `shifted_depthwise`.

  Anything else (dilations, depth multipliers, other layouts, or IMPLEMENTATION 'xla') goes to
  `lax.conv_general_dilated` unchanged.
  """
  plain = lambda: jax.lax.conv_general_dilated(  # noqa: E731
      lhs, rhs, window_strides, padding, lhs_dilation=lhs_dilation, rhs_dilation=rhs_dilation,
      dimension_numbers=dimension_numbers, feature_group_count=feature_group_count,
      batch_group_count=batch_group_count, precision=precision,
      preferred_element_type=preferred_element_type, **kwargs)
  channels = lhs.shape[-1] if lhs.ndim == 4 else None
  dilated = any(d != 1 for d in (lhs_dilation or ())) or any(d != 1 for d in (rhs_dilation or ()))
  numbers = (jax.lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers)
             if dimension_numbers is not None else None)
  depthwise = (channels is not None and feature_group_count == channels > 1 and batch_group_count == 1
               and rhs.shape[2:] == (1, channels) and numbers == _NHWC)
  if not depthwise or dilated or kwargs.get("out_sharding") is not None or not use_shifted():
    return plain()
  pads = _pairs(padding, lhs.shape[1:3], rhs.shape[:2], window_strides)
  if IMPLEMENTATION in ("kernel_grad", "grads") and preferred_element_type is None:
    return kernel_grad_shifted(lhs, rhs, tuple(window_strides), tuple(tuple(p) for p in pads))
  out_dtype = preferred_element_type or jnp.result_type(lhs.dtype, rhs.dtype)
  return shifted_depthwise(lhs, rhs, tuple(window_strides), pads, out_dtype)
