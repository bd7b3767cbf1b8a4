"""Errors for bad raw data, and the corrupt-image policy both TFDS builders share.

Every error names the file or folder at fault and says how to fix it: a build that stops on a
vague message costs a person far more time than one that names `fold_1/hem/UID_H3_2_1_hem.bmp`.
All classes derive from `DataError(ValueError)` and take a single message argument, so TFDS's
`utils.reraise` (which prefixes context in place when `args` has one element) keeps their type.
"""

from __future__ import annotations

import dataclasses
import io
import os
from collections.abc import Sequence

from absl import logging

ON_CORRUPT_ENV = "LEUKOJAX_ON_CORRUPT"
ON_CORRUPT_CHOICES = ("error", "skip")


class DataError(ValueError):
  """The raw data is not what a builder expects; the message says where and what to do."""


class MissingManualDownloadError(DataError):
  """The manual download is absent or incomplete."""


class UnrecognizedLayoutError(DataError):
  """Files are present, but not in a folder layout the builder knows."""


class CorruptImageError(DataError):
  """An image cannot be decoded, is truncated, or has the wrong size or channels."""


class CsvMismatchError(DataError):
  """A label CSV and the image folder disagree (missing file, missing row, bad value)."""


class EmptyClassFolderError(DataError):
  """A class folder exists but holds no images."""


class FileNameError(DataError):
  """A file name does not follow the dataset's naming scheme (subject ids come from it)."""


class DuplicateFileError(DataError):
  """The same image appears twice (two copies of the download, or a repeated key)."""


class ChecksumError(DataError):
  """A file differs (size or SHA-256) from the official download's."""


def resolve_on_corrupt(value: str | None) -> str:
  """Returns 'error' or 'skip': the explicit value, else `$LEUKOJAX_ON_CORRUPT`, else 'error'."""
  value = value or os.environ.get(ON_CORRUPT_ENV) or "error"
  if value not in ON_CORRUPT_CHOICES:
    raise DataError(
        f"on_corrupt={value!r} is not one of {ON_CORRUPT_CHOICES} (set through the builder config "
        f"or the {ON_CORRUPT_ENV} environment variable)."
    )
  return value


@dataclasses.dataclass
class CorruptImageLog:
  """Applies the on_corrupt policy: raise, or log the file by name and count it."""

  policy: str = "error"
  skipped: list[str] = dataclasses.field(default_factory=list)

  def handle(self, error: CorruptImageError, where: str) -> None:
    if self.policy != "skip":
      raise error
    self.skipped.append(where)
    logging.warning("on_corrupt=skip: skipping %s (%s)", where, error)

  def summary(self) -> str:
    return f"{len(self.skipped)} corrupt image(s) skipped" + (
        ": " + ", ".join(self.skipped) if self.skipped else ""
    )


def check_image(
    data: bytes,
    where: str,
    *,
    size: tuple[int, int] | None = None,
    formats: Sequence[str] = ("BMP", "JPEG", "PNG"),
    convert_to_rgb: bool = False,
):
  """Fully decodes `data` with PIL and checks format, size and RGB channels.

  Returns the decoded `PIL.Image` in RGB. Raises `CorruptImageError` naming `where`. Decoding the
  whole image (not only the header) is what catches truncated files. `convert_to_rgb` widens
  grey or palette images losslessly; only for builders that re-encode (stored bytes must be RGB).
  """
  from PIL import Image, ImageFile  # pylint: disable=g-import-not-at-top

  fix = "re-download or replace the file, or build with on_corrupt='skip' to leave it out"
  if ImageFile.LOAD_TRUNCATED_IMAGES:
    raise CorruptImageError(
        "PIL.ImageFile.LOAD_TRUNCATED_IMAGES is True in this process, so truncated images would "
        f"pass unnoticed (while reading {where}); unset it before building."
    )
  try:
    image = Image.open(io.BytesIO(data))  # in memory: nothing to close
    image.load()
  except Exception as e:  # PIL raises OSError, SyntaxError, ValueError, ...
    reason = "not an image file PIL recognises" if isinstance(
        e, Image.UnidentifiedImageError) else f"{type(e).__name__}: {e}"
    raise CorruptImageError(f"Cannot decode image {where} ({reason}); {fix}.") from None
  if image.format not in formats:
    raise CorruptImageError(
        f"Image {where} is {image.format}, expected one of {tuple(formats)}; {fix}.")
  if size is not None and image.size != tuple(size):
    raise CorruptImageError(
        f"Image {where} is {image.size[0]}x{image.size[1]} px, expected {size[0]}x{size[1]}; {fix}."
    )
  if convert_to_rgb and image.mode in ("L", "P"):
    image = image.convert("RGB")
  if image.mode != "RGB":
    raise CorruptImageError(f"Image {where} has mode {image.mode}, expected RGB; {fix}.")
  return image
