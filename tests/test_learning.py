"""Tests that fail when the model stops learning, and the parts of learning that had none.

The threshold on the trained Taleqani fixture comes from `experiments/learning_margin.sh` (per-seed
figures in docs/testing.md): the lowest test AUC over five seeds minus a margin, far above what a
model with a constant output (AUC 0.5, the failure docs/training.md describes) or one that never
trained can reach. The C-NMC fixture gets no such threshold: 38 training cells of 4 subjects at
32 px give test AUCs from 0.31 to 0.73 over seeds (docs/testing.md), so no bound would be honest.
The unit tests drive `steps.train_step` on a toy model with the project's own optimiser, so
accumulation, the class-weighted loss, the BatchNorm start and the schedule are checked on the
code the train loop compiles.
"""

from __future__ import annotations

import json
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from leukojax.configs.base import base_config
from leukojax.models import outputs
from leukojax.training import optimizer, steps
from leukojax.training.state import TrainState
from tests.conftest import CNMC_MOBILENET, CNMC_RUN, NO_REPORT, backbone_tree, run_main

# Lowest test AUC over seeds 0-4 (0.903, docs/testing.md) minus a margin; a constant output scores 0.5.
TALEQANI_MIN_TEST_AUC = 0.80


def _test_auc(workdir: pathlib.Path) -> float:
  return json.loads((workdir / "report.json").read_text())["splits"]["test"]["AUC"]


@pytest.mark.xdist_group("sample_run")
def test_taleqani_sample_run_learns_beyond_a_broken_model(sample_run):
  """MobileNet 64 px, 3 epochs on the real Taleqani sample, scored on its held-out test images."""
  assert _test_auc(sample_run) >= TALEQANI_MIN_TEST_AUC


class _Toy(nnx.Module):
  """A 'backbone' and a 'head', as the project's classifiers name them (for the optimiser's labels)."""
  backbone_name = "toy"

  def __init__(self, *, batch_norm: bool, num_outputs: int = 1, seed: int = 0):
    rngs = nnx.Rngs(seed)
    self.backbone = nnx.Linear(6, 5, rngs=rngs)
    self.norm = nnx.BatchNorm(5, momentum=0.9, rngs=rngs) if batch_norm else None
    self.head = nnx.Linear(5, num_outputs, rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    h = self.backbone(x)
    if self.norm is not None:
      h = self.norm(h)
    return self.head(nnx.relu(h))


def _train_config(**overrides):
  config = base_config().train
  config.update(epochs=2, warmup_epochs=0.0, freeze_backbone_epochs=0.0, grad_clip_norm=0.0,
                learning_rate=1e-2, grad_accum_steps=1, optimizer="adam")
  config.update(overrides)
  return config


def _setup(model: nnx.Module, train_config, steps_per_epoch: int = 4):
  model.train()
  graphdef, params, model_state = nnx.split(model, nnx.Param, ...)
  tx = optimizer.make_optimizer(train_config, optimizer.make_schedule(train_config, steps_per_epoch))
  state = TrainState(params=params, model_state=model_state, opt_state=tx.init(params), step=jnp.zeros((), jnp.int32))
  return graphdef, tx, state


def _batch(n: int, seed: int, num_classes: int = 2) -> dict[str, jax.Array]:
  rng = np.random.default_rng(seed)
  return {"image": jnp.asarray(rng.normal(size=(n, 6)), jnp.float32),
          "label": jnp.asarray(rng.integers(0, num_classes, size=n), jnp.int32)}


def _step(state, batch, graphdef, tx, class_weights=None):
  weights = jnp.ones(2) if class_weights is None else jnp.asarray(class_weights, jnp.float32)
  return jax.jit(lambda s, b: steps.train_step(s, b, graphdef=graphdef, tx=tx, class_weights=weights,
                                               frozen=False))(state, batch)


def _assert_trees_close(a, b, **tolerance):
  jax.tree.map(lambda x, y: np.testing.assert_allclose(np.asarray(x), np.asarray(y), **tolerance), a, b)


def test_two_accumulated_half_batches_are_one_full_batch_step():
  batch = _batch(8, seed=1)
  halves = [jax.tree.map(lambda x: x[:4], batch), jax.tree.map(lambda x: x[4:], batch)]
  graphdef, tx_full, full = _setup(_Toy(batch_norm=False), _train_config())
  full, _ = _step(full, batch, graphdef, tx_full)

  graphdef, tx_accum, accum = _setup(_Toy(batch_norm=False), _train_config(grad_accum_steps=2))
  start = accum.params
  accum, _ = _step(accum, halves[0], graphdef, tx_accum)
  _assert_trees_close(accum.params, start, rtol=0, atol=0)  # the first micro-batch only accumulates
  accum, _ = _step(accum, halves[1], graphdef, tx_accum)
  _assert_trees_close(accum.params, full.params, rtol=1e-6, atol=1e-7)
  changed = jax.tree.map(lambda x, y: bool(np.any(np.asarray(x) != np.asarray(y))), accum.params, start)
  assert all(jax.tree.leaves(changed)), "an accumulated update left some parameter untouched"


def test_the_loss_weighs_each_example_by_its_class():
  model = _Toy(batch_norm=False)
  graphdef, tx, state = _setup(model, _train_config())
  batch = _batch(8, seed=2)
  class_weights = np.array([0.25, 3.0], np.float32)
  _, metrics = _step(state, batch, graphdef, tx, class_weights)
  per_example = outputs.per_example_loss(model(batch["image"]), batch["label"])
  expected = np.mean(np.asarray(per_example) * class_weights[np.asarray(batch["label"])])
  assert float(metrics["loss"]) == pytest.approx(float(expected), rel=1e-6)
  _, unweighted = _step(state, batch, graphdef, tx)
  assert float(unweighted["loss"]) == pytest.approx(float(np.mean(per_example)), rel=1e-6)
  assert float(metrics["loss"]) != pytest.approx(float(unweighted["loss"]), rel=1e-3)


def test_batch_norm_moving_statistics_start_from_the_first_batch():
  model = _Toy(batch_norm=True)
  graphdef, _, state = _setup(model, _train_config())
  batch = _batch(16, seed=3)
  batch["image"] = batch["image"] * 3.0 + 2.0  # far from the initial moving mean 0 and variance 1
  model_state = steps.batch_norm_stats_from_batch(state, batch, graphdef=graphdef)
  features = np.asarray(model.backbone(batch["image"]))
  norm = model_state["norm"]
  assert np.min(np.abs(features.var(axis=0) - 1.0)) > 0.5 and np.max(np.abs(features.mean(axis=0))) > 0.5
  np.testing.assert_allclose(np.asarray(norm["mean"].value), features.mean(axis=0), rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(np.asarray(norm["var"].value), features.var(axis=0), rtol=1e-4, atol=1e-8)
  assert float(state.model_state["norm"]["var"].value[0]) == 1.0  # the state passed in is not mutated


def test_schedule_warms_up_to_the_peak_then_decays_to_zero():
  config = _train_config(epochs=10, warmup_epochs=2.0, schedule="cosine", learning_rate=1e-3)
  schedule = optimizer.make_schedule(config, steps_per_epoch=10)
  head, backbone = optimizer.learning_rates(config, schedule)
  rates = np.array([float(head(u)) for u in range(schedule.total_steps + 1)])
  assert rates[0] == 0.0
  assert np.all(np.diff(rates[:21]) > 0), "warmup is not increasing"
  assert rates[20] == pytest.approx(1e-3)
  assert np.all(np.diff(rates[20:]) <= 0), "the cosine part is not decreasing"
  assert rates[60] == pytest.approx(0.5e-3 * (1 + np.cos(np.pi * 40 / 80)), rel=1e-5)
  assert rates[-1] == pytest.approx(0.0, abs=1e-9)
  assert float(backbone(20)) == pytest.approx(1e-3 * config.backbone_lr_ratio)


def test_accumulation_counts_the_schedule_in_optimizer_updates():
  config = _train_config(epochs=4, warmup_epochs=1.0, schedule="cosine", grad_accum_steps=2)
  schedule = optimizer.make_schedule(config, steps_per_epoch=8)
  head, _ = optimizer.learning_rates(config, schedule)
  assert float(head(4)) == pytest.approx(config.learning_rate)  # 8 steps of warmup are 4 updates
  assert float(head(16)) == pytest.approx(0.0, abs=1e-9)  # 32 steps are 16 updates


def test_a_toy_model_trained_by_the_step_fits_a_separable_problem():
  """The step learns at all: loss falls and accuracy rises on a linearly separable problem."""
  rng = np.random.default_rng(4)
  x = rng.normal(size=(64, 6)).astype(np.float32)
  batch = {"image": jnp.asarray(x), "label": jnp.asarray((x[:, 0] + x[:, 1] > 0).astype(np.int32))}
  graphdef, tx, state = _setup(_Toy(batch_norm=True), _train_config(learning_rate=3e-2, epochs=50), 1)
  step = jax.jit(lambda s, b: steps.train_step(s, b, graphdef=graphdef, tx=tx, class_weights=jnp.ones(2),
                                               frozen=False))
  state, first = step(state, batch)
  for _ in range(49):
    state, last = step(state, batch)
  assert float(last["loss"]) < 0.5 * float(first["loss"])
  assert float(last["accuracy"]) >= 0.95


@CNMC_RUN
def test_pretrained_backbone_is_loaded_frozen_then_fine_tuned(cnmc_mobilenet_run, tmp_path):
  """ImageNet weights enabled end to end, from a MobileNet file in the official layout: after the
  frozen epoch the backbone (weights and BatchNorm statistics, in inference mode) is exactly the
  file's while the head trained; one more epoch, resumed, fine-tunes the backbone as well."""
  import keras

  from leukojax.models import keras_weights
  from tests.test_backbones import build_keras, save_legacy_h5, zeros_backbone

  model = build_keras("mobilenet", 32, seed=5)
  weights = save_legacy_h5(keras.Model(model.inputs, model.get_layer("conv_pw_13_relu").output),
                           tmp_path / "mobilenet_notop.h5")
  expected = zeros_backbone("mobilenet")
  keras_weights.load_keras_weights(expected, weights)
  expected = {keras_weights.path_str(p): np.asarray(v.get_value())
              for p, v in keras_weights.weight_variables(expected).items()}

  workdir = tmp_path / "pretrained"
  flags = [f"--config.data.data_dir={cnmc_mobilenet_run.parent / 'tfds'}", "--config.model.pretrained.enabled=True",
           f"--config.model.pretrained.paths.mobilenet={weights}", "--config.train.freeze_backbone_epochs=1",
           NO_REPORT]
  frozen = run_main(workdir, *flags, "--config.train.epochs=1", config=CNMC_MOBILENET)
  assert frozen.returncode == 0, frozen.stdout[-3000:] + frozen.stderr[-3000:]
  assert "from scratch" not in frozen.stderr + frozen.stdout
  loaded = {**backbone_tree(workdir, "params"), **backbone_tree(workdir, "model_state")}
  assert loaded.keys() == expected.keys()
  differ = [k for k in expected if not np.array_equal(loaded[k], expected[k])]
  assert not differ, f"{len(differ)} backbone leaves are not the file's after the frozen epoch: {differ[:3]}"

  tuned = run_main(workdir, *flags, "--config.train.epochs=2", "--allow_config_change=train.epochs",
                   config=CNMC_MOBILENET)
  assert tuned.returncode == 0, tuned.stdout[-3000:] + tuned.stderr[-3000:]
  after = backbone_tree(workdir, "params")
  assert sum(not np.array_equal(after[k], expected[k]) for k in after) > 0.9 * len(after)
  history = [json.loads(line) for line in (workdir / "history.jsonl").read_text().splitlines()]
  assert [h["epoch"] for h in history] == [1, 2]
  assert history[0]["train/lr_backbone"] == 0.0 < history[1]["train/lr_backbone"]
