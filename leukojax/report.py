"""`report.json` and the printed table of a finished run (the Helwan et al. table layout)."""

from __future__ import annotations

import json
import math
import os
from typing import Any

import ml_collections

# Row order of the paper's table, then the additions.
BINARY_ROWS = ("TP", "TN", "FP", "FN", "accuracy", "prevalence", "sensitivity", "specificity", "PPV",
               "NPV", "AUC", "F1", "threshold", "isbi_weighted_f1", "balanced_accuracy", "n")
MULTICLASS_ROWS = ("accuracy", "balanced_accuracy", "macro_f1", "weighted_f1", "AUC", "n")

PROTOCOL_NOTES = {
    "subject": "subject-disjoint (no subject in two splits)",
    "official": "subject-disjoint; test = the C-NMC preliminary test set",
    "paper_random": "image-level random split (as the paper; cells of one subject may be in train and test)",
}


def protocol_note(protocol: str, dataset: str) -> str:
  """How independent the test images are of the training images, stated beside every figure."""
  if dataset == "taleqani_all":
    return "image-level split; no patient ids exist in this dataset, so patient-disjoint evaluation is impossible"
  return PROTOCOL_NOTES.get(protocol, protocol)


def build_report(results: dict[str, Any], *, best_step: int, protocol: str, class_names: tuple[str, ...],
                 config: ml_collections.ConfigDict) -> dict[str, Any]:
  return {
      "model": config.model.name,
      "dataset": config.data.dataset,
      "task": config.data.get("task", ""),
      "protocol": protocol,
      "protocol_note": protocol_note(protocol, config.data.dataset),
      "class_names": list(class_names),
      "checkpoint_step": int(best_step),
      "selected_by": f"validation {config.train.best_metric}",
      "splits": {name: {"loss": result.loss, **result.metrics} for name, result in results.items()},
  }


def write_report(report: dict[str, Any], workdir: str) -> str:
  path = os.path.join(workdir, "report.json")
  with open(path, "w") as f:
    json.dump(report, f, indent=2, default=float)
  return path


def _cell(value: Any) -> str:
  if isinstance(value, int):
    return str(value)
  if isinstance(value, float):
    return "nan" if math.isnan(value) else f"{value:.4f}"
  return "" if value is None else str(value)


def format_table(report: dict[str, Any]) -> str:
  """A plain-text table: one row per metric, one column per split."""
  splits = [s for s in ("train", "val", "test") if s in report["splits"]]
  splits += [s for s in report["splits"] if s not in splits]
  binary = "TP" in next(iter(report["splits"].values()), {})
  rows = BINARY_ROWS if binary else MULTICLASS_ROWS
  width = max(len(r) for r in rows) + 2
  lines = [f"{report['model']} on {report['dataset']} ({report['protocol_note']}); "
           f"checkpoint step {report['checkpoint_step']} selected by {report['selected_by']}",
           "metric".ljust(width) + "".join(s.rjust(12) for s in splits)]
  for row in rows:
    lines.append(row.ljust(width) + "".join(_cell(report["splits"][s].get(row)).rjust(12) for s in splits))
  return "\n".join(lines)
