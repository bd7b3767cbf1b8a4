"""The main job end to end: `python -m leukojax.main` on the smoke config, resume, best checkpoint, NaN."""

import json
import pathlib
import signal
import time

import numpy as np
import pytest

from leukojax.training.metric_writer import read_history
from tests.conftest import CNMC_MOBILENET, CNMC_RUN, cnmc_mobilenet_flags, final_state, run_main
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
# The hybrid smoke run's programs compile without XLA's backend optimisations: its train step then
# compiles in 56 s instead of 80 (cold run 172 -> 141 s; docs/testing.md) and its 27 tiny steps run
# as fast. What this run checks (wiring, loop, report, a falling loss) is the program's meaning, not
# XLA's optimiser; every other end-to-end run compiles as users' runs do.
UNOPTIMISED_XLA = {"XLA_FLAGS": "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"}


@pytest.fixture(scope="module")
def smoke_run(cnmc_manual, tmp_path_factory):
  """The hybrid smoke config trained through the real `main`, 3 epochs (in 2 its training loss
  from scratch does not reliably fall yet).

  Metrics flushed at epoch ends only: each epoch's train/loss is then the mean over all its 9
  steps (36 cells), not over the last 4, which is what makes "the loss decreases" a stable check.
  """
  base = tmp_path_factory.mktemp("smoke")
  result = run_main(base / "work", *data_flags(cnmc_manual, base / "tfds"), "--config.train.epochs=3",
                    "--config.train.log_every_steps=1000",
                    config=SMOKE_CONFIG, env=UNOPTIMISED_XLA)
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
  assert report["checkpoint_step"] == min(history, key=lambda h: (h["val/loss"], h["step"]))["step"]
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
  assert all(0 < h["time/validation_s"] < walls[0] for h in history)  # the validation pass's share
  assert list((workdir / "tensorboard").glob("events.out.tfevents.*"))


# The loop's resume and retention behaviour does not depend on the model: the cheap C-NMC MobileNet
# run of tests/conftest.py shows it (4 epochs, mid-epoch saves).

@CNMC_RUN
def test_checkpoints_keep_best_and_latest(cnmc_mobilenet_run):
  from leukojax.training.checkpoints import Checkpointer

  workdir = cnmc_mobilenet_run
  best_metric = json.loads((workdir / "config.json").read_text())["train"]["best_metric"]
  ckpt = Checkpointer(str(workdir / "checkpoints"), best_metric=best_metric)
  history = [json.loads(line) for line in (workdir / "history.jsonl").read_text().splitlines()]
  sign = -1 if ckpt.best_mode == "max" else 1
  best_epoch = min(history, key=lambda h: (sign * h[f"val/{best_metric}"], h["step"]))
  assert ckpt.best_step() == best_epoch["step"]
  assert ckpt.latest_step() == history[-1]["step"] == 36
  assert set(ckpt.manager.all_steps()) == {best_epoch["step"], 36}  # mid-epoch saves are not kept
  report = json.loads((workdir / "report.json").read_text())
  assert report["checkpoint_step"] == best_epoch["step"]
  ckpt.close()


@CNMC_RUN
def test_rerun_on_finished_workdir_resumes_without_training(cnmc_mobilenet_run):
  workdir = cnmc_mobilenet_run
  history = (workdir / "history.jsonl").read_text()
  result = run_main(workdir, *cnmc_mobilenet_flags(workdir.parent / "tfds"), config=CNMC_MOBILENET)
  assert result.returncode == 0, result.stdout[-3000:]
  assert "Resuming from step 36" in result.stdout + result.stderr
  assert (workdir / "history.jsonl").read_text() == history  # nothing retrained


def _interrupt(workdir: pathlib.Path, flags: list[str], how: signal.Signals, after_step: int) -> tuple[int, str]:
  """Starts the run and sends `how` once a checkpoint later than `after_step` is complete on disk."""
  proc = run_main(workdir, *flags, config=CNMC_MOBILENET, wait=False)
  checkpoints = workdir / "checkpoints"
  deadline = time.time() + 600
  while time.time() < deadline and not any(p.name.isdigit() and int(p.name) > after_step
                                           for p in checkpoints.glob("*")):
    time.sleep(0.1)
  proc.send_signal(how)
  out, _ = proc.communicate(timeout=300)
  assert not (workdir / "report.json").exists(), f"the run ended before {how.name}: {out[-2000:]}"
  return proc.returncode, out


def _latest_step(workdir: pathlib.Path) -> int:
  return max(int(p.name) for p in (workdir / "checkpoints").glob("*") if p.name.isdigit())


@CNMC_RUN
def test_preempted_then_killed_run_resumes_bit_identical(cnmc_mobilenet_run, tmp_path):
  """SIGTERM (preemption: save, exit 0), resume; SIGKILL after the next save (mid-epoch, nothing
  written on the way out), resume: the final state equals the uninterrupted run's, bit for bit."""
  flags, workdir = cnmc_mobilenet_flags(tmp_path / "tfds"), tmp_path / "killed"
  code, out = _interrupt(workdir, flags, signal.SIGTERM, after_step=0)
  assert code == 0 and "Stopped for preemption" in out, out[-3000:]
  preempted_at = _latest_step(workdir)
  code, out = _interrupt(workdir, flags, signal.SIGKILL, after_step=preempted_at)
  assert code == -signal.SIGKILL and f"Resuming from step {preempted_at}" in out, out[-3000:]
  resumed = run_main(workdir, *flags, config=CNMC_MOBILENET)
  assert resumed.returncode == 0, resumed.stdout[-3000:]
  resumed_at = [line for line in (resumed.stdout + resumed.stderr).splitlines() if "Resuming" in line]
  assert resumed_at, resumed.stdout[-3000:]
  expected, got = final_state(cnmc_mobilenet_run), final_state(workdir)
  assert expected.keys() == got.keys() and any("opt_state" in k for k in got) and any("model_state" in k for k in got)
  differ = [name for name in expected if not np.array_equal(expected[name], got[name])]
  assert not differ, (f"{len(differ)} of {len(expected)} state leaves differ (first {differ[:3]}); "
                      f"preempted at step {preempted_at}; resumed: {resumed_at}")
  reports = [json.loads((w / "report.json").read_text()) for w in (cnmc_mobilenet_run, workdir)]
  assert reports[0]["splits"] == reports[1]["splits"] and reports[0]["checkpoint_step"] == reports[1]["checkpoint_step"]
  # Every validation of every epoch, as uninterrupted (train/loss of a resumed epoch covers fewer steps).
  # Read as the plots and reports read it: an epoch whose record was written before the kill and
  # retrained after it appears twice in history.jsonl, and its last record counts.
  histories = [[{k: v for k, v in record.items() if k.startswith(("val/", "train/lr_", "epoch", "step"))}
                for record in read_history(str(w))] for w in (cnmc_mobilenet_run, workdir)]
  assert [h["epoch"] for h in histories[1]] == [1, 2, 3, 4] and histories[0] == histories[1]


def test_nan_loss_stops_with_clear_message(cnmc_manual, tmp_path):
  result = run_main(tmp_path / "nan", *data_flags(cnmc_manual, tmp_path / "tfds"),
                    "--config.train.learning_rate=1e30", "--config.train.grad_clip_norm=0",
                    "--config.train.epochs=2", config=CNMC_MOBILENET)
  assert result.returncode == 1
  out = result.stderr + result.stdout
  assert "Non-finite loss" in out and "No checkpoint was saved before it" in out and "step None" not in out
  assert "Traceback" not in out  # a user's mistake: one message, no traceback


def test_batch_not_divisible_by_devices_is_an_error(cnmc_manual, tmp_path):
  result = run_main(tmp_path / "div", *data_flags(cnmc_manual, tmp_path / "tfds"),
                    "--config.train.global_batch_size=3", config=CNMC_MOBILENET,
                    env={"XLA_FLAGS": "--xla_force_host_platform_device_count=2"})
  assert result.returncode != 0
  assert "not divisible by the 2 devices" in result.stderr + result.stdout
