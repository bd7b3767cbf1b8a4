"""`evaluate_run`: one restored state -> report.json, report.md, report.html, plots and per-image predictions.

Shared by the end of training (`training_run.train_and_evaluate`) and `python -m leukojax.evaluate`, so a
finished run and a later evaluation of the same checkpoint write the same files. Every process
runs the model (the evaluation is sharded over all devices); process 0 writes.
"""

from __future__ import annotations

import csv
import dataclasses
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import ml_collections
import numpy as np
from absl import logging

from leukojax.evaluation import analysis, gallery, html_report, inference, plots, report, restore, tta
from leukojax.models import outputs
from leukojax.training.metric_writer import read_history

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
  # `.get` with the base config's defaults: configs saved before these keys existed still load.
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


def default_out_dir(workdir: str, checkpoint: str | int, options: EvalOptions) -> str:
  """The workdir for the training defaults, else a named sub-folder of W/evaluations/, so the
  training report is never silently replaced by a different evaluation."""
  same_splits = set(options.splits) == set(DEFAULT_SPLITS)
  if checkpoint == "best" and not options.tta and same_splits:
    return workdir
  name = str(checkpoint) + ("_tta" if options.tta else "") + ("" if same_splits else "_" + "-".join(options.splits))
  return os.path.join(workdir, "evaluations", name)


def evaluate_workdir(workdir: str, checkpoint: str | int = "best", *, overrides: Mapping[str, Any] | None = None,
                     out_dir: str | None = None, explainer_for: Callable[..., gallery.Explain] | None = None,
                     explain_limit: int = 0, **options: Any) -> dict[str, Any]:
  """`leukojax.evaluate`: restores `checkpoint` of `workdir` and writes its report (`options`:
  the keyword overrides of `options_from_config`; `explainer_for(run, out_dir)`: the gallery's
  explanations, supplied by the explanation role)."""
  run = restore.restore_run(workdir, checkpoint, overrides)
  eval_options = options_from_config(run.config, **options)
  out_dir = out_dir or default_out_dir(workdir, checkpoint, eval_options)
  logging.info("Evaluating %s (step %d, %s) into %s.", workdir, run.step, run.checkpoint, out_dir)
  explain = explainer_for(run, out_dir) if explainer_for is not None and explain_limit > 0 else None
  return evaluate_run(run, out_dir=out_dir, options=eval_options, explain=explain, explain_limit=explain_limit)


def splits_to_run(requested: Sequence[str], available: Sequence[str]) -> list[str]:
  """'val' first (the threshold is chosen on it), then the requested splits, each once."""
  unknown = [s for s in requested if s not in available]
  if unknown:
    raise ValueError(f"Unknown split(s) {unknown}; this run has {sorted(available)}.")
  return ["val"] + [s for s in dict.fromkeys(requested) if s != "val"]


def evaluate_run(run: restore.TrainedRun, *, out_dir: str | None = None, options: EvalOptions | None = None,
                 explain: gallery.Explain | None = None, explain_limit: int = 0) -> dict[str, Any]:
  """Evaluates `run` on the splits of `options` and writes the full report into `out_dir`
  (`explain`: explains the first `explain_limit` gallery cases of each split in report.html)."""
  config, pipeline, step = run.config, run.pipeline, run.step
  options = options or options_from_config(config)
  out_dir = out_dir or run.workdir
  fn = tta.make_tta_eval_fn(run.graphs) if options.tta else run.eval_fn
  results = {}
  for name in splits_to_run(options.splits, list(pipeline.eval_splits)):
    if not len(pipeline.eval_splits[name]):  # e.g. no test split: a run trained on every subject
      logging.info("The %s split is empty; nothing to evaluate there.", name)
      continue
    logging.info("Evaluating step %d on the %s split%s.", step, name, " with TTA" if options.tta else "")
    results[name] = inference.evaluate_split(fn, run.variables, pipeline.eval_splits[name], run.mesh,
                                             config.eval.batch_size, pipeline.class_names)
  chosen, per_split = analysis.analyse(results, class_names=pipeline.class_names, options=options.analysis)
  first = next(iter(per_split.values()))
  boot = dataclasses.asdict(options.analysis) | {"unit": first.get("ci_unit", "image"),
                                                 "method": "percentile, clusters resampled within each class"}
  boot.pop("threshold_criterion")
  final = report.build_report(per_split, step=step, checkpoint=run.checkpoint, protocol=pipeline.protocol,
                              class_names=pipeline.class_names, config=config,
                              threshold=chosen.to_json() if chosen else None, bootstrap=boot, tta=options.tta,
                              data_build=pipeline.summary.get("build"))
  if jax.process_index() == 0:
    final["plots"] = write_plots(results, final, workdir=run.workdir, out_dir=out_dir)
    final["predictions"] = write_predictions(results, pipeline.class_names, out_dir)
    final["html"] = html_report.HTML_NAME
    paths = report.write_report(final, out_dir)
    page = html_report.write(final, out_dir, results=results, eval_splits=pipeline.eval_splits, explain=explain,
                             explain_limit=explain_limit)
    print(report.format_table(final))
    logging.info("Wrote %s, %s, %s and %d plots.", paths["json"], paths["md"], page, len(final["plots"]))
  return final


def _confusion(metrics: Mapping[str, Any]) -> list[list[int]]:
  if "confusion_matrix" in metrics:
    return metrics["confusion_matrix"]
  return [[metrics["TN"], metrics["FP"]], [metrics["FN"], metrics["TP"]]]


def write_plots(results: Mapping[str, inference.SplitResult], final: Mapping[str, Any], *,
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


def write_predictions(results: Mapping[str, inference.SplitResult], class_names: Sequence[str],
                      out_dir: str) -> dict[str, str]:
  """One CSV per split (file, subject, true label, probabilities), for re-analysis elsewhere."""
  written = {}
  for split, result in results.items():
    path = os.path.join(out_dir, PREDICTIONS_DIR, f"{split}.csv")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    probs = np.asarray(result.probs)
    binary = outputs.is_binary(probs)
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
