"""`python -m leukojax.evaluate --workdir W [--split test] [--checkpoint best|latest|STEP] [--tta]`.

Restores a training workdir and writes the full report (report.json, report.md, plots/,
predictions/) with `reporting.evaluate_run`, the function the end of training uses. Defaults
(best checkpoint, splits val,test,train, no TTA) reproduce the training report in the workdir
itself; any other choice writes into `W/evaluations/<checkpoint>[_tta][_<splits>]/` (or --out_dir),
so the training report is never silently replaced by a different evaluation. docs/evaluation.md
explains every output.
"""

from __future__ import annotations

import os

from absl import app, flags, logging

from leukojax import cli
from leukojax.reporting import DEFAULT_SPLITS, parse_checkpoint as reporting_checkpoint

_WORKDIR = flags.DEFINE_string("workdir", None, "Training workdir (holds config.json and checkpoints/).")
_CHECKPOINT = flags.DEFINE_string("checkpoint", "best", "'best' (validation-selected), 'latest' or a step.")
_SPLITS = flags.DEFINE_list("split", ",".join(DEFAULT_SPLITS), "Splits to report (val is always evaluated: "
                            "the threshold is chosen on it).")
_TTA = flags.DEFINE_bool("tta", None, "Average over the 8 dihedral transforms (default: config.eval.tta or off).")
_RESAMPLES = flags.DEFINE_integer("n_resamples", None, "Bootstrap resamples (default 1000).")
_CONFIDENCE = flags.DEFINE_float("confidence", None, "Confidence level of the intervals (default 0.95).")
_BOOT_SEED = flags.DEFINE_integer("bootstrap_seed", None, "Seed of the bootstrap (default 0).")
_CRITERION = flags.DEFINE_enum("threshold_criterion", None, ["youden", "f1"],
                               "How the threshold is chosen on val (default youden).")
_OUT_DIR = flags.DEFINE_string("out_dir", None, "Output folder (default: see the module docstring).")
_DATA_DIR = flags.DEFINE_string("data_dir", None, "Override config.data.data_dir (the data moved).")
_MANUAL_DIR = flags.DEFINE_string("manual_dir", None, "Override config.data.manual_dir.")
cli.define_distributed_flags()
flags.mark_flags_as_required(["workdir"])


def checkpoint_arg(value: str) -> str | int:
  try:
    return reporting_checkpoint(value)
  except ValueError as error:
    raise app.UsageError(str(error)) from None


def default_out_dir(workdir: str, checkpoint: str | int, tta: bool, splits: list[str],
                    default_splits: tuple[str, ...]) -> str:
  """The workdir for the training defaults, else a named sub-folder of W/evaluations/."""
  same_splits = set(splits) == set(default_splits)
  if checkpoint == "best" and not tta and same_splits:
    return workdir
  name = str(checkpoint) + ("_tta" if tta else "") + ("" if same_splits else "_" + "-".join(splits))
  return os.path.join(workdir, "evaluations", name)


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  from leukojax import reporting, trained  # after flag parsing, as leukojax.main

  cli.start_jax()
  checkpoint = checkpoint_arg(_CHECKPOINT.value)
  overrides = {k: v for k, v in (("data.data_dir", _DATA_DIR.value), ("data.manual_dir", _MANUAL_DIR.value))
               if v}
  run = trained.restore_run(_WORKDIR.value, checkpoint, overrides)
  options = reporting.options_from_config(
      run.config, splits=tuple(_SPLITS.value), tta=_TTA.value, n_resamples=_RESAMPLES.value,
      confidence=_CONFIDENCE.value, seed=_BOOT_SEED.value, threshold_criterion=_CRITERION.value)
  out_dir = _OUT_DIR.value or default_out_dir(_WORKDIR.value, checkpoint, options.tta, list(options.splits),
                                              reporting.DEFAULT_SPLITS)
  logging.info("Evaluating %s (step %d, %s) into %s.", _WORKDIR.value, run.step, run.checkpoint, out_dir)
  reporting.evaluate_run(config=run.config, pipeline=run.pipeline, mesh=run.mesh, graphs=run.graphs,
                         state=run.state, eval_fn=run.eval_fn, class_weights=_class_weights(run),
                         step=run.step, checkpoint=run.checkpoint, workdir=_WORKDIR.value, out_dir=out_dir,
                         options=options)


def _class_weights(run):
  from leukojax import train  # the loss weights the run trained with (they only scale the loss)

  return train.loss_class_weights(run.config, run.pipeline)


if __name__ == "__main__":
  app.run(main)
