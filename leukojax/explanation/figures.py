"""One PNG per image: original | Grad-CAM overlay(s) | LIME positive regions (matplotlib, Agg)."""

from __future__ import annotations

import dataclasses

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the backend)
import numpy as np  # noqa: E402
from skimage.segmentation import find_boundaries  # noqa: E402

HEATMAP_ALPHA = 0.5
LIME_TINT = np.array([0.1, 0.9, 0.2])  # positive superpixels in green, as Kim's LIME figure
PANEL_INCHES = 2.6
OVERLAY_PIXELS = 300


@dataclasses.dataclass
class Panel:
  """A heatmap overlay: `values` [H, W] (shown normalised to its own maximum), an optional region outline."""

  title: str
  values: np.ndarray
  region: np.ndarray | None = None


def _normalised(values: np.ndarray) -> np.ndarray:
  top = float(np.max(values)) if values.size else 0.0
  return np.zeros_like(values, np.float64) if top <= 0 else np.clip(values / top, 0.0, 1.0)


def _outline(ax, mask: np.ndarray, colour: str) -> None:
  if mask is not None and mask.any() and not mask.all():
    ax.contour(mask.astype(float), levels=[0.5], colors=colour, linewidths=1.2)


def _upscale(a: np.ndarray, factor: int) -> np.ndarray:
  return np.repeat(np.repeat(a, factor, axis=0), factor, axis=1)


def lime_overlay(image: np.ndarray, segments: np.ndarray, chosen: np.ndarray) -> np.ndarray:
  """The image with every superpixel outlined, the chosen (positive) ones tinted, the rest dimmed.

  Drawn on a nearest-neighbour enlargement (to about 300 px), so the outlines stay thin on the
  32-75 px images of small runs.
  """
  factor = max(1, OVERLAY_PIXELS // max(image.shape[:2]))
  image, segments, chosen = _upscale(image, factor), _upscale(segments, factor), _upscale(chosen, factor)
  rgb = image.astype(np.float64) / 255.0
  out = np.where(chosen[..., None], 0.55 * rgb + 0.45 * LIME_TINT, 0.6 * rgb)
  out[find_boundaries(segments, mode="inner")] = (1.0, 1.0, 0.0)
  return np.clip(out, 0.0, 1.0)


def save_explanation(path: str, image: np.ndarray, *, title: str, gradcam: list[Panel] | None = None,
                     lime: tuple[str, np.ndarray, np.ndarray] | None = None) -> None:
  """Writes the figure: `image` uint8 [H, W, 3]; `lime` = (title, segments, chosen mask)."""
  panels = 1 + len(gradcam or []) + (lime is not None)
  fig, axes = plt.subplots(1, panels, figsize=(PANEL_INCHES * panels, PANEL_INCHES + 0.7), squeeze=False)
  axes = axes[0]
  axes[0].imshow(image, interpolation="nearest")
  axes[0].set_title("input (as the model sees it)", fontsize=8)
  for ax, panel in zip(axes[1:], gradcam or []):
    ax.imshow(image, interpolation="nearest")
    ax.imshow(_normalised(panel.values), cmap="jet", alpha=HEATMAP_ALPHA, vmin=0.0, vmax=1.0,
              interpolation="bilinear")
    _outline(ax, panel.region, "white")
    ax.set_title(panel.title, fontsize=8)
  if lime is not None:
    lime_title, segments, chosen = lime
    axes[-1].imshow(lime_overlay(image, segments, chosen), interpolation="nearest",
                    extent=(-0.5, image.shape[1] - 0.5, image.shape[0] - 0.5, -0.5))
    axes[-1].set_title(lime_title, fontsize=8)
  for ax in axes:
    ax.set_xticks([])
    ax.set_yticks([])
  fig.suptitle(title, fontsize=9)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)
