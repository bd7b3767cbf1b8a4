"""How many grain worker processes feed the train step: chosen for the machine unless configured.

On the CPU backend the step's XLA thread pool already uses every core, so worker processes only
add start-up (each imports grain and JAX) and inter-process copies: the pipeline runs in-process,
its `read_threads` decoding ahead while the step computes (JAX dispatches asynchronously), and
the cores are shared by the OS scheduler (docs/benchmarks.md, "Goodput"). On an accelerator the
host cores are free for the pipeline: one worker per core, leaving two for the process that
drives the devices, at most 16.
"""

from __future__ import annotations

import os

from leukojax.errors import ConfigError

AUTO = -1  # `data.num_workers = -1`: the default, resolved by `resolve_num_workers`
MAX_WORKERS = 16


def host_cores() -> int:
  """The cores this process may run on (its affinity mask, e.g. a SLURM or container limit)."""
  try:
    return len(os.sched_getaffinity(0))
  except AttributeError:  # macOS
    return os.cpu_count() or 1


def resolve_num_workers(requested: int, backend: str | None = None) -> int:
  """`requested` if set (>= 0), else the machine's default for `backend` (default: JAX's)."""
  if requested >= 0:
    return requested
  if requested != AUTO:
    raise ConfigError(f"data.num_workers={requested}: use -1 (chosen for the machine), 0 (in-process) "
                     "or a number of grain worker processes.")
  if backend is None:
    import jax

    backend = jax.default_backend()
  if backend == "cpu":
    return 0
  return max(0, min(MAX_WORKERS, host_cores() - 2))
