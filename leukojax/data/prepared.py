"""Prepared images kept in memory: each source row is decoded, cropped and resized once per process.

Why: on a CPU host the input pipeline runs on the cores the train step runs on, so every
millisecond it spends is taken from the step. For a C-NMC cell at 75 px, reading and decoding the
BMP and cropping the cell cost 3.3 of the 4 ms the pipeline spends on it, and they give the same
uint8 image every epoch; only the augmentation is new. `PreparedSource` prepares a row once and
serves the stored image after that, so later epochs (and the per-epoch validation) pay for
augmentation and normalisation only. The stream is unchanged, bit for bit: the stored image is
the one `prepare` returned.

The store is bounded (`data.cache_prepared_mb`, split between grain worker processes, each of
which holds its own); rows beyond the budget are prepared every time, as without a store.
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np

from leukojax.data.catalog import RowSource


class PreparedStore:
  """uint8 images by (source split, source index, rotated), filled until `budget_bytes` is reached.

  Thread-safe (grain's read threads fill it together); read-only arrays, so a transform that
  wrote into its input would fail instead of corrupting later epochs. Pickles empty: a grain worker
  process builds its own.
  """

  def __init__(self, budget_bytes: int):
    self.budget_bytes = max(0, int(budget_bytes))
    self._images: dict[tuple[str, int, bool], np.ndarray] = {}
    self._bytes = 0
    self._lock = threading.Lock()

  def get(self, key: tuple[str, int, bool]) -> np.ndarray | None:
    return self._images.get(key)

  def put(self, key: tuple[str, int, bool], image: np.ndarray) -> None:
    image = np.asarray(image)
    with self._lock:
      if key in self._images or self._bytes + image.nbytes > self.budget_bytes:
        return
      image = image.copy()
      image.flags.writeable = False
      self._images[key] = image
      self._bytes += image.nbytes

  @property
  def size_bytes(self) -> int:
    return self._bytes

  def __len__(self) -> int:
    return len(self._images)

  def __getstate__(self) -> dict[str, Any]:
    return {"budget_bytes": self.budget_bytes}

  def __setstate__(self, state: dict[str, Any]) -> None:
    self.__init__(state["budget_bytes"])


class PreparedSource:
  """A grain random-access source: `rows[i]` after `prepare`, served from `store` when it holds it."""

  def __init__(self, rows: RowSource, prepare: Any, store: PreparedStore | None):
    self.rows, self.prepare, self.store = rows, prepare, store

  def __len__(self) -> int:
    return len(self.rows)

  def __getitem__(self, i: int) -> dict[str, Any]:
    key = self.rows.key(i)
    if self.store is None or key is None:  # no store, or a padding row
      return self.prepare.map(self.rows[i])
    image = self.store.get(key)
    if image is not None:
      return {**self.rows.fields(i), "image": image}
    element = self.prepare.map(self.rows[i])
    self.store.put(key, element["image"])
    return element

  def __repr__(self) -> str:
    return f"PreparedSource({self.rows!r}, stored={len(self.store) if self.store is not None else 'off'})"
