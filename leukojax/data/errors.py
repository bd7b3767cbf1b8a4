"""Errors for bad raw data, and the corrupt-image policy both TFDS builders share.

Every error names the file or folder at fault and says how to fix it: a build that stops on a
vague message costs a person far more time than one that names `fold_1/hem/UID_H3_2_1_hem.bmp`.
All classes derive from `DataError(ValueError)` and take a single message argument, so TFDS's
`utils.reraise` (which prefixes context in place when `args` has one element) keeps their type.
"""

from __future__ import annotations

import dataclasses
import os

from absl import logging

from leukojax.errors import LeukojaxError

ON_CORRUPT_ENV = "LEUKOJAX_ON_CORRUPT"
ON_CORRUPT_CHOICES = ("error", "skip")


class DataError(LeukojaxError, ValueError):
  """The raw data is not what a builder expects; the message says where and what to do."""


class MissingManualDownloadError(DataError):
  """The manual download is absent or incomplete."""


class UnrecognizedLayoutError(DataError):
  """Files are present, but not in a folder layout the builder knows."""


class ImageReadError(DataError):
  """An image file is missing, unreadable or not decodable (`leukojax.data.images` raises it)."""


class CorruptImageError(ImageReadError):
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
