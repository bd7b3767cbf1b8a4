"""A finished (or interrupted) training workdir, restored for evaluation, prediction and explanation.

Everything comes from the workdir itself: `config.json` (the run's config), `data_stats.json` (the
train-split statistics, so new images are standardised exactly as in training) and the Orbax
checkpoints (`best`, `latest` or a step), of which only the parameters and model state are read
(no optimiser). The data pipeline is rebuilt from the config, so the splits are the run's own
(they depend only on the data and `config.data.split`).
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping
from typing import Any

import jax
import ml_collections
from flax import nnx

from leukojax.errors import LeukojaxError
from leukojax.data import DataStats, Pipeline, load_stats
from leukojax.evaluation import inference
from leukojax.training import checkpoints, inputs, sharding
from leukojax.training.state import ModelGraphs, ModelVariables, abstract_model_variables


class WorkdirError(LeukojaxError, FileNotFoundError):
  """The workdir lacks what a restore needs (its config or any checkpoint)."""


@dataclasses.dataclass
class SavedData:
  """What a restore needs of the data when the dataset itself is not at hand: the run's saved
  train-split statistics and class names (from `data_stats.json` and the checkpoint's metadata).
  It has the `Pipeline` fields prediction and explanation read, and no splits."""

  stats: DataStats
  class_names: tuple[str, ...]
  protocol: str
  eval_splits: dict[str, Any] = dataclasses.field(default_factory=dict)

  @property
  def num_classes(self) -> int:
    return len(self.class_names)


@dataclasses.dataclass
class TrainedRun:
  """A restored run: its config, data, mesh, model variables and the jitted evaluation step."""

  workdir: str
  config: ml_collections.ConfigDict
  pipeline: Pipeline | SavedData  # SavedData when restored with `with_data=False`
  mesh: jax.sharding.Mesh
  graphs: ModelGraphs
  variables: ModelVariables
  step: int
  checkpoint: str  # how `step` was chosen: 'best', 'latest' or 'step'
  eval_fn: Any

  def model(self) -> nnx.Module:
    """The model in evaluation mode (BatchNorm on its moving statistics), for explanations."""
    return nnx.merge(self.graphs.eval, self.variables.params, self.variables.model_state)


def load_config(workdir: str, overrides: Mapping[str, Any] | None = None) -> ml_collections.ConfigDict:
  """The config a run wrote into its workdir, with dotted-key `overrides` (e.g. a new data_dir)."""
  path = os.path.join(workdir, "config.json")
  if not os.path.exists(path):
    raise WorkdirError(f"{path} does not exist: {workdir} is not a LeukoJAX training workdir "
                       "(train first: python -m leukojax.main --config ... --workdir ...).")
  with open(path) as f:
    config = ml_collections.ConfigDict(json.load(f))
  for key, value in (overrides or {}).items():
    parent = config
    *path_parts, leaf = key.split(".")
    for part in path_parts:
      parent = parent[part]
    parent[leaf] = value
  return config


def parse_checkpoint(value: str) -> str | int:
  """'best', 'latest' or a step number, as `restore_run` takes them."""
  if value in ("best", "latest"):
    return value
  if value.isdigit():
    return int(value)
  raise ValueError(f"checkpoint {value!r}: use 'best', 'latest' or a step number.")


def resolve_step(ckpt: checkpoints.Checkpointer, checkpoint: str | int) -> tuple[int, str]:
  """'best' (the validation-selected state; the latest if none has a metric), 'latest' or a step."""
  steps_kept = sorted(ckpt.manager.all_steps())
  if not steps_kept:
    raise WorkdirError(f"No checkpoint in {ckpt.manager.directory}: the run saved nothing yet.")
  if checkpoint == "best":
    best = ckpt.best_step()
    return (best, "best") if best is not None else (ckpt.latest_step(), "latest")
  if checkpoint == "latest":
    return ckpt.latest_step(), "latest"
  step = int(checkpoint)
  if step not in steps_kept:
    raise WorkdirError(f"No checkpoint at step {step} in {ckpt.manager.directory}; kept: {steps_kept}.")
  return step, "step"


def restore_run(workdir: str, checkpoint: str | int = "best",
                overrides: Mapping[str, Any] | None = None, *, with_data: bool = True) -> TrainedRun:
  """Rebuilds the run of `workdir` and restores `checkpoint`'s model onto this machine's devices.

  `with_data=False` skips the dataset (predicting or explaining new images needs only the saved
  statistics and class names), so a workdir copied to another machine works without the data.
  """
  config = load_config(workdir, overrides)
  ckpt = checkpoints.Checkpointer(os.path.join(workdir, "checkpoints"), best_metric=config.train.best_metric)
  try:
    step, how = resolve_step(ckpt, checkpoint)
    mesh = sharding.create_mesh(config.mesh.fsdp)
    if with_data:
      pipeline = inputs.pipeline_for(config, workdir)
    else:
      meta = ckpt.restore_meta(step)
      pipeline = SavedData(stats=load_stats(workdir), class_names=tuple(meta["class_names"]),
                           protocol=meta.get("protocol", config.data.split.protocol))
    graphs, target = abstract_model_variables(config, pipeline.num_classes, mesh)
    variables = ckpt.restore_variables(step, target)
  finally:
    ckpt.close()
  return TrainedRun(workdir=workdir, config=config, pipeline=pipeline, mesh=mesh, graphs=graphs,
                    variables=variables, step=step, checkpoint=how, eval_fn=inference.make_eval_fn(graphs))
