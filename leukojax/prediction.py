"""Predictions of a trained run for new images, and the ISBI 2019 challenge submission file.

Inputs are image files and folders, or a split of the run's own dataset (e.g. C-NMC `final_test`).
Either way the images go through the run's evaluation transforms (`EvalSplit`: the same resize,
the saved train-split statistics of `data_stats.json`, the same ImageNet mode) and the sharded
evaluation step, TTA included when asked. A file that cannot be decoded is reported by name and
skipped; the others are predicted.

ISBI submission (`isbi_valid.predict`): one line per final-test image, `1` for ALL and `0` for HEM,
in the numeric order of the image names `1.bmp, 2.bmp, ..., 2586.bmp`, uploaded zipped. This is
how public challenge entries wrote it (e.g. Prellberg & Kramer's `submission.py` in
github.com/jprellberg/isbi2019cancer reads `{i+1}.bmp` in turn and zips the 0/1 lines as
`isbi_valid.predict`); the challenge's own instructions are no longer online, so treat the layout
as reconstructed from those entries (docs/evaluation.md).
"""

from __future__ import annotations

import concurrent.futures
import csv
import dataclasses
import json
import os
import pathlib
import re
import zipfile
from collections.abc import Sequence
from typing import Any

import numpy as np
from absl import logging
from PIL import UnidentifiedImageError

from leukojax import analysis, evaluation, thresholds, tta
from leukojax.data import transforms as T
from leukojax.data.catalog import scan_sources
from leukojax.data.pipeline import EvalSplit
from leukojax.data.views import get_view

IMAGE_SUFFIXES = (".bmp", ".png", ".jpg", ".jpeg", ".tif", ".tiff", ".gif", ".webp", ".ppm", ".pgm")
ISBI_FILE = "isbi_valid.predict"
ISBI_CLASSES = ("hem", "all")  # the C-NMC task's class order; the submission's 1 is ALL
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
  result: evaluation.SplitResult


class FileSource:
  """Random-access records `{"image": file bytes}` over paths (module-level, so grain can pickle it)."""

  def __init__(self, paths: Sequence[str]):
    self.paths = list(paths)

  def __len__(self) -> int:
    return len(self.paths)

  def __getitem__(self, i: int) -> dict[str, Any]:
    return {"image": pathlib.Path(self.paths[int(i)]).read_bytes()}


def _natural_key(text: str) -> list:
  return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", text)]


def expand_paths(inputs: Sequence[str]) -> list[str]:
  """Files as given; folders searched recursively for image files, in natural order."""
  out = []
  for item in inputs:
    path = pathlib.Path(item)
    if path.is_dir():
      found = [str(p) for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]
      out.extend(sorted(found, key=_natural_key))
    else:
      out.append(str(path))  # a missing or unreadable file is reported by `readable_images`
  return out


def _check(path: str) -> str | None:
  """None if the file decodes as an image, else the reason."""
  try:
    T.to_rgb_uint8(pathlib.Path(path).read_bytes())
    return None
  except FileNotFoundError:
    return "no such file"
  except IsADirectoryError:
    return "a folder with no images"
  except UnidentifiedImageError:
    return "not an image format Pillow can decode"
  except Exception as error:  # pylint: disable=broad-except  (PIL raises many types)
    return f"{type(error).__name__}: {error}"


def readable_images(paths: Sequence[str], num_threads: int = 4) -> tuple[list[str], list[tuple[str, str]]]:
  """(decodable paths, [(path, reason)] for the rest), each file decoded once to check it."""
  with concurrent.futures.ThreadPoolExecutor(max(1, num_threads)) as pool:
    reasons = list(pool.map(_check, paths))
  ok = [p for p, r in zip(paths, reasons) if r is None]
  skipped = [(p, r) for p, r in zip(paths, reasons) if r is not None]
  for path, reason in skipped:
    logging.warning("Skipping %s: cannot be read as an image (%s).", path, reason)
  return ok, skipped


def _eval_split(run, name: str, metadata: dict[str, np.ndarray], sources, source_split, source_index,
                batch_size: int) -> EvalSplit:
  import jax  # pylint: disable=g-import-not-at-top

  prepare, normalize = T.eval_transforms(run.config.data, run.pipeline.stats)
  normalize = T.Normalize(normalize.mean, normalize.std, standardize=normalize.standardize,
                          mode=normalize.mode, keys=T.EVAL_KEYS)
  return EvalSplit(name=name, metadata=metadata, sources=sources, source_split=np.asarray(source_split),
                   source_index=np.asarray(source_index, np.int64), prepare=prepare, normalize=normalize,
                   batch_size=batch_size, process_index=jax.process_index(), process_count=jax.process_count())


def file_split(run, paths: Sequence[str], batch_size: int) -> EvalSplit:
  n = len(paths)
  file_names = np.empty(n, object)  # 1-D array of bytes, as the dataset metadata
  file_names[:] = [p.encode() for p in paths]
  metadata = {"file_name": file_names,
              "subject_id": np.full(n, b"", object), "label": np.full(n, -1, np.int32),
              "image_sha256": np.full(n, b"", object)}
  return _eval_split(run, _FILES_SPLIT, metadata, {_FILES_SPLIT: FileSource(paths)},
                     np.full(n, _FILES_SPLIT), np.arange(n), batch_size)


def dataset_split(run, split: str, batch_size: int) -> EvalSplit:
  """A split of the run's TFDS dataset as it is stored (e.g. `final_test`, unlabelled, in order)."""
  from leukojax.data.sources import load_split_sources  # pylint: disable=g-import-not-at-top

  data = run.config.data
  kwargs = dict(builder_config=data.builder_config, data_dir=data.data_dir, manual_dir=data.manual_dir)
  meta_sources = load_split_sources(data.dataset, decode_images=False, **kwargs)
  if split not in meta_sources:
    raise ValueError(f"{data.dataset} has no split {split!r}; it has {sorted(meta_sources)}.")
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
      raise ValueError(f"--threshold={spec!r}: use 'val' or a number such as 0.5.") from None
  path = os.path.join(run.workdir, "report.json")
  if os.path.exists(path):
    with open(path) as f:
      saved = json.load(f)
    thr = saved.get("threshold") or {}
    if (saved.get("checkpoint_step") == run.step and (saved.get("tta", "none") != "none") == use_tta
        and "chosen" in thr):
      return float(thr["chosen"]), f"{path} ({thr.get('criterion_text', '')} on {thr.get('chosen_on')})"
  if "val" not in run.pipeline.eval_splits:
    raise ValueError(f"{path} holds no validation-chosen threshold for step {run.step}"
                     f"{' with TTA' if use_tta else ''}, and the dataset was not loaded to choose one: pass "
                     "--threshold 0.5 (or another number), or --with_data (and --data_dir/--manual_dir "
                     "if the data moved) to choose it on the validation split.")
  criterion = run.config.eval.get("threshold_criterion", "youden")
  val = evaluation.evaluate_split(eval_fn, run.state, run.pipeline.eval_splits["val"], run.mesh, batch_size,
                                  run.pipeline.class_names)
  chosen = analysis.choose_on_validation({"val": val}, criterion)
  return chosen.threshold, f"chosen now on the validation split ({thresholds.CRITERIA[criterion]})"


def predict(run, *, paths: Sequence[str] = (), split: str | None = None, threshold: str = "val",
            use_tta: bool = False, batch_size: int | None = None) -> Prediction:
  """Predicts `paths` (files or folders) or the dataset `split` with a restored `TrainedRun`."""
  if bool(paths) == bool(split):
    raise ValueError("Give image paths or a dataset split, not both and not neither.")
  batch_size = batch_size or run.config.eval.batch_size
  eval_fn = tta.make_tta_eval_fn(run.graphs, np.ones(run.pipeline.num_classes, np.float32)) if use_tta \
      else run.eval_fn
  skipped: list[tuple[str, str]] = []
  if split:
    source = dataset_split(run, split, batch_size)
  else:
    files, skipped = readable_images(expand_paths(paths), run.config.data.read_threads)
    if not files:
      raise ValueError("No readable image among the inputs: " + "; ".join(f"{p} ({r})" for p, r in skipped))
    source = file_split(run, files, batch_size)
  result = evaluation.evaluate_split(eval_fn, run.state, source, run.mesh, batch_size, run.pipeline.class_names)
  probs = np.asarray(result.probs)
  names = [n.decode() if isinstance(n, bytes) else str(n) for n in result.metadata["file_name"]]
  if analysis.is_binary(probs):
    value, where = resolve_threshold(run, threshold, use_tta=use_tta, eval_fn=eval_fn, batch_size=batch_size)
    labels = (probs.reshape(-1) >= value).astype(int)
  else:
    value, where, labels = None, "arg-max", probs.argmax(axis=1)
  return Prediction(file_names=names, probs=probs, labels=labels, threshold=value, threshold_source=where,
                    class_names=tuple(run.pipeline.class_names), skipped=skipped, result=result)


def write_csv(prediction: Prediction, path: str) -> str:
  """`file,probability,label,class`: P(positive) for binary (P of the predicted class and one
  `p_<class>` column per class for multi-class), the predicted index and its name."""
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  binary = analysis.is_binary(prediction.probs)
  names = prediction.class_names
  with open(path, "w", newline="") as f:
    writer = csv.writer(f)
    writer.writerow(["file", "probability", "label", "class"] + ([] if binary else [f"p_{c}" for c in names]))
    for i, file_name in enumerate(prediction.file_names):
      label = int(prediction.labels[i])
      if binary:
        writer.writerow([file_name, f"{float(prediction.probs.reshape(-1)[i]):.6f}", label, names[label]])
      else:
        row = prediction.probs[i]
        writer.writerow([file_name, f"{float(row[label]):.6f}", label, names[label],
                         *(f"{float(p):.6f}" for p in row)])
  return path


def isbi_order(file_names: Sequence[str]) -> np.ndarray:
  """Positions of `file_names` in the challenge's order, checking they are exactly 1..N.<ext>."""
  stems = []
  for name in file_names:
    base = os.path.basename(name)
    match = re.fullmatch(r"(\d+)\.[A-Za-z]+", base)
    if not match:
      raise ValueError(f"{name}: ISBI final-test images are named <number>.bmp (1.bmp ... N.bmp); "
                       "predict the C-NMC final test folder or --split final_test.")
    stems.append(int(match.group(1)))
  missing = sorted(set(range(1, len(stems) + 1)) - set(stems))
  if missing or len(set(stems)) != len(stems):
    dup = sorted(s for s in set(stems) if stems.count(s) > 1)
    raise ValueError(f"The ISBI file needs every image 1..{len(stems)} exactly once; missing {missing[:10]}, "
                     f"repeated {dup[:10]} (was an image skipped as unreadable?).")
  return np.argsort(stems, kind="stable")


def write_isbi(prediction: Prediction, path: str) -> tuple[str, str]:
  """Writes `isbi_valid.predict` (one 0/1 per line, 1 = ALL) and the zip to upload; returns both paths."""
  if prediction.class_names != ISBI_CLASSES:
    raise ValueError(f"The ISBI file is for the C-NMC task {ISBI_CLASSES}; this run predicts "
                     f"{prediction.class_names}.")
  if prediction.skipped:
    raise ValueError("The ISBI file needs a prediction for every final-test image; unreadable: "
                     + ", ".join(p for p, _ in prediction.skipped))
  order = isbi_order(prediction.file_names)
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  with open(path, "w") as f:
    f.writelines(f"{int(prediction.labels[i])}\n" for i in order)
  zip_path = os.path.splitext(path)[0] + ".zip"
  with zipfile.ZipFile(zip_path, "w", zipfile.ZIP_DEFLATED) as z:
    z.write(path, ISBI_FILE)
  return path, zip_path
