"""`python -m leukojax.predict --workdir W [--out predictions.csv] PATHS_OR_FOLDERS...`
`python -m leukojax.predict --workdir W --split final_test --isbi W/isbi/isbi_valid.predict`

Writes a CSV of file, probability, predicted label and class name, at the validation-chosen
threshold of the run by default (`--threshold 0.5` for the papers' one). Folders are searched
recursively for images; files that cannot be read are reported by name and skipped (the rest is
written, and the exit status is then 1, as `leukojax.explain`'s). `--split` predicts a split of
the run's dataset instead (C-NMC: `final_test`, `prelim_test`, `fold_k`), and `--isbi` writes
the ISBI 2019 challenge submission for the final test (leukojax.prediction).

C-NMC runs also score the user's own labelled cells: `python -m leukojax.predict --workdir W DIR`
reads each cell's subject and class from its `UID_<subject>_..._<all|hem>.bmp` name (flat, or in
`all/` and `hem/` folders) or, for test-phase `<n>.bmp` names, from the official label CSV beside the
folder or given with `--labels`; the CSV gains `subject_id,true_label`, and `<csv stem>_scores.json`
and `.md` (printed too) hold accuracy and weighted F1 pooled and per subject (docs/evaluation.md).
"""

from __future__ import annotations

import sys

from absl import app, flags, logging

from leukojax.runtime import cli, startup

_WORKDIR = flags.DEFINE_string("workdir", None, "Training workdir (holds config.json and checkpoints/).")
_CHECKPOINT = flags.DEFINE_string("checkpoint", "best", "'best' (validation-selected), 'latest' or a step.")
_OUT = flags.DEFINE_string("out", None, "CSV path (default W/predictions.csv, or W/predictions_<split>.csv).")
_SPLIT = flags.DEFINE_string("split", None, "Predict this split of the run's dataset instead of PATHS.")
_ISBI = flags.DEFINE_string("isbi", None, "Also write the ISBI submission file here (and a .zip beside it).")
_THRESHOLD = flags.DEFINE_string("threshold", "val", "'val' (chosen on the validation split) or a number.")
_TTA = flags.DEFINE_bool("tta", False, "Average over the 8 dihedral transforms.")
_WITH_DATA = flags.DEFINE_bool("with_data", False, "Load the run's dataset for image paths too (only needed "
                               "to choose a threshold on val when report.json has none for this checkpoint).")
_LABELS = flags.DEFINE_string("labels", None, "C-NMC: the label CSV of test-phase images <n>.bmp "
                              "(C-NMC_test_prelim_phase_data_labels.csv); by default looked for beside "
                              "the images and in the folder above.")
_BATCH = flags.DEFINE_integer("batch_size", None, "Global batch size (default config.eval.batch_size).")
_DATA_DIR = flags.DEFINE_string("data_dir", None, "Override config.data.data_dir.")
_MANUAL_DIR = flags.DEFINE_string("manual_dir", None, "Override config.data.manual_dir.")
startup.define_distributed_flags()
flags.mark_flags_as_required(["workdir"])


def main(argv: list[str]) -> None:
  paths = argv[1:]
  if bool(paths) == bool(_SPLIT.value):
    raise app.UsageError("Give image files or folders, or --split NAME (not both).")
  from leukojax.data.errors import DataError  # after flag parsing, as leukojax.main
  from leukojax.evaluation import predict_run, prediction, restore

  startup.start_jax()
  try:
    checkpoint = restore.parse_checkpoint(_CHECKPOINT.value)
  except ValueError as error:
    raise app.UsageError(str(error)) from None
  overrides = {k: v for k, v in (("data.data_dir", _DATA_DIR.value), ("data.manual_dir", _MANUAL_DIR.value))
               if v}
  try:
    result = predict_run.predict_workdir(
        _WORKDIR.value, paths=paths, split=_SPLIT.value, checkpoint=checkpoint, overrides=overrides,
        out=_OUT.value, isbi_path=_ISBI.value, threshold=_THRESHOLD.value, tta=_TTA.value,
        with_data=_WITH_DATA.value, batch_size=_BATCH.value, labels_csv=_LABELS.value)
  except (prediction.PredictionError, DataError) as error:  # bad inputs or options: the message says what to do
    sys.exit(f"leukojax.predict: error: {error}")
  if result.skipped:  # as leukojax.explain: the rest is written, but the command did not do all it was asked
    sys.exit(f"leukojax.predict: error: {len(result.skipped)} of {len(result.skipped) + len(result.file_names)} "
             "inputs could not be read (listed above); the predictions of the others are written.")
  logging.info("Done.")


def run() -> None:
  """Console-script entry point (pyproject.toml [project.scripts])."""
  cli.run("leukojax.predict", main)


if __name__ == "__main__":
  run()
