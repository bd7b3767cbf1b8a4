"""One result over the folds of a subject cross-validation (`python -m leukojax.cv`).

Each workdir is one fold of `split.protocol='subject_cv'` (same model, data and split seed); its
test predictions (`predictions/test.csv`, written when training ends or by `leukojax.evaluate`)
hold subjects no other fold tests, so the folds' test sets pool into one prediction per cell of
every subject. `write` puts `cv_report.json` and `cv_report.md` into a folder: the pooled metrics
at 0.5 with 95% intervals from a bootstrap over subjects, the patient-level result, each fold's own
figures (its healthy subject's accuracy among them) and every subject's accuracy, with the number
of subjects behind each figure.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from leukojax.errors import LeukojaxError
from leukojax.evaluation import analysis, report
from leukojax.models import outputs

FOLD_ROWS = ("isbi_weighted_f1", "accuracy", "sensitivity", "specificity", "AUC")


class CrossValidationError(LeukojaxError, ValueError):
  """The workdirs are not the folds of one subject cross-validation."""


@dataclasses.dataclass(frozen=True)
class Pooled:
  """Pooled cell predictions (the `analysis.Predictions` protocol)."""

  probs: np.ndarray
  labels: np.ndarray
  metadata: Mapping[str, np.ndarray]
  loss: float = float("nan")


@dataclasses.dataclass(frozen=True)
class Fold:
  workdir: str
  fold: int
  config: dict[str, Any]
  report: dict[str, Any]
  file_name: np.ndarray
  subject_id: np.ndarray
  label: np.ndarray
  prob: np.ndarray


def read_fold(workdir: str, predictions: str = "predictions/test.csv") -> Fold:
  """Reads one fold's config, report and per-cell test predictions, naming what is missing."""
  paths = {k: os.path.join(workdir, v) for k, v in
           (("config", "config.json"), ("report", "report.json"), ("predictions", predictions))}
  for what, path in paths.items():
    if not os.path.exists(path):
      raise CrossValidationError(
          f"{path} is missing: {workdir} is not a finished run (train it to the end, or run "
          f"`python -m leukojax.evaluate --workdir {workdir}`).")
  with open(paths["config"]) as f:
    config = json.load(f)
  with open(paths["report"]) as f:
    run_report = json.load(f)
  split = config["data"]["split"]
  if split["protocol"] != "subject_cv":
    raise CrossValidationError(
        f"{workdir} used split.protocol={split['protocol']!r}; pooling needs the folds of 'subject_cv'.")
  with open(paths["predictions"], newline="") as f:
    rows = list(csv.DictReader(f))
  prob_columns = [k for k in (rows[0] if rows else {}) if k.startswith("p_")]
  if len(prob_columns) != 1:
    raise CrossValidationError(f"{paths['predictions']}: pooling is for binary runs (one p_ column).")
  return Fold(workdir=workdir, fold=int(split["fold"]), config=config, report=run_report,
              file_name=np.array([r["file_name"] for r in rows], dtype=object),
              subject_id=np.array([r["subject_id"].encode() for r in rows], dtype=object),
              label=np.array([int(r["label"]) for r in rows], np.int32),
              prob=np.array([float(r[prob_columns[0]]) for r in rows], np.float64))


def _same(folds: Sequence[Fold], *keys: str) -> None:
  def get(config, path):
    for k in path.split("."):
      config = config.get(k) if isinstance(config, dict) else None
    return config
  for key in keys:
    values = {json.dumps(get(f.config, key), sort_keys=True) for f in folds}
    if len(values) > 1:
      raise CrossValidationError(f"The folds differ in {key} ({sorted(values)}): pool the folds of one experiment.")


def check_folds(folds: Sequence[Fold]) -> None:
  """One experiment, each fold once, no subject tested twice."""
  _same(folds, "model", "data.dataset", "data.task", "data.image_size", "data.resize", "data.split.seed",
        "data.split.num_folds", "data.augment", "train.epochs", "seed")
  numbers = [f.fold for f in folds]
  if len(set(numbers)) != len(numbers):
    raise CrossValidationError(f"Fold numbers repeat: {numbers}.")
  seen: dict[bytes, int] = {}
  for f in folds:
    for s in set(f.subject_id.tolist()):
      if s in seen:
        raise CrossValidationError(
            f"Subject {s.decode()} is tested in fold {seen[s]} and fold {f.fold}: these are not "
            "folds of one subject cross-validation.")
      seen[s] = f.fold


def pool(folds: Sequence[Fold]) -> Pooled:
  return Pooled(probs=np.concatenate([f.prob for f in folds]), labels=np.concatenate([f.label for f in folds]),
                metadata={"subject_id": np.concatenate([f.subject_id for f in folds]),
                          "file_name": np.concatenate([f.file_name for f in folds])})


def subject_table(pooled: Pooled, folds: Sequence[Fold], class_names: Sequence[str]) -> list[dict[str, Any]]:
  """Every subject's cells, class, fold and accuracy at 0.5 (for a healthy subject: specificity)."""
  fold_of = {s: f.fold for f in folds for s in set(f.subject_id.tolist())}
  ids = pooled.metadata["subject_id"]
  out = []
  for s in sorted(set(ids.tolist()), key=lambda x: (x[:1] != b"H", len(x), x)):
    rows = ids == s
    labels, preds = pooled.labels[rows], outputs.decide(pooled.probs[rows], xp=np)
    out.append({"subject_id": s.decode(), "fold": fold_of[s], "class": class_names[int(np.round(labels.mean()))],
                "cells": int(rows.sum()), "accuracy": float((labels == preds).mean()),
                "mean_prob": float(pooled.probs[rows].mean())})
  return out


def cross_validate(workdirs: Sequence[str], predictions: str = "predictions/test.csv") -> dict[str, Any]:
  folds = sorted((read_fold(w, predictions) for w in workdirs), key=lambda f: f.fold)
  if len(folds) < 2:
    raise CrossValidationError("Give the workdirs of at least two folds.")
  check_folds(folds)
  class_names = folds[0].report["class_names"]
  pooled = pool(folds)
  options = analysis.AnalysisOptions(seed=0)
  result = analysis.analyse_split(pooled, class_names=class_names, options=options, chosen=None)
  result.pop("loss", None)
  per_fold = []
  for f in folds:
    test = f.report["splits"].get("test", {})
    healthy = [s for s in subject_table(pool([f]), [f], class_names) if s["class"] == class_names[0]]
    per_fold.append({"fold": f.fold, "workdir": f.workdir, "checkpoint_step": f.report.get("checkpoint_step"),
                     "n_images": test.get("n_images"), "n_subjects": test.get("n_subjects"),
                     **{k: test.get(k) for k in FOLD_ROWS},
                     "ci": {k: test.get("ci", {}).get(k) for k in FOLD_ROWS},
                     "healthy_subjects": {s["subject_id"]: s["accuracy"] for s in healthy}})
  return {"model": folds[0].config["model"]["name"], "dataset": folds[0].config["data"]["dataset"],
          "class_names": class_names, "num_folds": len(folds), "workdirs": [f.workdir for f in folds],
          "protocol_note": "pooled test predictions of a subject cross-validation: every subject tested once, "
                           "by the fold that never trained on it",
          "bootstrap": {"unit": "subject", "n_resamples": options.n_resamples, "confidence": options.confidence,
                        "seed": options.seed},
          "pooled": result, "folds": per_fold, "subjects": subject_table(pooled, folds, class_names)}


def _fmt(value: Any, ci: Any = None) -> str:
  if value is None or (isinstance(value, float) and np.isnan(value)):
    return "n/a"
  text = f"{value:.3f}" if isinstance(value, float) else str(value)
  if ci and all(c is not None for c in ci):
    text += f" ({ci[0]:.3f}, {ci[1]:.3f})"
  return text


def format_markdown(cv: Mapping[str, Any]) -> str:
  pooled, names = cv["pooled"], cv["class_names"]
  n_subjects = pooled.get("n_subjects", 0)
  lines = [f"# {cv['model']} on {cv['dataset']}: {cv['num_folds']}-fold subject cross-validation", "",
           f"- **Protocol:** {cv['protocol_note']}.",
           f"- **Subjects behind the pooled figures:** {n_subjects} ({pooled.get('n_images', 0)} cells); "
           f"95% percentile intervals from {cv['bootstrap']['n_resamples']} resamples of subjects (stratified by class).",
           "", "## Pooled, threshold 0.5", "", "| Metric | Value (95% CI) |", "|---|---|"]
  for row in report.BINARY_ROWS:
    if row in pooled:
      ci = None if row in report.NO_CI_ROWS else pooled.get("ci", {}).get(row)
      lines.append(f"| {report.ROW_NAMES.get(row, row)} | {_fmt(pooled[row], ci)} |")
  level = pooled.get("patient_level", {}).get("at_0.5")
  if level:
    lines += ["", f"Patient level ({level['aggregation']}, {level['n_subjects']} subjects): accuracy "
              f"{_fmt(level['accuracy'])}, sensitivity {_fmt(level['sensitivity'])}, specificity "
              f"{_fmt(level['specificity'])}."]
  lines += ["", "## Per fold (each fold's own test subjects)", "",
            "| Fold | Subjects | Cells | " + " | ".join(report.ROW_NAMES.get(k, k) for k in FOLD_ROWS)
            + " | Healthy subject accuracy |", "|---:|---:|---:|" + "---:|" * len(FOLD_ROWS) + "---|"]
  for f in cv["folds"]:
    healthy = ", ".join(f"{s}: {a:.3f}" for s, a in f["healthy_subjects"].items())
    lines.append(f"| {f['fold']} | {f['n_subjects']} | {f['n_images']} | "
                 + " | ".join(_fmt(f[k], f["ci"].get(k)) for k in FOLD_ROWS) + f" | {healthy} |")
  lines += ["", "## Per subject (threshold 0.5)", "", f"| Subject | Class | Fold | Cells | Accuracy | Mean P({names[-1]}) |",
            "|---|---|---:|---:|---:|---:|"]
  for s in cv["subjects"]:
    lines.append(f"| {s['subject_id']} | {s['class']} | {s['fold']} | {s['cells']} | {s['accuracy']:.3f} | "
                 f"{s['mean_prob']:.3f} |")
  return "\n".join(lines) + "\n"


def default_out_dir(cv: Mapping[str, Any], workdirs: Sequence[str]) -> str:
  """Beside the first fold's workdir, named `<model>_cv`."""
  return os.path.join(os.path.dirname(os.path.abspath(workdirs[0])), f"{cv['model']}_cv")


def write(cv: Mapping[str, Any], out_dir: str) -> None:
  os.makedirs(out_dir, exist_ok=True)
  with open(os.path.join(out_dir, "cv_report.json"), "w") as f:
    json.dump(cv, f, indent=2, default=float)
  with open(os.path.join(out_dir, "cv_report.md"), "w") as f:
    f.write(format_markdown(cv))
