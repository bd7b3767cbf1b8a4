"""95% confidence intervals by bootstrap, over subjects where subject ids exist, else over images.

Images of one subject are not independent (same smear, same stain, same disease), so resampling
images would understate the uncertainty of a subject-disjoint result: the unit of resampling is
the subject (a cluster bootstrap). Clusters are drawn with replacement *within each class* (a
cluster's class is its majority label; in C-NMC every subject has one class), so every resample
holds both classes, as the test set does, and sensitivity or specificity are always defined.
The interval is the percentile interval of the resampled statistic.

Every metric is computed from per-image weights (how often its cluster was drawn), vectorised over
resamples: the confusion counts are one matrix product and the AUC a weighted Mann-Whitney
statistic on the sorted scores. With unit weights each statistic equals scikit-learn's value of
`leukojax.metrics` (tested), so the interval is around the same quantity the table reports.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence

import numpy as np

from leukojax.models import outputs

DEFAULT_RESAMPLES = 1000
# Resamples per vectorised chunk: bounds memory at chunk * images * 4 bytes.
_CHUNK = 100


@dataclasses.dataclass(frozen=True)
class Clusters:
  """Which cluster (resampling unit) each image belongs to, and each cluster's stratum."""

  index: np.ndarray  # int [N]: cluster of each image
  strata: np.ndarray  # int [G]: stratum (class) of each cluster
  unit: str  # 'subject' or 'image'

  @property
  def count(self) -> int:
    return len(self.strata)


def make_clusters(labels: np.ndarray, groups: np.ndarray | None = None) -> Clusters:
  """Clusters from subject ids (`groups`, bytes or str; any empty id means "no subjects": images)."""
  labels = np.asarray(labels).astype(int)
  if groups is None or len(groups) == 0 or any(len(g) == 0 for g in groups):
    return Clusters(index=np.arange(len(labels)), strata=labels.copy(), unit="image")
  keys, index = np.unique(np.asarray(groups, dtype=object).astype(str), return_inverse=True)
  strata = np.empty(len(keys), int)
  for g in range(len(keys)):
    strata[g] = np.bincount(labels[index == g]).argmax()  # majority label (ties: the lower class)
  return Clusters(index=index.reshape(-1), strata=strata, unit="subject")


def resample_weights(clusters: Clusters, n_resamples: int, seed: int,
                     chunk: int = _CHUNK) -> Iterator[np.ndarray]:
  """Yields float32 [r, N] image weights (times drawn), `n_resamples` rows in all, deterministic."""
  rng = np.random.default_rng(seed)
  by_stratum = [np.flatnonzero(clusters.strata == s) for s in np.unique(clusters.strata)]
  done = 0
  while done < n_resamples:
    r = min(chunk, n_resamples - done)
    counts = np.zeros((r, clusters.count), np.float32)
    rows = np.arange(r)[:, None]
    for members in by_stratum:
      draws = members[rng.integers(0, len(members), size=(r, len(members)))]
      np.add.at(counts, (np.broadcast_to(rows, draws.shape), draws), 1.0)
    yield counts[:, clusters.index]
    done += r


def _div(num: np.ndarray, den: np.ndarray) -> np.ndarray:
  with np.errstate(divide="ignore", invalid="ignore"):
    return np.where(den > 0, num / np.where(den > 0, den, 1), np.nan)


def _f1(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray) -> np.ndarray:
  den = 2 * tp + fp + fn
  return np.where(den > 0, _div(2 * tp, den), 0.0)  # sklearn's zero_division=0


def weighted_auc(scores: np.ndarray, positive: np.ndarray, weights: np.ndarray) -> np.ndarray:
  """ROC AUC per row of `weights` [R, N]: P(score_pos > score_neg) + P(tie) / 2, weighted."""
  order = np.argsort(scores, kind="stable")
  sorted_scores = scores[order]
  starts = np.flatnonzero(np.r_[True, sorted_scores[1:] != sorted_scores[:-1]])  # tie groups
  w = weights[:, order].astype(np.float64)
  pos = positive[order].astype(np.float64)
  p = np.add.reduceat(w * pos, starts, axis=1)  # positive weight per distinct score
  q = np.add.reduceat(w * (1.0 - pos), starts, axis=1)
  below = np.cumsum(q, axis=1) - q  # negative weight strictly below each score
  return _div(np.sum(p * (below + 0.5 * q), axis=1), p.sum(1) * q.sum(1))


def binary_statistics(labels: np.ndarray, probs: np.ndarray, threshold: float,
                      weights: np.ndarray) -> dict[str, np.ndarray]:
  """The rates of `metrics.binary_metrics` for each row of image `weights` [R, N]."""
  labels = np.asarray(labels).astype(int)
  probs = np.asarray(probs, np.float64).reshape(-1)
  pos, pred = labels == 1, outputs.decide(probs, threshold, xp=np).astype(bool)
  w = weights.astype(np.float64)
  tp, fn = w @ (pos & pred), w @ (pos & ~pred)
  fp, tn = w @ (~pos & pred), w @ (~pos & ~pred)
  n = tp + tn + fp + fn
  sens, spec = _div(tp, tp + fn), _div(tn, tn + fp)
  f1_pos, f1_neg = _f1(tp, fp, fn), _f1(tn, fn, fp)
  return {
      "accuracy": _div(tp + tn, n),
      "prevalence": _div(tp + fn, n),
      "sensitivity": sens,
      "specificity": spec,
      "PPV": _div(tp, tp + fp),
      "NPV": _div(tn, tn + fn),
      "AUC": weighted_auc(probs, pos, w),
      "F1": f1_pos,
      "isbi_weighted_f1": _div(f1_pos * (tp + fn) + f1_neg * (tn + fp), n),
      "macro_f1": (f1_pos + f1_neg) / 2,
      "balanced_accuracy": (sens + spec) / 2,
  }


def multiclass_statistics(labels: np.ndarray, probs: np.ndarray, class_names: Sequence[str],
                          weights: np.ndarray) -> dict[str, np.ndarray]:
  """The metrics of `metrics.multiclass_metrics` (per-class precision/recall too), per resample."""
  labels = np.asarray(labels).astype(int)
  probs = np.asarray(probs, np.float64)
  k = len(class_names)
  preds = outputs.decide(probs, xp=np)
  w = weights.astype(np.float64)
  cells = np.eye(k * k)[labels * k + preds]  # [N, K*K] one-hot confusion cell of each image
  cm = (w @ cells).reshape(-1, k, k)  # [R, true, predicted]
  diag = np.diagonal(cm, axis1=1, axis2=2)
  support, predicted = cm.sum(2), cm.sum(1)
  total = support.sum(1)
  recall, precision = _div(diag, support), np.where(predicted > 0, _div(diag, predicted), 0.0)
  f1 = _f1(diag, predicted - diag, support - diag)
  present = (support + predicted) > 0  # sklearn averages over labels seen in y_true or y_pred
  out = {
      "accuracy": _div(diag.sum(1), total),
      "balanced_accuracy": _div(np.sum(np.where(support > 0, recall, 0.0), 1), np.sum(support > 0, 1)),
      "macro_f1": _div(np.sum(f1 * present, 1), present.sum(1)),
      "weighted_f1": _div(np.sum(f1 * support, 1), total),
      "AUC": np.mean([weighted_auc(probs[:, c], labels == c, w) for c in range(k)], axis=0),
  }
  for c, name in enumerate(class_names):
    out[f"{name}/precision"] = precision[:, c]
    out[f"{name}/recall"] = recall[:, c]
  return out


def statistics(labels: np.ndarray, probs: np.ndarray, weights: np.ndarray, *, threshold: float,
               class_names: Sequence[str]) -> dict[str, np.ndarray]:
  """Binary statistics for one probability per image ([N] or [N, 1]), multi-class otherwise."""
  probs = np.asarray(probs)
  if outputs.is_binary(probs):
    return binary_statistics(labels, probs.reshape(-1), threshold, weights)
  return multiclass_statistics(labels, probs, class_names, weights)


def bootstrap_cis(labels: np.ndarray, probs: np.ndarray, *, groups: np.ndarray | None = None,
                  threshold: float = 0.5, class_names: Sequence[str] = ("negative", "positive"),
                  n_resamples: int = DEFAULT_RESAMPLES, seed: int = 0,
                  confidence: float = 0.95) -> dict[str, object]:
  """Percentile intervals of every rate, resampling subjects (`groups`) or images.

  Returns `{"unit", "n_units", "n_resamples", "confidence", "ci": {metric: [low, high]}}`; a
  metric undefined in some resamples uses the others (NaN if undefined in all).
  """
  if n_resamples < 1:
    raise ValueError(f"n_resamples must be >= 1; got {n_resamples}.")
  if not 0 < confidence < 1:
    raise ValueError(f"confidence must be in (0, 1); got {confidence}.")
  labels = np.asarray(labels).astype(int)
  clusters = make_clusters(labels, groups)
  chunks: dict[str, list[np.ndarray]] = {}
  for weights in resample_weights(clusters, n_resamples, seed):
    for name, values in statistics(labels, probs, weights, threshold=threshold,
                                   class_names=class_names).items():
      chunks.setdefault(name, []).append(values)
  tail = 100 * (1 - confidence) / 2
  ci = {}
  for name, parts in chunks.items():
    values = np.concatenate(parts)
    finite = values[np.isfinite(values)]
    ci[name] = ([float(np.percentile(finite, tail)), float(np.percentile(finite, 100 - tail))]
                if len(finite) else [float("nan"), float("nan")])
  return {"unit": clusters.unit, "n_units": clusters.count, "n_resamples": n_resamples,
          "confidence": confidence, "seed": seed, "ci": ci}
