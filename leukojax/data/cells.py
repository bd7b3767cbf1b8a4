"""Finds the one cell in a C-NMC 2019 image: its mask, its box, a window around it, its features.

C-NMC cells are segmented onto an exactly black background (0 in every channel; 75-93% of a
450x450 frame), so "not black" is the cell. Cells differ in size between classes (median larger
box side 231 px for ALL blasts, 188 px for HEM cells, on fold_1), so `cell_window` keeps the
physical scale: a fixed window centred on the cell rather than a crop fitted to it (docs/data.md).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from skimage import color, measure

# 8-connectivity: a cell's outline can touch itself only diagonally after segmentation.
_STRUCTURE = np.ones((3, 3), bool)
# ITU-R 601 luma, as PIL's 'L' mode.
_GREY = np.asarray([0.299, 0.587, 0.114], np.float64)


def _max_channel(image: np.ndarray) -> np.ndarray:
  """Max over the last axis; channel by channel, as `max(axis=-1)` on uint8 HxWx3 is ~20x slower."""
  if image.ndim == 2:
    return image
  out = image[..., 0]
  for c in range(1, image.shape[-1]):
    out = np.maximum(out, image[..., c])
  return out


def cell_mask(image: np.ndarray, threshold: int = 0) -> np.ndarray:
  """Bool HxW mask of the largest connected non-black region (max channel > threshold), holes filled.

  The largest component drops stray specks left by the segmentation; filling holes keeps pale
  cytoplasm that happens to be near black inside the cell.
  """
  image = np.asarray(image)
  fg = _max_channel(image) > threshold
  labels, n = ndimage.label(fg, structure=_STRUCTURE)
  if n == 0:
    return fg
  if n > 1:
    fg = labels == (np.argmax(np.bincount(labels.ravel())[1:]) + 1)
  # Holes: background regions (4-connected, as binary_fill_holes) that do not reach the border of
  # the box padded by 1 px. Labelling the box only is ~5x faster than binary_fill_holes on the frame.
  top, left, height, width = _mask_box(fg)
  box = np.pad(fg[top : top + height, left : left + width], 1)
  holes, n_holes = ndimage.label(~box)
  if n_holes > 1:
    outside = np.unique(np.concatenate([holes[0], holes[-1], holes[:, 0], holes[:, -1]]))
    filled = box | ~np.isin(holes, outside)
    fg = fg.copy()
    fg[top : top + height, left : left + width] = filled[1:-1, 1:-1]
  return fg


def _mask_box(mask: np.ndarray) -> tuple[int, int, int, int]:
  rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
  if not len(rows):
    return 0, 0, int(mask.shape[0]), int(mask.shape[1])
  return int(rows[0]), int(cols[0]), int(rows[-1] - rows[0] + 1), int(cols[-1] - cols[0] + 1)


def cell_box(image: np.ndarray, threshold: int = 0) -> tuple[int, int, int, int]:
  """(top, left, height, width) of the cell mask's bounding box; the whole image if there is no cell."""
  return _mask_box(cell_mask(image, threshold))


def cell_window(image: np.ndarray, window: int) -> np.ndarray:
  """A square crop of side `window` centred on the cell's box, black where it leaves the frame.

  The side grows to the box's larger side when the cell is bigger than `window`, so no cell is
  ever cut; `window <= 0` gives that tight square. The dtype and channels of `image` are kept.
  """
  image = np.asarray(image)
  top, left, height, width = cell_box(image)
  side = max(int(window), height, width) if window > 0 else max(height, width)
  # Floor division keeps the box inside: it starts ceil((side - h) / 2) px into the window.
  y0, x0 = top + (height - side) // 2, left + (width - side) // 2
  out = np.zeros((side, side, *image.shape[2:]), image.dtype)
  h, w = image.shape[:2]
  sy0, sx0, sy1, sx1 = max(y0, 0), max(x0, 0), min(y0 + side, h), min(x0 + side, w)
  if sy1 > sy0 and sx1 > sx0:
    out[sy0 - y0 : sy1 - y0, sx0 - x0 : sx1 - x0] = image[sy0:sy1, sx0:sx1]
  return out


def cell_features(image: np.ndarray) -> dict[str, float]:
  """Size, shape and colour of the cell, for a hand-crafted baseline (no network).

  Keys: `area` (mask pixels), `equivalent_diameter`, `bbox_height`, `bbox_width`, `circularity`
  (4*pi*area / perimeter**2, regionprops' perimeter), `mean_{r,g,b}` / `std_{r,g,b}` (0..255),
  `mean_{h,e,d}` / `std_{h,e,d}` (skimage `rgb2hed`, on 0..1 RGB) over the mask, and `dark25_grey`:
  the mean grey (luma, 0..255) of the darkest quarter of the cell's pixels, a nucleus proxy.
  All at full resolution (about 5 ms for 450x450). Without a cell: `area` 0, the rest NaN.
  """
  image = np.asarray(image)
  if image.ndim == 2:
    image = np.repeat(image[..., None], 3, axis=-1)
  image = image[..., :3]
  mask = cell_mask(image)
  area = int(mask.sum())
  keys = ("equivalent_diameter", "bbox_height", "bbox_width", "circularity", "mean_r", "mean_g", "mean_b",
          "std_r", "std_g", "std_b", "mean_h", "mean_e", "mean_d", "std_h", "std_e", "std_d", "dark25_grey")
  if area == 0:
    return {"area": 0.0, **{k: float("nan") for k in keys}}
  top, left, height, width = _mask_box(mask)
  crop = mask[top : top + height, left : left + width]
  # regionprops on the box only: the perimeter scan then costs the cell, not the frame.
  region = measure.regionprops(crop.astype(np.uint8))[0]
  perimeter = float(region.perimeter)
  pixels = image[mask].astype(np.float64)  # (area, 3), 0..255
  hed = color.rgb2hed(pixels / 255.0)  # any (..., 3) array; per pixel
  grey = pixels @ _GREY
  pixels, hed = np.ascontiguousarray(pixels.T), np.ascontiguousarray(hed.T)  # (3, area): fast reductions
  quarter = max(1, area // 4)
  feats = {
      "area": float(area),
      "equivalent_diameter": float(np.sqrt(4.0 * area / np.pi)),
      "bbox_height": float(height),
      "bbox_width": float(width),
      "circularity": float(4.0 * np.pi * area / perimeter**2) if perimeter > 0 else 1.0,
  }
  mean, std = pixels.mean(axis=1), pixels.std(axis=1)
  hmean, hstd = hed.mean(axis=1), hed.std(axis=1)
  for i, c in enumerate("rgb"):
    feats[f"mean_{c}"], feats[f"std_{c}"] = float(mean[i]), float(std[i])
  for i, c in enumerate("hed"):
    feats[f"mean_{c}"], feats[f"std_{c}"] = float(hmean[i]), float(hstd[i])
  feats["dark25_grey"] = float(np.partition(grey, quarter - 1)[:quarter].mean())
  return {k: feats[k] for k in ("area", *keys)}
