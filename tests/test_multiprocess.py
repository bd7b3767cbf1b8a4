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
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from tests.conftest import CNMC_MOBILENET, REPO, final_state, run_main

TWO_DEVICES = {"XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
HEARTBEAT_S = 20  # a peer that dies silently stops the others after this long


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _launch_two(workdir: pathlib.Path, flags: list[str], logs: pathlib.Path) -> list[subprocess.Popen]:
  """Processes 0 and 1 of one run, as `launch/local.sh 2` starts them, each with its own log."""
  port, procs = _free_port(), []
  env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_force_host_platform_device_count=1")
  for i in range(2):
    cmd = [sys.executable, "-m", "leukojax.main", f"--config={CNMC_MOBILENET}", f"--workdir={workdir}", *flags,
           f"--coordinator_address=127.0.0.1:{port}", "--num_processes=2", f"--process_id={i}",
           f"--heartbeat_timeout_s={HEARTBEAT_S}"]
    procs.append(subprocess.Popen(cmd, cwd=REPO, env=env, stdout=open(logs / f"process{i}.log", "w"),
                                  stderr=subprocess.STDOUT))
  return procs


def _steps(workdir: pathlib.Path) -> list[int]:
  folder = workdir / "checkpoints"
  return sorted(int(p.name) for p in folder.glob("*") if p.name.isdigit()) if folder.exists() else []


def _wait_for_checkpoint_after(workdir: pathlib.Path, step: int, procs: list[subprocess.Popen]) -> None:
  deadline = time.time() + 600
  while not any(s > step and (workdir / "checkpoints" / str(s) / "data" / "process_1-of-2.json").exists()
                for s in _steps(workdir)):
    assert time.time() < deadline and all(p.poll() is None for p in procs), "no checkpoint came"
    time.sleep(0.1)


def _log(logs: pathlib.Path, i: int) -> str:
  return (logs / f"process{i}.log").read_text()


@pytest.mark.xdist_group("multiprocess")
def test_two_processes_preempt_lose_a_peer_and_resume_on_another_process_count(tmp_path):
  flags = [f"--config.data.data_dir={tmp_path / 'tfds'}", "--config.train.epochs=2",
           "--config.train.checkpoint_every_steps=3"]
  reference = run_main(tmp_path / "reference", *flags, config=CNMC_MOBILENET, env=TWO_DEVICES)
  assert reference.returncode == 0, reference.stdout[-3000:] + reference.stderr[-3000:]
  workdir = tmp_path / "work"

  # SIGTERM to process 1 alone: both agree at the next log step, both save, both exit 0.
  logs = tmp_path / "preempted"
  logs.mkdir()
  procs = _launch_two(workdir, flags, logs)
  _wait_for_checkpoint_after(workdir, 0, procs)
  procs[1].send_signal(signal.SIGTERM)
  codes = [p.wait(timeout=300) for p in procs]
  assert codes == [0, 0], _log(logs, 0)[-3000:] + _log(logs, 1)[-3000:]
  assert all("Stopped for preemption" in _log(logs, i) for i in range(2))
  preempted_at = _steps(workdir)[-1]
  assert preempted_at < 18 and not (workdir / "report.json").exists()
  data = workdir / "checkpoints" / str(preempted_at) / "data"
  assert sorted(p.name for p in data.glob("*.json")) == ["process_0-of-2.json", "process_1-of-2.json"]

  # Resumed by both; SIGKILL of process 1 after its next save: process 0 says so and exits at once.
  logs = tmp_path / "killed"
  logs.mkdir()
  procs = _launch_two(workdir, flags, logs)
  _wait_for_checkpoint_after(workdir, preempted_at, procs)
  procs[1].kill()
  killed_at = time.time()
  try:
    code = procs[0].wait(timeout=HEARTBEAT_S + 60)
  except subprocess.TimeoutExpired:
    procs[0].kill()
    pytest.fail(f"process 0 still ran {HEARTBEAT_S + 60} s after its peer was killed: {_log(logs, 0)[-2000:]}")
  survivor = _log(logs, 0)
  assert code == 1 and "process 0 of 2 lost another process of this run" in survivor, survivor[-3000:]
  assert "rerun the same launch command" in survivor and "Traceback" not in survivor
  assert f"Resuming from step {preempted_at}" in survivor
  print(f"survivor exited {time.time() - killed_at:.1f} s after its peer was killed")

  # Resumed on one process with two devices: the uninterrupted run's state, bit for bit.
  resumed = run_main(workdir, *flags, config=CNMC_MOBILENET, env=TWO_DEVICES)
  out = resumed.stdout + resumed.stderr
  assert resumed.returncode == 0, out[-3000:]
  assert "saved by 2 process(es); resuming it on 1 process(es)" in out, out[-3000:]
  expected, got = final_state(tmp_path / "reference"), final_state(workdir)
  assert expected.keys() == got.keys() and int(got["['step']"]) == 18
  differ = [k for k in expected if not np.array_equal(expected[k], got[k])]
  assert not differ, f"{len(differ)} of {len(expected)} state leaves differ from the uninterrupted run: {differ[:3]}"

  # And on another device count: one epoch more on a single device, from the 2-device checkpoint.
  more = run_main(workdir, flags[0], "--config.train.epochs=3", "--config.train.checkpoint_every_steps=3",
                  "--allow_config_change=train.epochs", config=CNMC_MOBILENET)
  out = more.stdout + more.stderr
  assert more.returncode == 0 and "Resuming from step 18" in out, out[-3000:]
  assert int(final_state(workdir)["['step']"]) == 27
