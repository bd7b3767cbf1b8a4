r"""`python -m leukojax.cv WORKDIR...`: one result over the folds of a subject cross-validation.

    python -m leukojax.cv workdirs/cnmc/hybrid_fold0 workdirs/cnmc/hybrid_fold1 --out workdirs/cnmc/hybrid_cv

Each workdir is one fold of `split.protocol='subject_cv'` (same model, data and split seed); its
test predictions (`predictions/test.csv`, written when training ends or by `leukojax.evaluate`)
hold subjects no other fold tests, so the folds' test sets pool into one prediction per cell of
every subject. Writes `cv_report.json` and `cv_report.md` into `--out`: the pooled metrics at 0.5
with 95% intervals from a bootstrap over subjects, the patient-level result, each fold's own
figures (its healthy subject's accuracy among them) and every subject's accuracy, with the number
of subjects behind each figure.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from absl import app, flags

from leukojax.evaluation import cross_validation
from leukojax.runtime import cli

_OUT = flags.DEFINE_string("out", None, "Output folder (default: beside the first workdir, '<model>_cv').")
_PREDICTIONS = flags.DEFINE_string(
    "predictions", "predictions/test.csv",
    "Per-cell predictions inside each workdir (e.g. evaluations/best_tta/predictions/test.csv).")


def main(argv: Sequence[str]) -> None:
  workdirs = list(argv[1:])
  if not workdirs:
    raise app.UsageError("Give the workdirs of the folds.")
  try:
    cv = cross_validation.cross_validate(workdirs, _PREDICTIONS.value)
  except cross_validation.CrossValidationError as e:
    sys.exit(f"leukojax.cv: {e}")
  out = _OUT.value or cross_validation.default_out_dir(cv, workdirs)
  cross_validation.write(cv, out)
  print(cross_validation.format_markdown(cv))
  print(f"Wrote {out}/cv_report.json and cv_report.md")


def run() -> None:
  """Console-script entry point (pyproject.toml [project.scripts])."""
  cli.run("leukojax.cv", main)


if __name__ == "__main__":
  run()
