"""The shifted-slices depthwise convolution and its gradients equal XLA's grouped convolution's."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from leukojax.models import depthwise, layers

DN = ("NHWC", "HWIO", "NHWC")


def _grouped(x, k, strides, padding):
  return jax.lax.conv_general_dilated(x, k, strides, padding, dimension_numbers=DN,
                                      feature_group_count=x.shape[-1])


@pytest.mark.parametrize("impl", ["shifted_grads", "shifted"])
@pytest.mark.parametrize("size, strides, padding", [
    (9, (1, 1), "SAME"), (10, (2, 2), "SAME"), (9, (2, 2), "SAME"), (11, (2, 2), "VALID"),
    (8, (1, 1), ((1, 2), (0, 1))),
])
def test_values_and_gradients_match_grouped_convolution(monkeypatch, impl, size, strides, padding):
  monkeypatch.setattr(depthwise, "IMPLEMENTATION", impl)
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.standard_normal((2, size, size, 5)), jnp.float32)
  k = jnp.asarray(rng.standard_normal((3, 3, 1, 5)), jnp.float32)
  ours = lambda x, k: depthwise.conv_general_dilated(x, k, strides, padding, dimension_numbers=DN,  # noqa: E731
                                                     feature_group_count=5)
  np.testing.assert_allclose(ours(x, k), _grouped(x, k, strides, padding), rtol=1e-5, atol=1e-5)
  loss = lambda f: lambda x, k: jnp.sum(jnp.sin(f(x, k)))  # noqa: E731
  got = jax.grad(loss(ours), argnums=(0, 1))(x, k)
  want = jax.grad(loss(lambda x, k: _grouped(x, k, strides, padding)), argnums=(0, 1))(x, k)
  for g, w in zip(got, want):
    np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-4)


def test_layer_gradients_are_not_convolutions(monkeypatch):
  """XLA differentiates a strided grouped conv into a slow base-dilated one; ours keeps only the forward."""
  conv = layers.depthwise_conv2d(6, strides=2, rngs=nnx.Rngs(0))
  assert conv.kernel.shape == (3, 3, 1, 6) and conv.feature_group_count == 6  # the Keras layout
  x = jnp.asarray(np.random.default_rng(1).standard_normal((2, 7, 7, 6)), jnp.float32)
  convolutions = lambda: jax.jit(jax.grad(lambda x: jnp.sum(conv(x) ** 2))).lower(x).as_text().count(  # noqa: E731
      "stablehlo.convolution")
  monkeypatch.setattr(depthwise, "IMPLEMENTATION", "shifted_grads")
  assert convolutions() == 1
  monkeypatch.setattr(depthwise, "IMPLEMENTATION", "xla")
  assert convolutions() == 2


def test_auto_is_shifted_on_cpu(monkeypatch):
  monkeypatch.setattr(depthwise, "IMPLEMENTATION", "auto")
  assert depthwise.implementation() == ("shifted" if jax.default_backend() == "cpu" else "xla")


def test_bfloat16_accumulates_in_float32():
  rng = np.random.default_rng(2)
  x = jnp.asarray(rng.standard_normal((1, 6, 6, 4)), jnp.bfloat16)
  k = jnp.asarray(rng.standard_normal((3, 3, 1, 4)), jnp.bfloat16)
  out = depthwise.shifted_depthwise(x, k, (1, 1), ((1, 1), (1, 1)), jnp.bfloat16)
  want = _grouped(x.astype(jnp.float32), k.astype(jnp.float32), (1, 1), "SAME")
  assert out.dtype == jnp.bfloat16
  np.testing.assert_allclose(out.astype(jnp.float32), want, rtol=2e-2, atol=2e-2)
