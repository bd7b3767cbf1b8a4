"""The package as users install it: a wheel in a fresh venv, run from outside the checkout.

Built with the project's own uv and installed, without network and without relying on what uv's
cache happens to hold, into a fresh venv that sees the locked stack of `.venv` through a `.pth`
file; every dependency the wheel declares must be met by that stack (requirements.lock). Then the
smoke config trains from the config file inside the installed package, and the console scripts
answer.
"""

import json
import os
import pathlib
import subprocess
import sys
import sysconfig

import pytest

from tests.conftest import REPO

UV = pathlib.Path(sys.executable).parent / "uv"
# Run inside the new venv: every requirement of the installed wheel, checked against what is importable.
CHECK_DEPENDENCIES = """
import importlib.metadata as md
from packaging.requirements import Requirement
for line in md.requires("leukojax") or []:
  req = Requirement(line)
  if req.marker is not None and not req.marker.evaluate({"extra": ""}):
    continue
  try:
    version = md.version(req.name)
  except md.PackageNotFoundError:
    print(f"{req} (missing)")
    continue
  if not req.specifier.contains(version, prereleases=True):
    print(f"{req} (have {version})")
"""


def _run(*cmd, cwd, env=None, timeout=600) -> subprocess.CompletedProcess:
  result = subprocess.run([str(c) for c in cmd], cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})
  assert result.returncode == 0, f"{cmd} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
  return result


@pytest.mark.skipif(not UV.exists(), reason="needs the uv that `make setup` installs into the venv")
def test_installed_wheel_trains_without_a_test_split_from_another_directory(tmp_path):
  """Also the all-subjects protocol (`configs/cnmc.py:MODEL,all_subjects`): no test split to evaluate."""
  dist, venv, elsewhere = tmp_path / "dist", tmp_path / "venv", tmp_path / "elsewhere"
  elsewhere.mkdir()
  _run(UV, "build", "--wheel", "--offline", "--out-dir", dist, REPO, cwd=tmp_path)
  (wheel,) = dist.glob("leukojax-*.whl")
  _run(UV, "venv", "--offline", "--python", sys.executable, venv, cwd=tmp_path)
  python = venv / "bin" / "python"
  site = _run(python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))", cwd=tmp_path).stdout.strip()
  locked = sysconfig.get_path("purelib")  # the project's .venv: the locked stack, not the checkout
  pathlib.Path(site, "locked_stack.pth").write_text(locked + "\n")
  _run(UV, "pip", "install", "--offline", "--no-deps", "--python", python, wheel, cwd=tmp_path)
  unmet = _run(python, "-c", CHECK_DEPENDENCIES, cwd=elsewhere).stdout.strip()
  assert not unmet, f"the wheel's dependencies the locked stack does not meet: {unmet}"
  where = _run(python, "-c", "import leukojax, leukojax.configs as c; print(leukojax.__file__); print(c.DIR)",
               cwd=elsewhere).stdout.split()
  assert all(not p.startswith(str(REPO)) for p in where), where  # the installed copy, not the checkout
  config = pathlib.Path(where[1]) / "baselines.py"
  _run(python, "-m", "leukojax.main", f"--config={config}:mobilenet,cnmc,smoke", "--workdir=run",
       "--config.train.epochs=1", "--config.data.data_dir=tfds", "--config.data.split.protocol=paper_random",
       "--config.data.split.fractions=(0.85,0.15,0.0)", cwd=elsewhere, env={"JAX_PLATFORMS": "cpu"})
  report = json.loads((elsewhere / "run" / "report.json").read_text())
  assert report["dataset"] == "cnmc2019" and sorted(report["splits"]) == ["train", "val"]
  assert report["splits"]["train"]["n_images"] + report["splits"]["val"]["n_images"] == 87
  for script in ("leukojax-train", "leukojax-evaluate", "leukojax-predict", "leukojax-explain"):
    # absl prints the flags of --helpfull and exits 1 by design.
    result = subprocess.run([venv / "bin" / script, "--helpfull"], cwd=elsewhere, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 1 and "--workdir" in result.stdout, (script, result.stderr[-2000:])
