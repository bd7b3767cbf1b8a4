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
SKIP_SUFFIX = "skip_corrupt"  # the name ending every builder config that may leave files out


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


def _checked(value: str, where: str) -> str:
  if value not in ON_CORRUPT_CHOICES:
    raise DataError(f"on_corrupt={value!r} is not one of {ON_CORRUPT_CHOICES} (set through {where}).")
  return value


def skip_config_name(name: str) -> str:
  """The builder config that stores the skip-corrupt build of config `name` apart from it."""
  return name if name.endswith(SKIP_SUFFIX) else f"{name}_{SKIP_SUFFIX}"


def resolve_on_corrupt(value: str | None, config_name: str) -> str:
  """The policy of a build of builder config `config_name`: 'error' (default) or 'skip'.

  A build that leaves files out must never stand in for a complete one, so 'skip' is allowed only
  under a config whose name ends in `_skip_corrupt` (TFDS stores each config in its own folder),
  and `$LEUKOJAX_ON_CORRUPT=skip` does not turn a complete config into a skipping one: it names
  the config to build instead (`leukojax.data.sources` switches to it, with a warning).
  """
  policy = _checked(value or "error", "the builder config")
  env = os.environ.get(ON_CORRUPT_ENV)
  if env:
    _checked(env, f"the {ON_CORRUPT_ENV} environment variable")
  if policy == "skip" and not config_name.endswith(SKIP_SUFFIX):
    raise DataError(
        f"Builder config {config_name!r} has on_corrupt='skip' but a name that does not end in "
        f"'_{SKIP_SUFFIX}': such a build would be stored, and later reused, as a complete one. Name it "
        f"{skip_config_name(config_name)!r}.")
  if env == "skip" and policy != "skip":
    raise DataError(
        f"{ON_CORRUPT_ENV}=skip is set, but builder config {config_name!r} is the complete build and "
        f"never skips files. Build {skip_config_name(config_name)!r} instead (tfds build "
        f"--config={skip_config_name(config_name)}, or data.builder_config={skip_config_name(config_name)}), "
        f"or unset {ON_CORRUPT_ENV}.")
  return policy


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
