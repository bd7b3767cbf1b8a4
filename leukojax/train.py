"""The train loop: `train_and_evaluate(config, workdir)`.

Start-up order: an existing checkpoint in the workdir, else pretrained ImageNet weights (when the
config asks for them), else random initialisation. One jitted step over a ('data', 'fsdp') mesh
trains on the global batch; validation runs every epoch; Orbax keeps the latest and the best state;
at the end the best state is evaluated (`reporting.evaluate_run`: report.json, report.md, plots).
"""

from __future__ import annotations

import functools
import json
import os
import signal
import time
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import tqdm
from absl import logging
from flax import nnx
from jax.experimental import multihost_utils

from leukojax import checkpointing, evaluation, optim, reporting, sharding, steps
from leukojax.data import build_pipeline, describe_splits
from leukojax.models import factory, pretrained
from leukojax.writer import MetricWriter


class NonFiniteLossError(FloatingPointError):
  """Raised when the loss or the gradients stop being finite."""


class _PreemptionFlag:
  """Set by SIGTERM; the loop saves a checkpoint at the next step and exits cleanly."""

  def __init__(self):
    self.raised = False
    self._previous = signal.signal(signal.SIGTERM, self._handle)

  def _handle(self, signum, frame):
    del signum, frame
    logging.warning("SIGTERM received: saving a checkpoint and stopping.")
    self.raised = True

  def restore(self):
    signal.signal(signal.SIGTERM, self._previous)


def num_outputs(num_classes: int) -> int:
  """One sigmoid unit for two classes (as the hybrid paper), softmax otherwise."""
  return 1 if num_classes == 2 else num_classes


def build_model(config: ml_collections.ConfigDict, num_classes: int) -> nnx.Module:
  return factory.create_model(config.model, image_size=config.data.image_size,
                              num_outputs=num_outputs(num_classes), rngs=nnx.Rngs(config.seed))


def load_pretrained(model: nnx.Module, model_config: ml_collections.ConfigDict) -> None:
  """Merges ImageNet weights into every backbone, or says plainly that the run starts from scratch."""
  if not model_config.pretrained.enabled:
    logging.warning("No ImageNet weights configured (model.pretrained.enabled=False): every backbone "
                    "starts from random initialisation.")
    return
  for name, backbone in factory.backbone_modules(model).items():
    source = model_config.pretrained.paths.get(name) or None  # a file, a converted folder, or the Keras cache
    pretrained.load_pretrained(backbone, source, download=model_config.pretrained.download)
    logging.info("Loaded ImageNet weights for %s (%s).", name, source or "Keras cache")


def pipeline_for(config: ml_collections.ConfigDict, workdir: str):
  """The run's data: this process's slice, statistics cached in (or read from) the workdir."""
  return build_pipeline(
      config.data, global_batch_size=config.train.global_batch_size,
      eval_batch_size=config.eval.batch_size, workdir=workdir, seed=config.seed,
      process_index=jax.process_index(), process_count=jax.process_count())


def loss_class_weights(config: ml_collections.ConfigDict, pipeline) -> np.ndarray:
  if config.train.class_weighted_loss:
    return np.asarray(pipeline.class_weights, np.float32)
  return np.ones(pipeline.num_classes, np.float32)


def make_eval_fn(graphs: steps.ModelGraphs, class_weights: np.ndarray):
  return jax.jit(functools.partial(steps.eval_step, graphdef=graphs.eval,
                                   class_weights=jnp.asarray(class_weights)))


def create_train_state(config: ml_collections.ConfigDict, pipeline, mesh, *, load_weights: bool,
                       abstract: bool = False):
  """A fresh model's (graphdefs, train state on the mesh, its shardings, optimiser, schedule).

  `load_weights` merges the configured ImageNet weights. `abstract` builds shapes only
  (`jax.ShapeDtypeStruct`s carrying their shardings): the restore target of a resumed or restored
  run, whose checkpoint replaces every value, so no time goes into initialising them (about 40 s for
  the hybrid on 2 CPU cores).
  """
  if abstract:
    model = nnx.eval_shape(lambda: build_model(config, pipeline.num_classes))
  else:
    model = build_model(config, pipeline.num_classes)
    if load_weights:
      load_pretrained(model, config.model)
  graphs, params, model_state = steps.split_model(model)
  del model
  schedule = optim.make_schedule(config.train, pipeline.steps_per_epoch)
  tx = optim.make_optimizer(config.train, schedule)
  if abstract:
    state = steps.TrainState(params=params, model_state=model_state, opt_state=jax.eval_shape(tx.init, params),
                             step=jax.ShapeDtypeStruct((), jnp.int32))
    state_shardings = sharding.state_shardings(state, mesh)
    return graphs, checkpointing.abstract_like(state, state_shardings), state_shardings, tx, schedule
  state = steps.TrainState(params=params, model_state=model_state, opt_state=tx.init(params),
                           step=jnp.zeros((), jnp.int32))
  state_shardings = sharding.state_shardings(state, mesh)
  return graphs, jax.device_put(state, state_shardings), state_shardings, tx, schedule


def start_batch_norm_from_data(state: steps.TrainState, graphs: steps.ModelGraphs, pipeline, mesh,
                               state_shardings) -> steps.TrainState:
  """From scratch: BatchNorm moving statistics from the first training batch (not 0 and 1).

  Read through a fresh iterator of the (deterministic) training stream, so the training order is
  untouched. ImageNet-initialised backbones keep the statistics of their weight files.
  """
  first = sharding.global_batch(next(iter(pipeline.train)), mesh)
  fn = jax.jit(functools.partial(steps.batch_norm_stats_from_batch, graphdef=graphs.train),
               out_shardings=state_shardings.model_state)
  logging.info("Trained from scratch: BatchNorm moving statistics start from the first batch's.")
  return state.replace(model_state=fn(state, first))


def write_config(config: ml_collections.ConfigDict, workdir: str) -> None:
  if jax.process_index() == 0:
    with open(os.path.join(workdir, "config.json"), "w") as f:
      f.write(config.to_json_best_effort(indent=2))


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Trains, keeps the best validation state, evaluates it on test; returns the report."""
  os.makedirs(workdir, exist_ok=True)
  write_config(config, workdir)
  mesh = sharding.create_mesh(config.mesh.fsdp)
  sharding.check_batch_size(config.train.global_batch_size, mesh)
  sharding.check_batch_size(config.eval.batch_size, mesh)
  logging.info("Mesh %s over %d devices in %d processes.", dict(mesh.shape), mesh.size,
               jax.process_count())

  pipeline = pipeline_for(config, workdir)
  splits = describe_splits(pipeline)
  logging.info("Data:\n%s", splits)
  if jax.process_index() == 0:
    with open(os.path.join(workdir, "splits.txt"), "w") as f:
      f.write(splits + "\n")
  class_weights = loss_class_weights(config, pipeline)

  ckpt = checkpointing.Checkpointer(os.path.join(workdir, "checkpoints"),
                                    best_metric=config.train.best_metric)
  resume_step = ckpt.latest_step()
  graphs, state, state_shardings, tx, schedule = create_train_state(
      config, pipeline, mesh, load_weights=resume_step is None, abstract=resume_step is not None)
  data_iterator = iter(pipeline.train)
  if resume_step is not None:
    state, _ = ckpt.restore(resume_step, state, data_iterator)
    logging.info("Resuming from step %d (workdir %s).", resume_step, workdir)
  elif not config.model.pretrained.enabled:
    state = start_batch_norm_from_data(state, graphs, pipeline, mesh, state_shardings)

  batch_shard = sharding.batch_sharding(mesh)
  compile_step = functools.partial(
      _compile_train_step, tx=tx, class_weights=jnp.asarray(class_weights), state_shardings=state_shardings,
      batch_shard=batch_shard, mesh=mesh)
  eval_fn = make_eval_fn(graphs, class_weights)
  writer = MetricWriter(workdir)
  logging.info("Parameters: %s.", f"{sum(x.size for x in jax.tree.leaves(state.params)):,}")

  start = int(jax.device_get(state.step))
  step_fns: dict[bool, Any] = {}
  pending: list[tuple[int, dict[str, jax.Array]]] = []
  preemption = _PreemptionFlag()
  progress = tqdm.tqdm(total=schedule.total_steps, initial=start, desc="train", unit="step",
                       disable=jax.process_index() != 0, dynamic_ncols=True, mininterval=2.0)
  last_good_step = resume_step
  try:
    for step in range(start, schedule.total_steps):
      frozen = step < schedule.freeze_steps
      batch = sharding.global_batch(next(data_iterator), mesh)
      if frozen not in step_fns:
        step_fns[frozen] = compile_step(state, batch, graphdef=graphs.frozen if frozen else graphs.train,
                                        frozen=frozen)
      state, metrics = step_fns[frozen](state, batch)
      pending.append((step, metrics))
      progress.update(1)
      done = step + 1
      epoch_end = done % schedule.steps_per_epoch == 0 or done == schedule.total_steps
      if epoch_end or done % config.train.log_every_steps == 0:
        train_scalars = _flush_metrics(pending, last_good_step, workdir, ckpt)
        progress.set_postfix(loss=f"{train_scalars['train/loss']:.4f}")
        writer.write_scalars(done, train_scalars)
      preempt = _preempted(preemption, done, config)
      if epoch_end:
        epoch = -(-done // schedule.steps_per_epoch)
        val = evaluation.evaluate_split(eval_fn, state, pipeline.eval_splits["val"], mesh,
                                        config.eval.batch_size, pipeline.class_names)
        val_scalars = {f"val/{k}": v for k, v in val.scalars().items()}
        writer.write_scalars(done, val_scalars)
        writer.append_history({"epoch": epoch, "step": done, **train_scalars, **val_scalars})
        ckpt.save(done, state, data_iterator, _meta(done, epoch, pipeline),
                  metrics={config.train.best_metric: val.scalars()[config.train.best_metric]})
        last_good_step = done
      elif done % config.train.checkpoint_every_steps == 0 or preempt:
        ckpt.save(done, state, data_iterator, _meta(done, done / schedule.steps_per_epoch, pipeline))
        last_good_step = done
      if preempt:
        ckpt.wait()
        logging.warning("Stopped for preemption at step %d; rerun the same command to resume.", done)
        return {"preempted_at_step": done}
    ckpt.wait()
  finally:
    progress.close()
    preemption.restore()
    writer.close()

  selected = ckpt.best_step()
  best_step = selected or ckpt.latest_step()
  state, _ = ckpt.restore(best_step, checkpointing.abstract_like(state, state_shardings))
  ckpt.close()
  logging.info("Evaluating the best checkpoint (step %d): report, plots and predictions.", best_step)
  return reporting.evaluate_run(config=config, pipeline=pipeline, mesh=mesh, graphs=graphs, state=state,
                                eval_fn=eval_fn, class_weights=class_weights, step=best_step,
                                checkpoint="best" if selected else "latest", workdir=workdir)


def _compile_train_step(state, batch, *, graphdef, frozen, tx, class_weights, state_shardings,
                        batch_shard, mesh):
  """AOT-compiles one train step variant and logs its compile time and FLOPs per step."""
  fn = jax.jit(
      functools.partial(steps.train_step, graphdef=graphdef, tx=tx, class_weights=class_weights,
                        frozen=frozen, compute_shardings=sharding.compute_shardings(state.params, mesh)),
      in_shardings=(state_shardings, batch_shard),
      out_shardings=(state_shardings, sharding.replicated(mesh)),
      donate_argnums=0)
  start = time.perf_counter()
  compiled = fn.lower(state, batch).compile()
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  flops = float((cost or {}).get("flops", float("nan")))
  logging.info("Compiled the %s train step in %.1f s: %.3g FLOPs per step (XLA cost analysis).",
               "frozen-backbone" if frozen else "full", time.perf_counter() - start, flops)
  return compiled


def _flush_metrics(pending, last_good_step, workdir, ckpt) -> dict[str, float]:
  """Fetches the steps' metrics in one transfer, stops on a non-finite loss, returns their means."""
  fetched = jax.device_get([m for _, m in pending])
  for (step, _), metrics in zip(pending, fetched):
    if not bool(metrics["finite"]):
      ckpt.wait()
      raise NonFiniteLossError(
          f"Non-finite loss ({float(metrics['loss'])}) or gradient norm ({float(metrics['grad_norm'])}) "
          f"at step {step + 1}; that update was not applied and training stopped. The last good "
          f"checkpoint (step {last_good_step}) is kept in {os.path.join(workdir, 'checkpoints')}. "
          "Lower train.learning_rate, set train.grad_clip_norm, or check the input data.")
  pending.clear()
  return {f"train/{k}": float(np.mean([m[k] for m in fetched])) for k in ("loss", "accuracy", "grad_norm")}


def _preempted(flag: _PreemptionFlag, step: int, config) -> bool:
  """True on every process once any process got SIGTERM (agreed at log steps when multi-host)."""
  if jax.process_count() == 1:
    return flag.raised
  if step % config.train.log_every_steps:
    return False
  return bool(np.any(multihost_utils.process_allgather(np.asarray(flag.raised))))


def _meta(step: int, epoch: float, pipeline) -> dict[str, Any]:
  return {"step": step, "epoch": epoch, "stats": json.loads(json.dumps(pipeline.stats, default=_plain)),
          "class_names": list(pipeline.class_names), "protocol": pipeline.protocol}


def _plain(value):
  if hasattr(value, "tolist"):
    return value.tolist()
  if hasattr(value, "__dict__"):
    return {k: _plain(v) for k, v in vars(value).items()}
  return str(value)
