"""Which cells a model gets wrong: the error gallery of `report.html`.

Per split and per true class, the most confident mistakes (the highest probability given to a
wrong class) and the least confident correct calls (the lowest probability of the true class), at
the report's primary decision rule (0.5 for one sigmoid unit, arg-max otherwise). Thumbnails are
the stored images themselves, not the model's resized input, so a reader sees what a pathologist
would. Explanations (Grad-CAM, LIME) of the first cases are supplied by the caller (`Explain`): the
explanation role builds on evaluation, never the reverse.
"""

from __future__ import annotations

import base64
import dataclasses
import io
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
from PIL import Image

from leukojax.data.catalog import RowSource
from leukojax.models import outputs

DEFAULT_PER_CLASS = 4
THUMBNAIL_PX = 128


@dataclasses.dataclass(frozen=True)
class Case:
  """One image of a split as the gallery shows it."""
  split: str
  row: int  # position in the split's metadata and predictions
  kind: str  # "mistake" or "unsure"
  file_name: str
  subject_id: str
  true_class: str
  predicted_class: str
  p_true: float  # the probability the model gave the true class
  p_predicted: float


# (cases to explain, {(split, row): stored image}) -> {(split, row): {"png": path, "iou": ..., ...}}
Explain = Callable[[Sequence["Case"], Mapping[tuple[str, int], np.ndarray]], Mapping[tuple[str, int], dict]]


def as_text(value: Any) -> str:
  """A metadata string (TFDS gives bytes) as text."""
  return value.decode() if isinstance(value, bytes) else str(value)


def class_probabilities(probs: np.ndarray) -> np.ndarray:
  """`[N, K]` per-class probabilities of a split's predictions (two columns for one sigmoid unit)."""
  return np.asarray(outputs.class_probabilities(np.asarray(probs, np.float64), xp=np))


def select_cases(split: str, probs: np.ndarray, labels: np.ndarray, metadata: dict[str, np.ndarray],
                 class_names: Sequence[str], per_class: int = DEFAULT_PER_CLASS) -> list[Case]:
  """Per true class: the `per_class` most confident mistakes, then the least confident correct calls."""
  class_probs = class_probabilities(probs)
  predicted = np.asarray(outputs.decide(np.asarray(probs, np.float64), xp=np))
  labels = np.asarray(labels)
  rows = np.arange(len(labels))
  p_true = class_probs[rows, labels]
  cases = []
  for label in range(len(class_names)):
    wrong = rows[(labels == label) & (predicted != label)]
    right = rows[(labels == label) & (predicted == label)]
    chosen = [(int(r), "mistake") for r in wrong[np.argsort(p_true[wrong], kind="stable")][:per_class]]
    chosen += [(int(r), "unsure") for r in right[np.argsort(p_true[right], kind="stable")][:per_class]]
    for row, kind in chosen:
      cases.append(Case(split=split, row=row, kind=kind, file_name=as_text(metadata["file_name"][row]),
                        subject_id=as_text(metadata["subject_id"][row]) if "subject_id" in metadata else "",
                        true_class=class_names[label], predicted_class=class_names[predicted[row]],
                        p_true=float(p_true[row]), p_predicted=float(class_probs[row, predicted[row]])))
  return cases


def png_data_uri(image: np.ndarray | Image.Image, max_px: int | None = THUMBNAIL_PX) -> str:
  """An image as a `data:image/png;base64,...` URI (`max_px`: its longest side), for a page that
  needs no other file."""
  picture = image if isinstance(image, Image.Image) else Image.fromarray(np.asarray(image, np.uint8))
  picture = picture.convert("RGB")
  if max_px:
    picture.thumbnail((max_px, max_px))
  buffer = io.BytesIO()
  picture.save(buffer, format="PNG", optimize=True)
  return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def read_images(cases: Sequence[Case], eval_split: Any) -> dict[int, np.ndarray]:
  """{row: stored uint8 image} of `cases`, read through the split's own sources."""
  rows = sorted({case.row for case in cases})
  source = RowSource(eval_split.sources, eval_split.source_split[rows], eval_split.source_index[rows],
                     eval_split.metadata["label"][rows])
  return {row: np.asarray(source[i]["image"]) for i, row in enumerate(rows)}


def to_explain(cases: Sequence[Case], limit: int) -> list[Case]:
  """The first `limit` cases of each split to explain: mistakes (most confident first), then unsure calls."""
  chosen = []
  for split in dict.fromkeys(case.split for case in cases):
    ordered = sorted((c for c in cases if c.split == split), key=lambda c: (c.kind != "mistake", c.p_true))
    chosen += ordered[:limit]
  return chosen
