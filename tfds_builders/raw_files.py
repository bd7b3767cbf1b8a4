"""Listing a manual download the same way whether it is extracted folders, zip or tar archives.

Both builders see the manual_dir as one flat list of `RawFile`s with POSIX paths relative to it;
a member of `foo.zip` appears as `foo.zip/<member path>` and is read straight from the archive
(no extraction, so a 10 GB download needs no second 10 GB on disk). Tar archives (`.tar`,
`.tar.gz`, `.tar.xz`, ...) have no random access (an xz stream must be decompressed from its
start to reach a member), so they are unpacked once into the build's extraction folder, never
beside the archive (the manual_dir may be read-only), and their members appear as
`foo.tar.xz/<member path>` all the same.
"""

from __future__ import annotations

import dataclasses
import functools
import lzma
import os
import pathlib
import shutil
import tarfile
import zipfile
import zlib
from collections.abc import Callable

from absl import logging

from leukojax.data import errors

_JUNK_NAMES = {".DS_Store", "Thumbs.db", "desktop.ini"}
TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.xz", ".txz", ".tar.bz2", ".tbz2")
_DONE = ".leukojax-unpacked"  # written last: an interrupted unpack is redone, never half-used


@dataclasses.dataclass(frozen=True)
class RawFile:
  """One file (or directory entry) of the manual download."""

  rel: str  # POSIX path relative to manual_dir; archive members as "<archive>/<member>"
  reader: Callable[[], bytes] | None = None  # None for directories
  is_dir: bool = False
  size: int | None = None  # bytes, known without reading (None for directories)

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


def is_tar(name: str) -> bool:
  return name.lower().endswith(TAR_SUFFIXES)


def scan(root: pathlib.Path, extract_dir: pathlib.Path | None = None) -> list[RawFile]:
  """Lists every file and folder under `root`, descending into zip and tar archives (one level).

  Tar archives are unpacked into `extract_dir` (required when `root` holds one).
  """
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
      elif is_tar(fname):
        out.extend(_scan_tar(path, rel, extract_dir))
      else:
        out.append(RawFile(rel, functools.partial(path.read_bytes), size=path.stat().st_size))
  return out


def _scan_tar(path: pathlib.Path, rel: str, extract_dir: pathlib.Path | None) -> list[RawFile]:
  """Unpacks `path` once into `extract_dir` (keyed by name, size and mtime) and lists it."""
  if extract_dir is None:
    raise errors.UnrecognizedLayoutError(
        f"{rel} is a tar archive, which can only be read once unpacked, and no extraction folder "
        "was given; build with TFDS (`python -m tfds_builders build`) or extract it by hand.")
  stat = path.stat()
  dest = pathlib.Path(extract_dir) / f"{path.name}-{stat.st_size}-{stat.st_mtime_ns}"
  if not (dest / _DONE).exists():
    shutil.rmtree(dest, ignore_errors=True)
    logging.info("Unpacking %s into %s (once; later builds reuse it).", rel, dest)
    try:
      with tarfile.open(path) as archive:  # the compression is detected from the content
        archive.extractall(dest, filter="data")  # no absolute paths, links out or devices
    except (tarfile.TarError, lzma.LZMAError, EOFError, OSError, ValueError) as e:  # truncated, damaged
      shutil.rmtree(dest, ignore_errors=True)
      raise errors.CorruptImageError(
          f"Cannot unpack {rel} ({type(e).__name__}: {e}); re-download the archive or extract it "
          "by hand into the manual_dir.") from None
    (dest / _DONE).write_text(rel + "\n")
  out = []
  for f in scan(dest):
    if f.rel == _DONE:
      continue
    where = f"{rel}/{f.rel}"
    out.append(dataclasses.replace(f, rel=where))
  logging.info("Reading %d entries of %s from %s.", len(out), rel, dest)
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
      out.append(RawFile(where, functools.partial(_read_member, archive, info, where),
                         size=info.file_size))
  logging.info("Reading %d entries of %s in place.", len(out), rel)
  return out


def extract_root(dl_manager) -> pathlib.Path:
  """Where TFDS unpacks downloads for this build (`<data_dir>/downloads/extracted` by default)."""
  return pathlib.Path(os.fspath(dl_manager._extract_dir))  # pylint: disable=protected-access


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
