"""Class balance on the training split: the paper's rotated-copy oversampling and class weights.

Both are computed after splitting, from the training split only, so val/test keep their natural
class ratio and no rotated copy of a test image can reach training (the paper's split sizes sum to
its balanced total, 14,048, which suggests it split after oversampling; we do not).
"""

from __future__ import annotations

import numpy as np

BALANCE_MODES: tuple[str, ...] = ("oversample_rot90", "class_weights", "none")


def oversample_rot90(labels: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
  """Adds 90°-clockwise rotated copies of each smaller class; returns (positions, rotate flags).

  A class with n_c images below the largest class n_max gets min(n_max - n_c, n_c) copies: each of
  its images is rotated at most once (the paper doubled HEM: 3,389 -> 6,776, still below 7,272 ALL),
  and when fewer copies are needed a seeded random subset of its images is rotated. The output
  lists every original position (flag False) then the copies (flag True), positions into `labels`.
  """
  labels = np.asarray(labels)
  rng = np.random.default_rng(seed)
  classes, counts = np.unique(labels, return_counts=True)
  n_max = counts.max() if len(counts) else 0
  extra = []
  for c, n_c in zip(classes, counts):
    n_add = min(n_max - n_c, n_c)
    if n_add > 0:
      members = np.flatnonzero(labels == c)
      chosen = members if n_add == n_c else np.sort(rng.choice(members, n_add, replace=False))
      extra.append(chosen)
  extra_pos = np.concatenate(extra) if extra else np.zeros(0, np.int64)
  positions = np.concatenate([np.arange(len(labels)), extra_pos]).astype(np.int64)
  rotate = np.concatenate([np.zeros(len(labels), bool), np.ones(len(extra_pos), bool)])
  return positions, rotate


def class_weights(labels: np.ndarray, num_classes: int) -> np.ndarray:
  """sklearn 'balanced' weights n / (K * n_c) per class; 0 for a class absent from `labels`."""
  # Imported here: sklearn costs seconds to import, and grain worker processes never need it.
  from sklearn.utils.class_weight import compute_class_weight  # pylint: disable=g-import-not-at-top

  labels = np.asarray(labels)
  present = np.unique(labels)
  weights = np.zeros(num_classes, np.float32)
  if len(present):
    weights[present] = compute_class_weight("balanced", classes=present, y=labels)
  return weights
