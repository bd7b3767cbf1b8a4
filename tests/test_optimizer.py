"""The optimiser: freeze -> fine-tune starts the backbones' Adam fresh; the schedules it logs."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from leukojax.configs.base import base_config
from leukojax.training import optimizer


def _train_config(freeze_epochs: float, **overrides):
  c = base_config().train
  c.freeze_backbone_epochs = freeze_epochs
  c.warmup_epochs = 0.0
  c.learning_rate = 1e-3
  c.grad_clip_norm = 0.0
  for key, value in overrides.items():
    c[key] = value
  return c


def _params():
  return {"backbone": {"w": jnp.ones(4)}, "head": {"w": jnp.ones(3)}}


def _grads(step: int):
  rng = np.random.default_rng(step)
  return {"backbone": {"w": jnp.asarray(rng.normal(size=4), jnp.float32)},
          "head": {"w": jnp.asarray(rng.normal(size=3), jnp.float32)}}


@pytest.mark.parametrize("accum_steps", [1, 2])
def test_first_update_after_the_freeze_is_a_fresh_adams(accum_steps):
  config = _train_config(freeze_epochs=1.0, grad_accum_steps=accum_steps, epochs=3)
  schedule = optimizer.make_schedule(config, steps_per_epoch=4)
  tx = optimizer.make_optimizer(config, schedule)
  params = _params()
  state = tx.init(params)
  for step in range(schedule.freeze_steps):  # frozen: the backbone does not move at all
    updates, state = tx.update(_grads(step), state, params)
    np.testing.assert_array_equal(updates["backbone"]["w"], 0.0)
    params = optax.apply_updates(params, updates)
  assert np.any(np.asarray(params["head"]["w"]) != 1.0)  # the head trained meanwhile
  fresh = optax.adam(optimizer.backbone_after_freeze(config, schedule))
  fresh_state = fresh.init(params["backbone"])
  after = [_grads(100 + i) for i in range(accum_steps)]
  for g in after:
    updates, state = tx.update(g, state, params)
  expected, _ = fresh.update(jax.tree.map(lambda *g: sum(g) / len(g), *[g["backbone"] for g in after]),
                             fresh_state, params["backbone"])
  np.testing.assert_allclose(updates["backbone"]["w"], expected["w"], rtol=1e-5)
  # A fresh Adam's first step is lr * g / |g| per coordinate: about lr. One that kept counting
  # through k frozen updates takes 0.1 / sqrt(0.001 / (1 - 0.999**k)) times that: 2.5x at k = 1000.
  assert np.max(np.abs(updates["backbone"]["w"])) == pytest.approx(config.learning_rate, rel=1e-3)


def test_logged_backbone_rate_is_zero_while_frozen_then_the_fresh_schedule():
  config = _train_config(freeze_epochs=1.0, epochs=3, warmup_epochs=1.0, schedule="cosine")
  schedule = optimizer.make_schedule(config, steps_per_epoch=5)
  head, backbone = optimizer.learning_rates(config, schedule)
  after = optimizer.backbone_after_freeze(config, schedule)
  assert [float(backbone(u)) for u in range(5)] == [0.0] * 5
  np.testing.assert_allclose([float(backbone(5 + u)) for u in range(10)], [float(after(u)) for u in range(10)])
  assert float(head(5)) == pytest.approx(config.learning_rate)  # warmed up after one epoch
