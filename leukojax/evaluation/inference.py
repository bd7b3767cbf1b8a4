"""Running a model over an eval split on every device and gathering the predictions on every host."""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh

from leukojax.evaluation import metrics as metrics_lib
from leukojax.training import sharding, steps
from leukojax.training.state import ModelGraphs


@dataclasses.dataclass
class SplitResult:
  """Predictions of one split in the split's own order, with its metadata and metrics."""
  name: str
  probs: np.ndarray            # [N] P(positive) for binary, [N, K] otherwise
  labels: np.ndarray           # [N]
  metadata: dict[str, np.ndarray]
  loss: float
  metrics: dict[str, Any]

  def scalars(self) -> dict[str, float]:
    scalars = {k: float(v) for k, v in self.metrics.items() if isinstance(v, (int, float))}
    return {"loss": self.loss, **scalars}


def make_eval_fn(graphs: ModelGraphs) -> Callable:
  """The jitted evaluation step (BatchNorm on its moving statistics): `fn(variables, batch)`."""
  return jax.jit(functools.partial(steps.eval_step, graphdef=graphs.eval))


def evaluate_split(eval_fn: Callable, variables: Any, split: Any, mesh: Mesh, global_batch_size: int,
                   class_names: tuple[str, ...]) -> SplitResult:
  """Predicts every example of `split` once (padding masked out) and computes its metrics.

  One batch behind: batch k+1 is read and dispatched before batch k's outputs are fetched, so the
  host prepares the next batch while the devices compute (every process in the same order).
  """
  probs, index, sums = [], [], []

  def fetch(out, global_batch) -> None:
    gathered = multihost_utils.process_allgather(
        {"probs": out["probs"], "index": global_batch["index"], "mask": global_batch["mask"]}, tiled=True)
    keep = np.asarray(gathered["mask"]).astype(bool)
    probs.append(np.asarray(gathered["probs"])[keep])
    index.append(np.asarray(gathered["index"])[keep])
    sums.append(jax.device_get((out["loss_sum"], out["count"])))

  previous = None
  for batch in split.batches(global_batch_size):  # this process's share of each global batch
    global_batch = sharding.global_batch(
        {k: batch[k] for k in ("image", "label", "mask", "index")}, mesh)
    current = (eval_fn(variables, global_batch), global_batch)
    if previous is not None:
      fetch(*previous)
    previous = current
  if previous is not None:
    fetch(*previous)
  loss_sum, count = sum(float(loss) for loss, _ in sums), sum(float(n) for _, n in sums)
  order = np.argsort(np.concatenate(index), kind="stable")
  all_probs = np.concatenate(probs)[order]
  metadata = {k: np.asarray(v) for k, v in split.metadata.items()}
  labels = metadata["label"].astype(int)
  if len(all_probs) != len(labels):
    raise RuntimeError(f"Split {split.name!r}: {len(all_probs)} predictions for {len(labels)} examples.")
  labelled = labels >= 0
  results = (metrics_lib.classification_metrics(labels[labelled], all_probs[labelled], class_names)
             if labelled.any() else {})
  return SplitResult(name=split.name, probs=all_probs, labels=labels, metadata=metadata,
                     loss=loss_sum / max(count, 1.0), metrics=results)
