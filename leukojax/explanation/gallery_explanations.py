"""Grad-CAM and LIME for the error gallery of report.html (`leukojax.evaluate --explain N`).

Evaluation selects the cases and reads their images; this module, one role above it, explains
them with the run's own model and preprocessing and hands back each case's figure and agreement.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import tqdm

from leukojax.evaluation import gallery
from leukojax.explanation.explainer import Explainer, Options

FOLDER = os.path.join("explanations", "gallery")


def explainer_for(options: Options) -> Callable[[Any, str], gallery.Explain]:
  """`build(run, out_dir)` -> the `gallery.Explain` of a restored run, writing its PNGs under out_dir."""

  def build(run: Any, out_dir: str) -> gallery.Explain:
    explainer = Explainer(run.model(), run.config.data, run.pipeline.stats, run.pipeline.class_names, options)
    folder = os.path.join(out_dir, FOLDER)

    def explain(cases: Sequence[gallery.Case],
                images: Mapping[tuple[str, int], np.ndarray]) -> dict[tuple[str, int], dict[str, Any]]:
      os.makedirs(folder, exist_ok=True)
      out = {}
      for case in tqdm.tqdm(cases, desc="explaining the gallery", unit="image", dynamic_ncols=True):
        stem = os.path.splitext(os.path.basename(case.file_name))[0]
        png = os.path.join(folder, f"{case.split}_{case.row}_{stem}.png")
        record = explainer.explain(images[(case.split, case.row)], png, case.file_name)
        out[(case.split, case.row)] = {**record, "png": png}
      return out

    return explain

  return build
