"""Oversampling with 90°-clockwise copies and class weights (unit level; the pipeline test checks images)."""

import numpy as np

from leukojax.data import balance


def test_oversample_rotates_each_minority_image_at_most_once():
  labels = np.array([1] * 10 + [0] * 4)  # minority 4 < majority 10: all 4 rotated once -> 8
  positions, rotate = balance.oversample_rot90(labels, seed=0)
  assert np.bincount(labels[positions]).tolist() == [8, 10]
  assert positions[:14].tolist() == list(range(14)) and not rotate[:14].any()
  assert rotate[14:].all() and sorted(positions[14:].tolist()) == [10, 11, 12, 13]


def test_oversample_stops_at_the_majority_count_with_a_seeded_subset():
  labels = np.array([1] * 10 + [0] * 7 + [2] * 9)
  positions, rotate = balance.oversample_rot90(labels, seed=3)
  assert np.bincount(labels[positions]).tolist() == [10, 10, 10]
  copies = positions[rotate]
  assert len(set(copies.tolist())) == len(copies)  # never the same image twice
  again, _ = balance.oversample_rot90(labels, seed=3)
  assert np.array_equal(positions, again)


def test_class_weights_are_sklearn_balanced():
  w = balance.class_weights(np.array([0, 0, 0, 1]), 3)
  np.testing.assert_allclose(w, [4 / (2 * 3), 4 / (2 * 1), 0.0])
