"""The model and the train state of a run: built fresh, from ImageNet weights, or as shapes to restore.

The model lives as (graphdef, params, model_state): the graphdef is static (it also fixes whether
BatchNorm uses batch or running statistics), params and model_state are arrays. Three graphdefs of
one model exist: `train`, `frozen` (backbones' BatchNorm on running statistics, as Keras does for a
frozen layer) and `eval`. `TrainState` adds the optimiser state and the step; `ModelVariables` is
what evaluation needs (no optimiser).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax
import jax
import jax.numpy as jnp
import ml_collections
from absl import logging
from flax import nnx

from leukojax.models import factory, outputs, pretrained
from leukojax.training import checkpoints, optimizer, sharding


@flax.struct.dataclass
class TrainState:
  params: Any
  model_state: Any
  opt_state: Any
  step: jax.Array


@flax.struct.dataclass
class ModelVariables:
  """The part of a `TrainState` a forward pass reads (what evaluation restores)."""
  params: Any
  model_state: Any


@dataclasses.dataclass(frozen=True)
class ModelGraphs:
  train: Any
  frozen: Any
  eval: Any


def split_model(model: nnx.Module) -> tuple[ModelGraphs, Any, Any]:
  """(graphdefs, params, model_state) of a freshly built or loaded model."""
  model.train()
  train = nnx.graphdef(model)
  for backbone in factory.backbone_modules(model).values():
    backbone.eval()
  frozen = nnx.graphdef(model)
  model.eval()
  eval_ = nnx.graphdef(model)
  _, params, model_state = nnx.split(model, nnx.Param, ...)
  model.train()
  return ModelGraphs(train=train, frozen=frozen, eval=eval_), params, model_state


def merge(graphdef, params, model_state) -> nnx.Module:
  # Fresh Variables at the current trace level, so BatchNorm may update its statistics under grad.
  return nnx.merge(graphdef, params, jax.tree.map(lambda x: x, model_state))


def build_model(config: ml_collections.ConfigDict, num_classes: int) -> nnx.Module:
  return factory.create_model(config.model, image_size=config.data.image_size,
                              num_outputs=outputs.num_outputs(num_classes), rngs=nnx.Rngs(config.seed))


def load_pretrained(model: nnx.Module, model_config: ml_collections.ConfigDict) -> None:
  """Merges ImageNet weights into every backbone, or says plainly that the run starts from scratch."""
  if not model_config.pretrained.enabled:
    logging.warning("No ImageNet weights configured (model.pretrained.enabled=False): every backbone "
                    "starts from random initialisation.")
    return
  for name, backbone in factory.backbone_modules(model).items():
    source = model_config.pretrained.paths.get(name) or None  # a file, a converted folder, or the Keras cache
    loaded = pretrained.load_pretrained(backbone, source, download=model_config.pretrained.download,
                                        custom=model_config.pretrained.get("custom_weights", False))
    logging.info("Loaded ImageNet weights for %s from %s (%s, %s).", name, loaded["source"],
                 f"sha256 {loaded['sha256']}" if "sha256" in loaded else f"md5 {loaded['md5']}",
                 {True: "the published file", False: "a custom file", None: "no published hash"}[loaded["official"]])


def create_train_state(config: ml_collections.ConfigDict, pipeline, mesh, *, load_weights: bool,
                       abstract: bool = False):
  """A fresh model's (graphdefs, train state on the mesh, its shardings, optimiser, schedule).

  `load_weights` merges the configured ImageNet weights. `abstract` builds shapes only
  (`jax.ShapeDtypeStruct`s carrying their shardings): the restore target of a resumed run, whose
  checkpoint replaces every value, so no time goes into initialising them (about 40 s for the
  hybrid on 2 CPU cores).
  """
  if abstract:
    model = nnx.eval_shape(lambda: build_model(config, pipeline.num_classes))
  else:
    model = build_model(config, pipeline.num_classes)
    if load_weights:
      load_pretrained(model, config.model)
  graphs, params, model_state = split_model(model)
  del model
  schedule = optimizer.make_schedule(config.train, pipeline.steps_per_epoch)
  tx = optimizer.make_optimizer(config.train, schedule)
  if abstract:
    state = TrainState(params=params, model_state=model_state, opt_state=jax.eval_shape(tx.init, params),
                       step=jax.ShapeDtypeStruct((), jnp.int32))
    state_shardings = sharding.state_shardings(state, mesh)
    return graphs, checkpoints.abstract_like(state, state_shardings), state_shardings, tx, schedule
  state = TrainState(params=params, model_state=model_state, opt_state=tx.init(params),
                     step=jnp.zeros((), jnp.int32))
  state_shardings = sharding.state_shardings(state, mesh)
  return graphs, jax.device_put(state, state_shardings), state_shardings, tx, schedule


def abstract_model_variables(config: ml_collections.ConfigDict, num_classes: int,
                             mesh) -> tuple[ModelGraphs, ModelVariables]:
  """Graphdefs and the shapes (with shardings) of params and model state: the target of an
  evaluation restore, which reads no optimiser state."""
  model = nnx.eval_shape(lambda: build_model(config, num_classes))
  graphs, params, model_state = split_model(model)
  variables = ModelVariables(params=params, model_state=model_state)
  return graphs, checkpoints.abstract_like(variables, sharding.state_shardings(variables, mesh))
