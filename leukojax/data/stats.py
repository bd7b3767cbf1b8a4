"""Train-split per-channel statistics, cached in the workdir and reused at eval and predict time.

Computed on the training split only (after resize, before augmentation and before oversampling:
a rotated copy has the same pixels as its original), so no val/test pixel informs the model.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from leukojax import files

STATS_FILE = "data_stats.json"


@dataclasses.dataclass(frozen=True)
class DataStats:
  """Per-channel RGB mean/std in pixel units [0, 255] of the resized training images."""

  mean: tuple[float, float, float]
  std: tuple[float, float, float]
  num_images: int
  fingerprint: Mapping[str, Any] = dataclasses.field(default_factory=dict)
  # The original sizes of the training images (`geometry.ImageGeometry.to_json`); None in files
  # written before it was recorded.
  geometry: Mapping[str, Any] | None = None

  def to_json(self) -> dict[str, Any]:
    out = {"mean": list(self.mean), "std": list(self.std), "num_images": self.num_images,
           "fingerprint": dict(self.fingerprint)}
    return out | ({"geometry": dict(self.geometry)} if self.geometry else {})

  @classmethod
  def from_json(cls, d: Mapping[str, Any]) -> DataStats:
    return cls(tuple(map(float, d["mean"])), tuple(map(float, d["std"])), int(d["num_images"]),
               dict(d.get("fingerprint", {})), d.get("geometry"))


def channel_stats(batches: Iterable[np.ndarray]) -> tuple[tuple[float, ...], tuple[float, ...], int]:
  """Mean and (population) std per channel over every pixel of `batches` ([B, H, W, C] arrays)."""
  total = total_sq = None
  pixels = images = 0
  for batch in batches:
    x = np.asarray(batch, np.float64).reshape(-1, np.shape(batch)[-1])
    total = x.sum(0) if total is None else total + x.sum(0)
    total_sq = (x * x).sum(0) if total_sq is None else total_sq + (x * x).sum(0)
    pixels += x.shape[0]
    images += np.shape(batch)[0]
  if not pixels:
    raise ValueError("Cannot compute statistics of an empty training split.")
  mean = total / pixels
  std = np.sqrt(np.maximum(total_sq / pixels - mean * mean, 0.0))
  return tuple(float(m) for m in mean), tuple(float(s) for s in std), images


def stats_path(workdir: str | os.PathLike[str]) -> pathlib.Path:
  return pathlib.Path(workdir) / STATS_FILE


def load_stats(workdir: str | os.PathLike[str]) -> DataStats:
  """Reads the statistics a training run saved, e.g. for the predict tool."""
  path = stats_path(workdir)
  if not path.exists():
    raise FileNotFoundError(f"No {STATS_FILE} in {workdir}: train (or build the pipeline) with this workdir first.")
  return DataStats.from_json(json.loads(path.read_text()))


def save_stats(workdir: str | os.PathLike[str], stats: DataStats) -> pathlib.Path:
  """Writes atomically, so a process reading concurrently never sees half a file."""
  return files.write_json_atomically(stats_path(workdir), stats.to_json(), indent=2, sort_keys=True)


def cached_stats(
    workdir: str | os.PathLike[str] | None,
    fingerprint: Mapping[str, Any],
    compute: Any,
    *,
    write: bool = True,
) -> DataStats:
  """Returns the workdir's statistics when they match `fingerprint`, else `compute()`s and saves them.

  A file from a different training split (another dataset, protocol, seed or image size) fails
  loudly: silently reusing it would standardise with the wrong numbers, silently overwriting it
  would break the checkpoints already in that workdir.
  """
  fingerprint = json.loads(json.dumps(dict(fingerprint)))  # normalise tuples to lists
  if workdir is not None and stats_path(workdir).exists():
    stats = load_stats(workdir)
    if dict(stats.fingerprint) != fingerprint:
      diff = {k: (stats.fingerprint.get(k), fingerprint.get(k)) for k in set(stats.fingerprint) | set(fingerprint)
              if stats.fingerprint.get(k) != fingerprint.get(k)}
      raise ValueError(
          f"{stats_path(workdir)} was computed for another training split or image preparation "
          f"(saved vs now: {diff}). Use a fresh workdir, or delete the file if that is intended."
      )
    return stats
  mean, std, n, geometry = compute()
  stats = DataStats(mean, std, n, fingerprint, geometry)
  if workdir is not None and write:
    save_stats(workdir, stats)
  return stats
