"""Scores of a trained run on the user's own labelled C-NMC cells, pooled and per subject.

`leukojax.predict` reads each input's subject and true class from the C-NMC names or label CSV
(`leukojax.data.cnmc_names`); these functions turn those predictions into accuracy and weighted F1
pooled and per subject (`<csv stem>_scores.json` and `.md`), flagging subjects the run itself
trained on or chose its threshold with: how a user tests a trained run on held-out subjects.
"""

from __future__ import annotations

import csv
import json
import os
from typing import Any

import numpy as np

from leukojax.evaluation import metrics
from leukojax.evaluation import prediction as prediction_lib
from leukojax.evaluation.run_evaluation import PREDICTIONS_DIR
from leukojax.models import outputs

# (key in the JSON, row name, the cells it is computed over: None all, 1 the ALL cells, 0 the HEM cells)
_POOLED_ROWS = (("accuracy", "Accuracy", None), ("weighted_f1", "Weighted F1 (ISBI 2019 score)", None),
                ("sensitivity", "Sensitivity (ALL cells called ALL)", 1),
                ("specificity", "Specificity (HEM cells called HEM)", 0), ("AUC", "AUC", None))


def run_subjects(workdir: str) -> dict[str, str]:
  """Subject -> the split of the run that held it (from W/predictions/<split>.csv, written by the
  training report), so that scores of subjects the run trained or chose its threshold on are flagged."""
  out: dict[str, str] = {}
  for split in ("train", "val", "test"):  # train first: the strongest reason to distrust a score
    path = os.path.join(workdir, PREDICTIONS_DIR, f"{split}.csv")
    if os.path.exists(path):
      with open(path, newline="") as f:
        for row in csv.DictReader(f):
          if row.get("subject_id"):
            out.setdefault(row["subject_id"], split)
  return out


def _finite(value: Any) -> Any:
  """JSON has no NaN: an undefined figure (the AUC of one class) is null."""
  return None if isinstance(value, float) and not np.isfinite(value) else value


def cnmc_scores(prediction: prediction_lib.Prediction, *, step: int | None = None, tta: bool = False,
                seen: dict[str, str] | None = None) -> dict[str, Any] | None:
  """Pooled and per-subject scores of the cells with a known class, at the threshold the labels used.

  None when no input has a known class. `seen` (`run_subjects`) marks subjects the run itself held.
  """
  if prediction.true_labels is None or not (prediction.true_labels >= 0).any():
    return None
  known = prediction.true_labels >= 0
  truth = prediction.true_labels[known].astype(int)
  probs = prediction.probs.reshape(-1)[known]
  subjects = np.array(prediction.subject_ids, object)[known]
  threshold, seen = float(prediction.threshold), seen or {}

  def support(mask: np.ndarray) -> dict[str, int]:
    return {"cells": int(mask.sum()), "subjects": len({s for s in subjects[mask] if s})}

  pooled = {k: _finite(v) for k, v in metrics.binary_metrics(truth, probs, threshold).items()}
  pooled["weighted_f1"] = pooled["isbi_weighted_f1"]
  pooled.update(support(np.ones(len(truth), bool)))
  pooled["support"] = {key: support(np.ones(len(truth), bool) if cls is None else truth == cls)
                       for key, _, cls in _POOLED_ROWS}
  per_subject = []
  for sid in sorted({s for s in subjects if s}, key=prediction_lib.natural_key):
    mine = subjects == sid
    m = metrics.binary_metrics(truth[mine], probs[mine], threshold)
    classes = set(truth[mine].tolist())
    cls = "mixed" if len(classes) > 1 else prediction_lib.CNMC_CLASSES[classes.pop()]
    per_subject.append({
        "subject_id": sid, "class": cls, "cells": int(mine.sum()), "accuracy": m["accuracy"],
        "weighted_f1": m["isbi_weighted_f1"],
        "accuracy_is": {"all": "sensitivity", "hem": "specificity"}.get(cls),
        "called_all": int(outputs.decide(probs[mine], threshold, xp=np).sum()), "mean_prob_all": float(probs[mine].mean()),
        "in_run_split": seen.get(sid, ""),
    })
  sources: dict[str, int] = {}
  for source in np.array(prediction.label_sources, object)[known]:
    sources[source] = sources.get(source, 0) + 1
  notes = []
  if any(s["accuracy_is"] for s in per_subject):
    notes.append("A subject's cells are all of one class, so its accuracy is its sensitivity (ALL subjects) "
                 "or its specificity (healthy subjects, HEM cells), and its weighted F1 is the F1 of that "
                 "class alone; per-subject AUC is undefined.")
  used = {split: [s["subject_id"] for s in per_subject if s["in_run_split"] == split] for split in ("train", "val")}
  if used["train"] or used["val"]:
    held = "; ".join(f"{split}: {', '.join(ids)}" for split, ids in used.items() if ids)
    notes.append(f"Not held out: these subjects are in this run's own splits ({held}; train fitted the "
                 "model, val chose its checkpoint and threshold; from W/predictions/). Their scores, and "
                 "the pooled ones, are optimistic.")
  unassigned = int((subjects == "").sum())
  if unassigned:
    notes.append(f"{unassigned} labelled cell(s) have no subject: they count in the pooled figures only.")
  return {
      "checkpoint_step": step, "tta": bool(tta), "threshold": threshold,
      "threshold_source": prediction.threshold_source, "cells_predicted": len(prediction.file_names),
      "cells_labelled": int(known.sum()), "cells_unlabelled": int((~known).sum()), "label_sources": sources,
      "pooled": pooled, "subjects": per_subject, "notes": notes,
  }


def _fmt(value: Any) -> str:
  return "n/a" if value is None or (isinstance(value, float) and not np.isfinite(value)) else f"{value:.4f}"


def scores_markdown(scores: dict[str, Any], title: str = "C-NMC scores") -> str:
  """The pooled table (each figure with the cells and subjects behind it) and one row per subject."""
  pooled = scores["pooled"]
  sources = ", ".join(f"{n} from {s}" for s, n in scores["label_sources"].items())
  lines = [f"# {title}", "",
           f"Checkpoint step {scores['checkpoint_step']}, {'8-view TTA' if scores['tta'] else 'no TTA'}; "
           f"threshold {scores['threshold']:.4f} from {scores['threshold_source']}. "
           f"{scores['cells_labelled']} of {scores['cells_predicted']} predicted cells have a known class "
           f"({sources}); {scores['cells_unlabelled']} without one are not scored.", "",
           f"## Pooled over the labelled cells ({pooled['cells']} cells, {pooled['subjects']} subjects)", "",
           "| Metric | Value | Cells | Subjects |", "| --- | --- | --- | --- |"]
  for key, name, _ in _POOLED_ROWS:
    n = pooled["support"][key]
    lines.append(f"| {name} | {_fmt(pooled[key])} | {n['cells']} | {n['subjects']} |")
  lines += ["", f"TP {pooled['TP']}, TN {pooled['TN']}, FP {pooled['FP']}, FN {pooled['FN']} (positive: ALL).",
            "", "## Per subject", "",
            "| Subject | Class | Cells | Accuracy | Weighted F1 | Called ALL | Mean P(ALL) | In this run |",
            "| --- | --- | --- | --- | --- | --- | --- | --- |"]
  for s in scores["subjects"]:
    acc = _fmt(s["accuracy"]) + (f" (= {s['accuracy_is']})" if s["accuracy_is"] else "")
    lines.append(f"| {s['subject_id']} | {s['class'].upper()} | {s['cells']} | {acc} | {_fmt(s['weighted_f1'])} | "
                 f"{s['called_all']} | {s['mean_prob_all']:.4f} | {s['in_run_split'] or 'not seen'} |")
  if scores["notes"]:
    lines += [""] + [f"- {note}" for note in scores["notes"]]
  return "\n".join(lines) + "\n"


def write_scores(scores: dict[str, Any], csv_path: str) -> tuple[str, str]:
  """`<csv stem>_scores.json` and `_scores.md` beside the predictions CSV; returns both paths."""
  stem = os.path.splitext(csv_path)[0]
  json_path, md_path = f"{stem}_scores.json", f"{stem}_scores.md"
  with open(json_path, "w") as f:
    json.dump({"csv": os.path.abspath(csv_path), **scores}, f, indent=2)
    f.write("\n")
  with open(md_path, "w") as f:
    f.write(scores_markdown(scores, f"C-NMC scores of {os.path.basename(csv_path)}"))
  return json_path, md_path
