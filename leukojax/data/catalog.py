"""The record catalogue: one row of metadata per example, and the grain source that reads rows.

Splitting, deduplication, balancing and evaluation bookkeeping only need labels, subjects and
hashes, so they run on this small table; images are read lazily by `RowSource` inside grain.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from leukojax.data.views import TaskView

_META_KEYS = ("label", "subject_id", "fold", "file_name", "image_sha256")


def _as_bytes(value: Any) -> bytes:
  if value is None:
    return b""
  if isinstance(value, bytes):
    return value
  if isinstance(value, np.ndarray):  # a 0-d bytes/str array from some sources
    value = value.item()
  return value if isinstance(value, bytes) else str(value).encode()


@dataclasses.dataclass(frozen=True)
class Catalog:
  """Column table of examples; `split`/`index` locate each row's record in the sources."""

  split: np.ndarray  # str, the source split name ('fold_0', 'train', ...)
  index: np.ndarray  # int64, position in that source split
  label: np.ndarray  # int32, the dataset label, then the task label after `apply_view`
  subject_id: np.ndarray  # object (bytes); b"" where the dataset has no subjects
  fold: np.ndarray  # int32; -1 where absent
  file_name: np.ndarray  # object (bytes)
  image_sha256: np.ndarray  # object (bytes)

  def __len__(self) -> int:
    return len(self.index)

  def take(self, rows: np.ndarray) -> Catalog:
    rows = np.asarray(rows, dtype=np.int64)
    return Catalog(**{f.name: getattr(self, f.name)[rows] for f in dataclasses.fields(self)})

  def apply_view(self, view: TaskView) -> tuple[Catalog, int]:
    """Keeps the task's classes and renumbers them; returns (catalogue, rows dropped)."""
    keep, new_labels = view.apply(self.label)
    out = self.take(np.flatnonzero(keep))
    return dataclasses.replace(out, label=new_labels), int((~keep).sum())

  @property
  def has_subjects(self) -> bool:
    return bool(len(self)) and all(len(s) > 0 for s in self.subject_id)


def _objects(values: Sequence[bytes]) -> np.ndarray:
  out = np.empty(len(values), dtype=object)  # a 1-D array of bytes objects, never a 2-D char array
  out[:] = list(values)
  return out


def _read_meta(record: Mapping[str, Any]) -> tuple:
  return (
      int(record["label"]),
      _as_bytes(record.get("subject_id")),
      int(record.get("fold", -1)),
      _as_bytes(record.get("file_name")),
      _as_bytes(record.get("image_sha256")),
  )


def scan_sources(
    sources: Mapping[str, Sequence[Mapping[str, Any]]],
    splits: Sequence[str],
    *,
    num_threads: int = 1,
) -> Catalog:
  """Reads the metadata of every record of `splits` (in that order) into a `Catalog`.

  TFDS data sources decode the image with every record, so this pass costs one decode per image;
  threads overlap the decodes (Pillow releases the GIL while decoding).
  """
  missing = [s for s in splits if s not in sources]
  if missing:
    raise KeyError(f"Splits {missing} are missing from the sources (have {sorted(sources)}).")
  names, indices, rows = [], [], []
  for name in splits:
    src = sources[name]
    n = len(src)
    if num_threads > 1 and n > 1:
      with concurrent.futures.ThreadPoolExecutor(num_threads) as pool:
        rows.extend(pool.map(lambda i, s=src: _read_meta(s[i]), range(n), chunksize=64))
    else:
      rows.extend(_read_meta(src[i]) for i in range(n))
    names.extend([name] * n)
    indices.extend(range(n))
    logging.info("Scanned %d records of split %r.", n, name)
  cols = list(zip(*rows)) if rows else [()] * len(_META_KEYS)
  return Catalog(
      split=np.array(names, dtype=str),
      index=np.array(indices, dtype=np.int64),
      label=np.array(cols[0], dtype=np.int32),
      subject_id=_objects(cols[1]),
      fold=np.array(cols[2], dtype=np.int32),
      file_name=_objects(cols[3]),
      image_sha256=_objects(cols[4]),
  )


class RowSource:
  """grain random-access source over catalogue rows (a module-level class, so it pickles).

  Row `i` reads `sources[split[i]][index[i]]` and returns its image with the task label, the
  oversampling flag and its position in the evaluation metadata. A negative `index` is padding:
  a blank image with mask False, so every process yields the same number of evaluation batches.
  """

  def __init__(
      self,
      sources: Mapping[str, Sequence[Mapping[str, Any]]],
      split: np.ndarray,
      index: np.ndarray,
      label: np.ndarray,
      *,
      rotate: np.ndarray | None = None,
      position: np.ndarray | None = None,
  ):
    n = len(index)
    self._sources = dict(sources)
    self._split = np.asarray(split)
    self._index = np.asarray(index, dtype=np.int64)
    self._label = np.asarray(label, dtype=np.int32)
    self._rotate = np.zeros(n, bool) if rotate is None else np.asarray(rotate, bool)
    self._position = np.arange(n, dtype=np.int32) if position is None else np.asarray(position, np.int32)

  def __len__(self) -> int:
    return len(self._index)

  def __getitem__(self, i: int) -> dict[str, Any]:
    i = int(i)
    if self._index[i] < 0:
      image = np.zeros((1, 1, 3), np.uint8)
      return {"image": image, "label": np.int32(0), "rotate": False, "mask": False, "index": np.int32(-1)}
    record = self._sources[str(self._split[i])][int(self._index[i])]
    return {"image": record["image"], **self.fields(i)}

  def fields(self, i: int) -> dict[str, Any]:
    """Row `i`'s element without its image (which only reading the record gives)."""
    i = int(i)
    return {"label": self._label[i], "rotate": bool(self._rotate[i]), "mask": True, "index": self._position[i]}

  def key(self, i: int) -> tuple[str, int, bool] | None:
    """What row `i`'s image depends on: (source split, source index, rotated); None for padding."""
    i = int(i)
    if self._index[i] < 0:
      return None
    return str(self._split[i]), int(self._index[i]), bool(self._rotate[i])

  def __repr__(self) -> str:
    return f"RowSource(num_rows={len(self)}, splits={sorted(self._sources)})"
