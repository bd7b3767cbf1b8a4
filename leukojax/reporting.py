"""`evaluate_run`: one restored state -> report.json, report.md, plots and per-image predictions.

Shared by the end of training (`train.train_and_evaluate`) and `python -m leukojax.evaluate`, so a
finished run and a later evaluation of the same checkpoint write the same files. Every process
runs the model (the evaluation is sharded over all devices); process 0 writes.
"""

from __future__ import annotations

import csv
import dataclasses
import os
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import ml_collections
import numpy as np
from absl import logging

from leukojax import analysis, evaluation, plots, report, tta
from leukojax.writer import read_history

DEFAULT_SPLITS: tuple[str, ...] = ("val", "test", "train")
PLOTS_DIR = "plots"
PREDICTIONS_DIR = "predictions"


@dataclasses.dataclass(frozen=True)
class EvalOptions:
  """What to evaluate and how; the defaults are what training writes at its end."""

  splits: tuple[str, ...] = DEFAULT_SPLITS
  tta: bool = False
  analysis: analysis.AnalysisOptions = analysis.AnalysisOptions()


def options_from_config(config: ml_collections.ConfigDict, **overrides: Any) -> EvalOptions:
  """Options from `config.eval` (optional keys: tta, bootstrap_resamples, bootstrap_seed,
  confidence, threshold_criterion), then explicit `overrides` (None values ignored)."""
  ev = config.get("eval", ml_collections.ConfigDict())
  values = {"tta": bool(ev.get("tta", False)),
            "n_resamples": int(ev.get("bootstrap_resamples", analysis.AnalysisOptions.n_resamples)),
            "seed": int(ev.get("bootstrap_seed", 0)),
            "confidence": float(ev.get("confidence", 0.95)),
            "threshold_criterion": str(ev.get("threshold_criterion", "youden")),
            "splits": DEFAULT_SPLITS}
  values.update({k: v for k, v in overrides.items() if v is not None})
  return EvalOptions(splits=tuple(values["splits"]), tta=values["tta"], analysis=analysis.AnalysisOptions(
      n_resamples=values["n_resamples"], confidence=values["confidence"], seed=values["seed"],
      threshold_criterion=values["threshold_criterion"]))


def parse_checkpoint(value: str) -> str | int:
  """'best', 'latest' or a step number, as `trained.restore_run` takes them."""
  if value in ("best", "latest"):
    return value
  if value.isdigit():
    return int(value)
  raise ValueError(f"checkpoint {value!r}: use 'best', 'latest' or a step number.")


def splits_to_run(requested: Sequence[str], available: Sequence[str]) -> list[str]:
  """'val' first (the threshold is chosen on it), then the requested splits, each once."""
  unknown = [s for s in requested if s not in available]
  if unknown:
    raise ValueError(f"Unknown split(s) {unknown}; this run has {sorted(available)}.")
  return ["val"] + [s for s in dict.fromkeys(requested) if s != "val"]


def evaluate_run(*, config: ml_collections.ConfigDict, pipeline: Any, mesh: jax.sharding.Mesh, graphs: Any,
                 state: Any, eval_fn: Any, class_weights: np.ndarray, step: int, checkpoint: str,
                 workdir: str, out_dir: str | None = None, options: EvalOptions | None = None) -> dict[str, Any]:
  """Evaluates `state` on the splits of `options` and writes the full report into `out_dir`."""
  options = options or options_from_config(config)
  out_dir = out_dir or workdir
  fn = tta.make_tta_eval_fn(graphs, class_weights) if options.tta else eval_fn
  results = {}
  for name in splits_to_run(options.splits, list(pipeline.eval_splits)):
    if not len(pipeline.eval_splits[name]):  # e.g. no test split: a run trained on every subject
      logging.info("The %s split is empty; nothing to evaluate there.", name)
      continue
    logging.info("Evaluating step %d on the %s split%s.", step, name, " with TTA" if options.tta else "")
    results[name] = evaluation.evaluate_split(fn, state, pipeline.eval_splits[name], mesh,
                                              config.eval.batch_size, pipeline.class_names)
  chosen, per_split = analysis.analyse(results, class_names=pipeline.class_names, options=options.analysis)
  first = next(iter(per_split.values()))
  boot = dataclasses.asdict(options.analysis) | {"unit": first.get("ci_unit", "image"),
                                                 "method": "percentile, clusters resampled within each class"}
  boot.pop("threshold_criterion")
  final = report.build_report(per_split, step=step, checkpoint=checkpoint, protocol=pipeline.protocol,
                              class_names=pipeline.class_names, config=config,
                              threshold=chosen.to_json() if chosen else None, bootstrap=boot, tta=options.tta)
  if jax.process_index() == 0:
    final["plots"] = write_plots(results, final, workdir=workdir, out_dir=out_dir)
    final["predictions"] = write_predictions(results, pipeline.class_names, out_dir)
    paths = report.write_report(final, out_dir)
    print(report.format_table(final))
    logging.info("Wrote %s, %s and %d plots.", paths["json"], paths["md"], len(final["plots"]))
  return final


def _confusion(metrics: Mapping[str, Any]) -> list[list[int]]:
  if "confusion_matrix" in metrics:
    return metrics["confusion_matrix"]
  return [[metrics["TN"], metrics["FP"]], [metrics["FN"], metrics["TP"]]]


def write_plots(results: Mapping[str, evaluation.SplitResult], final: Mapping[str, Any], *,
                workdir: str, out_dir: str) -> dict[str, str]:
  """The papers' figures; returns {name: path relative to `out_dir`}."""
  note = final["protocol_note"]
  names = final["class_names"]
  where = lambda name: os.path.join(out_dir, PLOTS_DIR, name)
  written = {}
  curves = plots.learning_curves(read_history(workdir), where("learning_curves.png"), note=note,
                                 best_step=final["checkpoint_step"])
  if curves:
    written["learning curves"] = curves
  for split, metrics in final["splits"].items():
    if "n" in metrics:
      written[f"confusion matrix ({split}, {'threshold 0.5' if 'TP' in metrics else 'arg-max'})"] = (
          plots.confusion_matrix(_confusion(metrics), names, where(f"confusion_{split}.png"), note=note,
                                 title=f"Confusion matrix, {split} split (n={metrics['n']})"))
  labelled = {}
  for split in ("val", "test"):
    if split in results:
      keep = results[split].labels >= 0
      labelled[split] = (results[split].labels[keep], results[split].probs[keep])
  if labelled:
    written["ROC"] = plots.roc(labelled, names, where("roc.png"), note=note)
    written["precision-recall"] = plots.precision_recall(labelled, names, where("precision_recall.png"), note=note)
  return {name: os.path.relpath(path, out_dir) for name, path in written.items()}


def _text(value: Any) -> str:
  return value.decode() if isinstance(value, bytes) else str(value)


def write_predictions(results: Mapping[str, evaluation.SplitResult], class_names: Sequence[str],
                      out_dir: str) -> dict[str, str]:
  """One CSV per split (file, subject, true label, probabilities), for re-analysis elsewhere."""
  written = {}
  for split, result in results.items():
    path = os.path.join(out_dir, PREDICTIONS_DIR, f"{split}.csv")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    probs = np.asarray(result.probs)
    binary = analysis.is_binary(probs)
    prob_columns = [f"p_{class_names[-1]}"] if binary else [f"p_{c}" for c in class_names]
    with open(path, "w", newline="") as f:
      writer = csv.writer(f)
      writer.writerow(["file_name", "subject_id", "label", *prob_columns])
      meta = result.metadata
      for i in range(len(result.labels)):
        p = [probs.reshape(-1)[i]] if binary else probs[i]
        writer.writerow([_text(meta["file_name"][i]), _text(meta["subject_id"][i]), int(result.labels[i]),
                         *(f"{float(x):.6f}" for x in p)])
    written[split] = os.path.relpath(path, out_dir)
  return written
