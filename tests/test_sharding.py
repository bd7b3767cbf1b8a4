"""One train step is the same on 1 device and on 8 fake CPU devices (data and fsdp axes).

Processes: tests/test_multiprocess.py trains the whole loop on 2 processes of one device each and
gets the 1-process, 2-device run bit for bit; with this file, multi-process equals one device.
"""

import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from tests.conftest import REPO


def _run(out: pathlib.Path, meshes: str, *, devices: int) -> dict[str, dict]:
  """tests/one_step.py on `devices` fake CPU devices: {'DEVICES:FSDP': its result}."""
  out.mkdir(parents=True)
  env = dict(os.environ, JAX_PLATFORMS="cpu",
             XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}")
  cmd = [sys.executable, "-m", "tests.one_step", f"--out={out}", f"--meshes={meshes}"]
  result = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
  results = {}
  for path in sorted(out.glob("devices*_fsdp*.npz")):
    with np.load(path) as data:
      results[path.stem.replace("devices", "").replace("_fsdp", ":")] = {k: data[k] for k in data.files}
  return results


@pytest.fixture(scope="module")
def one_process(tmp_path_factory) -> dict[str, dict]:
  """One process, 8 fake devices: the step on a 1-device mesh (the reference), on all 8, and on all
  8 with fsdp=2 (one model build and start-up for the three)."""
  return _run(tmp_path_factory.mktemp("one_process") / "out", "1:1,8:1,8:2", devices=8)


def _assert_same(reference: dict, other: dict) -> None:
  """Same loss and parameters within 1e-5; every parameter's update within 10% (relative L2), and
  all updates together within 1%.

  The absolute bound alone would miss a wrong gradient in a leaf whose update is below 1e-5; the
  relative ones catch it. Measured (docs/training.md, "FSDP gathers parameters"): float32 reduction order alone
  moves the updates of near-zero BatchNorm-scale gradients by up to 1.4% here and 4% with XLA's
  depthwise gradients (`LEUKOJAX_DEPTHWISE=xla`), and all updates together by < 0.2%; the FSDP
  depthwise-gradient bug this test found gave 99.6% on one kernel.
  """
  assert abs(float(reference["loss"]) - float(other["loss"])) < 1e-5
  names = [k for k in reference if k not in ("loss", "devices", "processes")]
  assert names and set(names) == {k for k in other if k not in ("loss", "devices", "processes")}
  values = [k for k in names if not k.startswith("update")]
  worst = max(values, key=lambda k: float(np.max(np.abs(reference[k] - other[k]))))
  assert np.max(np.abs(reference[worst] - other[worst])) < 1e-5, worst
  updates = [k for k in names if k.startswith("update")]
  errors = {k: np.linalg.norm(reference[k] - other[k]) / max(np.linalg.norm(reference[k]), 1e-12)
            for k in updates}
  worst = max(errors, key=errors.get)
  assert errors[worst] < 0.1, (worst, errors[worst])
  stack = lambda tree: np.concatenate([tree[k].ravel() for k in updates])  # noqa: E731
  assert np.linalg.norm(stack(reference) - stack(other)) < 0.01 * np.linalg.norm(stack(reference))


@pytest.mark.parametrize("fsdp", [1, 2])
def test_eight_fake_devices_match_one(one_process, fsdp):
  assert sorted(one_process) == ["1:1", "8:1", "8:2"]
  eight = one_process[f"8:{fsdp}"]
  assert int(eight["devices"]) == 8 and int(one_process["1:1"]["devices"]) == 1
  _assert_same(one_process["1:1"], eight)
