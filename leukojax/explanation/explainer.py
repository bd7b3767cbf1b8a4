"""Explains images with a trained run: Grad-CAM, LIME or both, one PNG each, plus their agreement.

Writes into `out_dir`: `<image stem>.png` per image, `explanations.json` (settings, one record per
image, the mean agreement, the images that could not be read) and `explanations.csv` (one row per
image). An unreadable image is reported by name and skipped; the others are still explained.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import time
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import numpy as np
from absl import logging
from flax import nnx

from leukojax.data.errors import ImageReadError
from leukojax.data.geometry import ImageGeometry, flag_inputs
from leukojax.data.images import read_image
from leukojax.data.transforms import eval_transforms
from leukojax.models import outputs
from leukojax.explanation import agreement as agreement_lib
from leukojax.explanation import figures
from leukojax.explanation.gradcam import GradCAM
from leukojax.explanation.lime_explainer import GREY, BatchedClassifier, LimeExplainer

METHODS: tuple[str, ...] = ("gradcam", "lime", "both")
CSV_FIELDS = ("file", "png", "predicted_class", "predicted_probability", "target_class", "iou",
              "iou_chance", "gradcam_area", "lime_area", "lime_r2", "iou_note", "seconds", "geometry")


@dataclasses.dataclass
class Options:
  method: str = "both"
  layers: Mapping[str, str] = dataclasses.field(default_factory=dict)  # backbone (or '') -> tap
  target_class: int | str | None = None  # index or name; None: the predicted class
  lime_samples: int = 1000
  lime_batch_size: int = 50
  segmentation: str = "slic"
  n_segments: int = 50
  hide_color: int = GREY
  top_fraction: float = 0.2
  seed: int = 0

  def __post_init__(self):
    if self.method not in METHODS:
      raise ValueError(f"Unknown method {self.method!r}; expected one of {METHODS}.")


def resolve_target(target: int | str | None, class_names: Sequence[str]) -> int | None:
  """A class index from an index or a class name (None stays None: explain the predicted class)."""
  if target is None:
    return None
  if isinstance(target, str) and not target.lstrip("-").isdigit():
    if target not in class_names:
      raise ValueError(f"Unknown target class {target!r}; the run's classes are {list(class_names)}.")
    return list(class_names).index(target)
  index = int(target)
  if not 0 <= index < len(class_names):
    raise ValueError(f"Target class {index} is not one of 0..{len(class_names) - 1} ({list(class_names)}).")
  return index


class Explainer:
  """A model with its run's preprocessing, ready to explain uint8 images of any size."""

  def __init__(self, model: nnx.Module, data_config: Any, stats: Any, class_names: Sequence[str],
               options: Options):
    self.options, self.class_names = options, tuple(class_names)
    self.geometry = ImageGeometry.from_json(getattr(stats, "geometry", None))  # the training images' sizes
    self._prepare, normalize = eval_transforms(data_config, stats)
    self._normalize = lambda image: normalize.map({"image": image, "label": 0})["image"]
    self.target = resolve_target(options.target_class, self.class_names)
    self.gradcam = GradCAM(model, options.layers) if options.method != "lime" else None
    self.lime = None
    if options.method != "gradcam":
      self.classifier = BatchedClassifier(model, self._normalize, options.lime_batch_size)
      self.lime = LimeExplainer(self.classifier, num_samples=options.lime_samples,
                                segmentation=options.segmentation, n_segments=options.n_segments,
                                hide_color=options.hide_color, seed=options.seed)

  def prepare(self, raw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(resized uint8 image, model input [1, H, W, 3]): `preprocess_images`, split in its two steps."""
    image = self._prepare.map({"image": raw, "label": 0})["image"]
    return image, self._normalize(image)[None]

  def explain(self, raw: np.ndarray, png_path: str, name: str) -> dict[str, Any]:
    """Explains one decoded image, writes its PNG and returns its record."""
    start = time.perf_counter()
    image, x = self.prepare(raw)
    record: dict[str, Any] = {"file": name, "png": os.path.basename(png_path)}
    cam = None
    if self.gradcam is not None:
      cam = self.gradcam(x, self.target)
      probs = np.asarray(outputs.class_probabilities(outputs.probabilities(cam.logits[None])))[0]
      predicted, target = cam.predicted, cam.target
      record["gradcam_layers"] = cam.layers
    else:
      probs = self.classifier(image[None])[0]
      predicted = int(outputs.decide_class_probabilities(probs[None], xp=np)[0])
      target = predicted if self.target is None else self.target
    record.update(predicted_class=self.class_names[predicted], predicted_probability=float(probs[predicted]),
                  target_class=self.class_names[target], target_probability=float(probs[target]))
    lime, agree = None, None
    if self.lime is not None:
      lime = self.lime(image, target)
      record.update(lime_r2=lime.score, lime_superpixels=int(lime.segments.max()) + 1)
    if cam is not None and lime is not None:
      agree = agreement_lib.measure(cam.combined, lime.segments, lime.positive_order(),
                                    self.options.top_fraction)
      record.update(iou=agree.iou, iou_chance=agree.iou_chance, gradcam_area=agree.gradcam_area,
                    lime_area=agree.lime_area)
      if agree.iou is None:
        record["iou_note"] = ("the Grad-CAM map is zero everywhere" if agree.gradcam_area == 0
                              else "no superpixel has a positive LIME weight")
    self._figure(png_path, image, name, record, cam, lime, agree)
    record["seconds"] = round(time.perf_counter() - start, 3)
    return record

  def _figure(self, png_path, image, name, record, cam, lime, agree) -> None:
    f = self.options.top_fraction
    title = (f"{os.path.basename(name)}: predicted {record['predicted_class']} "
             f"(p={record['predicted_probability']:.2f}); explaining {record['target_class']}")
    if agree is not None and agree.iou is None:
      title += f"\nGrad-CAM vs LIME top-{f:.0%} IoU undefined: {record['iou_note']}"
    elif agree is not None:
      title += f"\nGrad-CAM vs LIME top-{f:.0%} IoU = {agree.iou:.2f} (chance {agree.iou_chance:.2f})"
    gradcam_panels = None
    if cam is not None:
      region = agreement_lib.gradcam_region(cam.combined, f)
      gradcam_panels = []
      if len(cam.maps) > 1:
        gradcam_panels += [figures.Panel(f"Grad-CAM {b}\n{cam.layers[b]} ({m.shape[0]}x{m.shape[1]})",
                                         cam.upsampled[b]) for b, m in cam.maps.items()]
        gradcam_panels.append(figures.Panel(f"Grad-CAM combined\ntop {f:.0%} outlined", cam.combined,
                                            region))
      else:
        (b, m), = cam.maps.items()
        gradcam_panels.append(figures.Panel(f"Grad-CAM {b}/{cam.layers[b]} ({m.shape[0]}x{m.shape[1]})"
                                            f"\ntop {f:.0%} outlined", cam.combined, region))
    lime_panel = None
    if lime is not None:
      chosen = agreement_lib.lime_region(lime.segments, lime.positive_order(), f)[0]
      lime_panel = (f"LIME top positive superpixels (~{f:.0%})\n{lime.num_samples} samples, "
                    f"R\u00b2 {lime.score:.2f}", lime.segments, chosen)
    figures.save_explanation(png_path, image, title=title, gradcam=gradcam_panels, lime=lime_panel)


def _png_names(paths: Sequence[str]) -> list[str]:
  """`<stem>.png`, with `_2`, `_3`... when two inputs share a stem."""
  names, used = [], set()
  for path in paths:
    stem = os.path.splitext(os.path.basename(path))[0] or "image"
    name, i = f"{stem}.png", 1
    while name in used:
      i += 1
      name = f"{stem}_{i}.png"
    used.add(name)
    names.append(name)
  return names


def _mean(values: list[float | None]) -> float | None:
  defined = [v for v in values if v is not None]
  return float(np.mean(defined)) if defined else None


def explain_files(explainer: Explainer, paths: Sequence[str], out_dir: str,
                  extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
  """Explains every readable file, writes the PNGs, `explanations.json` and `.csv`; returns the summary.

  An image far from the training sizes (`data.geometry`) is explained, with the reason in its
  record's `geometry` field.
  """
  os.makedirs(out_dir, exist_ok=True)
  records, failed = [], []
  if explainer.geometry is None:
    flag_inputs(None, [], [])  # says once that these inputs cannot be checked
  for path, png in zip(paths, _png_names(paths)):
    try:
      raw = read_image(path)
    except ImageReadError as e:
      logging.error("%s", e)
      failed.append({"file": path, "error": str(e)})
      continue
    far = flag_inputs(explainer.geometry, [path], [raw.shape[:2]])[0] if explainer.geometry else ""
    record = explainer.explain(raw, os.path.join(out_dir, png), path) | {"geometry": far}
    logging.info("%s -> %s: %s p=%.3f%s (%.1f s)", path, png, record["predicted_class"],
                 record["predicted_probability"],
                 "" if "iou" not in record else f", IoU {record['iou']}", record["seconds"])
    records.append(record)
  options = dataclasses.asdict(explainer.options)
  options["layers"] = dict(options["layers"])
  summary = {
      **(extra or {}), "options": options, "class_names": list(explainer.class_names),
      "agreement": ("IoU of the Grad-CAM top-fraction pixels and the LIME positive superpixels of "
                    "comparable area; docs/explanations.md"),
      "mean_iou": _mean([r.get("iou") for r in records]),
      "mean_iou_chance": _mean([r.get("iou_chance") for r in records if r.get("iou") is not None]),
      "images_with_iou": sum(r.get("iou") is not None for r in records),
      "images": records, "failed": failed,
  }
  if explainer.lime is not None:
    summary["lime_compilations"] = explainer.classifier.compilations
  with open(os.path.join(out_dir, "explanations.json"), "w") as f:
    json.dump(summary, f, indent=2)
  with open(os.path.join(out_dir, "explanations.csv"), "w", newline="") as f:
    writer = csv.DictWriter(f, fieldnames=CSV_FIELDS, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(records)
  return summary


def explain_workdir(workdir: str, paths: Sequence[str], options: Options, *, out_dir: str | None = None,
                    checkpoint: str = "best") -> dict[str, Any]:
  """Restores `workdir`'s checkpoint and explains `paths` into `out_dir` (default `workdir/explanations`).

  Needs only the workdir (config, saved statistics, checkpoint), not the dataset.
  """
  from leukojax.evaluation import restore  # pylint: disable=g-import-not-at-top  (heavy: the train stack)

  run = restore.restore_run(workdir, checkpoint, with_data=False)
  model = run.model()
  out_dir = out_dir or os.path.join(workdir, "explanations")
  explainer = Explainer(model, run.config.data, run.pipeline.stats, run.pipeline.class_names, options)
  extra = {"workdir": os.path.abspath(workdir), "checkpoint": run.checkpoint, "step": run.step,
           "model": run.config.model.name, "image_size": run.config.data.image_size,
           "backend": jax.default_backend()}
  return explain_files(explainer, paths, out_dir, extra)
