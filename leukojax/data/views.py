"""Task views: which dataset labels a task keeps and how it renumbers them.

A view is applied to the record catalogue before deduplication and splitting, so the split is
stratified over the classes the model actually learns.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import numpy as np

DATASETS: tuple[str, ...] = ("cnmc2019", "taleqani_all")


@dataclasses.dataclass(frozen=True)
class TaskView:
  """Maps dataset labels to task labels; dataset labels not in `label_map` are dropped."""

  name: str
  class_names: tuple[str, ...]
  label_map: Mapping[int, int]

  @property
  def num_classes(self) -> int:
    return len(self.class_names)

  def apply(self, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Returns (keep mask, new labels for the kept rows)."""
    labels = np.asarray(labels)
    keep = np.isin(labels, list(self.label_map))
    new = np.array([self.label_map[int(x)] for x in labels[keep]], dtype=np.int32)
    return keep, new


_VIEWS: dict[tuple[str, str], TaskView] = {
    # C-NMC: ALL is the positive class, as in the builder (hem=0, all=1).
    ("cnmc2019", "binary"): TaskView("binary", ("hem", "all"), {0: 0, 1: 1}),
    # Paper 2's binary task: Pro-B ALL (builder label 3) is positive, benign (0) negative.
    ("taleqani_all", "benign_vs_pro_b"): TaskView("benign_vs_pro_b", ("benign", "pro_b"), {0: 0, 3: 1}),
    ("taleqani_all", "four_class"): TaskView(
        "four_class", ("benign", "early_pre_b", "pre_b", "pro_b"), {0: 0, 1: 1, 2: 2, 3: 3}
    ),
}


def get_view(dataset: str, task: str) -> TaskView:
  """Returns the view for `dataset`/`task`, naming the valid tasks when the pair is unknown."""
  if dataset not in DATASETS:
    raise ValueError(f"Unknown dataset {dataset!r}; expected one of {DATASETS}.")
  view = _VIEWS.get((dataset, task))
  if view is None:
    valid = sorted(t for d, t in _VIEWS if d == dataset)
    raise ValueError(f"Unknown task {task!r} for dataset {dataset!r}; expected one of {valid}.")
  return view
