"""The shifted-slices depthwise convolution equals XLA's grouped convolution, values and gradients."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from leukojax.models import depthwise, layers


def _grouped(x, k, strides, padding):
  return jax.lax.conv_general_dilated(x, k, strides, padding, dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                      feature_group_count=x.shape[-1])


@pytest.mark.parametrize("size, strides, padding", [
    (9, (1, 1), "SAME"), (10, (2, 2), "SAME"), (9, (2, 2), "SAME"), (11, (2, 2), "VALID"),
    (8, (1, 1), ((1, 2), (0, 1))),
])
def test_matches_grouped_convolution_and_its_gradients(size, strides, padding):
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.standard_normal((2, size, size, 5)), jnp.float32)
  k = jnp.asarray(rng.standard_normal((3, 3, 1, 5)), jnp.float32)
  shifted = lambda x, k: depthwise.conv_general_dilated(  # noqa: E731
      x, k, strides, padding, dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=5)
  np.testing.assert_allclose(shifted(x, k), _grouped(x, k, strides, padding), rtol=1e-5, atol=1e-5)
  loss = lambda f: lambda x, k: jnp.sum(jnp.sin(f(x, k)))  # noqa: E731
  got = jax.grad(loss(shifted), argnums=(0, 1))(x, k)
  want = jax.grad(loss(lambda x, k: _grouped(x, k, strides, padding)), argnums=(0, 1))(x, k)
  for g, w in zip(got, want):
    np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-4)


def test_layer_uses_it_and_keeps_keras_parameter_layout(monkeypatch):
  conv = layers.depthwise_conv2d(6, strides=2, rngs=nnx.Rngs(0))
  assert conv.kernel.shape == (3, 3, 1, 6) and conv.feature_group_count == 6
  x = jnp.asarray(np.random.default_rng(1).standard_normal((2, 7, 7, 6)), jnp.float32)
  monkeypatch.setattr(depthwise, "IMPLEMENTATION", "shifted")
  shifted_hlo = jax.jit(lambda x: conv(x)).lower(x).as_text()
  monkeypatch.setattr(depthwise, "IMPLEMENTATION", "xla")
  xla_hlo = jax.jit(lambda x: conv(x)).lower(x).as_text()
  assert "feature_group_count" not in shifted_hlo and "feature_group_count" in xla_hlo


def test_bfloat16_accumulates_in_float32():
  rng = np.random.default_rng(2)
  x = jnp.asarray(rng.standard_normal((1, 6, 6, 4)), jnp.bfloat16)
  k = jnp.asarray(rng.standard_normal((3, 3, 1, 4)), jnp.bfloat16)
  out = depthwise.shifted_depthwise(x, k, (1, 1), [(1, 1), (1, 1)], jnp.bfloat16)
  want = _grouped(x.astype(jnp.float32), k.astype(jnp.float32), (1, 1), "SAME")
  assert out.dtype == jnp.bfloat16
  np.testing.assert_allclose(out.astype(jnp.float32), want, rtol=2e-2, atol=2e-2)
