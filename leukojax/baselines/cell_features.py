"""Logistic regression on hand-made size, shape and colour features of the segmented cell.

The baseline a reviewer asks for first: if a CNN does not beat a linear model of the cell's area,
circularity and stain colours under the same subject protocol, it has not learnt the cell. Uses
the deep runs' own data pipeline, so the split (subjects, dedup, the per-subject cap) is the same
one, and writes the same `report.json`, `predictions/` and `config.json` as a trained workdir (so
`leukojax.compare` and `leukojax.cv` read it like any run).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any

import ml_collections
import numpy as np
from absl import logging
from sklearn import linear_model, pipeline, preprocessing

from leukojax.evaluation import analysis, report
from leukojax.data import build_pipeline
from leukojax.data.cells import cell_features
from leukojax.data.transforms import to_rgb_uint8

MODEL_NAME = "cell_features_logreg"


class FeatureSplit:
  """One split's features, labels and metadata (the `analysis.Predictions` protocol once scored)."""

  def __init__(self, features: np.ndarray, keys: list[str], labels: np.ndarray,
               metadata: Mapping[str, np.ndarray]):
    self.features, self.keys, self.labels, self.metadata = features, keys, labels, metadata
    self.probs = np.zeros(len(labels))
    self.loss = float("nan")


def split_features(split: Any) -> FeatureSplit:
  """Features of every cell of an `EvalSplit`, read from the raw record (not the resized input)."""
  rows = []
  for name, index in zip(split.source_split, split.source_index):
    image = to_rgb_uint8(split.sources[str(name)][int(index)]["image"])
    rows.append(cell_features(image))
  keys = sorted(rows[0]) if rows else []
  features = np.array([[r[k] for k in keys] for r in rows], np.float64).reshape(len(rows), len(keys))
  return FeatureSplit(np.nan_to_num(features), keys, np.asarray(split.metadata["label"]), split.metadata)


def make_model(seed: int) -> pipeline.Pipeline:
  """Standardised features, L2 logistic regression with balanced class weights."""
  return pipeline.make_pipeline(
      preprocessing.StandardScaler(),
      linear_model.LogisticRegression(C=1.0, class_weight="balanced", max_iter=5000, random_state=seed))


def run(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Fits on the config's training split, scores every split, writes the report into `workdir`."""
  data = build_pipeline(config.data, global_batch_size=config.train.global_batch_size,
                        eval_batch_size=config.eval.batch_size, workdir=None, seed=config.seed)
  if data.num_classes != 2:
    raise ValueError("The cell-feature baseline is binary (C-NMC ALL vs HEM).")
  splits = {name: split_features(s) for name, s in data.eval_splits.items() if len(s)}
  model = make_model(config.seed).fit(splits["train"].features, splits["train"].labels)
  for s in splits.values():
    s.probs = model.predict_proba(s.features)[:, 1]
  options = analysis.AnalysisOptions(seed=config.seed)
  chosen, analysed = analysis.analyse(splits, class_names=data.class_names, options=options)
  baseline_config = ml_collections.ConfigDict(config.to_dict())
  baseline_config.model.name = MODEL_NAME
  final = report.build_report(
      analysed, step=0, checkpoint="latest", protocol=data.protocol, class_names=data.class_names,
      config=baseline_config, threshold=chosen.to_json() if chosen else None,
      bootstrap={"unit": "subject" if data.summary.get("has_subjects") else "image",
                 "n_resamples": options.n_resamples, "confidence": options.confidence, "seed": options.seed},
      tta=False, data_build=data.summary.get("build"))
  final["selected_by"] = "nothing: a logistic regression fit once on the training split"
  weights = zip(splits["train"].keys, map(float, model[-1].coef_[0]))  # per standardised feature
  final["coefficients"] = dict(sorted(weights, key=lambda kv: -abs(kv[1])))
  os.makedirs(workdir, exist_ok=True)
  with open(os.path.join(workdir, "config.json"), "w") as f:
    json.dump(baseline_config.to_dict(), f, indent=2, default=str)
  from leukojax.evaluation.run_evaluation import write_predictions  # pylint: disable=g-import-not-at-top  (imports JAX)
  final["predictions"] = write_predictions(splits, data.class_names, workdir)
  report.write_report(final, workdir)
  logging.info("Cell-feature baseline: %s", {k: v.get("isbi_weighted_f1") for k, v in analysed.items()})
  return final
