"""`python -m leukojax.evaluate --workdir W [--split test] [--checkpoint best|latest|STEP] [--tta] [--explain N]`.

Restores a training workdir and writes the full report (report.json, report.md, report.html,
plots/, predictions/; `--explain N` adds Grad-CAM and LIME of N gallery cases per split) with `run_evaluation.evaluate_run`, the function the end of training uses. Defaults
(best checkpoint, splits val,test,train, no TTA) reproduce the training report in the workdir
itself; any other choice writes into `W/evaluations/<checkpoint>[_tta][_<splits>]/` (or --out_dir),
so the training report is never silently replaced by a different evaluation. docs/evaluation.md
explains every output.
"""

from __future__ import annotations


from absl import app, flags

from leukojax.runtime import cli, startup

_WORKDIR = flags.DEFINE_string("workdir", None, "Training workdir (holds config.json and checkpoints/).")
_CHECKPOINT = flags.DEFINE_string("checkpoint", "best", "'best' (validation-selected), 'latest' or a step.")
_SPLITS = flags.DEFINE_list("split", "val,test,train", "Splits to report (val is always evaluated: "
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
_EXPLAIN = flags.DEFINE_integer("explain", 0, "Explain the first N error-gallery cases of each split in "
                                "report.html (Grad-CAM and LIME; the most confident mistakes first). Costs "
                                "seconds per image on a CPU, so 0 (none) unless asked.")
_EXPLAIN_METHOD = flags.DEFINE_enum("explain_method", "both", ["gradcam", "lime", "both"], "With --explain.")
_LIME_SAMPLES = flags.DEFINE_integer("lime_samples", 300, "LIME perturbations per image, with --explain.")
startup.define_distributed_flags()
flags.mark_flags_as_required(["workdir"])


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  from leukojax.evaluation import restore, run_evaluation  # after flag parsing, as leukojax.main

  startup.start_jax()
  try:
    checkpoint = restore.parse_checkpoint(_CHECKPOINT.value)
  except ValueError as error:
    raise app.UsageError(str(error)) from None
  overrides = {k: v for k, v in (("data.data_dir", _DATA_DIR.value), ("data.manual_dir", _MANUAL_DIR.value))
               if v}
  explainer_for = None
  if _EXPLAIN.value > 0:
    from leukojax.explanation import explainer, gallery_explanations  # pylint: disable=g-import-not-at-top
    explainer_for = gallery_explanations.explainer_for(
        explainer.Options(method=_EXPLAIN_METHOD.value, lime_samples=_LIME_SAMPLES.value))
  run_evaluation.evaluate_workdir(
      _WORKDIR.value, checkpoint, overrides=overrides, out_dir=_OUT_DIR.value, splits=tuple(_SPLITS.value),
      explainer_for=explainer_for, explain_limit=_EXPLAIN.value,
      tta=_TTA.value, n_resamples=_RESAMPLES.value, confidence=_CONFIDENCE.value, seed=_BOOT_SEED.value,
      threshold_criterion=_CRITERION.value)


def run() -> None:
  """Console-script entry point (pyproject.toml [project.scripts])."""
  cli.run("leukojax.evaluate", main)


if __name__ == "__main__":
  run()
