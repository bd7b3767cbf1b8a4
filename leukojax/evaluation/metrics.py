"""Classification metrics of the two papers, computed with scikit-learn.

Binary: the Helwan et al. table (TP, TN, FP, FN, accuracy, prevalence, sensitivity, specificity,
PPV, NPV, AUC, F1 at a threshold), the ISBI 2019 challenge score (F1 averaged over both classes,
weighted by support: sklearn's `average='weighted'`) and balanced accuracy. Multi-class: accuracy,
balanced accuracy, macro/weighted F1, one-vs-rest AUC, per-class precision and recall.
"""

from __future__ import annotations

import numpy as np
from sklearn import metrics as skm

from leukojax.models import outputs


def _ratio(num: float, den: float) -> float:
  return float(num / den) if den else float("nan")


def binary_metrics(labels: np.ndarray, probs: np.ndarray, threshold: float = 0.5) -> dict[str, float]:
  """`probs` is P(positive) per example; the positive class is 1 (ALL in C-NMC)."""
  labels = np.asarray(labels).astype(int)
  probs = np.asarray(probs, dtype=np.float64)
  preds = outputs.decide(probs, threshold, xp=np)
  tn, fp, fn, tp = skm.confusion_matrix(labels, preds, labels=[0, 1]).ravel()
  both_classes = len(np.unique(labels)) == 2
  return {
      "TP": int(tp), "TN": int(tn), "FP": int(fp), "FN": int(fn),
      "accuracy": _ratio(tp + tn, len(labels)),
      "prevalence": _ratio(tp + fn, len(labels)),
      "sensitivity": _ratio(tp, tp + fn),
      "specificity": _ratio(tn, tn + fp),
      "PPV": _ratio(tp, tp + fp),
      "NPV": _ratio(tn, tn + fn),
      "AUC": float(skm.roc_auc_score(labels, probs)) if both_classes else float("nan"),
      "F1": float(skm.f1_score(labels, preds, zero_division=0)),
      "threshold": float(threshold),
      "isbi_weighted_f1": float(skm.f1_score(labels, preds, average="weighted", zero_division=0)),
      "macro_f1": float(skm.f1_score(labels, preds, average="macro", labels=[0, 1], zero_division=0)),
      "balanced_accuracy": float(np.mean([_ratio(tp, tp + fn), _ratio(tn, tn + fp)])),
      "n": int(len(labels)),
  }


def multiclass_metrics(labels: np.ndarray, probs: np.ndarray,
                       class_names: tuple[str, ...]) -> dict[str, object]:
  """`probs` is [N, K] softmax output; prediction is the arg-max."""
  labels = np.asarray(labels).astype(int)
  probs = np.asarray(probs, dtype=np.float64)
  preds = outputs.decide(probs, xp=np)
  classes = list(range(len(class_names)))
  precision, recall, f1, support = skm.precision_recall_fscore_support(
      labels, preds, labels=classes, zero_division=0)
  # One-vs-rest AUC is undefined when a class is absent from `labels` (sklearn would raise).
  present = np.isin(classes, labels).all()
  auc = float(skm.roc_auc_score(labels, probs, multi_class="ovr", labels=classes)) if present else float("nan")
  return {
      "accuracy": float(skm.accuracy_score(labels, preds)),
      "balanced_accuracy": float(skm.balanced_accuracy_score(labels, preds)),
      "macro_f1": float(skm.f1_score(labels, preds, average="macro", zero_division=0)),
      "weighted_f1": float(skm.f1_score(labels, preds, average="weighted", zero_division=0)),
      "AUC": auc,
      "per_class": {name: {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
                    for name, p, r, f, s in zip(class_names, precision, recall, f1, support)},
      "confusion_matrix": skm.confusion_matrix(labels, preds, labels=classes).tolist(),
      "n": int(len(labels)),
  }


def classification_metrics(labels: np.ndarray, probs: np.ndarray, class_names: tuple[str, ...],
                           threshold: float = 0.5) -> dict[str, object]:
  """Binary metrics for one sigmoid output ([N] or [N, 1] probs), multi-class otherwise."""
  probs = np.asarray(probs)
  if outputs.is_binary(probs):
    return binary_metrics(labels, probs.reshape(-1), threshold)
  return multiclass_metrics(labels, probs, class_names)
