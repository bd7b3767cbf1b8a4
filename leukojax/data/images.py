"""The one way LeukoJAX reads an image file: decode fully, name the file and the fix on failure.

The TFDS builders (`check_image`, strict about format, size and channels), the input pipeline
(`to_rgb_uint8` of stored bytes), `predict` and `explain` (`read_image` of the user's files) all
decode here, so a truncated file, a file that is not an image and a header claiming billions of
pixels get the same reasons everywhere.
"""

from __future__ import annotations

import io
import os
import pathlib
import re
from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image, ImageFile

from leukojax.data.errors import CorruptImageError, ImageReadError

IMAGE_SUFFIXES = (".bmp", ".png", ".jpg", ".jpeg", ".tif", ".tiff", ".gif", ".webp", ".ppm", ".pgm")
_BUILD_FIX = ("re-download or replace the file, or build a '<config>_skip_corrupt' builder config "
              "(on_corrupt='skip') to leave it out, listed in the dataset's metadata")
_USER_FIX = "replace it with a JPEG, PNG, BMP or TIFF image, or leave it out"


def decode(data: bytes, where: str, fix: str = _USER_FIX) -> Image.Image:
  """Fully decodes `data` (the whole image, not only the header: that is what catches truncated
  files); raises `CorruptImageError` naming `where` and the `fix`."""
  if ImageFile.LOAD_TRUNCATED_IMAGES:
    raise CorruptImageError(
        "PIL.ImageFile.LOAD_TRUNCATED_IMAGES is True in this process, so truncated images would "
        f"pass unnoticed (while reading {where}); unset it.")
  try:
    image = Image.open(io.BytesIO(data))  # in memory: nothing to close
    image.load()
  except Image.DecompressionBombError as e:
    raise CorruptImageError(f"Cannot decode image {where}: its header claims more pixels than PIL "
                            f"allows ({e}); {fix}.") from None
  except Exception as e:  # pylint: disable=broad-except  (PIL raises OSError, SyntaxError, ValueError, ...)
    reason = ("not an image file PIL recognises" if isinstance(e, Image.UnidentifiedImageError)
              else f"{type(e).__name__}: {e}")
    raise CorruptImageError(f"Cannot decode image {where} ({reason}); {fix}.") from None
  return image


def to_rgb_uint8(image: Any, where: str = "image") -> np.ndarray:
  """An HxWx3 uint8 array from grey, RGB or RGBA input, or from its encoded file bytes."""
  if isinstance(image, (bytes, np.bytes_)):
    image = decode(bytes(image), where).convert("RGB")
  image = np.asarray(image)
  if image.ndim == 2:
    image = image[..., None]
  if image.shape[-1] == 1:
    image = np.repeat(image, 3, axis=-1)
  elif image.shape[-1] == 4:
    image = image[..., :3]
  if image.dtype != np.uint8:
    image = np.clip(image, 0, 255).astype(np.uint8)
  return image


def read_bytes(path: str) -> bytes:
  """The file's bytes, or an `ImageReadError` naming it (missing, a folder, unreadable)."""
  try:
    with open(path, "rb") as f:
      return f.read()
  except FileNotFoundError:
    raise ImageReadError(f"Cannot read image {path}: no such file.") from None
  except IsADirectoryError:
    raise ImageReadError(f"Cannot read image {path}: a folder with no images in it.") from None
  except OSError as e:
    raise ImageReadError(f"Cannot read image {path}: {e.strerror or e}.") from None


def read_image(path: str) -> np.ndarray:
  """A user's image file decoded to uint8 RGB, or an `ImageReadError` naming the file and the fix."""
  return to_rgb_uint8(read_bytes(path), where=path)


def check_image(data: bytes, where: str, *, size: tuple[int, int] | None = None,
                formats: Sequence[str] = ("BMP", "JPEG", "PNG"), convert_to_rgb: bool = False) -> Image.Image:
  """A dataset file, decoded and checked for format, size and RGB channels (the TFDS builders).

  Returns the decoded `PIL.Image` in RGB. `convert_to_rgb` widens grey or palette images
  losslessly; only for builders that re-encode (stored bytes must be RGB).
  """
  image = decode(data, where, _BUILD_FIX)
  if image.format not in formats:
    raise CorruptImageError(f"Image {where} is {image.format}, expected one of {tuple(formats)}; {_BUILD_FIX}.")
  if size is not None and image.size != tuple(size):
    raise CorruptImageError(
        f"Image {where} is {image.size[0]}x{image.size[1]} px, expected {size[0]}x{size[1]}; {_BUILD_FIX}.")
  if convert_to_rgb and image.mode in ("L", "P"):
    image = image.convert("RGB")
  if image.mode != "RGB":
    raise CorruptImageError(f"Image {where} has mode {image.mode}, expected RGB; {_BUILD_FIX}.")
  return image


def expand_image_paths(inputs: Sequence[str]) -> list[str]:
  """Files as given; folders searched recursively for image files, in natural order (every command
  that reads a user's images: predict, explain). A folder without one is an error naming it."""
  out = []
  for item in inputs:
    path = pathlib.Path(item)
    if path.is_dir():
      found = [str(p) for p in path.rglob("*") if p.is_file() and is_image_path(str(p))]
      if not found:
        raise ImageReadError(f"The folder {path} holds no image files (looked for {', '.join(IMAGE_SUFFIXES)}, "
                             "in subfolders too); give the folder that holds the images.")
      out.extend(sorted(found, key=natural_key))
    else:
      out.append(str(path))  # a missing or unreadable file is reported where it is read
  return out


def natural_key(text: str) -> list:
  """'2.bmp' before '10.bmp'."""
  return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", text)]


def is_image_path(path: str) -> bool:
  return os.path.splitext(path)[1].lower() in IMAGE_SUFFIXES
