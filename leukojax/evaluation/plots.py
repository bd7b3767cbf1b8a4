"""The figures of the two papers, as PNG files: learning curves, confusion matrices, ROC, PR.

Drawn with matplotlib's object API on the Agg canvas (no pyplot, no display, no global state), so
they can be written from a training job on a headless machine. Every figure carries the split
protocol in its title: an image-level result must never be mistaken for a subject-disjoint one.
"""

from __future__ import annotations

import os
import textwrap
from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from sklearn import metrics as skm

from leukojax.models import outputs

_SPLIT_COLOURS = {"train": "tab:blue", "val": "tab:orange", "test": "tab:green"}


def _figure(ncols: int, note: str, title: str, width: float = 5.0, height: float = 4.4):
  fig = Figure(figsize=(width * ncols, height), layout="constrained")
  FigureCanvasAgg(fig)
  axes = fig.subplots(1, ncols, squeeze=False)[0]
  fig.suptitle(title + "\n" + "\n".join(textwrap.wrap(note, 60 * ncols + 20)), fontsize=9)
  return fig, axes


def _save(fig: Figure, path: str) -> str:
  os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
  fig.savefig(path, dpi=110)
  return path


def learning_curves(history: Sequence[Mapping[str, float]], path: str, *, note: str,
                    best_step: int | None = None) -> str | None:
  """Train and validation loss and accuracy per epoch (from `history.jsonl`); None without history."""
  if not history:
    return None
  epochs = [h["epoch"] for h in history]
  fig, axes = _figure(2, note, "Learning curves")
  for ax, metric in zip(axes, ("loss", "accuracy")):
    for split, style in (("train", "o-"), ("val", "s-")):
      values = [h.get(f"{split}/{metric}", np.nan) for h in history]
      ax.plot(epochs, values, style, color=_SPLIT_COLOURS[split], label=f"{split} {metric}", markersize=3)
    best = [h["epoch"] for h in history if h.get("step") == best_step]
    if best:
      ax.axvline(best[0], color="grey", linestyle=":", label="reported checkpoint")
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel(metric)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
  return _save(fig, path)


def confusion_matrix(matrix: Sequence[Sequence[int]], class_names: Sequence[str], path: str, *,
                     note: str, title: str) -> str:
  """Counts, with each row's share of its true class, rows = true class, columns = predicted."""
  matrix = np.asarray(matrix)
  k = len(class_names)
  fig, (ax,) = _figure(1, note, title, width=max(4.6, 1.1 * k + 2.4), height=max(4.2, 1.1 * k + 2.0))
  shares = matrix / np.maximum(matrix.sum(1, keepdims=True), 1)
  image = ax.imshow(shares, cmap="Blues", vmin=0, vmax=1)
  for i in range(k):
    for j in range(k):
      ax.text(j, i, f"{matrix[i, j]}\n{shares[i, j]:.1%}", ha="center", va="center", fontsize=9,
              color="white" if shares[i, j] > 0.5 else "black")
  ax.set_xticks(range(k), class_names, rotation=30 if k > 2 else 0)
  ax.set_yticks(range(k), class_names)
  ax.set_xlabel("predicted")
  ax.set_ylabel("true")
  fig.colorbar(image, ax=ax, fraction=0.046, label="share of the true class")
  return _save(fig, path)


def _binary_curves(curves: Mapping[str, tuple[np.ndarray, np.ndarray]], kind: str):
  for split, (labels, probs) in curves.items():
    if len(np.unique(labels)) < 2:
      continue
    if kind == "roc":
      x, y, _ = skm.roc_curve(labels, probs)
      yield split, x, y, f"AUC {skm.roc_auc_score(labels, probs):.3f}"
    else:
      y, x, _ = skm.precision_recall_curve(labels, probs)
      yield split, x, y, f"AP {skm.average_precision_score(labels, probs):.3f}"


def _one_vs_rest(labels: np.ndarray, probs: np.ndarray, class_names: Sequence[str]):
  return {name: ((labels == c).astype(int), probs[:, c]) for c, name in enumerate(class_names)}


def _curve_plot(curves, class_names, path, *, note, kind, positive) -> str:
  """ROC or precision-recall: one curve per split (binary) or per class on the last split (OvR)."""
  first = next(iter(curves.values()))
  multiclass = not outputs.is_binary(first[1])
  if multiclass:
    split = "test" if "test" in curves else list(curves)[-1]
    series = _one_vs_rest(*curves[split], class_names)
    heading = f"one-vs-rest, {split} split"
  else:
    series = {s: (np.asarray(y), np.asarray(p).reshape(-1)) for s, (y, p) in curves.items()}
    heading = f"positive class: {positive}"
  name = "ROC" if kind == "roc" else "Precision-recall"
  fig, (ax,) = _figure(1, note, f"{name} ({heading})", width=5.4)
  for label, x, y, score in _binary_curves(series, kind):
    ax.plot(x, y, color=_SPLIT_COLOURS.get(label), label=f"{label} ({score})", drawstyle=(
        "default" if kind == "roc" else "steps-post"))
  if kind == "roc":
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1)
    ax.set_xlabel("1 - specificity (false positive rate)")
    ax.set_ylabel("sensitivity (true positive rate)")
  else:
    ax.set_xlabel("recall (sensitivity)")
    ax.set_ylabel("precision (PPV)")
  ax.set_xlim(0, 1)
  ax.set_ylim(0, 1.02)
  ax.grid(alpha=0.3)
  ax.legend(fontsize=8, loc="lower right" if kind == "roc" else "lower left")
  return _save(fig, path)


def roc(curves: Mapping[str, tuple[np.ndarray, np.ndarray]], class_names: Sequence[str], path: str, *,
        note: str) -> str:
  """`curves`: split -> (labels, probs); probs [N] (binary) or [N, K]."""
  return _curve_plot(curves, class_names, path, note=note, kind="roc", positive=class_names[-1])


def precision_recall(curves: Mapping[str, tuple[np.ndarray, np.ndarray]], class_names: Sequence[str],
                     path: str, *, note: str) -> str:
  return _curve_plot(curves, class_names, path, note=note, kind="pr", positive=class_names[-1])
