"""`python -m leukojax.predict --workdir W [--out predictions.csv] PATHS_OR_FOLDERS...`
`python -m leukojax.predict --workdir W --split final_test --isbi W/isbi/isbi_valid.predict`

Writes a CSV of file, probability, predicted label and class name, at the validation-chosen
threshold of the run by default (`--threshold 0.5` for the papers' one). Folders are searched
recursively for images; files that cannot be read are reported by name and skipped. `--split`
predicts a split of the run's dataset instead (C-NMC: `final_test`, `prelim_test`, `fold_k`), and
`--isbi` writes the ISBI 2019 challenge submission for the final test (leukojax.prediction).

C-NMC runs also score the user's own labelled cells: `python -m leukojax.predict --workdir W DIR`
reads each cell's subject and class from its `UID_<subject>_..._<all|hem>.bmp` name (flat, or in
`all/` and `hem/` folders) or, for test-phase `<n>.bmp` names, from the official label CSV beside the
folder or given with `--labels`; the CSV gains `subject_id,true_label`, and `<csv stem>_scores.json`
and `.md` (printed too) hold accuracy and weighted F1 pooled and per subject (docs/evaluation.md).
"""

from __future__ import annotations

import os
import sys

from absl import app, flags, logging

from leukojax import cli

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
cli.define_distributed_flags()
flags.mark_flags_as_required(["workdir"])


def main(argv: list[str]) -> None:
  import jax  # pylint: disable=g-import-not-at-top  (after flag parsing, as leukojax.main)

  from leukojax import prediction, reporting, trained

  paths = argv[1:]
  if bool(paths) == bool(_SPLIT.value):
    raise app.UsageError("Give image files or folders, or --split NAME (not both).")
  cli.start_jax()
  overrides = {k: v for k, v in (("data.data_dir", _DATA_DIR.value), ("data.manual_dir", _MANUAL_DIR.value))
               if v}
  try:
    checkpoint = reporting.parse_checkpoint(_CHECKPOINT.value)
  except ValueError as error:
    raise app.UsageError(str(error)) from None
  # New images need only the saved statistics; a dataset split needs the dataset.
  run = trained.restore_run(_WORKDIR.value, checkpoint, overrides,
                            with_data=bool(_SPLIT.value) or _WITH_DATA.value)
  try:
    result = prediction.predict(run, paths=paths, split=_SPLIT.value, threshold=_THRESHOLD.value,
                                use_tta=_TTA.value, batch_size=_BATCH.value, labels_csv=_LABELS.value)
  except ValueError as error:  # bad inputs or options: the message says what to do
    sys.exit(f"leukojax.predict: {error}")
  if jax.process_index() != 0:
    return
  default = "predictions.csv" if not _SPLIT.value else f"predictions_{_SPLIT.value}.csv"
  csv_path = prediction.write_csv(result, _OUT.value or os.path.join(_WORKDIR.value, default))
  print(f"Wrote {len(result.file_names)} predictions to {csv_path} (step {run.step}, threshold "
        f"{'arg-max' if result.threshold is None else f'{result.threshold:.4f}'} from {result.threshold_source}"
        f"{', TTA' if _TTA.value else ''}).")
  if result.skipped:
    print(f"Skipped {len(result.skipped)} unreadable file(s):", file=sys.stderr)
    for path, reason in result.skipped:
      print(f"  {path}: {reason}", file=sys.stderr)
  for warning in result.warnings:
    print(f"Warning: {warning}", file=sys.stderr)
  scores = None if result.true_labels is None else prediction.cnmc_scores(
      result, step=run.step, tta=_TTA.value, seen=prediction.run_subjects(_WORKDIR.value))
  if scores is not None:  # some input has a known class (C-NMC runs only)
    json_path, md_path = prediction.write_scores(scores, csv_path)
    print("\n" + prediction.scores_markdown(scores))
    print(f"Wrote the scores to {json_path} and {md_path}.")
  if _ISBI.value:
    predict_file, zip_file = prediction.write_isbi(result, _ISBI.value)
    print(f"Wrote the ISBI submission {predict_file} (upload {zip_file}).")
  logging.info("Done.")


if __name__ == "__main__":
  app.run(main)
