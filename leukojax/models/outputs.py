"""What a classifier's outputs mean, written once: one sigmoid unit for two classes, softmax otherwise.

The train step, the evaluation step, test-time augmentation, Grad-CAM, LIME, the metrics and the
report all read the model's output through these functions, so the loss, the probabilities and the
decision rule cannot drift apart. Every function takes numpy or JAX arrays (`xp` is the namespace
for the ones that compute), so the host side (metrics) and the device side (steps) share them.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

DEFAULT_THRESHOLD = 0.5  # the papers' operating point: P(positive) >= 0.5 is the positive class
_EPS = 1e-7


def num_outputs(num_classes: int) -> int:
  """One sigmoid unit for two classes (as the hybrid paper), one logit per class otherwise."""
  return 1 if num_classes == 2 else num_classes


def is_binary(outputs: Any) -> bool:
  """True for one sigmoid unit's logits `[B, 1]` or its probabilities `[B]` / `[B, 1]`."""
  shape = np.shape(outputs)
  return len(shape) == 1 or shape[-1] == 1


def probabilities(logits: jax.Array) -> jax.Array:
  """P(positive) `[B]` for one output, the softmax `[B, K]` otherwise (float32)."""
  logits = logits.astype(jnp.float32)
  if is_binary(logits):
    return jax.nn.sigmoid(logits[:, 0])
  return jax.nn.softmax(logits, axis=-1)


def class_probabilities(probs: Any, xp=jnp) -> Any:
  """`[B, K]` per-class probabilities; P(positive) `[B]` becomes `[1 - p, p]` (for LIME)."""
  if is_binary(probs):
    p = xp.reshape(probs, (-1,))
    return xp.stack([1.0 - p, p], axis=-1)
  return probs


def decide(probs: Any, threshold: float = DEFAULT_THRESHOLD, xp=jnp) -> Any:
  """The predicted class: `P(positive) >= threshold` for one output, the arg-max otherwise."""
  if is_binary(probs):
    return (xp.reshape(probs, (-1,)) >= threshold).astype(xp.int32)
  return xp.argmax(probs, axis=-1).astype(xp.int32)


def decide_class_probabilities(class_probs: Any, threshold: float = DEFAULT_THRESHOLD, xp=jnp) -> Any:
  """`decide` on the `[B, K]` per-class probabilities of `class_probabilities` (two classes are
  one sigmoid unit: the positive column against `threshold`)."""
  if class_probs.shape[-1] == 2:
    return decide(class_probs[..., 1], threshold, xp)
  return decide(class_probs, threshold, xp)


def per_example_loss(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """Sigmoid binary cross-entropy for one output, softmax cross-entropy otherwise; `[B]`."""
  logits = logits.astype(jnp.float32)
  if is_binary(logits):
    return optax.sigmoid_binary_cross_entropy(logits[:, 0], labels.astype(jnp.float32))
  return optax.softmax_cross_entropy_with_integer_labels(logits, labels)


def logits_of(probs: jax.Array) -> jax.Array:
  """Logits whose `probabilities` are `probs` (clipped away from 0 and 1): the loss of averaged
  probabilities (test-time augmentation) is `per_example_loss(logits_of(p), labels)`."""
  p = jnp.clip(probs.astype(jnp.float32), _EPS, 1.0 - _EPS)
  if p.ndim == 1:
    return (jnp.log(p) - jnp.log1p(-p))[:, None]
  return jnp.log(p)  # softmax(log p) = p when p sums to 1
