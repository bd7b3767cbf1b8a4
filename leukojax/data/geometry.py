"""The size range of a run's training images, and a check that a new image is not far outside it.

Every image is resized to the model's input, so a 1x1 thumbnail or a 4000x3000 slide photo gets a
confident probability like any cell crop, though the model has never seen anything like it. The
training split's original sizes are recorded with its channel statistics (`data_stats.json`);
`predict` and `explain` flag inputs whose sides fall outside [min / SIDE_FACTOR, max * SIDE_FACTOR]
of them, or whose aspect ratio exceeds the training images' by ASPECT_FACTOR. Flagged images are
still scored (the user may know better) but never silently.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from typing import Any

import grain
import numpy as np

SIDE_FACTOR = 2.0  # a side half the smallest or twice the largest training side is far
ASPECT_FACTOR = 1.5  # long side / short side, relative to the most elongated training image
SHAPE_KEY = "original_hw"


@dataclasses.dataclass(frozen=True)
class ImageGeometry:
  """Min/max height and width (pixels) and the largest aspect ratio of the training images."""

  height: tuple[int, int]
  width: tuple[int, int]
  max_aspect: float

  @classmethod
  def from_shapes(cls, shapes: Iterable[tuple[int, int]]) -> ImageGeometry:
    hw = np.asarray(list(shapes), np.int64).reshape(-1, 2)
    if not len(hw):
      raise ValueError("No training image shapes to record.")
    aspect = hw.max(1) / np.maximum(hw.min(1), 1)
    return cls((int(hw[:, 0].min()), int(hw[:, 0].max())), (int(hw[:, 1].min()), int(hw[:, 1].max())),
               float(aspect.max()))

  def to_json(self) -> dict[str, Any]:
    return {"height": list(self.height), "width": list(self.width), "max_aspect": self.max_aspect}

  @classmethod
  def from_json(cls, d: Mapping[str, Any] | None) -> ImageGeometry | None:
    if not d:
      return None
    return cls(tuple(map(int, d["height"])), tuple(map(int, d["width"])), float(d["max_aspect"]))

  def describe(self) -> str:
    (h0, h1), (w0, w1) = self.height, self.width
    return f"training images {h0}-{h1} px high, {w0}-{w1} px wide"

  def check(self, height: int, width: int) -> str:
    """'' when (height, width) is near the training sizes, else why it is not."""
    reasons = []
    for side, value, (low, high) in (("height", height, self.height), ("width", width, self.width)):
      if value < low / SIDE_FACTOR or value > high * SIDE_FACTOR:
        reasons.append(f"{side} {value} px")
    aspect = max(height, width) / max(min(height, width), 1)
    if aspect > self.max_aspect * ASPECT_FACTOR:
      reasons.append(f"aspect ratio {aspect:.2f}")
    if not reasons:
      return ""
    return f"{height}x{width} px ({', '.join(reasons)}) is far from the {self.describe()}; its score is unreliable"


class RecordShape(grain.transforms.Map):
  """Wraps a prepare transform: also returns the decoded image's original (height, width)."""

  def __init__(self, prepare: grain.transforms.Map):
    self.prepare = prepare

  def map(self, element: dict[str, Any]) -> dict[str, Any]:
    shape = np.asarray(np.shape(element["image"])[:2], np.int64)
    return {**self.prepare.map(element), SHAPE_KEY: shape}


def flag_inputs(training: ImageGeometry | None, paths: Iterable[str], shapes: Iterable[tuple[int, int]]) -> list[str]:
  """Per input, '' or why its size is far from the training images'; each flag is logged."""
  from absl import logging  # pylint: disable=g-import-not-at-top

  if training is None:
    logging.warning("This run's data_stats.json records no training image sizes (written by an older "
                    "LeukoJAX): inputs are not checked against them.")
    return ["" for _ in paths]
  flags = [training.check(int(h), int(w)) for h, w in shapes]
  for path, flag in zip(paths, flags):
    if flag:
      logging.warning("%s: %s.", path, flag)
  return flags
