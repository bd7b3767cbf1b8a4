"""`build_pipeline`: TFDS data sources -> split, balanced, standardised grain pipelines.

The contract (docs/architecture.md): an infinite, checkpointable training `IterDataset` of
per-process batches, padded per-process evaluation batches, and the train-split statistics.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import math
import os
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import grain
import ml_collections
import numpy as np

from leukojax.data import balance as balance_lib
from leukojax.data import geometry
from leukojax.data import splits as splits_lib
from leukojax.data import transforms as T
from leukojax.data.catalog import Catalog, RowSource, scan_sources
from leukojax.data.prepared import PreparedSource, PreparedStore
from leukojax.data.stats import DataStats, cached_stats, channel_stats
from leukojax.data.views import get_view
from leukojax.data.workers import resolve_num_workers
from leukojax.models.preprocessing import MODES

EVAL_SPLITS: tuple[str, ...] = ("val", "test", "train")


@dataclasses.dataclass
class EvalSplit:
  """One evaluation split; `batches()` yields this process's padded, fixed-size batches.

  Every process yields the same number of batches (padding has `mask` False, `label` 0, `index`
  -1 and a blank image), so multi-host evaluation steps stay in lockstep. `index` points into
  `metadata`, which holds the whole split (all processes), in catalogue order.
  """

  name: str
  metadata: dict[str, np.ndarray] = dataclasses.field(repr=False)  # file_name, subject_id, label, image_sha256
  sources: Mapping[str, Any] = dataclasses.field(repr=False)
  source_split: np.ndarray = dataclasses.field(repr=False)
  source_index: np.ndarray = dataclasses.field(repr=False)
  prepare: T.PrepareImage
  normalize: T.Normalize
  batch_size: int  # default global batch size
  process_index: int = 0
  process_count: int = 1
  num_workers: int = 0
  worker_buffer_size: int = 2
  read_options: grain.ReadOptions = dataclasses.field(default_factory=grain.ReadOptions)
  store: PreparedStore | None = dataclasses.field(default=None, repr=False)  # shared with the training stream

  def __len__(self) -> int:
    return len(self.source_index)

  def per_process_batch_size(self, batch_size: int | None = None) -> int:
    batch_size = self.batch_size if batch_size is None else batch_size
    return _per_process(batch_size, self.process_count, "eval batch size")

  def num_batches(self, batch_size: int | None = None) -> int:
    """Batches per process for `batch_size` (global); the same on every process."""
    b = self.per_process_batch_size(batch_size)
    return math.ceil(math.ceil(len(self) / self.process_count) / b) if len(self) else 0

  def dataset(self, batch_size: int | None = None) -> grain.IterDataset:
    """This process's batches as a grain dataset (`batch_size` is global; default eval batch)."""
    b = self.per_process_batch_size(batch_size)
    positions = np.arange(len(self))[self.process_index :: self.process_count]
    padded = np.full(self.num_batches(batch_size) * b, -1, np.int64)
    padded[: len(positions)] = positions
    valid = padded >= 0
    safe = np.where(valid, padded, 0)
    source = RowSource(
        self.sources,
        self.source_split[safe],
        np.where(valid, self.source_index[safe], -1),
        self.metadata["label"][safe],
        position=padded,
    )
    ds = grain.MapDataset.source(PreparedSource(source, self.prepare, self.store)).map(self.normalize)
    ds = ds.to_iter_dataset(self.read_options).batch(b, drop_remainder=False)
    return _maybe_mp(ds, self.num_workers, self.worker_buffer_size)

  def batches(self, batch_size: int | None = None) -> Iterator[dict[str, np.ndarray]]:
    """Yields `{"image", "label", "mask", "index"}` batches of `batch_size // process_count`."""
    return iter(self.dataset(batch_size))


@dataclasses.dataclass
class Pipeline:
  """What the train loop consumes; see docs/architecture.md and docs/data.md."""

  train: grain.IterDataset  # infinite per-process batches {"image": f32[b,H,W,3], "label": i32[b]}
  steps_per_epoch: int  # global steps for one pass over the balanced training split
  eval_splits: dict[str, EvalSplit] = dataclasses.field(repr=False)  # 'val', 'test', 'train' (natural)
  stats: DataStats
  class_names: tuple[str, ...]
  num_classes: int
  class_weights: np.ndarray  # f32[num_classes], loss weights for the stream `train` yields
  protocol: str
  dataset: str = ""
  task: str = ""
  global_batch_size: int = 0
  per_process_batch_size: int = 0
  train_size: int = 0  # training examples per epoch, all processes, oversampled copies included
  summary: dict[str, Any] = dataclasses.field(default_factory=dict)  # for `describe_splits`


class ProcessPieces(grain.MapDataset):
  """Process p's elements of a global stream cut into pieces of `piece` examples: pieces p, p + P, ...

  An index map (not `MapDataset.batch`, whose closure does not pickle into grain worker processes).
  """

  def __init__(self, parent: grain.MapDataset, *, piece: int, process_index: int, process_count: int):
    super().__init__(parent)
    self._piece, self._index, self._count = piece, process_index, process_count

  def __len__(self) -> int:
    return len(self._parent) // (self._piece * self._count) * self._piece

  def __getitem__(self, index):
    if isinstance(index, slice):
      return self.slice(index)
    piece, offset = divmod(index, self._piece)
    return self._parent[(piece * self._count + self._index) * self._piece + offset]

  def __str__(self) -> str:
    return f"ProcessPieces(piece={self._piece}, process={self._index} of {self._count})"


def _train_stream(source: RowSource, *, seed: int, per_process: int, process_index: int, process_count: int,
                  transforms: tuple[Any, T.Augment, Any], read_options: grain.ReadOptions, num_workers: int,
                  buffer_size: int, store: PreparedStore | None) -> grain.IterDataset:
  """This process's share of one global training stream, the same for any number of processes.

  The rows (in a fixed permuted order) are reshuffled every epoch (grain folds the epoch into
  the seed); the stream is cut into pieces of `per_process` examples, and process p batches
  pieces p, p + P, p + 2P, ... (`ProcessPieces`). Global batch s is pieces sP .. sP + P - 1: the
  very examples (and augmentations, seeded by stream position) a single process puts in its batch
  s. So a run on P processes trains on the batches of a run on one, each process reads only its own
  pieces, and after s steps each has read s * B / P examples: the position of the same point of the
  stream for any process count (`training.checkpoints` resumes on another count by that rule).
  """
  prepare, augment, normalize = transforms
  stream_seed = int(np.random.SeedSequence([seed, 0]).generate_state(1)[0])  # single-process runs keep their order
  ds = grain.MapDataset.source(PreparedSource(source, prepare, store)).seed(stream_seed).shuffle().repeat(None)
  if augment.active:
    ds = ds.random_map(augment)
  ds = ProcessPieces(ds.map(normalize), piece=per_process, process_index=process_index, process_count=process_count)
  return _maybe_mp(ds.to_iter_dataset(read_options).batch(per_process, drop_remainder=True), num_workers, buffer_size)


def _per_process(batch_size: int, process_count: int, what: str) -> int:
  if batch_size <= 0 or batch_size % process_count:
    raise ValueError(f"The {what} ({batch_size}) must be a positive multiple of process_count ({process_count}).")
  return batch_size // process_count


def _prepared_store(config: ml_collections.ConfigDict, num_workers: int) -> PreparedStore | None:
  """One store for the training stream and the evaluation splits; each worker process holds its own
  copy, so the budget is divided between them."""
  budget_mb = float(config.get("cache_prepared_mb", 0))
  if budget_mb <= 0:
    return None
  return PreparedStore(int(budget_mb * 2**20) // max(1, num_workers))


def _maybe_mp(ds: grain.IterDataset, num_workers: int, buffer_size: int) -> grain.IterDataset:
  if num_workers <= 0:
    return ds
  return ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=num_workers, per_worker_buffer_size=buffer_size))


def check_data_config(config: ml_collections.ConfigDict) -> None:
  """The `config.data` fields a pipeline cannot start without; checked before any data is read."""
  if config.preprocessing not in MODES:
    raise ValueError(f"Unknown data.preprocessing {config.preprocessing!r}; expected one of {MODES}.")
  if config.balance not in balance_lib.BALANCE_MODES:
    raise ValueError(f"Unknown data.balance {config.balance!r}; expected one of {balance_lib.BALANCE_MODES}.")
  if config.resize not in T.RESIZE_MODES:
    raise ValueError(f"Unknown data.resize {config.resize!r}; expected one of {T.RESIZE_MODES}.")
  if config.image_size <= 0:
    raise ValueError(f"data.image_size must be positive; got {config.image_size}.")


def _load_dataset(config: ml_collections.ConfigDict, decode_images: bool = True):
  from leukojax.data.sources import load_dataset  # pylint: disable=g-import-not-at-top

  return load_dataset(
      config.dataset,
      builder_config=config.builder_config,
      data_dir=config.data_dir,
      manual_dir=config.manual_dir,
      decode_images=decode_images,
  )


def _fingerprint(config: ml_collections.ConfigDict, catalog: Catalog, train_rows: np.ndarray) -> dict[str, Any]:
  """What the statistics depend on: the training images and how they are resized."""
  digest = hashlib.sha256()
  for sha, name in sorted(zip(catalog.image_sha256[train_rows], catalog.file_name[train_rows])):
    digest.update(sha + b"|" + name + b"\n")
  fingerprint = {
      "dataset": config.dataset, "builder_config": config.builder_config, "task": config.task,
      "protocol": config.split.protocol, "fold": config.split.get("fold", 0) if config.split.protocol == "subject_cv" else None,
      "image_size": int(config.image_size), "resize": config.resize,
      "crop_fraction": float(config.crop_fraction) if config.resize == "center_crop" else None,
      "train_images": int(len(train_rows)), "train_digest": digest.hexdigest(),
  }
  if config.resize == "cell_crop":  # only then, so statistics saved before the key existed still match
    fingerprint["cell_window"] = int(config.get("cell_window", T.DEFAULT_CELL_WINDOW))
  return fingerprint


def _metadata(catalog: Catalog, rows: np.ndarray) -> dict[str, np.ndarray]:
  return {
      "file_name": catalog.file_name[rows],
      "subject_id": catalog.subject_id[rows],
      "label": catalog.label[rows].astype(np.int32),
      "image_sha256": catalog.image_sha256[rows],
  }


def _summary(result: splits_lib.SplitResult, dropped_by_view: int, train_labels: np.ndarray,
             num_classes: int, dataset: str, task: str, build: Mapping[str, Any]) -> dict[str, Any]:
  cat = result.catalog
  per_split = {}
  for name, rows in result.rows.items():
    subjects = {s for s in cat.subject_id[rows] if len(s)}
    per_split[name] = {
        "images": int(len(rows)),
        "per_class": np.bincount(cat.label[rows], minlength=num_classes).tolist(),
        "subjects": len(subjects),
    }
  return {
      "dataset": dataset, "task": task, "protocol": result.protocol, "splits": per_split,
      "build": dict(build),  # the TFDS build read, and the corrupt files it left out
      "duplicates_dropped": result.duplicates_dropped,
      "duplicate_label_conflicts": result.duplicate_label_conflicts,
      "dropped_by_task_view": dropped_by_view,
      "train_balanced_per_class": np.bincount(train_labels, minlength=num_classes).tolist(),
      "has_subjects": cat.has_subjects,
      "test_subjects": sorted(s.decode() for s in {x for x in cat.subject_id[result.rows["test"]] if len(x)}),
  }


def build_pipeline(
    config: ml_collections.ConfigDict,
    *,
    global_batch_size: int,
    eval_batch_size: int,
    workdir: str | os.PathLike[str] | None,
    seed: int,
    process_index: int = 0,
    process_count: int = 1,
    sources: Mapping[str, Sequence[Mapping[str, Any]]] | None = None,
) -> Pipeline:
  """Builds the training and evaluation pipelines of `config` (a `config.data` ConfigDict).

  `seed` drives shuffling and augmentation; `config.split.seed` the split and the choice of
  oversampled images, so runs with different seeds share one split. `sources` (split name ->
  random-access sequence of records) replaces `load_split_sources`, for tests. Statistics are
  read from / written to `workdir` (process 0 writes; None keeps them in memory only).
  """
  check_data_config(config)
  if not 0 <= process_index < process_count:
    raise ValueError(f"process_index {process_index} out of range for process_count {process_count}.")
  per_process = _per_process(global_batch_size, process_count, "global batch size")
  _per_process(eval_batch_size, process_count, "eval batch size")
  num_workers = resolve_num_workers(config.num_workers)
  view = get_view(config.dataset, config.task)
  if sources is None:
    loaded = _load_dataset(config)
    sources, build = loaded.sources, loaded.build
    meta_sources = _load_dataset(config, decode_images=False).sources  # the labels and ids pass skips decoding
  else:
    sources = meta_sources = dict(sources)
    build = {"name": "sources given in memory (no TFDS build)", "on_corrupt": "error", "skipped_corrupt": []}
  wanted = splits_lib.source_splits(config.dataset, config.split.protocol, available=list(sources))

  catalog, dropped_by_view = scan_sources(meta_sources, wanted, num_threads=config.read_threads).apply_view(view)
  result = splits_lib.make_splits(
      catalog, dataset=config.dataset, protocol=config.split.protocol,
      fractions=config.split.fractions, seed=config.split.seed, dedup=config.dedup,
      num_folds=config.split.get("num_folds", 0), fold=config.split.get("fold", 0),
      val_fraction=config.split.get("val_fraction", 0.15),
  )
  cap = int(config.get("max_cells_per_subject", 0))
  if cap > 0:
    if not result.catalog.has_subjects:
      raise ValueError("data.max_cells_per_subject needs subject ids; this dataset has none.")
    result.rows.update(splits_lib.cap_per_subject(result.catalog.subject_id, result.rows, cap, config.split.seed))
  catalog, train_rows = result.catalog, result.rows["train"]
  train_labels = catalog.label[train_rows]
  if config.balance == "oversample_rot90":
    positions, rotate = balance_lib.oversample_rot90(train_labels, seed=config.split.seed)
  else:
    positions, rotate = np.arange(len(train_rows)), np.zeros(len(train_rows), bool)
  balanced_labels = train_labels[positions]
  if config.balance == "none":
    weights = np.ones(view.num_classes, np.float32)
  else:  # after oversampling these correct what the rotated copies could not (as the paper did)
    weights = balance_lib.class_weights(balanced_labels, view.num_classes)

  read_options = grain.ReadOptions(num_threads=config.read_threads, prefetch_buffer_size=config.prefetch_buffer_size)
  prepare = T.PrepareImage(config.image_size, config.resize, config.crop_fraction,  # as T.eval_transforms
                           config.get("cell_window", T.DEFAULT_CELL_WINDOW))

  def compute() -> tuple[Any, Any, int, dict[str, Any]]:
    src = RowSource(sources, catalog.split[train_rows], catalog.index[train_rows], train_labels)
    ds = grain.MapDataset.source(src).map(geometry.RecordShape(prepare)).to_iter_dataset(read_options).batch(64)
    ds = _maybe_mp(ds, num_workers, config.worker_buffer_size)
    shapes = []

    def batches():
      for batch in ds:
        shapes.append(batch[geometry.SHAPE_KEY])
        yield batch["image"]

    mean, std, n = channel_stats(batches())
    return mean, std, n, geometry.ImageGeometry.from_shapes(np.concatenate(shapes)).to_json()

  stats = cached_stats(workdir, _fingerprint(config, catalog, train_rows), compute, write=process_index == 0)
  logging.info("Train-split statistics: mean %s, std %s.", stats.mean, stats.std)
  normalize = dict(mean=stats.mean, std=stats.std, standardize=config.standardize, mode=config.preprocessing)

  store = _prepared_store(config, num_workers)
  order = np.random.default_rng(seed).permutation(len(positions))  # a fixed start order of the stream
  rows = train_rows[positions[order]]
  train = _train_stream(RowSource(sources, catalog.split[rows], catalog.index[rows], catalog.label[rows],
                                  rotate=rotate[order]),
                        seed=seed, per_process=per_process, process_index=process_index, process_count=process_count,
                        transforms=(prepare, T.Augment(**config.augment.to_dict()),
                                    T.Normalize(**normalize, keys=T.TRAIN_KEYS)),
                        read_options=read_options, num_workers=num_workers, buffer_size=config.worker_buffer_size,
                        store=store)

  eval_splits = {
      name: EvalSplit(
          name=name, metadata=_metadata(catalog, result.rows[name]), sources=sources,
          source_split=catalog.split[result.rows[name]], source_index=catalog.index[result.rows[name]],
          prepare=prepare, normalize=T.Normalize(**normalize, keys=T.EVAL_KEYS), batch_size=eval_batch_size,
          process_index=process_index, process_count=process_count, num_workers=num_workers,
          worker_buffer_size=config.worker_buffer_size, read_options=read_options, store=store,
      )
      for name in EVAL_SPLITS
  }
  return Pipeline(
      train=train,
      steps_per_epoch=max(1, len(positions) // global_batch_size),
      eval_splits=eval_splits,
      stats=stats,
      class_names=view.class_names,
      num_classes=view.num_classes,
      class_weights=weights,
      protocol=config.split.protocol,
      dataset=config.dataset,
      task=config.task,
      global_batch_size=global_batch_size,
      per_process_batch_size=per_process,
      train_size=len(positions),
      summary=_summary(result, dropped_by_view, balanced_labels, view.num_classes, config.dataset, config.task,
                       build),
  )
