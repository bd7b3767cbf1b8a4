"""The whole train loop across 2 local processes: preemption agreed by both, a killed peer, resuming
on another process count and on another device count.

Two processes with one CPU device each run the program of one process with two devices (the
same global stream, `data.pipeline._train_stream`), so a 1-process, 2-device run that is never
interrupted is the bit-for-bit reference of every interrupted multi-process run.
"""

from __future__ import annotations

import os
import pathlib
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from tests.conftest import CNMC_MOBILENET, NO_REPORT, REPO, final_state, run_main

TWO_DEVICES = {"XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
HEARTBEAT_S = 20  # a peer that dies silently stops the others after this long


def _launch_two(workdir: pathlib.Path, flags: list[str], log: pathlib.Path) -> subprocess.Popen:
  """`launch/local.sh 2`, as a user starts a 2-process run on one machine (one CPU device each)."""
  cmd = ["bash", str(REPO / "launch" / "local.sh"), "2", f"--config={CNMC_MOBILENET}", f"--workdir={workdir}",
         *flags, f"--heartbeat_timeout_s={HEARTBEAT_S}"]
  return subprocess.Popen(cmd, cwd=REPO, env=dict(os.environ, PYTHON=sys.executable), stdout=open(log, "w"),
                          stderr=subprocess.STDOUT)


def _process_pid(workdir: pathlib.Path, process_id: int) -> int:
  """The PID of one process of the run in `workdir` (local.sh pipes each through sed)."""
  wanted = (f"--workdir={workdir}".encode(), f"--process_id={process_id}".encode())
  for proc in pathlib.Path("/proc").glob("[0-9]*"):
    try:
      args = (proc / "cmdline").read_bytes().split(b"\0")
    except OSError:
      continue
    if all(w in args for w in wanted):
      return int(proc.name)
  raise AssertionError(f"process {process_id} of the run in {workdir} is not running")


def _steps(workdir: pathlib.Path) -> list[int]:
  folder = workdir / "checkpoints"
  return sorted(int(p.name) for p in folder.glob("*") if p.name.isdigit()) if folder.exists() else []


def _wait_for_checkpoint_after(workdir: pathlib.Path, step: int, launcher: subprocess.Popen, log: pathlib.Path):
  deadline = time.time() + 600
  while not any(s > step and (workdir / "checkpoints" / str(s) / "data" / "process_1-of-2.json").exists()
                for s in _steps(workdir)):
    assert time.time() < deadline and launcher.poll() is None, f"no checkpoint came: {log.read_text()[-3000:]}"
    time.sleep(0.1)


def _lines(log: pathlib.Path, process_id: int) -> str:
  prefix = f"[process {process_id}] "
  return "\n".join(line[len(prefix):] for line in log.read_text().splitlines() if line.startswith(prefix))


@pytest.mark.xdist_group("multiprocess")
def test_two_processes_preempt_lose_a_peer_and_resume_on_another_process_count(tmp_path):
  flags = [f"--config.data.data_dir={tmp_path / 'tfds'}", "--config.train.epochs=2",
           "--config.train.checkpoint_every_steps=6"]
  reference = run_main(tmp_path / "reference", *flags, NO_REPORT, config=CNMC_MOBILENET, env=TWO_DEVICES)
  assert reference.returncode == 0, reference.stdout[-3000:] + reference.stderr[-3000:]
  assert "no report (eval.final_report=False): `python -m leukojax.evaluate" in reference.stdout + reference.stderr
  assert not (tmp_path / "reference" / "report.json").exists() and (tmp_path / "reference" / "history.jsonl").exists()
  workdir = tmp_path / "work"

  # SIGTERM to process 1 alone: both agree at the next log step, both save, both exit 0.
  log = tmp_path / "preempted.log"
  launcher = _launch_two(workdir, flags, log)
  _wait_for_checkpoint_after(workdir, 0, launcher, log)
  os.kill(_process_pid(workdir, 1), signal.SIGTERM)
  assert launcher.wait(timeout=300) == 0, log.read_text()[-3000:]
  assert all("Stopped for preemption" in _lines(log, i) for i in range(2))
  preempted_at = _steps(workdir)[-1]
  assert preempted_at < 18 and not (workdir / "report.json").exists()
  data = workdir / "checkpoints" / str(preempted_at) / "data"
  assert sorted(p.name for p in data.glob("*.json")) == ["process_0-of-2.json", "process_1-of-2.json"]

  # Resumed by both; SIGKILL of process 1 after its next save: process 0 says so and exits at once.
  log = tmp_path / "killed.log"
  launcher = _launch_two(workdir, flags, log)
  _wait_for_checkpoint_after(workdir, preempted_at, launcher, log)
  os.kill(_process_pid(workdir, 1), signal.SIGKILL)
  killed_at = time.time()
  try:
    code = launcher.wait(timeout=HEARTBEAT_S + 60)
  except subprocess.TimeoutExpired:
    launcher.kill()
    pytest.fail(f"process 0 still ran {HEARTBEAT_S + 60} s after its peer was killed: {log.read_text()[-2000:]}")
  survivor = _lines(log, 0)
  assert code != 0 and "process 0 of 2 lost another process of this run" in survivor, survivor[-3000:]
  assert "rerun the same launch command" in survivor and "Traceback" not in survivor
  assert f"Resuming from step {preempted_at}" in survivor
  print(f"survivor exited {time.time() - killed_at:.1f} s after its peer was killed")

  # Resumed on one process with two devices: the uninterrupted run's state, bit for bit.
  resumed = run_main(workdir, *flags, NO_REPORT, config=CNMC_MOBILENET, env=TWO_DEVICES)
  out = resumed.stdout + resumed.stderr
  assert resumed.returncode == 0, out[-3000:]
  assert "saved by 2 process(es); resuming it on 1 process(es)" in out, out[-3000:]
  expected, got = final_state(tmp_path / "reference"), final_state(workdir)
  assert expected.keys() == got.keys() and int(got["['step']"]) == 18
  differ = [k for k in expected if not np.array_equal(expected[k], got[k])]
  assert not differ, f"{len(differ)} of {len(expected)} state leaves differ from the uninterrupted run: {differ[:3]}"

  # And on another device count: one epoch more on a single device, from the 2-device checkpoint.
  more = run_main(workdir, flags[0], "--config.train.epochs=3", "--config.train.checkpoint_every_steps=6",
                  NO_REPORT, "--allow_config_change=train.epochs", config=CNMC_MOBILENET)
  out = more.stdout + more.stderr
  assert more.returncode == 0 and "Resuming from step 18" in out, out[-3000:]
  assert int(final_state(workdir)["['step']"]) == 27
