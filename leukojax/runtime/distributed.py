"""Multi-host start-up: `jax.distributed.initialize()` once, before anything touches a device."""

from __future__ import annotations

import os

import jax
from absl import logging

# Environments whose launchers jax.distributed.initialize() detects on its own.
_AUTO_DETECTED = ("SLURM_JOB_ID", "TPU_WORKER_HOSTNAMES", "OMPI_COMM_WORLD_SIZE", "JAX_COORDINATOR_ADDRESS")


def initialize(coordinator_address: str | None = None, num_processes: int | None = None,
               process_id: int | None = None) -> None:
  """Explicit coordinator flags win; else SLURM/TPU/MPI/env auto-detection; else one process."""
  if coordinator_address:
    jax.distributed.initialize(coordinator_address=coordinator_address, num_processes=num_processes,
                               process_id=process_id)
  elif _multi_process_environment():
    jax.distributed.initialize()
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
