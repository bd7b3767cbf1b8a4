"""`python -m leukojax.main --config configs/hybrid.py[:VARIANT] [--workdir W] [--config.x=y ...]`."""

from __future__ import annotations

import os

from absl import app, flags, logging
from ml_collections import config_flags

from leukojax.runtime import cli, startup

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file, e.g. configs/hybrid.py:sample.",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Output directory; default workdirs/<config.name>. "
                               "Rerunning on a workdir with checkpoints resumes.")
_ALLOW_CHANGE = flags.DEFINE_list(
    "allow_config_change", [], "Resume a workdir under these changed fields (e.g. train.epochs); any other "
    "change from its config.json is refused (leukojax/training/run_config.py).")
startup.define_distributed_flags()
flags.mark_flags_as_required(["config"])


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  from leukojax.evaluation import training_run  # after flag parsing: importing JAX must not start devices

  startup.start_jax()
  config = _CONFIG.value
  workdir = _WORKDIR.value or os.path.join("workdirs", config.name)
  logging.info("Config %s, workdir %s.", config.name, workdir)
  training_run.train_and_evaluate(config, workdir, allow_config_change=_ALLOW_CHANGE.value)


def run() -> None:
  """Console-script entry point (pyproject.toml [project.scripts])."""
  cli.run("leukojax.main", main)


if __name__ == "__main__":
  run()
