"""Is run B better than run A on the same test images? A paired bootstrap of the difference.

Two runs' intervals overlap even when one is better on nearly every resample, because both are
scored on the same subjects: the subject-to-subject spread is shared. Resampling the subjects (or
images, where no subject ids exist) once and scoring both runs on each resample gives the interval
of the difference itself (`leukojax.evaluation.bootstrap`'s weights, applied to both), and the
share of resamples in which B is ahead.

An arm is one workdir or, for a subject cross-validation, its fold workdirs: their test
predictions pool into one prediction per image, as `leukojax.cv` pools them. Both arms must hold
the same images with the same labels.
"""

from __future__ import annotations

import csv
import dataclasses
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from leukojax.errors import LeukojaxError
from leukojax.evaluation import bootstrap

# The rows of the table, when the task has them (binary: the ISBI score first; multi-class: accuracy).
ROWS = ("isbi_weighted_f1", "weighted_f1", "accuracy", "balanced_accuracy", "macro_f1", "sensitivity",
        "specificity", "AUC")


class PairedComparisonError(LeukojaxError, ValueError):
  """The two arms were not scored on the same images."""


@dataclasses.dataclass(frozen=True)
class Arm:
  """One run's (or one cross-validation's pooled) predictions on a split."""
  workdirs: tuple[str, ...]
  keys: list[tuple[str, str, int]]  # (file name, subject id, label): one per image
  subject_id: np.ndarray  # str [N]; empty strings where the dataset has no subjects
  labels: np.ndarray  # int [N]
  probs: np.ndarray  # [N] (binary) or [N, K]
  class_names: tuple[str, ...]


def read_arm(workdirs: Sequence[str], split: str = "test") -> Arm:
  """Reads and pools `predictions/<split>.csv` of each workdir, naming what is missing."""
  keys, subjects, labels, probs, columns = [], [], [], [], None
  for workdir in workdirs:
    path = os.path.join(workdir, "predictions", f"{split}.csv")
    if not os.path.isfile(path):
      raise PairedComparisonError(f"{path} is missing: {workdir} is not an evaluated run (train it to the end, or "
                                  f"run `python -m leukojax.evaluate --workdir {workdir}`).")
    with open(path, newline="") as f:
      rows = list(csv.DictReader(f))
    these = [k for k in (rows[0] if rows else {}) if k.startswith("p_")]
    if columns is not None and these != columns:
      raise PairedComparisonError(f"{path} has columns {these}, the arm's first workdir {columns}.")
    columns = these
    for r in rows:
      keys.append((r["file_name"], r["subject_id"], int(r["label"])))
      subjects.append(r["subject_id"])
      labels.append(int(r["label"]))
      probs.append([float(r[c]) for c in columns])
  if not keys:
    raise PairedComparisonError(f"{', '.join(workdirs)}: no {split} predictions.")
  if len(set(keys)) != len(keys):
    raise PairedComparisonError(f"{', '.join(workdirs)}: an image appears twice in the {split} predictions; "
                                "give each fold of one cross-validation once.")
  names = tuple(c[2:] for c in columns)
  probs_array = np.asarray(probs, np.float64)
  return Arm(workdirs=tuple(workdirs), keys=keys, subject_id=np.asarray(subjects, dtype=object),
             labels=np.asarray(labels, np.int64),
             probs=probs_array[:, 0] if len(columns) == 1 else probs_array,
             class_names=names if len(columns) > 1 else ("negative", names[0]))


def _aligned(a: Arm, b: Arm) -> np.ndarray:
  """Index into `b` of each of `a`'s images; an error unless both hold exactly the same images."""
  where = {k: i for i, k in enumerate(b.keys)}
  only_a = [k for k in a.keys if k not in where]
  only_b = len(b.keys) - (len(a.keys) - len(only_a))
  if only_a or only_b:
    example = f" (e.g. {only_a[0][0]})" if only_a else ""
    raise PairedComparisonError(
        f"The arms were not scored on the same images: {len(only_a)} only in {', '.join(a.workdirs)}{example}, "
        f"{only_b} only in {', '.join(b.workdirs)}. Compare runs with the same data and split.")
  return np.array([where[k] for k in a.keys])


def paired_difference(a: Arm, b: Arm, *, n_resamples: int = bootstrap.DEFAULT_RESAMPLES, seed: int = 0,
                      confidence: float = 0.95, threshold: float = 0.5) -> dict[str, Any]:
  """Each metric of A and B, B - A, its percentile interval, and the share of resamples with B ahead."""
  order = _aligned(a, b)
  probs_b = b.probs[order]
  groups = None if any(s == "" for s in a.subject_id) else a.subject_id
  clusters = bootstrap.make_clusters(a.labels, groups)
  score = lambda probs, weights: bootstrap.statistics(  # noqa: E731
      a.labels, probs, weights, threshold=threshold, class_names=a.class_names)
  ones = np.ones((1, len(a.labels)), np.float32)
  point_a, point_b = score(a.probs, ones), score(probs_b, ones)
  differences: dict[str, list[np.ndarray]] = {}
  for weights in bootstrap.resample_weights(clusters, n_resamples, seed):
    sa, sb = score(a.probs, weights), score(probs_b, weights)
    for name in sa:
      differences.setdefault(name, []).append(sb[name] - sa[name])
  tail = 100 * (1 - confidence) / 2
  metrics = {}
  for name in (r for r in ROWS if r in point_a):
    d = np.concatenate(differences[name])
    d = d[np.isfinite(d)]
    metrics[name] = {"a": float(point_a[name][0]), "b": float(point_b[name][0]),
                     "difference": float(point_b[name][0] - point_a[name][0]),
                     "ci": [float(np.percentile(d, tail)), float(np.percentile(d, 100 - tail))],
                     "b_ahead": float(np.mean(d > 0)), "tied": float(np.mean(d == 0))}
  return {"a": list(a.workdirs), "b": list(b.workdirs), "n_images": len(a.labels), "unit": clusters.unit,
          "n_units": clusters.count, "n_resamples": n_resamples, "confidence": confidence, "seed": seed,
          "threshold": threshold if a.probs.ndim == 1 else None, "metrics": metrics}


def format_markdown(result: Mapping[str, Any], names: tuple[str, str] = ("A", "B")) -> str:
  a, b = names
  level = int(round(100 * result["confidence"]))
  lines = [f"{a}: {', '.join(result['a'])}", f"{b}: {', '.join(result['b'])}", "",
           f"{result['n_images']} images; paired bootstrap over {result['n_units']} {result['unit']}s "
           f"({result['n_resamples']} resamples, stratified by class), "
           + ("arg-max" if result["threshold"] is None else f"threshold {result['threshold']}"),
           "", f"| metric | {a} | {b} | {b} - {a} ({level}% CI) | resamples with {b} ahead |",
           "| --- | --- | --- | --- | --- |"]
  for name, m in result["metrics"].items():
    lo, hi = m["ci"]
    lines.append(f"| {name} | {m['a']:.3f} | {m['b']:.3f} | {m['difference']:+.3f} [{lo:+.3f}, {hi:+.3f}] "
                 f"| {100 * m['b_ahead']:.0f}% |")
  return "\n".join(lines) + "\n"
