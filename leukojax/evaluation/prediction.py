"""Predictions of a trained run for new images or for a split of its dataset.

Inputs are image files and folders, or a split of the run's own dataset (e.g. C-NMC `final_test`).
Either way the images go through the run's evaluation transforms (`EvalSplit`: the same resize,
the saved train-split statistics of `data_stats.json`, the same ImageNet mode) and the sharded
evaluation step, TTA included when asked. A file that cannot be decoded is reported by name and
skipped; the others are predicted.

C-NMC runs (classes `hem`, `all`) also read each input's subject and true class from the C-NMC
names or label CSV (`leukojax.data.cnmc_names`), add them to the CSV, and score the labelled cells
pooled and per subject (`evaluation.cnmc_scores`): how a user tests a trained run on their own held-out subjects.
"""

from __future__ import annotations

import concurrent.futures
import csv
import dataclasses
import json
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
from absl import logging

from leukojax.errors import LeukojaxError
from leukojax.evaluation import analysis, inference, thresholds, tta
from leukojax.data import geometry, images
from leukojax.data import transforms as T
from leukojax.data.errors import ImageReadError
from leukojax.data.catalog import scan_sources
from leukojax.data.pipeline import EvalSplit
from leukojax.data.views import get_view
from leukojax.models import outputs

CNMC_CLASSES = ("hem", "all")  # the C-NMC task's class order (1 is ALL)
_FILES_SPLIT = "files"


@dataclasses.dataclass(frozen=True)
class Prediction:
  """Predictions in input order; `skipped` lists unreadable inputs with the reason."""

  file_names: list[str]
  probs: np.ndarray  # [N] P(positive) for binary, [N, K] otherwise
  labels: np.ndarray  # int [N], predicted class index
  threshold: float | None  # None for multi-class (arg-max)
  threshold_source: str
  class_names: tuple[str, ...]
  skipped: list[tuple[str, str]]
  result: inference.SplitResult
  # C-NMC runs only (None otherwise): per input, the subject ('' unknown), the true label
  # (1 ALL, 0 HEM, -1 unknown) and where it came from; warnings about inputs left unlabelled.
  subject_ids: list[str] | None = None
  true_labels: np.ndarray | None = None
  label_sources: list[str] | None = None
  warnings: list[str] = dataclasses.field(default_factory=list)
  # File inputs only: per input, '' or why its size is far from the training images' (`data.geometry`).
  geometry: list[str] | None = None


class PredictionError(LeukojaxError, ValueError):
  """Bad inputs or options of a prediction; the message says what to do."""


class PreparedImages:
  """Random-access records `{"image": uint8 array}` of images already decoded and prepared (cropped
  and resized as in evaluation) by `read_and_prepare` (module-level, so grain can pickle it)."""

  def __init__(self, images: Sequence[np.ndarray]):
    self.images = list(images)

  def __len__(self) -> int:
    return len(self.images)

  def __getitem__(self, i: int) -> dict[str, Any]:
    return {"image": self.images[int(i)]}


natural_key = images.natural_key
expand_paths = images.expand_image_paths


@dataclasses.dataclass(frozen=True)
class ReadFiles:
  """`read_and_prepare`'s result: the readable inputs, prepared, and the rest with the reason."""

  paths: list[str]
  prepared: list[np.ndarray]
  original_hw: list[tuple[int, int]]  # the decoded sizes, for `geometry.flag_inputs`
  skipped: list[tuple[str, str]]


def read_and_prepare(paths: Sequence[str], prepare: T.PrepareImage, num_threads: int = 4) -> ReadFiles:
  """Each file is decoded once (`data.images.read_image`) and prepared at once, so what stays in
  memory is the image at the model's resolution, not the original."""
  def one(path: str) -> tuple[np.ndarray, tuple[int, int]] | str:
    try:
      image = images.read_image(path)
      return prepare.map({"image": image, "label": 0})["image"], tuple(image.shape[:2])
    except ImageReadError as error:
      return str(error)

  with concurrent.futures.ThreadPoolExecutor(max(1, num_threads)) as pool:
    results = list(pool.map(one, paths))
  ok = [(p, r) for p, r in zip(paths, results) if not isinstance(r, str)]
  skipped = [(p, r) for p, r in zip(paths, results) if isinstance(r, str)]
  for _, reason in skipped:
    logging.warning("Skipping: %s", reason)
  return ReadFiles([p for p, _ in ok], [r[0] for _, r in ok], [r[1] for _, r in ok], skipped)


def _eval_split(run, name: str, metadata: dict[str, np.ndarray], sources, source_split, source_index,
                batch_size: int, prepare: T.PrepareImage | None = None) -> EvalSplit:
  import jax  # pylint: disable=g-import-not-at-top

  run_prepare, normalize = T.eval_transforms(run.config.data, run.pipeline.stats)
  prepare = prepare or run_prepare
  normalize = T.Normalize(normalize.mean, normalize.std, standardize=normalize.standardize,
                          mode=normalize.mode, keys=T.EVAL_KEYS)
  return EvalSplit(name=name, metadata=metadata, sources=sources, source_split=np.asarray(source_split),
                   source_index=np.asarray(source_index, np.int64), prepare=prepare, normalize=normalize,
                   batch_size=batch_size, process_index=jax.process_index(), process_count=jax.process_count())


def file_split(run, paths: Sequence[str], prepared: Sequence[np.ndarray], batch_size: int) -> EvalSplit:
  """The user's files as an evaluation split, from their `read_and_prepare`d images."""
  n = len(paths)
  file_names = np.empty(n, object)  # 1-D array of bytes, as the dataset metadata
  file_names[:] = [p.encode() for p in paths]
  metadata = {"file_name": file_names,
              "subject_id": np.full(n, b"", object), "label": np.full(n, -1, np.int32),
              "image_sha256": np.full(n, b"", object)}
  size = run.config.data.image_size  # already prepared: only the padding's blank image is resized
  return _eval_split(run, _FILES_SPLIT, metadata, {_FILES_SPLIT: PreparedImages(prepared)},
                     np.full(n, _FILES_SPLIT), np.arange(n), batch_size, prepare=T.PrepareImage(size))


def dataset_split(run, split: str, batch_size: int) -> EvalSplit:
  """A split of the run's TFDS dataset as it is stored (e.g. `final_test`, unlabelled, in order)."""
  from leukojax.data.sources import load_split_sources  # pylint: disable=g-import-not-at-top

  data = run.config.data
  kwargs = dict(builder_config=data.builder_config, data_dir=data.data_dir, manual_dir=data.manual_dir)
  meta_sources = load_split_sources(data.dataset, decode_images=False, **kwargs)
  if split not in meta_sources:
    raise PredictionError(f"{data.dataset} has no split {split!r}; it has {sorted(meta_sources)}.")
  catalog = scan_sources(meta_sources, [split], num_threads=data.read_threads)
  if (catalog.label >= 0).all():  # labelled: the task's classes only, renumbered as in training
    catalog, _ = catalog.apply_view(get_view(data.dataset, data.task))
  metadata = {"file_name": catalog.file_name, "subject_id": catalog.subject_id,
              "label": catalog.label.astype(np.int32), "image_sha256": catalog.image_sha256}
  return _eval_split(run, split, metadata, load_split_sources(data.dataset, **kwargs), catalog.split,
                     catalog.index, batch_size)


def resolve_threshold(run, spec: str, *, use_tta: bool, eval_fn, batch_size: int) -> tuple[float, str]:
  """A number, or 'val': the run's validation-chosen threshold for this checkpoint and TTA setting
  (read from W/report.json when it matches, else chosen again on the validation split)."""
  if spec != "val":
    try:
      return float(spec), "given"
    except ValueError:
      raise PredictionError(f"--threshold={spec!r}: use 'val' or a number such as 0.5.") from None
  path = os.path.join(run.workdir, "report.json")
  if os.path.exists(path):
    with open(path) as f:
      saved = json.load(f)
    thr = saved.get("threshold") or {}
    if (saved.get("checkpoint_step") == run.step and (saved.get("tta", "none") != "none") == use_tta
        and "chosen" in thr):
      return float(thr["chosen"]), f"{path} ({thr.get('criterion_text', '')} on {thr.get('chosen_on')})"
  if "val" not in run.pipeline.eval_splits:
    raise PredictionError(f"{path} holds no validation-chosen threshold for step {run.step}"
                     f"{' with TTA' if use_tta else ''}, and the dataset was not loaded to choose one: pass "
                     "--threshold 0.5 (or another number), or --with_data (and --data_dir/--manual_dir "
                     "if the data moved) to choose it on the validation split.")
  criterion = run.config.eval.get("threshold_criterion", "youden")
  val = inference.evaluate_split(eval_fn, run.variables, run.pipeline.eval_splits["val"], run.mesh, batch_size,
                                  run.pipeline.class_names)
  chosen = analysis.choose_on_validation({"val": val}, criterion)
  return chosen.threshold, f"chosen now on the validation split ({thresholds.CRITERIA[criterion]})"


def is_cnmc(class_names: Sequence[str]) -> bool:
  return tuple(class_names) == CNMC_CLASSES


def predict(run, *, paths: Sequence[str] = (), split: str | None = None, threshold: str = "val",
            use_tta: bool = False, batch_size: int | None = None, labels_csv: str | None = None) -> Prediction:
  """Predicts `paths` (files or folders) or the dataset `split` with a restored `TrainedRun`.

  For a C-NMC run the subjects and true labels come from the file names or the label CSV
  (`labels_csv`, else found beside the images), or from the split's own metadata.
  """
  if bool(paths) == bool(split):
    raise PredictionError("Give image paths or a dataset split, not both and not neither.")
  cnmc = is_cnmc(run.pipeline.class_names)
  if labels_csv and (split or not cnmc):
    what = "--split" if split else f"a run of classes {tuple(run.pipeline.class_names)}"
    raise PredictionError(f"--labels gives the classes of C-NMC test-phase images (1.bmp, ...): it applies to image "
                     f"paths of a C-NMC run, not to {what}. Drop --labels.")
  batch_size = batch_size or run.config.eval.batch_size
  eval_fn = tta.make_tta_eval_fn(run.graphs) if use_tta else run.eval_fn
  skipped: list[tuple[str, str]] = []
  truth, warnings, far = None, [], None
  if split:
    source = dataset_split(run, split, batch_size)
  else:
    prepare, _ = T.eval_transforms(run.config.data, run.pipeline.stats)
    read = read_and_prepare(expand_paths(paths), prepare, run.config.data.read_threads)
    files, skipped = read.paths, read.skipped
    if not files:
      raise PredictionError("No readable image among the inputs: " + "; ".join(r for _, r in skipped))
    far = geometry.flag_inputs(geometry.ImageGeometry.from_json(run.pipeline.stats.geometry), files,
                               read.original_hw)
    if cnmc:  # before the model runs: a contradictory name fails at once
      # Imported here: it loads the TFDS builder (and TFDS), which other runs' predictions never need.
      from leukojax.data import cnmc_names  # pylint: disable=g-import-not-at-top
      truth, warnings = cnmc_names.read_truth(files, labels_csv)
    source = file_split(run, files, read.prepared, batch_size)
  result = inference.evaluate_split(eval_fn, run.variables, source, run.mesh, batch_size, run.pipeline.class_names)
  probs = np.asarray(result.probs)
  names = [n.decode() if isinstance(n, bytes) else str(n) for n in result.metadata["file_name"]]
  if outputs.is_binary(probs):
    value, where = resolve_threshold(run, threshold, use_tta=use_tta, eval_fn=eval_fn, batch_size=batch_size)
  else:
    value, where = None, "arg-max"
  labels = np.asarray(outputs.decide(probs, outputs.DEFAULT_THRESHOLD if value is None else value, xp=np))
  extra = {}
  if cnmc and truth is not None:  # file inputs: evaluation keeps the input order
    extra = dict(subject_ids=[t.subject_id for t in truth], true_labels=np.array([t.label for t in truth], int),
                 label_sources=[t.source for t in truth], warnings=warnings)
  elif cnmc:  # a dataset split: its metadata
    known = np.asarray(result.labels, int)
    extra = dict(subject_ids=[_text(s) for s in result.metadata["subject_id"]], true_labels=known,
                 label_sources=[f"dataset split {split}" if k >= 0 else "" for k in known])
  return Prediction(file_names=names, probs=probs, labels=labels, threshold=value, threshold_source=where,
                    class_names=tuple(run.pipeline.class_names), skipped=skipped, result=result, geometry=far,
                    **extra)


def _text(value) -> str:
  return value.decode() if isinstance(value, bytes) else str(value)


def write_csv(prediction: Prediction, path: str) -> str:
  """`file,probability,label,class`: P(positive) for binary (P of the predicted class and one
  `p_<class>` column per class for multi-class), the predicted index and its name. C-NMC runs add
  `subject_id,true_label` after these ('' and -1 where unknown), so existing readers keep working.
  File inputs end with `geometry`: '' or why the image's size is far from the training images'."""
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  binary = outputs.is_binary(prediction.probs)
  names = prediction.class_names
  truth = prediction.subject_ids is not None
  far = prediction.geometry
  with open(path, "w", newline="") as f:
    writer = csv.writer(f)
    writer.writerow(["file", "probability", "label", "class"] + ([] if binary else [f"p_{c}" for c in names])
                    + (["subject_id", "true_label"] if truth else []) + (["geometry"] if far is not None else []))
    for i, file_name in enumerate(prediction.file_names):
      label = int(prediction.labels[i])
      tail = [far[i]] if far is not None else []
      if binary:
        writer.writerow([file_name, f"{float(prediction.probs.reshape(-1)[i]):.6f}", label, names[label]]
                        + ([prediction.subject_ids[i], int(prediction.true_labels[i])] if truth else []) + tail)
      else:
        row = prediction.probs[i]
        writer.writerow([file_name, f"{float(row[label]):.6f}", label, names[label],
                         *(f"{float(p):.6f}" for p in row)] + tail)
  return path
