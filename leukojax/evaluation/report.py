"""The report of a run: `report.json` (every number), `report.md` (the papers' tables) and a printout.

`report.md` lays the image-level results out as Helwan et al.'s table (TP, TN, FP, FN, accuracy,
prevalence, sensitivity, specificity, PPV, NPV, AUC, F1, threshold), then the ISBI challenge's
weighted F1 and balanced accuracy, one column per split, the confidence interval beside each
rate, and the split protocol in every heading.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

import ml_collections

from leukojax.runtime import provenance

# Row order of the paper's table, then the additions.
BINARY_ROWS = ("TP", "TN", "FP", "FN", "accuracy", "prevalence", "sensitivity", "specificity", "PPV",
               "NPV", "AUC", "F1", "threshold", "isbi_weighted_f1", "macro_f1", "balanced_accuracy", "n")
MULTICLASS_ROWS = ("accuracy", "balanced_accuracy", "macro_f1", "weighted_f1", "AUC", "n")
MULTICLASS_NAMES = {"AUC": "AUC (one-vs-rest, macro)"}
PATIENT_ROWS = ("n_subjects", "TP", "TN", "FP", "FN", "accuracy", "sensitivity", "specificity", "PPV",
                "NPV", "AUC", "F1", "balanced_accuracy")
ROW_NAMES = {
    "accuracy": "Accuracy", "prevalence": "Prevalence", "sensitivity": "Sensitivity (recall)",
    "specificity": "Specificity", "PPV": "PPV (precision)", "NPV": "NPV", "threshold": "Threshold",
    "isbi_weighted_f1": "Weighted F1 (ISBI 2019 score)", "balanced_accuracy": "Balanced accuracy",
    "n": "Images", "macro_f1": "Macro F1", "weighted_f1": "Weighted F1",
    "n_subjects": "Subjects",
}
SPLIT_ORDER = ("train", "val", "test")
# How the evaluated checkpoint was picked, when not by the validation metric ('best').
SELECTION = {"latest": "nothing: the latest checkpoint", "step": "nothing: a step given on the command line"}
NO_CI_ROWS = ("threshold", "prevalence")  # fixed by the design (stratified resampling), not estimated

PROTOCOL_NOTES = {
    "subject": "subject-disjoint (no subject in two splits)",
    "subject_cv": ("subject-disjoint cross-validation fold: test subjects never seen in training; "
                   "validation = held-out cells of the training subjects"),
    "official": "subject-disjoint; test = the C-NMC preliminary test set",
    "paper_random": "image-level random split (as the paper; cells of one subject may be in train and test)",
}


def protocol_note(protocol: str, dataset: str) -> str:
  """How independent the test images are of the training images, stated beside every figure."""
  if dataset == "taleqani_all":
    return "image-level split; no patient ids exist in this dataset, so patient-disjoint evaluation is impossible"
  return PROTOCOL_NOTES.get(protocol, protocol)


def build_report(splits: Mapping[str, Mapping[str, Any]], *, step: int, checkpoint: str, protocol: str,
                 class_names: Sequence[str], config: ml_collections.ConfigDict,
                 threshold: Mapping[str, Any] | None, bootstrap: Mapping[str, Any], tta: bool,
                 data_build: Mapping[str, Any] | None = None) -> dict[str, Any]:
  """The JSON document: `splits[name]` holds the metrics at 0.5 at top level (the paper's table).

  `data_build` (the pipeline summary's `build`) says whether the TFDS build was complete or which
  corrupt files it left out, so a result never silently rests on a partial dataset.
  """
  return {
      "model": config.model.name,
      "dataset": config.data.dataset,
      "task": config.data.get("task", ""),
      "protocol": protocol,
      "protocol_note": protocol_note(protocol, config.data.dataset),
      "data_build": dict(data_build) if data_build else None,
      "class_names": list(class_names),
      "checkpoint_step": int(step),
      "checkpoint": checkpoint,
      "selected_by": SELECTION.get(checkpoint, f"validation {config.train.best_metric}"),
      "tta": "8 dihedral transforms (rotations by 90 degrees and mirror images), averaged" if tta else "none",
      "threshold": dict(threshold) if threshold else None,
      "bootstrap": dict(bootstrap),
      "splits": {name: dict(value) for name, value in _ordered(splits)},
      "code": provenance.code_version(),
      "plots": {},  # filled by `run_evaluation.write_plots` on the process that writes
  }


def write_report(report: Mapping[str, Any], out_dir: str) -> dict[str, str]:
  """Writes report.json and report.md into `out_dir`; returns their paths."""
  os.makedirs(out_dir, exist_ok=True)
  paths = {"json": os.path.join(out_dir, "report.json"), "md": os.path.join(out_dir, "report.md")}
  with open(paths["json"], "w") as f:
    json.dump(report, f, indent=2, default=float)
  with open(paths["md"], "w") as f:
    f.write(format_markdown(report))
  return paths


def _ordered(splits: Mapping[str, Any]) -> list[tuple[str, Any]]:
  names = [s for s in SPLIT_ORDER if s in splits] + [s for s in splits if s not in SPLIT_ORDER]
  return [(name, splits[name]) for name in names]


def _number(value: Any) -> str:
  if isinstance(value, bool) or value is None:
    return "" if value is None else str(value)
  if isinstance(value, int):
    return str(value)
  if isinstance(value, float):
    return "nan" if math.isnan(value) else f"{value:.4f}"
  return str(value)


def _cell(metrics: Mapping[str, Any], row: str) -> str:
  """The value, and its confidence interval when the row is a rate that has one."""
  text = _number(metrics.get(row))
  ci = metrics.get("ci", {}).get(row)
  if ci and not any(math.isnan(x) for x in ci) and row not in NO_CI_ROWS:
    text += f" ({ci[0]:.4f}–{ci[1]:.4f})"
  return text


@dataclasses.dataclass(frozen=True)
class Table:
  """One table of the report, rendered by report.md and report.html alike (`level`: heading depth)."""
  title: str
  header: list[str]
  rows: list[list[str]]
  level: int = 2
  text_columns: tuple[int, ...] = (0,)  # left-aligned; the others hold numbers

  def alignment(self, column: int) -> str:
    return "left" if column in self.text_columns else "right"


def metric_rows(columns: Sequence[tuple[str, Mapping[str, Any]]], rows: Sequence[str],
                names: Mapping[str, str] | None = None) -> tuple[list[str], list[list[str]]]:
  """(header, rows) of a metric-per-row, split-per-column table; rows no column has are left out."""
  names = {**ROW_NAMES, **(names or {})}
  header = ["Metric", *(name for name, _ in columns)]
  body = [[names.get(row, row), *(_cell(m, row) for _, m in columns)]
          for row in rows if any(row in metrics for _, metrics in columns)]
  return header, body


def _markdown(table: Table) -> list[str]:
  return ["", "#" * table.level + " " + table.title, "",
          "| " + " | ".join(table.header) + " |",
          "|" + "".join("---|" if table.alignment(i) == "left" else "---:|" for i in range(len(table.header))),
          *("| " + " | ".join(row) + " |" for row in table.rows)]


def _binary(report: Mapping[str, Any]) -> bool:
  return any("TP" in split for split in report["splits"].values())


def _header(report: Mapping[str, Any]) -> list[str]:
  boot, thr = report["bootstrap"], report.get("threshold")
  classes = " vs ".join(report["class_names"])
  lines = [f"# {report['model']} on {report['dataset']} ({report['task']}: {classes})", "",
           f"- **Protocol:** {report['protocol_note']}.",
           *_build_line(report.get("data_build")),
           f"- **Checkpoint:** step {report['checkpoint_step']}, selected by {report['selected_by']}.",
           f"- **Test-time augmentation:** {report['tta']}.",
           f"- **Uncertainty:** {boot['confidence']:.0%} percentile bootstrap intervals in parentheses, "
           f"{boot['n_resamples']} resamples of {boot['unit']}s (stratified by class), seed {boot['seed']}"
           + ("" if boot["unit"] == "subject" else "; images are treated as independent, which this "
              "protocol cannot guarantee") + "."]
  if thr:
    lines.append(f"- **Threshold:** 0.5 as in the papers, and {thr['chosen']:.4f} chosen on the "
                 f"{thr['chosen_on']} split by {thr['criterion_text']}"
                 + (f" ({thr['note']})" if thr.get("note") else "") + "; no test image informs any choice.")
  else:
    lines.append("- **Decision:** the class of highest probability (arg-max).")
  return lines + [""]


def _build_line(build: Mapping[str, Any] | None) -> list[str]:
  if not build:
    return []
  if build.get("on_corrupt") != "skip":
    return [f"- **Data build:** {build['name']}, complete."]
  skipped = build.get("skipped_corrupt", [])
  listed = ", ".join(f"`{name}`" for name in skipped[:10]) + (f" and {len(skipped) - 10} more" if len(skipped) > 10 else "")
  return [f"- **Data build:** {build['name']}, built with on_corrupt=skip: {len(skipped)} corrupt image(s) "
          f"left out" + (f" ({listed})" if skipped else "") + "."]


def _patient_tables(report: Mapping[str, Any], note: str) -> list[Table]:
  columns = []
  for name, split in _ordered(report["splits"]):
    for key, label in (("at_0.5", "0.5"), ("at_chosen_threshold", "tuned")):
      level = split.get("patient_level", {}).get(key)
      if level:
        columns.append((f"{name} @ {label} ({level['threshold']:.4f})", level))
  if not columns:
    return []
  tables = [Table(f"Patient level ({columns[0][1]['aggregation']}) — {note}", *metric_rows(columns, PATIENT_ROWS))]
  test = report["splits"].get("test", {}).get("patient_level", {}).get("at_0.5")
  if test:
    positive, names = report["class_names"][-1], report["class_names"]
    tables.append(Table(
        "Subjects of the test split (threshold 0.5)",
        ["Subject", "Cells", "True class", f"Mean P({positive})", "Predicted", f"Cells called {positive}"],
        [[str(s["subject_id"]), str(s["cells"]), names[s["label"]], f"{s['mean_prob']:.4f}", names[s["predicted"]],
          f"{s['cell_positive_fraction']:.1%}"] for s in test["subjects"]], level=3, text_columns=(0, 2, 4)))
  return tables


def _per_class_table(report: Mapping[str, Any], note: str) -> Table:
  header = ["Class"] + [f"{s} {m}" for s, _ in _ordered(report["splits"]) for m in ("precision", "recall")]
  rows = []
  for name in report["class_names"]:
    cells = [name]
    for _, split in _ordered(report["splits"]):
      per_class, ci = split.get("per_class", {}).get(name, {}), split.get("ci", {})
      cells += [_cell({"v": per_class.get(m), "ci": {"v": ci.get(f"{name}/{m}")}}, "v")
                for m in ("precision", "recall")]
    rows.append(cells)
  return Table(f"Per class (arg-max) — {note}", header, rows)


def tables(report: Mapping[str, Any]) -> list[Table]:
  """The report's tables in order: the paper's table per threshold, then patient level or per class."""
  note = report["protocol_note"]
  columns = [(name, split) for name, split in _ordered(report["splits"])]
  if not _binary(report):
    return [Table(f"Image level — {note}", *metric_rows(columns, MULTICLASS_ROWS, MULTICLASS_NAMES)),
            _per_class_table(report, note)]
  out = [Table(f"Image level, threshold 0.5 — {note}", *metric_rows(columns, BINARY_ROWS))]
  tuned = [(name, split["at_chosen_threshold"]) for name, split in columns if "at_chosen_threshold" in split]
  if tuned:
    out.append(Table(f"Image level, threshold {report['threshold']['chosen']:.4f} (chosen on "
                     f"{report['threshold']['chosen_on']}) — {note}", *metric_rows(tuned, BINARY_ROWS)))
  return out + _patient_tables(report, note)


def format_markdown(report: Mapping[str, Any]) -> str:
  """report.md: the header, the paper's table per threshold, patient level, figures."""
  lines = _header(report)[:-1]
  for table in tables(report):
    lines += _markdown(table)
  if report.get("plots"):
    lines += ["", f"## Figures — {report['protocol_note']}", ""]
    lines += [f"![{name}]({path})" for name, path in report["plots"].items()]
  return "\n".join(lines) + "\n"


def format_table(report: Mapping[str, Any]) -> str:
  """A plain-text table for the log: one row per metric, one column per split, the test CI last."""
  splits = [name for name, _ in _ordered(report["splits"])]
  rows = BINARY_ROWS if _binary(report) else MULTICLASS_ROWS
  width = max(len(r) for r in rows) + 2
  test_ci = report["splits"].get("test", {}).get("ci", {})
  lines = [f"{report['model']} on {report['dataset']} ({report['protocol_note']}); "
           f"checkpoint step {report['checkpoint_step']} selected by {report['selected_by']}",
           "metric".ljust(width) + "".join(s.rjust(12) for s in splits)
           + f"   test {report['bootstrap']['confidence']:.0%} CI"]
  for row in rows:
    ci = test_ci.get(row)
    ci_text = f"   [{ci[0]:.4f}, {ci[1]:.4f}]" if ci and row not in NO_CI_ROWS else ""
    lines.append(row.ljust(width) + "".join(_number(report["splits"][s].get(row)).rjust(12)
                                            for s in splits) + ci_text)
  thr = report.get("threshold")
  if thr:
    lines.append(f"validation-chosen threshold: {thr['chosen']:.4f} ({thr['criterion_text']}); "
                 "full tables in report.md")
  return "\n".join(lines)
