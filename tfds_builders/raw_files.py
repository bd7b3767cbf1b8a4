"""Listing a manual download the same way whether it is extracted folders or zip archives.

Both builders see the manual_dir as one flat list of `RawFile`s with POSIX paths relative to it;
a member of `foo.zip` appears as `foo.zip/<member path>` and is read straight from the archive
(no extraction, so a 10 GB download needs no second 10 GB on disk).
"""

from __future__ import annotations

import dataclasses
import functools
import os
import pathlib
import zipfile
import zlib
from collections.abc import Callable

from absl import logging

from leukojax.data import errors

_JUNK_NAMES = {".DS_Store", "Thumbs.db", "desktop.ini"}


@dataclasses.dataclass(frozen=True)
class RawFile:
  """One file (or directory entry) of the manual download."""

  rel: str  # POSIX path relative to manual_dir; zip members as "<archive>.zip/<member>"
  reader: Callable[[], bytes] | None = None  # None for directories
  is_dir: bool = False

  @property
  def name(self) -> str:
    return self.rel.rsplit("/", 1)[-1]

  def read(self) -> bytes:
    assert self.reader is not None, self.rel
    return self.reader()


def _is_junk(rel: str) -> bool:
  """OS metadata (macOS `__MACOSX/`, `._*`, `.DS_Store`), never part of a dataset."""
  parts = rel.split("/")
  return "__MACOSX" in parts or any(p.startswith("._") or p in _JUNK_NAMES for p in parts)


def _read_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo, where: str) -> bytes:
  try:
    return archive.read(info)
  except (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError) as e:  # CRC, truncated
    raise errors.CorruptImageError(
        f"Cannot read {where} from its zip archive ({type(e).__name__}: {e}); re-download the "
        "archive.") from None


def scan(root: pathlib.Path) -> list[RawFile]:
  """Lists every file and folder under `root`, descending into `.zip` archives (one level)."""
  out: list[RawFile] = []
  for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
    dirnames.sort()
    base = pathlib.Path(dirpath)
    rel_dir = base.relative_to(root).as_posix()
    prefix = "" if rel_dir == "." else rel_dir + "/"
    if prefix and not _is_junk(prefix):
      out.append(RawFile(prefix.rstrip("/"), is_dir=True))
    for fname in sorted(filenames):
      rel = prefix + fname
      if _is_junk(rel):
        continue
      path = base / fname
      if fname.lower().endswith(".zip"):
        out.extend(_scan_zip(path, rel))
      else:
        out.append(RawFile(rel, functools.partial(path.read_bytes)))
  return out


def _scan_zip(path: pathlib.Path, rel: str) -> list[RawFile]:
  try:
    archive = zipfile.ZipFile(path)  # kept open by the readers for the whole build
  except (zipfile.BadZipFile, OSError) as e:
    raise errors.CorruptImageError(
        f"{rel} is not a readable zip archive ({e}); re-download it or extract it by hand."
    ) from None
  out = []
  for info in archive.infolist():
    member = info.filename.rstrip("/")
    if not member or _is_junk(member):
      continue
    where = f"{rel}/{member}"
    if info.is_dir():
      out.append(RawFile(where, is_dir=True))
    else:
      out.append(RawFile(where, functools.partial(_read_member, archive, info, where)))
  logging.info("Reading %d entries of %s in place.", len(out), rel)
  return out


def manual_root(dl_manager, instructions: str) -> pathlib.Path:
  """Returns the manual_dir, or raises `MissingManualDownloadError` with the instructions."""
  path = getattr(dl_manager, "_manual_dir", None)
  try:
    return pathlib.Path(os.fspath(dl_manager.manual_dir))
  except AssertionError:  # TFDS: "does not exist or is empty" / "not enabled"
    raise errors.MissingManualDownloadError(
        f"No manual download found in {path or 'the manual_dir'} (missing or empty).\n"
        f"{instructions}") from None


def listing(files: list[RawFile], limit: int = 25) -> str:
  """A short tree of what was found (top three levels), for layout errors."""
  seen: list[str] = []
  for f in files:
    short = "/".join(f.rel.split("/")[:3]) + ("/" if f.is_dir or f.rel.count("/") > 2 else "")
    if short not in seen:
      seen.append(short)
  lines = [f"    {s}" for s in seen[:limit]]
  if len(seen) > limit:
    lines.append(f"    ... ({len(seen) - limit} more)")
  return "\n".join(lines) or "    (nothing)"
