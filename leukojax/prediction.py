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

C-NMC runs (classes `hem`, `all`) also read each input's subject and true class from the C-NMC
names or label CSV (`leukojax.data.cnmc_names`), add them to the CSV, and score the labelled cells
pooled and per subject (`cnmc_scores`): how a user tests a trained run on their own held-out subjects.
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

from leukojax import analysis, evaluation, metrics, thresholds, tta
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
  # C-NMC runs only (None otherwise): per input, the subject ('' unknown), the true label
  # (1 ALL, 0 HEM, -1 unknown) and where it came from; warnings about inputs left unlabelled.
  subject_ids: list[str] | None = None
  true_labels: np.ndarray | None = None
  label_sources: list[str] | None = None
  warnings: list[str] = dataclasses.field(default_factory=list)


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


def is_cnmc(class_names: Sequence[str]) -> bool:
  return tuple(class_names) == ISBI_CLASSES


def predict(run, *, paths: Sequence[str] = (), split: str | None = None, threshold: str = "val",
            use_tta: bool = False, batch_size: int | None = None, labels_csv: str | None = None) -> Prediction:
  """Predicts `paths` (files or folders) or the dataset `split` with a restored `TrainedRun`.

  For a C-NMC run the subjects and true labels come from the file names or the label CSV
  (`labels_csv`, else found beside the images), or from the split's own metadata.
  """
  if bool(paths) == bool(split):
    raise ValueError("Give image paths or a dataset split, not both and not neither.")
  cnmc = is_cnmc(run.pipeline.class_names)
  if labels_csv and (split or not cnmc):
    what = "--split" if split else f"a run of classes {tuple(run.pipeline.class_names)}"
    raise ValueError(f"--labels gives the classes of C-NMC test-phase images (1.bmp, ...): it applies to image "
                     f"paths of a C-NMC run, not to {what}. Drop --labels.")
  batch_size = batch_size or run.config.eval.batch_size
  eval_fn = tta.make_tta_eval_fn(run.graphs, np.ones(run.pipeline.num_classes, np.float32)) if use_tta \
      else run.eval_fn
  skipped: list[tuple[str, str]] = []
  truth, warnings = None, []
  if split:
    source = dataset_split(run, split, batch_size)
  else:
    files, skipped = readable_images(expand_paths(paths), run.config.data.read_threads)
    if not files:
      raise ValueError("No readable image among the inputs: " + "; ".join(f"{p} ({r})" for p, r in skipped))
    if cnmc:  # before the model runs: a contradictory name fails at once
      # Imported here: it loads the TFDS builder (and TFDS), which other runs' predictions never need.
      from leukojax.data import cnmc_names  # pylint: disable=g-import-not-at-top
      truth, warnings = cnmc_names.read_truth(files, labels_csv)
    source = file_split(run, files, batch_size)
  result = evaluation.evaluate_split(eval_fn, run.state, source, run.mesh, batch_size, run.pipeline.class_names)
  probs = np.asarray(result.probs)
  names = [n.decode() if isinstance(n, bytes) else str(n) for n in result.metadata["file_name"]]
  if analysis.is_binary(probs):
    value, where = resolve_threshold(run, threshold, use_tta=use_tta, eval_fn=eval_fn, batch_size=batch_size)
    labels = (probs.reshape(-1) >= value).astype(int)
  else:
    value, where, labels = None, "arg-max", probs.argmax(axis=1)
  extra = {}
  if cnmc and truth is not None:  # file inputs: evaluation keeps the input order
    extra = dict(subject_ids=[t.subject_id for t in truth], true_labels=np.array([t.label for t in truth], int),
                 label_sources=[t.source for t in truth], warnings=warnings)
  elif cnmc:  # a dataset split: its metadata
    known = np.asarray(result.labels, int)
    extra = dict(subject_ids=[_text(s) for s in result.metadata["subject_id"]], true_labels=known,
                 label_sources=[f"dataset split {split}" if k >= 0 else "" for k in known])
  return Prediction(file_names=names, probs=probs, labels=labels, threshold=value, threshold_source=where,
                    class_names=tuple(run.pipeline.class_names), skipped=skipped, result=result, **extra)


def _text(value) -> str:
  return value.decode() if isinstance(value, bytes) else str(value)


def write_csv(prediction: Prediction, path: str) -> str:
  """`file,probability,label,class`: P(positive) for binary (P of the predicted class and one
  `p_<class>` column per class for multi-class), the predicted index and its name. C-NMC runs add
  `subject_id,true_label` after these ('' and -1 where unknown), so existing readers keep working."""
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  binary = analysis.is_binary(prediction.probs)
  names = prediction.class_names
  truth = prediction.subject_ids is not None
  with open(path, "w", newline="") as f:
    writer = csv.writer(f)
    writer.writerow(["file", "probability", "label", "class"] + ([] if binary else [f"p_{c}" for c in names])
                    + (["subject_id", "true_label"] if truth else []))
    for i, file_name in enumerate(prediction.file_names):
      label = int(prediction.labels[i])
      if binary:
        writer.writerow([file_name, f"{float(prediction.probs.reshape(-1)[i]):.6f}", label, names[label]]
                        + ([prediction.subject_ids[i], int(prediction.true_labels[i])] if truth else []))
      else:
        row = prediction.probs[i]
        writer.writerow([file_name, f"{float(row[label]):.6f}", label, names[label],
                         *(f"{float(p):.6f}" for p in row)])
  return path


# --- scores of the C-NMC cells whose class is known --------------------------------------------------

# (key in the JSON, row name, the cells it is computed over: None all, 1 the ALL cells, 0 the HEM cells)
_POOLED_ROWS = (("accuracy", "Accuracy", None), ("weighted_f1", "Weighted F1 (ISBI 2019 score)", None),
                ("sensitivity", "Sensitivity (ALL cells called ALL)", 1),
                ("specificity", "Specificity (HEM cells called HEM)", 0), ("AUC", "AUC", None))


def run_subjects(workdir: str) -> dict[str, str]:
  """Subject -> the split of the run that held it (from W/predictions/<split>.csv, written by the
  training report), so that scores of subjects the run trained or chose its threshold on are flagged."""
  from leukojax.reporting import PREDICTIONS_DIR  # pylint: disable=g-import-not-at-top

  out: dict[str, str] = {}
  for split in ("train", "val", "test"):  # train first: the strongest reason to distrust a score
    path = os.path.join(workdir, PREDICTIONS_DIR, f"{split}.csv")
    if os.path.exists(path):
      with open(path, newline="") as f:
        for row in csv.DictReader(f):
          if row.get("subject_id"):
            out.setdefault(row["subject_id"], split)
  return out


def _finite(value: Any) -> Any:
  """JSON has no NaN: an undefined figure (the AUC of one class) is null."""
  return None if isinstance(value, float) and not np.isfinite(value) else value


def cnmc_scores(prediction: Prediction, *, step: int | None = None, tta: bool = False,
                seen: dict[str, str] | None = None) -> dict[str, Any] | None:
  """Pooled and per-subject scores of the cells with a known class, at the threshold the labels used.

  None when no input has a known class. `seen` (`run_subjects`) marks subjects the run itself held.
  """
  if prediction.true_labels is None or not (prediction.true_labels >= 0).any():
    return None
  known = prediction.true_labels >= 0
  truth = prediction.true_labels[known].astype(int)
  probs = prediction.probs.reshape(-1)[known]
  subjects = np.array(prediction.subject_ids, object)[known]
  threshold, seen = float(prediction.threshold), seen or {}

  def support(mask: np.ndarray) -> dict[str, int]:
    return {"cells": int(mask.sum()), "subjects": len({s for s in subjects[mask] if s})}

  pooled = {k: _finite(v) for k, v in metrics.binary_metrics(truth, probs, threshold).items()}
  pooled["weighted_f1"] = pooled["isbi_weighted_f1"]
  pooled.update(support(np.ones(len(truth), bool)))
  pooled["support"] = {key: support(np.ones(len(truth), bool) if cls is None else truth == cls)
                       for key, _, cls in _POOLED_ROWS}
  per_subject = []
  for sid in sorted({s for s in subjects if s}, key=_natural_key):
    mine = subjects == sid
    m = metrics.binary_metrics(truth[mine], probs[mine], threshold)
    classes = set(truth[mine].tolist())
    cls = "mixed" if len(classes) > 1 else ISBI_CLASSES[classes.pop()]
    per_subject.append({
        "subject_id": sid, "class": cls, "cells": int(mine.sum()), "accuracy": m["accuracy"],
        "weighted_f1": m["isbi_weighted_f1"],
        "accuracy_is": {"all": "sensitivity", "hem": "specificity"}.get(cls),
        "called_all": int((probs[mine] >= threshold).sum()), "mean_prob_all": float(probs[mine].mean()),
        "in_run_split": seen.get(sid, ""),
    })
  sources: dict[str, int] = {}
  for source in np.array(prediction.label_sources, object)[known]:
    sources[source] = sources.get(source, 0) + 1
  notes = []
  if any(s["accuracy_is"] for s in per_subject):
    notes.append("A subject's cells are all of one class, so its accuracy is its sensitivity (ALL subjects) "
                 "or its specificity (healthy subjects, HEM cells), and its weighted F1 is the F1 of that "
                 "class alone; per-subject AUC is undefined.")
  used = {split: [s["subject_id"] for s in per_subject if s["in_run_split"] == split] for split in ("train", "val")}
  if used["train"] or used["val"]:
    held = "; ".join(f"{split}: {', '.join(ids)}" for split, ids in used.items() if ids)
    notes.append(f"Not held out: these subjects are in this run's own splits ({held}; train fitted the "
                 "model, val chose its checkpoint and threshold; from W/predictions/). Their scores, and "
                 "the pooled ones, are optimistic.")
  unassigned = int((subjects == "").sum())
  if unassigned:
    notes.append(f"{unassigned} labelled cell(s) have no subject: they count in the pooled figures only.")
  return {
      "checkpoint_step": step, "tta": bool(tta), "threshold": threshold,
      "threshold_source": prediction.threshold_source, "cells_predicted": len(prediction.file_names),
      "cells_labelled": int(known.sum()), "cells_unlabelled": int((~known).sum()), "label_sources": sources,
      "pooled": pooled, "subjects": per_subject, "notes": notes,
  }


def _fmt(value: Any) -> str:
  return "n/a" if value is None or (isinstance(value, float) and not np.isfinite(value)) else f"{value:.4f}"


def scores_markdown(scores: dict[str, Any], title: str = "C-NMC scores") -> str:
  """The pooled table (each figure with the cells and subjects behind it) and one row per subject."""
  pooled = scores["pooled"]
  sources = ", ".join(f"{n} from {s}" for s, n in scores["label_sources"].items())
  lines = [f"# {title}", "",
           f"Checkpoint step {scores['checkpoint_step']}, {'8-view TTA' if scores['tta'] else 'no TTA'}; "
           f"threshold {scores['threshold']:.4f} from {scores['threshold_source']}. "
           f"{scores['cells_labelled']} of {scores['cells_predicted']} predicted cells have a known class "
           f"({sources}); {scores['cells_unlabelled']} without one are not scored.", "",
           f"## Pooled over the labelled cells ({pooled['cells']} cells, {pooled['subjects']} subjects)", "",
           "| Metric | Value | Cells | Subjects |", "| --- | --- | --- | --- |"]
  for key, name, _ in _POOLED_ROWS:
    n = pooled["support"][key]
    lines.append(f"| {name} | {_fmt(pooled[key])} | {n['cells']} | {n['subjects']} |")
  lines += ["", f"TP {pooled['TP']}, TN {pooled['TN']}, FP {pooled['FP']}, FN {pooled['FN']} (positive: ALL).",
            "", "## Per subject", "",
            "| Subject | Class | Cells | Accuracy | Weighted F1 | Called ALL | Mean P(ALL) | In this run |",
            "| --- | --- | --- | --- | --- | --- | --- | --- |"]
  for s in scores["subjects"]:
    acc = _fmt(s["accuracy"]) + (f" (= {s['accuracy_is']})" if s["accuracy_is"] else "")
    lines.append(f"| {s['subject_id']} | {s['class'].upper()} | {s['cells']} | {acc} | {_fmt(s['weighted_f1'])} | "
                 f"{s['called_all']} | {s['mean_prob_all']:.4f} | {s['in_run_split'] or 'not seen'} |")
  if scores["notes"]:
    lines += [""] + [f"- {note}" for note in scores["notes"]]
  return "\n".join(lines) + "\n"


def write_scores(scores: dict[str, Any], csv_path: str) -> tuple[str, str]:
  """`<csv stem>_scores.json` and `_scores.md` beside the predictions CSV; returns both paths."""
  stem = os.path.splitext(csv_path)[0]
  json_path, md_path = f"{stem}_scores.json", f"{stem}_scores.md"
  with open(json_path, "w") as f:
    json.dump({"csv": os.path.abspath(csv_path), **scores}, f, indent=2)
    f.write("\n")
  with open(md_path, "w") as f:
    f.write(scores_markdown(scores, f"C-NMC scores of {os.path.basename(csv_path)}"))
  return json_path, md_path


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
