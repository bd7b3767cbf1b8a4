"""Shared test set-up: CPU-only JAX with a persistent compilation cache, Keras on its JAX backend."""

import os
import pathlib

REPO = pathlib.Path(__file__).resolve().parents[1]

os.environ.setdefault("KERAS_BACKEND", "jax")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", str(REPO / ".cache" / "jax"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")  # every program: ~40 processes share them

from absl import flags  # noqa: E402

# grain worker processes and absl-based entry points read FLAGS; pytest never calls absl.app.run.
flags.FLAGS.mark_as_parsed()


import subprocess  # noqa: E402
import sys  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402

SAMPLE_MANUAL_DIR = REPO / "tfds_builders" / "taleqani_all" / "sample"  # the bundled REAL sample


def run_main(workdir, *overrides: str, config: str, env=None, wait: bool = True):
  """`python -m leukojax.main` in a subprocess, as a user runs it (a running `Popen` if not `wait`)."""
  cmd = [sys.executable, "-m", "leukojax.main", f"--config={config}", f"--workdir={workdir}", *overrides]
  full_env = dict(os.environ, JAX_PLATFORMS="cpu", **(env or {}))
  if not wait:
    return subprocess.Popen(cmd, cwd=REPO, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
  return subprocess.run(cmd, cwd=REPO, env=full_env, capture_output=True, text=True, timeout=900)


@pytest.fixture(scope="session")
def sample_run(tmp_path_factory) -> pathlib.Path:
  """A tiny trained workdir: the MobileNet baseline (64 px, 3 epochs) on the bundled real Taleqani
  sample, benign vs Pro-B, through the real `main` (test AUC about 1: a model that has learnt
  something, so explanations have something to show). Shared by the evaluation and explanation tests."""
  base = tmp_path_factory.mktemp("sample_run")
  result = run_main(base / "work", f"--config.data.manual_dir={SAMPLE_MANUAL_DIR}",
                    f"--config.data.data_dir={base / 'tfds'}", "--config.train.global_batch_size=8",
                    "--config.train.learning_rate=1e-3", config="configs/baselines.py:mobilenet,smoke,res=64,epochs=3")
  assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
  return base / "work"


# For runs a test compares by state or history alone: no final report (~5 s a run; `eval.final_report`).
NO_REPORT = "--config.eval.final_report=False"
CNMC_MOBILENET = "configs/baselines.py:mobilenet,cnmc,smoke"  # 32 px, on the bundled real C-NMC sample
CNMC_RUN = pytest.mark.xdist_group("cnmc_mobilenet")  # the users of `cnmc_mobilenet_run`: built once


def cnmc_mobilenet_flags(data_dir: pathlib.Path) -> list[str]:
  """4 epochs of 9 steps, saved every 6 steps as well as at epoch ends (so mid-epoch too): room for a
  kill after a save, well before the end. Not every 3: each save costs ~1 s of CPU (Orbax's per-array
  cost, 485 arrays; docs/testing.md), 12 saves a run instead of 8."""
  return [f"--config.data.data_dir={data_dir}", "--config.train.epochs=4", "--config.train.checkpoint_every_steps=6"]


@pytest.fixture(scope="session")
def cnmc_mobilenet_run(tmp_path_factory) -> pathlib.Path:
  """A tiny trained C-NMC workdir: MobileNet on the real sample (subject_cv fold 0), never interrupted.

  The reference of the kill tests, the run the resume and checkpoint-retention tests rerun and
  inspect, and the model `leukojax.predict` scores real cells with: one training for all of them.
  """
  base = tmp_path_factory.mktemp("cnmc_mobilenet")
  result = run_main(base / "work", *cnmc_mobilenet_flags(base / "tfds"), config=CNMC_MOBILENET)
  assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
  return base / "work"


def final_state(workdir: pathlib.Path) -> dict[str, np.ndarray]:
  """Every leaf of the latest checkpoint's train state (parameters, BatchNorm statistics, Adam slots, step), on the host."""
  import jax
  import orbax.checkpoint as ocp

  from leukojax.training.checkpoints import Checkpointer

  ckpt = Checkpointer(str(workdir / "checkpoints"), best_metric="accuracy")
  step = ckpt.latest_step()
  # Onto this process's first device, whatever device count or process count saved it.
  device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  target = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device),
                        ckpt.manager.item_metadata(step)["state"])
  restored = ckpt.manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(target)))
  ckpt.close()
  return {jax.tree_util.keystr(p): np.asarray(v) for p, v in
          jax.tree_util.tree_leaves_with_path(restored["state"])}


def backbone_tree(workdir: pathlib.Path, part: str) -> dict[str, np.ndarray]:
  """`part` ('params' or 'model_state') of the backbone in the latest checkpoint, by Keras-import path."""
  flat = {key: value for key, value in final_state(workdir).items()
          if key.startswith(f"['{part}']['backbone']")}
  return {"/".join(k.strip("'") for k in key.strip("[]").split("][")[2:-1]): value for key, value in flat.items()}


# The longest xdist groups start first (each runs whole on one worker), so no worker is left with
# a two-minute group at the end while the other idles: longest-processing-time-first scheduling.
_LONGEST_FIRST = ("hybrid_smoke", "cnmc_mobilenet", "sample_run")


def pytest_collection_modifyitems(items):
  def rank(item) -> int:
    mark = item.get_closest_marker("xdist_group")
    group = (mark.args[0] if mark and mark.args else mark.kwargs.get("name")) if mark else None
    return _LONGEST_FIRST.index(group) if group in _LONGEST_FIRST else len(_LONGEST_FIRST)
  items.sort(key=rank)  # stable: collection order within each rank
