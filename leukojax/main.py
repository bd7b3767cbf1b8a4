"""`python -m leukojax.main --config configs/hybrid.py[:VARIANT] [--workdir W] [--config.x=y ...]`."""

from __future__ import annotations

import logging as pylogging
import os

from absl import app, flags, logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file, e.g. configs/hybrid.py:sample.",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Output directory; default workdirs/<config.name>. "
                               "Rerunning on a workdir with checkpoints resumes.")
_COORDINATOR = flags.DEFINE_string("coordinator_address", None,
                                   "host:port of process 0 (multi-host without SLURM/TPU detection).")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Number of processes (with --coordinator_address).")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "This process's index (with --coordinator_address).")
flags.mark_flags_as_required(["config"])


class _QuietLibraries(pylogging.Filter):
  """Drops the INFO chatter of Orbax and grain (dozens of lines per checkpoint); keeps warnings."""

  def filter(self, record: pylogging.LogRecord) -> bool:
    noisy = any(part in record.pathname for part in ("/orbax/", "/grain/", "/tensorflow_datasets/"))
    return record.levelno >= pylogging.WARNING or not noisy


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  logging.get_absl_handler().addFilter(_QuietLibraries())
  from leukojax import distributed, train  # after flag parsing: importing JAX must not start devices

  distributed.initialize(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
  distributed.enable_compilation_cache()
  config = _CONFIG.value
  workdir = _WORKDIR.value or os.path.join("workdirs", config.name)
  logging.info("Config %s, workdir %s.", config.name, workdir)
  train.train_and_evaluate(config, workdir)


if __name__ == "__main__":
  app.run(main)
