"""The data of a run as the train loop and evaluation read it: this process's slice of the pipeline."""

from __future__ import annotations

import jax
import ml_collections
import numpy as np

from leukojax.data import Pipeline, build_pipeline


def pipeline_for(config: ml_collections.ConfigDict, workdir: str) -> Pipeline:
  """The run's data: this process's slice, statistics cached in (or read from) the workdir."""
  return build_pipeline(
      config.data, global_batch_size=config.train.global_batch_size,
      eval_batch_size=config.eval.batch_size, workdir=workdir, seed=config.seed,
      process_index=jax.process_index(), process_count=jax.process_count())


def loss_class_weights(config: ml_collections.ConfigDict, pipeline: Pipeline) -> np.ndarray:
  """The training loss's per-class weights: the training split's (`train.class_weighted_loss`) or ones."""
  if config.train.class_weighted_loss:
    return np.asarray(pipeline.class_weights, np.float32)
  return np.ones(pipeline.num_classes, np.float32)
