"""Metric writing on process 0: TensorBoard (tensorboardX, no TensorFlow), the log, and a JSONL history.

CLU's writers import TensorFlow, which this project does not install, so this is the small subset of
their interface the train loop needs.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping

import jax
from absl import logging


class MetricWriter:
  """`write_scalars(step, {name: value})` to TensorBoard and the log; `append_history` for the plots."""

  def __init__(self, workdir: str):
    self.enabled = jax.process_index() == 0
    self.history_path = os.path.join(workdir, "history.jsonl")
    self._tb = None
    if self.enabled:
      from tensorboardX import SummaryWriter  # imported lazily: only process 0 writes
      self._tb = SummaryWriter(logdir=os.path.join(workdir, "tensorboard"), flush_secs=10)

  def write_scalars(self, step: int, scalars: Mapping[str, float]) -> None:
    if not self.enabled:
      return
    for name, value in scalars.items():
      self._tb.add_scalar(name, float(value), global_step=step)
    logging.info("[%d] %s", step, ", ".join(f"{k}={float(v):.4g}" for k, v in scalars.items()))

  def append_history(self, record: Mapping[str, float]) -> None:
    """One line per epoch (train and validation loss/accuracy), read back for the learning curves."""
    if self.enabled:
      with open(self.history_path, "a") as f:
        f.write(json.dumps(dict(record)) + "\n")

  def close(self) -> None:
    if self._tb is not None:
      self._tb.close()


def read_history(workdir: str) -> list[dict[str, float]]:
  """The epoch records of a run; a resumed run's repeated epochs keep their last record."""
  path = os.path.join(workdir, "history.jsonl")
  if not os.path.exists(path):
    return []
  by_epoch: dict[int, dict[str, float]] = {}
  with open(path) as f:
    for line in f:
      record = json.loads(line)
      by_epoch[int(record["epoch"])] = record
  return [by_epoch[e] for e in sorted(by_epoch)]
