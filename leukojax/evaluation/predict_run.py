"""`leukojax.predict` as one library call: restore the run, predict, write every output file.

Writes the predictions CSV, for C-NMC runs the scores of the labelled cells (`cnmc_scores`), and
on request the ISBI submission (`isbi`); prints what it wrote. Only process 0 writes.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence
from typing import Any

import jax

from leukojax.evaluation import cnmc_scores, isbi, prediction, restore


def predict_workdir(workdir: str, *, paths: Sequence[str] = (), split: str | None = None,
                    checkpoint: str | int = "best", overrides: Mapping[str, Any] | None = None,
                    out: str | None = None, isbi_path: str | None = None, threshold: str = "val",
                    tta: bool = False, with_data: bool = False, batch_size: int | None = None,
                    labels_csv: str | None = None) -> prediction.Prediction:
  """Predicts `paths` (files or folders) or the dataset `split` with the run of `workdir`."""
  # New images need only the saved statistics; a dataset split needs the dataset.
  run = restore.restore_run(workdir, checkpoint, overrides, with_data=bool(split) or with_data)
  result = prediction.predict(run, paths=paths, split=split, threshold=threshold, use_tta=tta,
                              batch_size=batch_size, labels_csv=labels_csv)
  if jax.process_index() != 0:
    return result
  default = "predictions.csv" if not split else f"predictions_{split}.csv"
  csv_path = prediction.write_csv(result, out or os.path.join(workdir, default))
  print(f"Wrote {len(result.file_names)} predictions to {csv_path} (step {run.step}, threshold "
        f"{'arg-max' if result.threshold is None else f'{result.threshold:.4f}'} from {result.threshold_source}"
        f"{', TTA' if tta else ''}).")
  if result.skipped:
    print(f"Skipped {len(result.skipped)} unreadable file(s):", file=sys.stderr)
    for path, reason in result.skipped:
      print(f"  {path}: {reason}", file=sys.stderr)
  far = [(path, why) for path, why in zip(result.file_names, result.geometry or []) if why]
  if far:
    print(f"Flagged {len(far)} input(s) far from the training images (scored, marked in the geometry column):",
          file=sys.stderr)
    for path, why in far:
      print(f"  {path}: {why}", file=sys.stderr)
  for warning in result.warnings:
    print(f"Warning: {warning}", file=sys.stderr)
  scores = None if result.true_labels is None else cnmc_scores.cnmc_scores(
      result, step=run.step, tta=tta, seen=cnmc_scores.run_subjects(workdir))
  if scores is not None:  # some input has a known class (C-NMC runs only)
    json_path, md_path = cnmc_scores.write_scores(scores, csv_path)
    print("\n" + cnmc_scores.scores_markdown(scores))
    print(f"Wrote the scores to {json_path} and {md_path}.")
  if isbi_path:
    predict_file, zip_file = isbi.write_isbi(result, isbi_path)
    print(f"Wrote the ISBI submission {predict_file} (upload {zip_file}).")
  return result
