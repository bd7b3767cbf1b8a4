"""How far Grad-CAM and LIME agree on one image: the IoU of their top regions.

Kim et al. observed that the two highlight different regions but did not measure it. Definition
(docs/explanations.md), with `f` the top fraction (default 0.2) and N the image's pixel count:

* Grad-CAM region G: the pixels whose (combined, upsampled) Grad-CAM value is at least the map's
  `1 - f` quantile and above zero. Ties at the threshold are all kept, so a flat map (no spatial
  information, e.g. a 1x1 layer) gives the whole image rather than an arbitrary f-sized piece.
* LIME region L: LIME's positive superpixels taken from the most positive down; of those prefixes,
  the one whose area is closest to f*N (ties: the smaller), so both regions cover a comparable area.
  Empty when no superpixel has a positive weight.
* agreement = |G n L| / |G u L| (IoU); undefined (None) when either region is empty (an all-zero
  Grad-CAM map, or no superpixel with a positive LIME weight): a method that highlights nothing
  neither agrees nor disagrees, so such images are left out of the mean rather than counted as 0.

Chance level: two regions of area fractions a and b placed independently overlap, in expectation,
by a*b*N pixels, so IoU_chance = ab / (a + b - ab) (0.11 for a = b = 0.2). It is reported beside
each IoU so a value can be read against it.
"""

from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass
class Agreement:
  iou: float | None
  iou_chance: float | None
  gradcam_area: float  # fraction of the image in G
  lime_area: float  # fraction of the image in L
  lime_superpixels: list[int]  # the superpixels forming L, most positive first


def gradcam_region(heatmap: np.ndarray, fraction: float) -> np.ndarray:
  """Boolean mask of the top `fraction` of pixels by value (ties at the threshold kept, zeros never)."""
  _check_fraction(fraction)
  heatmap = np.asarray(heatmap, np.float64)
  threshold = np.quantile(heatmap, 1.0 - fraction)
  return (heatmap >= threshold) & (heatmap > 0)


def lime_region(segments: np.ndarray, positive_order: list[int],
                fraction: float) -> tuple[np.ndarray, list[int]]:
  """Union of the leading positive superpixels whose area is closest to `fraction` of the image."""
  _check_fraction(fraction)
  target = fraction * segments.size
  areas = np.bincount(segments.ravel(), minlength=int(segments.max()) + 1)
  best_k, best_gap, covered = 0, np.inf, 0
  for k, s in enumerate(positive_order, start=1):
    covered += int(areas[s])
    gap = abs(covered - target)
    if gap < best_gap:
      best_k, best_gap = k, gap
  chosen = list(positive_order[:best_k])
  return np.isin(segments, chosen), chosen


def iou(a: np.ndarray, b: np.ndarray) -> float | None:
  """Intersection over union of two masks; None when either is empty (nothing to compare)."""
  if not a.any() or not b.any():
    return None
  return float(np.logical_and(a, b).sum() / np.logical_or(a, b).sum())


def chance_iou(area_a: float, area_b: float) -> float | None:
  """Expected IoU of two independently placed regions covering these fractions of the image."""
  if area_a == 0 or area_b == 0:
    return None
  return float(area_a * area_b / (area_a + area_b - area_a * area_b))


def measure(heatmap: np.ndarray, segments: np.ndarray, positive_order: list[int],
              fraction: float = 0.2) -> Agreement:
  """Grad-CAM vs LIME agreement on one image (module docstring)."""
  if heatmap.shape != segments.shape:
    raise ValueError(f"Grad-CAM map {heatmap.shape} and LIME segments {segments.shape} differ in size.")
  g = gradcam_region(heatmap, fraction)
  lime_mask, chosen = lime_region(segments, positive_order, fraction)
  area_g, area_l = float(g.mean()), float(lime_mask.mean())
  return Agreement(iou=iou(g, lime_mask), iou_chance=chance_iou(area_g, area_l), gradcam_area=area_g,
                   lime_area=area_l, lime_superpixels=chosen)


def _check_fraction(fraction: float) -> None:
  if not 0.0 < fraction <= 1.0:
    raise ValueError(f"The top-region fraction must be in (0, 1]; got {fraction}.")
