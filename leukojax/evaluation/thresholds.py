"""The decision threshold of a binary model, chosen on the validation split only.

The papers report at 0.5. A threshold tuned on the test split would make the test result
optimistic, so the tuned threshold is chosen on validation predictions and then applied,
unchanged, to the test split; the report states the criterion and the split it was chosen on.
"""

from __future__ import annotations

import dataclasses

import numpy as np

DEFAULT_THRESHOLD = 0.5
CRITERIA = {
    "youden": "maximum Youden's J (sensitivity + specificity - 1)",
    "f1": "maximum F1 of the positive class",
}


@dataclasses.dataclass(frozen=True)
class ThresholdChoice:
  """The chosen threshold, how it was chosen, and the criterion's value on the split it came from."""

  threshold: float
  criterion: str
  chosen_on: str
  score: float  # the criterion's value at `threshold` on `chosen_on`
  note: str = ""

  def describe(self) -> str:
    text = f"{self.threshold:.4f}, chosen on the {self.chosen_on} split by {CRITERIA[self.criterion]}"
    return f"{text} ({self.note})" if self.note else text

  def to_json(self) -> dict[str, object]:
    return {"default": DEFAULT_THRESHOLD, "chosen": self.threshold, "criterion": self.criterion,
            "criterion_text": CRITERIA[self.criterion], "chosen_on": self.chosen_on,
            "criterion_value": self.score, "note": self.note}


def _criterion(criterion: str, tp, fp, fn, tn):
  """Youden's J or F1 from confusion counts (arrays or scalars)."""
  tp, fp, fn, tn = (np.asarray(x, np.float64) for x in (tp, fp, fn, tn))
  if criterion == "youden":
    return tp / (tp + fn) + tn / (tn + fp) - 1.0
  return 2 * tp / np.maximum(2 * tp + fp + fn, 1)


def choose_threshold(labels: np.ndarray, probs: np.ndarray, criterion: str = "youden",
                     split_name: str = "val") -> ThresholdChoice:
  """Maximises `criterion` over the thresholds where predictions change (`probs >= t` is positive).

  The threshold returned is the midpoint between the optimal score and the next lower distinct
  score, so a new image scoring exactly like a validation image is not on the edge. When 0.5
  classifies the validation images as well as the best threshold, 0.5 is kept (a tuned threshold
  must earn its place); other ties go to the threshold nearest 0.5. With one class only in
  `labels`, 0.5 is returned and the note says why. Never pass test predictions here.
  """
  if criterion not in CRITERIA:
    raise ValueError(f"Unknown threshold criterion {criterion!r}; expected one of {sorted(CRITERIA)}.")
  if split_name == "test":
    raise ValueError("A threshold must never be chosen on the test split; choose it on 'val'.")
  labels = np.asarray(labels).astype(int)
  probs = np.asarray(probs, np.float64).reshape(-1)
  if len(np.unique(labels)) < 2:
    return ThresholdChoice(DEFAULT_THRESHOLD, criterion, split_name, float("nan"),
                           note=f"the {split_name} split has one class only, so 0.5 is kept")
  order = np.argsort(-probs, kind="stable")
  sorted_probs, pos = probs[order], labels[order] == 1
  last = np.r_[sorted_probs[1:] != sorted_probs[:-1], True]  # last image of each distinct score
  distinct = sorted_probs[last]  # candidate thresholds, descending
  tp = np.cumsum(pos)[last]  # counts predicted positive at `probs >= distinct[i]`
  fp = np.cumsum(~pos)[last]
  fn, tn = pos.sum() - tp, (~pos).sum() - fp
  score = _criterion(criterion, tp, fp, fn, tn)
  lower = np.r_[distinct[1:], 0.0]  # next lower distinct score (0 below the smallest)
  midpoints = (distinct + lower) / 2
  midpoints = np.where((midpoints > lower) & (midpoints <= distinct), midpoints, distinct)
  best = np.flatnonzero(np.isclose(score, score.max(), rtol=0, atol=1e-12))
  called = probs >= DEFAULT_THRESHOLD
  at_default = _criterion(criterion, *(np.sum(a & b) for a, b in (
      (called, labels == 1), (called, labels != 1), (~called, labels == 1), (~called, labels != 1))))
  if at_default >= score.max() - 1e-12:
    return ThresholdChoice(DEFAULT_THRESHOLD, criterion, split_name, float(at_default),
                           note="0.5 is already optimal, so it is kept")
  pick = best[np.argmin(np.abs(midpoints[best] - DEFAULT_THRESHOLD))]
  threshold = float(midpoints[pick])
  return ThresholdChoice(threshold, criterion, split_name, float(score[pick]))
