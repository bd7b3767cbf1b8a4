"""The training-geometry check that flags inputs a model has never seen the like of."""

import numpy as np
import pytest

from leukojax.data import geometry


def test_training_sizes_and_what_is_far_from_them():
  g = geometry.ImageGeometry.from_shapes([(224, 224), (230, 210), (200, 224)])
  assert g.height == (200, 230) and g.width == (210, 224) and g.max_aspect == pytest.approx(224 / 200)
  assert geometry.ImageGeometry.from_json(g.to_json()) == g and geometry.ImageGeometry.from_json(None) is None
  assert g.check(224, 224) == "" and g.check(120, 160) == ""  # within half / twice the training sides
  assert g.check(1, 1).startswith("1x1 px (height 1 px, width 1 px) is far from the training images 200-230")
  assert "width 450 px" in g.check(224, 450) and "aspect ratio 2.01" in g.check(224, 450)
  assert g.check(461, 449).startswith("461x449 px (height 461 px, width 449 px)")  # over twice the largest
  with pytest.raises(ValueError, match="No training image shapes"):
    geometry.ImageGeometry.from_shapes([])


def test_record_shape_keeps_the_original_size():
  from leukojax.data import transforms as T

  out = geometry.RecordShape(T.PrepareImage(16)).map({"image": np.zeros((40, 30, 3), np.uint8), "label": 1})
  assert out["image"].shape == (16, 16, 3) and out[geometry.SHAPE_KEY].tolist() == [40, 30] and out["label"] == 1
