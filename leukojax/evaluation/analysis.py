"""From the predictions of each split to every number of the report (numpy and scikit-learn only).

Per split: the metrics at threshold 0.5 (the papers' operating point) and at the threshold chosen
on the validation split, each with bootstrap confidence intervals (`leukojax.bootstrap`), and, when
subject ids exist, the patient-level result (`leukojax.patients`). Kept apart from the JAX side so
it is tested on plain arrays.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import numpy as np

from leukojax.evaluation import bootstrap, metrics, patients, thresholds
from leukojax.models import outputs


class Predictions(Protocol):
  """What `evaluation.SplitResult` provides."""

  probs: np.ndarray
  labels: np.ndarray
  metadata: Mapping[str, np.ndarray]
  loss: float


@dataclasses.dataclass(frozen=True)
class AnalysisOptions:
  """How uncertainty and the tuned threshold are computed (all stated in the report)."""

  n_resamples: int = bootstrap.DEFAULT_RESAMPLES
  confidence: float = 0.95
  seed: int = 0
  threshold_criterion: str = "youden"


def _labelled(result: Predictions) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  keep = np.asarray(result.labels) >= 0
  subjects = np.asarray(result.metadata.get("subject_id", np.full(len(keep), b"", object)))
  return np.asarray(result.labels)[keep], np.asarray(result.probs)[keep], subjects[keep]


def _with_ci(labels, probs, groups, threshold, class_names, options) -> tuple[dict, dict]:
  point = metrics.classification_metrics(labels, probs, tuple(class_names), threshold)
  boot = bootstrap.bootstrap_cis(labels, probs, groups=groups, threshold=threshold,
                                 class_names=class_names, n_resamples=options.n_resamples,
                                 seed=options.seed, confidence=options.confidence)
  return point, boot


def patient_level(labels: np.ndarray, probs: np.ndarray, subject_ids: np.ndarray, *,
                  threshold: float, class_names: Sequence[str], options: AnalysisOptions) -> dict[str, Any]:
  """Subject-level binary metrics (each subject one unit, CIs over subjects) and the subject table."""
  agg = patients.aggregate(subject_ids, labels, probs, threshold)
  point, boot = _with_ci(agg.label, agg.prob, None, threshold, class_names, options)
  return {"aggregation": patients.AGGREGATION, "threshold": float(threshold), **point,
          "n_subjects": int(len(agg.subject_id)), "ci": boot["ci"], "ci_unit": "subject",
          "subjects_with_mixed_labels": agg.mixed_labels, "subjects": agg.rows(threshold)}


def analyse_split(result: Predictions, *, class_names: Sequence[str], options: AnalysisOptions,
                  chosen: thresholds.ThresholdChoice | None) -> dict[str, Any]:
  """Everything the report shows for one labelled split."""
  labels, probs, subjects = _labelled(result)
  has_subjects = patients.has_subjects(subjects)
  groups = subjects if has_subjects else None
  out: dict[str, Any] = {"loss": float(result.loss), "n_images": int(len(labels)),
                         "n_subjects": int(len(set(subjects.tolist()))) if has_subjects else 0}
  if not len(labels):
    return out
  point, boot = _with_ci(labels, probs, groups, thresholds.DEFAULT_THRESHOLD, class_names, options)
  out.update(point)
  out["ci"], out["ci_unit"], out["ci_units"] = boot["ci"], boot["unit"], boot["n_units"]
  if not outputs.is_binary(probs):
    return out
  if chosen is not None:
    point_c, boot_c = _with_ci(labels, probs, groups, chosen.threshold, class_names, options)
    out["at_chosen_threshold"] = {**point_c, "ci": boot_c["ci"]}
  if has_subjects:
    out["patient_level"] = {"at_0.5": patient_level(labels, probs, subjects, threshold=0.5,
                                                     class_names=class_names, options=options)}
    if chosen is not None:
      out["patient_level"]["at_chosen_threshold"] = patient_level(
          labels, probs, subjects, threshold=chosen.threshold, class_names=class_names, options=options)
  return out


def choose_on_validation(results: Mapping[str, Predictions], criterion: str) -> thresholds.ThresholdChoice | None:
  """The tuned threshold, from the validation split's predictions only (None for multi-class)."""
  val = results.get("val")
  if val is None:
    raise ValueError("The validation split is needed to choose the threshold; evaluate 'val' too.")
  labels, probs, _ = _labelled(val)
  if not outputs.is_binary(probs):
    return None
  return thresholds.choose_threshold(labels, np.asarray(probs).reshape(-1), criterion, split_name="val")


def analyse(results: Mapping[str, Predictions], *, class_names: Sequence[str],
            options: AnalysisOptions) -> tuple[thresholds.ThresholdChoice | None, dict[str, dict[str, Any]]]:
  """(validation-chosen threshold, per-split analysis) for every split in `results`."""
  chosen = choose_on_validation(results, options.threshold_criterion)
  return chosen, {name: analyse_split(result, class_names=class_names, options=options, chosen=chosen)
                  for name, result in results.items()}
