"""The main job end to end: `python -m leukojax.main` on the smoke config, resume, best checkpoint, NaN."""

import json
import pathlib
import signal
import time

import numpy as np
import pytest

from tests.conftest import run_main
from tfds_builders.cnmc2019.cnmc2019_dataset_builder import SAMPLE_MANUAL_DIR


@pytest.fixture(scope="module")
def cnmc_manual() -> pathlib.Path:
  """The bundled REAL C-NMC sample (88 cells of 8 subjects; the smoke configs' subject_cv fold 0)."""
  return SAMPLE_MANUAL_DIR


SMOKE_CONFIG = "configs/hybrid.py:smoke"


def data_flags(manual: pathlib.Path, data_dir: pathlib.Path) -> list[str]:
  return [f"--config.data.manual_dir={manual}", f"--config.data.data_dir={data_dir}"]


# The tests sharing the hybrid run stay on one xdist worker (`--dist loadgroup`), so it trains once.
SMOKE = pytest.mark.xdist_group("hybrid_smoke")
KILL = pytest.mark.xdist_group("mobilenet_kill")


@pytest.fixture(scope="module")
def smoke_run(cnmc_manual, tmp_path_factory):
  """The hybrid smoke config trained through the real `main` (3 epochs)."""
  base = tmp_path_factory.mktemp("smoke")
  result = run_main(base / "work", *data_flags(cnmc_manual, base / "tfds"), "--config.train.epochs=3",
                    config=SMOKE_CONFIG)
  assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
  return base / "work", result


@SMOKE
def test_smoke_trains_end_to_end_and_loss_decreases(smoke_run):
  workdir, result = smoke_run
  history = [json.loads(line) for line in (workdir / "history.jsonl").read_text().splitlines()]
  assert [h["epoch"] for h in history] == [1, 2, 3]
  assert history[-1]["train/loss"] < history[0]["train/loss"]
  report = json.loads((workdir / "report.json").read_text())
  test = report["splits"]["test"]
  assert report["protocol"] == "subject_cv" and report["model"] == "hybrid"
  assert test["n_subjects"] == 4  # fold 0 of the real sample: one healthy and three ALL subjects
  assert test["TP"] + test["TN"] + test["FP"] + test["FN"] == test["n"] > 0
  for key in ("accuracy", "sensitivity", "specificity", "PPV", "NPV", "AUC", "F1", "isbi_weighted_f1",
              "balanced_accuracy", "prevalence", "threshold"):
    assert key in test
  assert "sensitivity" in result.stdout  # the table is printed
  stored = json.loads((workdir / "config.json").read_text())
  assert stored["model"]["name"] == "hybrid"
  assert set(stored["runtime"]) >= {"LEUKOJAX_DEPTHWISE", "depthwise_implementation", "backend", "jax"}
  assert all(h["train/lr_head"] > 0 and "train/lr_backbone" in h for h in history)  # the rates are logged
  walls = [h["time/wall_s"] for h in history]  # the loop's own clock, for benchmarks.goodput
  assert walls == sorted(walls) and walls[0] > 0 and all(h["train/images_per_s"] > 0 for h in history[1:])
  assert list((workdir / "tensorboard").glob("events.out.tfevents.*"))


@SMOKE
def test_checkpoints_keep_best_and_latest(smoke_run):
  from leukojax.training.checkpoints import Checkpointer

  workdir, _ = smoke_run
  ckpt = Checkpointer(str(workdir / "checkpoints"), best_metric="loss")  # the smoke config's metric
  history = [json.loads(line) for line in (workdir / "history.jsonl").read_text().splitlines()]
  best_epoch = min(history, key=lambda h: (h["val/loss"], h["step"]))
  assert ckpt.best_step() == best_epoch["step"]
  assert ckpt.latest_step() == history[-1]["step"]
  assert set(ckpt.manager.all_steps()) == {best_epoch["step"], history[-1]["step"]}
  report = json.loads((workdir / "report.json").read_text())
  assert report["checkpoint_step"] == best_epoch["step"]
  ckpt.close()


@SMOKE
def test_rerun_on_finished_workdir_resumes_without_training(smoke_run, cnmc_manual):
  workdir, _ = smoke_run
  result = run_main(workdir, *data_flags(cnmc_manual, workdir.parent / "tfds"), "--config.train.epochs=3",
                    config=SMOKE_CONFIG)
  assert result.returncode == 0, result.stdout[-3000:]
  assert "Resuming from step" in result.stdout + result.stderr
  history = (workdir / "history.jsonl").read_text().splitlines()
  assert len(history) == 3  # nothing retrained


def _final_params(workdir: pathlib.Path) -> dict[str, np.ndarray]:
  import orbax.checkpoint as ocp

  from leukojax.training.checkpoints import Checkpointer

  ckpt = Checkpointer(str(workdir / "checkpoints"), best_metric="accuracy")
  step = ckpt.latest_step()
  restored = ckpt.manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore()))
  ckpt.close()
  import jax
  return {jax.tree_util.keystr(p): np.asarray(v) for p, v in
          jax.tree_util.tree_leaves_with_path(restored["state"]["params"])}


KILL_CONFIG = "configs/baselines.py:mobilenet,cnmc,smoke"


def kill_flags(cnmc_manual, data_dir) -> list[str]:
  # 36 steps, saved every 3 (mid-epoch too): the kill lands after the first save, well before the end.
  return [*data_flags(cnmc_manual, data_dir), "--config.train.epochs=4", "--config.train.checkpoint_every_steps=3"]


@pytest.fixture(scope="module")
def uninterrupted_run(cnmc_manual, tmp_path_factory) -> pathlib.Path:
  """The reference both kill tests compare with: the same run, never interrupted."""
  base = tmp_path_factory.mktemp("uninterrupted")
  result = run_main(base / "work", *kill_flags(cnmc_manual, base / "tfds"), config=KILL_CONFIG)
  assert result.returncode == 0, result.stdout[-3000:]
  return base / "work"


@KILL
@pytest.mark.parametrize("how", ["sigkill", "sigterm"])
def test_killed_run_resumes_bit_identical(cnmc_manual, uninterrupted_run, tmp_path, how):
  """A run killed mid-training and rerun ends with exactly the parameters of an uninterrupted run."""
  flags = kill_flags(cnmc_manual, tmp_path / "tfds")
  config = KILL_CONFIG
  proc = run_main(tmp_path / "killed", *flags, config=config, wait=False)
  checkpoints = tmp_path / "killed" / "checkpoints"
  deadline = time.time() + 600
  while time.time() < deadline and not any(p.name.isdigit() for p in checkpoints.glob("*")):
    time.sleep(0.2)
  proc.send_signal(signal.SIGKILL if how == "sigkill" else signal.SIGTERM)
  out, _ = proc.communicate(timeout=300)
  assert not (tmp_path / "killed" / "report.json").exists(), "the run ended before it was killed"
  if how == "sigterm":
    assert proc.returncode == 0 and "preemption" in out, out[-3000:]
  resumed = run_main(tmp_path / "killed", *flags, config=config)
  assert resumed.returncode == 0, resumed.stdout[-3000:]
  assert "Resuming from step" in resumed.stdout + resumed.stderr
  expected, got = _final_params(uninterrupted_run), _final_params(tmp_path / "killed")
  assert expected.keys() == got.keys()
  differ = [name for name in expected if not np.array_equal(expected[name], got[name])]
  stopped = [line for line in out.splitlines() if "preemption" in line or "Restored" in line]
  resumed_at = [line for line in (resumed.stdout + resumed.stderr).splitlines() if "Resuming" in line]
  assert not differ, (f"{len(differ)} of {len(expected)} parameters differ (first {differ[:3]}); "
                      f"killed run: {stopped[-2:]}; resumed: {resumed_at}")


def test_nan_loss_stops_with_clear_message(cnmc_manual, tmp_path):
  result = run_main(tmp_path / "nan", *data_flags(cnmc_manual, tmp_path / "tfds"),
                    "--config.train.learning_rate=1e30", "--config.train.grad_clip_norm=0",
                    "--config.train.epochs=2", config=KILL_CONFIG)
  assert result.returncode != 0
  assert "Non-finite loss" in result.stderr + result.stdout
  assert "last good checkpoint" in result.stderr + result.stdout


def test_batch_not_divisible_by_devices_is_an_error(cnmc_manual, tmp_path):
  result = run_main(tmp_path / "div", *data_flags(cnmc_manual, tmp_path / "tfds"),
                    "--config.train.global_batch_size=3", config=KILL_CONFIG,
                    env={"XLA_FLAGS": "--xla_force_host_platform_device_count=2"})
  assert result.returncode != 0
  assert "not divisible by the 2 devices" in result.stderr + result.stdout


def test_run_without_a_test_split_reports_train_and_val(cnmc_manual, tmp_path):
  """`configs/cnmc.py:MODEL,all_subjects` trains on every subject: no test split to evaluate."""
  result = run_main(tmp_path / "all", *data_flags(cnmc_manual, tmp_path / "tfds"),
                    "--config.data.split.protocol=paper_random", "--config.data.split.fractions=(0.85,0.15,0.0)",
                    config="configs/baselines.py:mobilenet,cnmc,smoke")
  assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
  report = json.loads((tmp_path / "all" / "report.json").read_text())
  assert sorted(report["splits"]) == ["train", "val"]
  assert report["splits"]["train"]["n_images"] + report["splits"]["val"]["n_images"] == 87
