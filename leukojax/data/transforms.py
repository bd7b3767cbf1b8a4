"""grain transforms, as module-level classes so grain worker processes can pickle them.

Per example: `PrepareImage` (uint8, crop/resize, the oversampling rotation) -> `Augment` (training
only) -> `Normalize` (train-split standardisation mapped onto ImageNet statistics, then the
ImageNet mode). docs/data.md explains the composition.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import grain
import numpy as np
from PIL import Image

from leukojax.data.images import to_rgb_uint8
from leukojax.models.preprocessing import MODES, TORCH_MEAN_RGB, TORCH_STD_RGB, preprocess_input

RESIZE_MODES: tuple[str, ...] = ("resize", "center_crop", "cell_crop")
DEFAULT_CELL_WINDOW = 340  # source px; 99.7% of C-NMC cells' boxes fit (docs/data.md)
FILL_MODES: tuple[str, ...] = ("nearest", "constant", "reflect")
# ImageNet per-channel statistics in pixel units (RGB); Keras `caffe` means are these, reversed.
IMAGENET_MEAN_PIXELS = tuple(255.0 * m for m in TORCH_MEAN_RGB)
IMAGENET_STD_PIXELS = tuple(255.0 * s for s in TORCH_STD_RGB)
TRAIN_KEYS = ("image", "label")
EVAL_KEYS = ("image", "label", "mask", "index")


def crop_and_resize(
    image: np.ndarray,
    size: int,
    mode: str = "resize",
    crop_fraction: float = 1.0,
    cell_window: int = DEFAULT_CELL_WINDOW,
) -> np.ndarray:
  """Optional square crop, then a bilinear (antialiased when shrinking) resize to size².

  `center_crop`: the central `crop_fraction` square. `cell_crop`: `cells.cell_window(image,
  cell_window)`, a fixed window centred on the cell, so every cell keeps the same physical scale.
  """
  if mode not in RESIZE_MODES:
    raise ValueError(f"Unknown resize mode {mode!r}; expected one of {RESIZE_MODES}.")
  if mode == "cell_crop":
    from leukojax.data import cells  # pylint: disable=g-import-not-at-top  (imports scipy: only when used)

    image = cells.cell_window(image, cell_window)
  elif mode == "center_crop":
    h, w = image.shape[:2]
    side = max(1, int(round(min(h, w) * crop_fraction)))
    top, left = (h - side) // 2, (w - side) // 2
    image = image[top : top + side, left : left + side]
  if image.shape[:2] != (size, size):
    image = np.asarray(Image.fromarray(image).resize((size, size), Image.BILINEAR))
  return image


def rotate_clockwise(image: np.ndarray) -> np.ndarray:
  """The paper's balancing rotation: 90° clockwise."""
  return np.ascontiguousarray(np.rot90(image, k=-1))


class PrepareImage(grain.transforms.Map):
  """Decoded record -> uint8 size x size x 3 image; applies the oversampling rotation if flagged."""

  def __init__(
      self,
      image_size: int,
      resize: str = "resize",
      crop_fraction: float = 1.0,
      cell_window: int = DEFAULT_CELL_WINDOW,
  ):
    if resize not in RESIZE_MODES:
      raise ValueError(f"Unknown resize mode {resize!r}; expected one of {RESIZE_MODES}.")
    if not 0.0 < crop_fraction <= 1.0:
      raise ValueError(f"crop_fraction must be in (0, 1]; got {crop_fraction}.")
    self.image_size, self.resize, self.crop_fraction = int(image_size), resize, float(crop_fraction)
    self.cell_window = int(cell_window)

  def map(self, element: dict[str, Any]) -> dict[str, Any]:
    image = crop_and_resize(to_rgb_uint8(element["image"]), self.image_size, self.resize, self.crop_fraction,
                            self.cell_window)
    if element.get("rotate", False):
      image = rotate_clockwise(image)
    return {**element, "image": image}


def hed_jitter(image: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
  """Tellez et al. (2018) HED stain jitter of a 0..255 image; exactly black pixels stay black.

  Per HED channel c: alpha_c ~ U[1-sigma, 1+sigma], beta_c ~ U[-sigma, sigma], x' = alpha*x + beta,
  on skimage's colour deconvolution of the 0..1 image. C-NMC's background is exactly 0 and the
  jitter would tint it, which no real slide does. Returns float32 0..255.
  """
  from skimage import color  # pylint: disable=g-import-not-at-top  (slow import; only when used)

  image = np.asarray(image, np.float32)
  background = image.max(axis=-1) == 0  # on the jitter's own input, i.e. after any rotation
  alpha = rng.uniform(1.0 - sigma, 1.0 + sigma, size=3)
  beta = rng.uniform(-sigma, sigma, size=3)
  hed = color.rgb2hed(np.clip(image / 255.0, 0.0, 1.0))
  out = color.hed2rgb(hed * alpha + beta) * 255.0
  out[background] = 0.0
  return np.clip(out, 0.0, 255.0).astype(np.float32)


class Augment(grain.transforms.RandomMap):
  """Training augmentation, in this order: 90° turns, flips, small-angle rotation, HED jitter, brightness."""

  def __init__(
      self,
      rot90: bool = False,
      flip: bool = False,
      small_angle_deg: float = 0.0,
      brightness: float = 0.0,
      fill_mode: str = "nearest",
      hed_sigma: float = 0.0,
  ):
    if fill_mode not in FILL_MODES:
      raise ValueError(f"Unknown fill_mode {fill_mode!r}; expected one of {FILL_MODES}.")
    if small_angle_deg < 0 or not 0 <= brightness < 1 or not 0 <= hed_sigma < 1:
      raise ValueError("augment.small_angle_deg must be >= 0, augment.brightness and augment.hed_sigma in [0, 1).")
    self.rot90, self.flip = bool(rot90), bool(flip)
    self.small_angle_deg, self.brightness, self.fill_mode = float(small_angle_deg), float(brightness), fill_mode
    self.hed_sigma = float(hed_sigma)

  @property
  def active(self) -> bool:
    return self.rot90 or self.flip or self.small_angle_deg > 0 or self.brightness > 0 or self.hed_sigma > 0

  def random_map(self, element: dict[str, Any], rng: np.random.Generator) -> dict[str, Any]:
    image = element["image"]
    if self.rot90:
      image = np.rot90(image, k=int(rng.integers(4)))
    if self.flip:
      if rng.random() < 0.5:
        image = image[:, ::-1]
      if rng.random() < 0.5:
        image = image[::-1]
    image = np.asarray(image, np.float32)
    if self.small_angle_deg > 0:
      from scipy import ndimage  # pylint: disable=g-import-not-at-top  (slow import; only when used)

      angle = float(rng.uniform(-self.small_angle_deg, self.small_angle_deg))
      image = ndimage.rotate(image, angle, axes=(1, 0), reshape=False, order=1, mode=self.fill_mode, cval=0.0)
    if self.hed_sigma > 0:  # draws only when on, so configs without it keep their random streams
      image = hed_jitter(image, self.hed_sigma, rng)
    if self.brightness > 0:
      image = np.clip(image * rng.uniform(1 - self.brightness, 1 + self.brightness), 0.0, 255.0)
    return {**element, "image": np.ascontiguousarray(image, dtype=np.float32)}


class Normalize(grain.transforms.Map):
  """Pixels -> model input: optional train-split standardisation, then the ImageNet `mode`.

  Standardised values are mapped back onto ImageNet's per-channel pixel statistics, so a pretrained
  backbone sees inputs distributed like its training data whichever mode follows.
  """

  def __init__(
      self,
      mean: Sequence[float],
      std: Sequence[float],
      *,
      standardize: bool,
      mode: str,
      keys: Sequence[str] = TRAIN_KEYS,
  ):
    if mode not in MODES:
      raise ValueError(f"Unknown preprocessing mode {mode!r}; expected one of {MODES}.")
    self.mean = np.asarray(mean, np.float32)
    self.std = np.maximum(np.asarray(std, np.float32), 1e-6)
    self.standardize, self.mode, self.keys = bool(standardize), mode, tuple(keys)

  def map(self, element: dict[str, Any]) -> dict[str, Any]:
    x = np.asarray(element["image"], np.float32)
    if self.standardize:
      x = (x - self.mean) / self.std
      x = x * np.asarray(IMAGENET_STD_PIXELS, np.float32) + np.asarray(IMAGENET_MEAN_PIXELS, np.float32)
    x = preprocess_input(x, self.mode).astype(np.float32)
    out = {"image": np.ascontiguousarray(x), "label": np.int32(element["label"])}
    if "mask" in self.keys:
      out["mask"] = np.bool_(element["mask"])
    if "index" in self.keys:
      out["index"] = np.int32(element["index"])
    return out


def eval_transforms(config: Any, stats: Any) -> tuple[PrepareImage, Normalize]:
  """The evaluation transforms of `config` (a `config.data`) with saved `stats` (`load_stats`)."""
  # `.get`: configs saved before `cell_window` existed still load.
  prepare = PrepareImage(config.image_size, config.resize, config.crop_fraction,
                         config.get("cell_window", DEFAULT_CELL_WINDOW))
  normalize = Normalize(stats.mean, stats.std, standardize=config.standardize, mode=config.preprocessing)
  return prepare, normalize


def preprocess_images(images: Sequence[Any], config: Any, stats: Any) -> np.ndarray:
  """Raw images (arrays or encoded bytes) -> float32 [B, H, W, 3] model inputs, as in evaluation.

  For the predict and explanation tools, so a new image goes through exactly the training run's
  resize, standardisation and ImageNet mode.
  """
  prepare, normalize = eval_transforms(config, stats)
  out = [normalize.map(prepare.map({"image": image, "label": 0}))["image"] for image in images]
  return np.stack(out) if out else np.zeros((0, config.image_size, config.image_size, 3), np.float32)
