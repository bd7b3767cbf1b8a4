"""Patient-level results: one aggregated prediction per subject (C-NMC has subject ids).

A clinician diagnoses a patient, not a cell. Each subject's score is the mean of its cells'
probabilities of ALL; the subject is called ALL when that mean reaches the threshold. Its true
label is the label its cells share (a C-NMC subject is either a patient or healthy; a subject whose
cells disagree gets its majority label, and the disagreement is counted in the output).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from leukojax.models import outputs

AGGREGATION = "mean of the subject's cell probabilities"


@dataclasses.dataclass(frozen=True)
class SubjectPredictions:
  """Per-subject arrays, sorted by subject id."""

  subject_id: np.ndarray  # str [S]
  label: np.ndarray  # int [S], majority label of the subject's cells
  prob: np.ndarray  # float [S], mean cell probability
  cells: np.ndarray  # int [S], number of cells
  cell_positive_fraction: np.ndarray  # float [S], share of cells predicted positive at the threshold
  mixed_labels: int  # subjects whose cells do not all share one label

  def rows(self, threshold: float) -> list[dict[str, object]]:
    return [{"subject_id": str(s), "label": int(y), "cells": int(n), "mean_prob": float(p),
             "predicted": int(outputs.decide(np.asarray([p]), threshold, xp=np)[0]), "cell_positive_fraction": float(f)}
            for s, y, p, n, f in zip(self.subject_id, self.label, self.prob, self.cells,
                                     self.cell_positive_fraction)]


def has_subjects(subject_ids: np.ndarray) -> bool:
  """True when every image carries a subject id (C-NMC); Taleqani has none."""
  return len(subject_ids) > 0 and all(len(s) > 0 for s in subject_ids)


def aggregate(subject_ids: np.ndarray, labels: np.ndarray, probs: np.ndarray,
              threshold: float) -> SubjectPredictions:
  """Groups binary cell predictions (`probs` = P(positive) [N]) by subject."""
  probs = np.asarray(probs, np.float64).reshape(-1)
  labels = np.asarray(labels).astype(int)
  if not has_subjects(subject_ids):
    raise ValueError("Patient-level aggregation needs a subject id for every image.")
  ids = np.asarray([s.decode() if isinstance(s, bytes) else str(s) for s in subject_ids])
  keys, index = np.unique(ids, return_inverse=True)
  cells = np.bincount(index, minlength=len(keys))
  mean_prob = np.bincount(index, weights=probs, minlength=len(keys)) / cells
  positive = np.bincount(index, weights=outputs.decide(probs, threshold, xp=np).astype(float), minlength=len(keys)) / cells
  positives = np.bincount(index, weights=(labels == 1).astype(float), minlength=len(keys))
  label = (positives * 2 > cells).astype(int)  # majority; a tie counts as negative
  mixed = int(np.sum((positives > 0) & (positives < cells)))
  return SubjectPredictions(subject_id=keys, label=label, prob=mean_prob, cells=cells,
                            cell_positive_fraction=positive, mixed_labels=mixed)
