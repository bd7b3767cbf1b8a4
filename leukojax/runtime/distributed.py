"""Multi-host start-up: `jax.distributed.initialize()` once, before anything touches a device."""

from __future__ import annotations

import os
import sys

import jax
from absl import logging

# Environments whose launchers jax.distributed.initialize() detects on its own.
_AUTO_DETECTED = ("SLURM_JOB_ID", "TPU_WORKER_HOSTNAMES", "OMPI_COMM_WORLD_SIZE", "JAX_COORDINATOR_ADDRESS")


def initialize(coordinator_address: str | None = None, num_processes: int | None = None,
               process_id: int | None = None, heartbeat_timeout_s: int | None = None) -> None:
  """Explicit coordinator flags win; else SLURM/TPU/MPI/env auto-detection; else one process.

  `heartbeat_timeout_s` bounds how long a process outlives a peer that died silently (its machine
  gone, no connection reset): the coordination service then stops every process (JAX's default 100).
  """
  timeout = {} if heartbeat_timeout_s is None else {"heartbeat_timeout_seconds": heartbeat_timeout_s}
  if coordinator_address:
    jax.distributed.initialize(coordinator_address=coordinator_address, num_processes=num_processes,
                               process_id=process_id, **timeout)
  elif _multi_process_environment():
    jax.distributed.initialize(**timeout)
  else:
    return
  logging.info("Process %d of %d; %d local / %d global devices.", jax.process_index(),
               jax.process_count(), jax.local_device_count(), jax.device_count())


def _multi_process_environment() -> bool:
  if int(os.environ.get("SLURM_NTASKS", "1")) > 1:
    return True
  return any(os.environ.get(name) for name in _AUTO_DETECTED if name != "SLURM_JOB_ID")


def enable_compilation_cache(default_dir: str = "~/.cache/leukojax/xla") -> None:
  """The persistent XLA cache: a rerun (or resume) skips recompiling the large backbones."""
  if not os.environ.get("JAX_COMPILATION_CACHE_DIR"):
    jax.config.update("jax_compilation_cache_dir", os.path.expanduser(default_dir))
  if not os.environ.get("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"):  # the tests cache everything
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)


# What a collective or the coordination service reports when another process of the run is gone.
_PEER_FAILURE_MARKERS = ("gloo", "connection reset", "connection closed", "connection refused", "heartbeat",
                         "unavailable:", "deadline_exceeded", "barrier failed", "socket closed", "nccl")


def is_peer_failure(error: BaseException) -> bool:
  """Whether `error` is a multi-process run losing one of its processes (not a bug of this one)."""
  if "jax" not in sys.modules or not isinstance(error, jax.errors.JaxRuntimeError):
    return False
  try:
    if jax.process_count() == 1:
      return False
  except RuntimeError:  # the backend itself is gone
    pass
  text = str(error).lower()
  return any(marker in text for marker in _PEER_FAILURE_MARKERS)


def exit_after_peer_failure(command: str, error: BaseException) -> None:
  """Says which process lost its peers and how to resume, then exits 1 at once.

  At once (`os._exit`): a normal exit runs JAX's shutdown barrier, which waits for the dead peer
  until the heartbeat timeout and then aborts with a C++ stack trace, burying this message.
  """
  first_line = next((line for line in str(error).splitlines() if line.strip()), type(error).__name__)
  sys.stderr.write(
      f"{command}: error: process {jax.process_index()} of {jax.process_count()} lost another process of "
      f"this run ({first_line.strip()}). A multi-process run cannot go on without all of its processes: "
      "stop the rest (they exit on their own as this one did) and rerun the same launch command, with "
      "any number of processes; training resumes from the last checkpoint in the workdir.\n")
  sys.stderr.flush()
  sys.stdout.flush()
  os._exit(1)
