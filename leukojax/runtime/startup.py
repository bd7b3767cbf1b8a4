"""Flags and start-up shared by the command-line entry points (main, evaluate, predict, one_step).

Kept free of JAX imports: the entry points parse flags first, then import JAX and start devices.
"""

from __future__ import annotations

import logging as pylogging

from absl import flags, logging


def define_distributed_flags() -> None:
  """`--coordinator_address/--num_processes/--process_id`: multi-host without SLURM/TPU detection."""
  flags.DEFINE_string("coordinator_address", None,
                      "host:port of process 0 (multi-host without SLURM/TPU auto-detection).")
  flags.DEFINE_integer("num_processes", None, "Number of processes (with --coordinator_address).")
  flags.DEFINE_integer("process_id", None, "This process's index (with --coordinator_address).")
  flags.DEFINE_integer("heartbeat_timeout_s", None,
                       "Multi-process: stop every process this long after one stops answering (JAX: 100).")


# Mid-epoch and preemption saves carry no validation metric by design (training.checkpoints).
EXPECTED_ORBAX_WARNING = "Requested `tracked_metric`; did not provide metrics."


class QuietLibraries(pylogging.Filter):
  """Drops the INFO chatter of Orbax, grain and TFDS (dozens of lines per checkpoint) and Orbax's
  expected warning on every metric-less save; keeps the other warnings."""

  def filter(self, record: pylogging.LogRecord) -> bool:
    noisy = any(part in record.pathname for part in ("/orbax/", "/grain/", "/tensorflow_datasets/"))
    if noisy and str(record.msg).startswith(EXPECTED_ORBAX_WARNING):
      return False
    return record.levelno >= pylogging.WARNING or not noisy


def start_jax() -> None:
  """Quiets the libraries' logs, then `jax.distributed.initialize` from the flags (or the
  environment) and the persistent compilation cache."""
  from leukojax.runtime import distributed  # pylint: disable=g-import-not-at-top  (after flag parsing)

  logging.get_absl_handler().addFilter(QuietLibraries())

  values = flags.FLAGS
  distributed.initialize(values.coordinator_address, values.num_processes, values.process_id,
                         values.heartbeat_timeout_s)
  distributed.enable_compilation_cache()
