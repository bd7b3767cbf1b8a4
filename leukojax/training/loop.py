"""The train loop: `setup(config, workdir)`, then `train(setup, validate)`.

Start-up order: an existing checkpoint in the workdir, else pretrained ImageNet weights (when the
config asks for them), else random initialisation. One jitted step over a ('data', 'fsdp') mesh
trains on the global batch; `validate` (given by the caller: `evaluation.training_run`) scores the
state every epoch; Orbax keeps the latest and the best state. Nothing here evaluates or reports:
the dependencies point from evaluation to training, never back.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import signal
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import tqdm
from absl import logging
from jax.experimental import multihost_utils

from leukojax.errors import LeukojaxError
from leukojax.data import Pipeline, describe_splits
from leukojax.data.workers import AUTO as AUTO_WORKERS, resolve_num_workers
from leukojax.models import depthwise
from leukojax import files
from leukojax.training import checkpoints, inputs, optimizer, run_config, sharding, state as state_lib, steps
from leukojax.training.metric_writer import MetricWriter

# Scores a train state on the validation split: {"loss": ..., "accuracy": ..., "AUC": ...}.
Validate = Callable[[state_lib.TrainState], Mapping[str, float]]


class NonFiniteLossError(LeukojaxError, FloatingPointError):
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


def write_config(config: ml_collections.ConfigDict, workdir: str) -> None:
  """config.json, with what the config cannot hold but the run depends on (the depthwise kernel)."""
  if jax.process_index() == 0:
    record = json.loads(config.to_json_best_effort())
    record["runtime"] = {"LEUKOJAX_DEPTHWISE": depthwise.IMPLEMENTATION,
                         "depthwise_implementation": depthwise.implementation(),
                         "backend": jax.default_backend(), "jax": jax.__version__}
    files.write_json_atomically(os.path.join(workdir, "config.json"), record, indent=2)  # others read it now


@dataclasses.dataclass
class Setup:
  """Everything a run needs before its first step, on every process."""

  config: ml_collections.ConfigDict
  workdir: str
  mesh: jax.sharding.Mesh
  pipeline: Pipeline
  class_weights: np.ndarray
  graphs: state_lib.ModelGraphs
  state: state_lib.TrainState
  state_shardings: Any
  tx: optax.GradientTransformation
  schedule: optimizer.Schedule
  ckpt: checkpoints.Checkpointer
  data_iterator: Any
  resume_step: int | None
  config_changes: Mapping[str, tuple[Any, Any]] = dataclasses.field(default_factory=dict)  # accepted on resume


@dataclasses.dataclass(frozen=True)
class Outcome:
  """How training ended: the step to report on and how it was chosen, or the preemption step."""

  step: int
  checkpoint: str  # 'best' (validation-selected) or 'latest' (no checkpoint carries a metric)
  preempted: bool = False


def _num_workers(config: ml_collections.ConfigDict, workdir: str) -> int:
  """The grain worker count, recorded as resolved: the training stream's order depends on it
  (docs/data.md), so a resumed run keeps the count it started with unless one is asked for."""
  stored = os.path.join(workdir, "config.json")
  if config.data.num_workers == AUTO_WORKERS and os.path.exists(stored):
    with open(stored) as f:
      return resolve_num_workers(int(json.load(f)["data"].get("num_workers", 0)))
  return resolve_num_workers(config.data.num_workers)


def _has_checkpoints(workdir: str) -> bool:
  directory = os.path.join(workdir, "checkpoints")
  return os.path.isdir(directory) and any(name.isdigit() for name in os.listdir(directory))


def setup(config: ml_collections.ConfigDict, workdir: str, allow_config_change: Sequence[str] = ()) -> Setup:
  """Mesh, data, model and state: restored from the workdir's last checkpoint, else fresh.

  The config is compared with the one the workdir's checkpoints were trained under before anything
  is built or written (`run_config`); `evaluation.config_check` has checked it whole before.
  """
  config.data.num_workers = _num_workers(config, workdir)
  from leukojax.data.sources import resolve_builder_config  # pylint: disable=g-import-not-at-top (TFDS: slow import)
  config.data.builder_config = resolve_builder_config(config.data.dataset, config.data.builder_config)
  config_changes = run_config.check_rerun(
      run_config.read_stored(workdir), run_config.as_record(config), workdir=workdir,
      has_checkpoints=_has_checkpoints(workdir), allow=allow_config_change)
  os.makedirs(workdir, exist_ok=True)
  if config_changes:
    logging.warning("Resuming under the changed %s (recorded in %s; config.json is updated when the run "
                    "finishes).", ", ".join(config_changes), run_config.HISTORY)
    if jax.process_index() == 0:
      run_config.record_changes(workdir, config_changes)
  else:
    write_config(config, workdir)
  logging.info("Input pipeline: %d grain worker processes%s.", config.data.num_workers,
               "" if config.data.num_workers else " (in-process, read threads only)")
  mesh = sharding.create_mesh(config.mesh.fsdp)
  sharding.check_batch_size(config.train.global_batch_size, mesh)
  sharding.check_batch_size(config.eval.batch_size, mesh)
  logging.info("Mesh %s over %d devices in %d processes.", dict(mesh.shape), mesh.size,
               jax.process_count())

  pipeline = inputs.pipeline_for(config, workdir)
  splits = describe_splits(pipeline)
  logging.info("Data:\n%s", splits)
  if jax.process_index() == 0:
    with open(os.path.join(workdir, "splits.txt"), "w") as f:
      f.write(splits + "\n")

  ckpt = checkpoints.Checkpointer(os.path.join(workdir, "checkpoints"), best_metric=config.train.best_metric)
  resume_step = ckpt.latest_step()
  graphs, state, state_shardings, tx, schedule = state_lib.create_train_state(
      config, pipeline, mesh, load_weights=resume_step is None, abstract=resume_step is not None)
  data_iterator = iter(pipeline.train)
  if resume_step is not None:
    state, _ = ckpt.restore(resume_step, state, data_iterator)
    logging.info("Resuming from step %d (workdir %s).", resume_step, workdir)
  elif not config.model.pretrained.enabled:
    state = start_batch_norm_from_data(state, graphs, pipeline, mesh, state_shardings)
  return Setup(config=config, workdir=workdir, mesh=mesh, pipeline=pipeline,
               class_weights=inputs.loss_class_weights(config, pipeline), graphs=graphs, state=state,
               state_shardings=state_shardings, tx=tx, schedule=schedule, ckpt=ckpt,
               data_iterator=data_iterator, resume_step=resume_step, config_changes=config_changes)


def start_batch_norm_from_data(state: state_lib.TrainState, graphs: state_lib.ModelGraphs, pipeline, mesh,
                               state_shardings) -> state_lib.TrainState:
  """From scratch: BatchNorm moving statistics from the first training batch (not 0 and 1).

  Read through a fresh iterator of the (deterministic) training stream, so the training order is
  untouched. ImageNet-initialised backbones keep the statistics of their weight files.
  """
  first = sharding.global_batch(next(iter(pipeline.train)), mesh)
  fn = jax.jit(functools.partial(steps.batch_norm_stats_from_batch, graphdef=graphs.train),
               out_shardings=state_shardings.model_state)
  logging.info("Trained from scratch: BatchNorm moving statistics start from the first batch's.")
  return state.replace(model_state=fn(state, first))


def train(run: Setup, validate: Validate) -> Outcome:
  """Trains to `train.epochs`, validating and checkpointing every epoch; resumable at any step."""
  config, workdir, mesh, pipeline, schedule, ckpt = (run.config, run.workdir, run.mesh, run.pipeline,
                                                     run.schedule, run.ckpt)
  state, data_iterator = run.state, run.data_iterator
  compile_step = functools.partial(
      _compile_train_step, tx=run.tx, class_weights=jnp.asarray(run.class_weights),
      state_shardings=run.state_shardings, batch_shard=sharding.batch_sharding(mesh), mesh=mesh)
  # One compiled call per flush, not a dozen eager ops (44 ms a flush on CPU).
  learning_rates = jax.jit(lambda u: tuple(f(u) for f in optimizer.learning_rates(config.train, schedule)))
  writer = MetricWriter(workdir)
  logging.info("Parameters: %s.", f"{sum(x.size for x in jax.tree.leaves(state.params)):,}")

  start = int(jax.device_get(state.step))
  step_fns: dict[bool, Any] = {}
  pending: list[tuple[int, dict[str, jax.Array]]] = []
  preemption = _PreemptionFlag()
  progress = tqdm.tqdm(total=schedule.total_steps, initial=start, desc="train", unit="step",
                       disable=jax.process_index() != 0, dynamic_ncols=True, mininterval=2.0)
  last_good_step = run.resume_step
  rate = _ImageRate(config.train.global_batch_size, start)
  try:
    for step in range(start, schedule.total_steps):
      frozen = step < schedule.freeze_steps
      batch = sharding.global_batch(next(data_iterator), mesh)
      if frozen not in step_fns:
        step_fns[frozen] = compile_step(state, batch, graphdef=run.graphs.frozen if frozen else run.graphs.train,
                                        frozen=frozen)
        rate.compiled()
      state, metrics = step_fns[frozen](state, batch)
      pending.append((step, metrics))
      progress.update(1)
      done = step + 1
      epoch_end = done % schedule.steps_per_epoch == 0 or done == schedule.total_steps
      if epoch_end or done % config.train.log_every_steps == 0:
        train_scalars = _flush_metrics(pending, last_good_step, workdir, ckpt)
        train_scalars.update(_learning_rate_scalars(learning_rates, done, schedule))
        train_scalars.update(rate.flush(done))
        progress.set_postfix(loss=f"{train_scalars['train/loss']:.4f}")
        writer.write_scalars(done, train_scalars)
      preempt = _preempted(preemption, done, config)
      if epoch_end:
        epoch = -(-done // schedule.steps_per_epoch)
        started = time.perf_counter()
        val = dict(validate(state))
        val_s = time.perf_counter() - started
        val_scalars = {f"val/{k}": v for k, v in val.items()}
        writer.write_scalars(done, val_scalars)
        # Before the save, so a run killed after it resumes with this epoch's record on disk.
        writer.append_history({"epoch": epoch, "step": done, **train_scalars, **val_scalars,
                               "time/wall_s": rate.wall_s(), "time/validation_s": val_s})
        started = time.perf_counter()
        _check_state_before_save(state, done, last_good_step, workdir, ckpt)
        ckpt.save(done, state, data_iterator, _meta(done, epoch, pipeline),
                  metrics={config.train.best_metric: val[config.train.best_metric]})
        # The save's blocking part (the write runs in the background), for TensorBoard and the log.
        writer.write_scalars(done, {"time/checkpoint_s": time.perf_counter() - started})
        last_good_step = done
      elif done % config.train.checkpoint_every_steps == 0 or preempt:
        _raise_if_non_finite(jax.device_get(pending), last_good_step, workdir, ckpt)
        _check_state_before_save(state, done, last_good_step, workdir, ckpt)
        ckpt.save(done, state, data_iterator, _meta(done, done / schedule.steps_per_epoch, pipeline))
        last_good_step = done
      if preempt:
        ckpt.wait()
        logging.warning("Stopped for preemption at step %d; rerun the same command to resume.", done)
        return Outcome(step=done, checkpoint="latest", preempted=True)
    ckpt.wait()
  finally:
    progress.close()
    preemption.restore()
    writer.close()
  selected = ckpt.best_step()
  return Outcome(step=selected or ckpt.latest_step(), checkpoint="best" if selected else "latest")


class _ImageRate:
  """Training images/s of the loop as a whole between metric flushes (each flush syncs the device).

  An interval includes everything the loop did in it (input pipeline, validation, checkpointing),
  so it is the loop's goodput, comparable with `benchmarks.train_step`'s bare step
  (`benchmarks.goodput`). Intervals holding a compilation are not reported.
  """

  def __init__(self, batch: int, step: int):
    self.batch, self.step, self.start = batch, step, time.perf_counter()
    self.time, self.skip = self.start, False

  def compiled(self) -> None:
    self.skip = True

  def flush(self, step: int) -> dict[str, float]:
    now = time.perf_counter()
    images, seconds = (step - self.step) * self.batch, now - self.time
    scalars = {} if self.skip or seconds <= 0 else {"train/images_per_s": images / seconds}
    self.step, self.time, self.skip = step, now, False
    return scalars

  def wall_s(self) -> float:
    return time.perf_counter() - self.start


def _learning_rate_scalars(learning_rates, done: int, schedule: optimizer.Schedule) -> dict[str, float]:
  """The head's and the backbones' learning rates at the last update (optimiser updates, not steps)."""
  update = max(done // schedule.accum_steps - 1, 0)
  head, backbone = jax.device_get(learning_rates(update))
  return {"train/lr_head": float(head), "train/lr_backbone": float(backbone)}


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
  fetched = jax.device_get(pending)
  _raise_if_non_finite(fetched, last_good_step, workdir, ckpt)
  pending.clear()
  return {f"train/{k}": float(np.mean([m[k] for _, m in fetched])) for k in ("loss", "accuracy", "grad_norm")}


def _raise_if_non_finite(fetched, last_good_step, workdir, ckpt) -> None:
  """The host-side half of the non-finite guard: the first step whose loss or gradient was not finite."""
  for step, metrics in fetched:
    if not bool(metrics["finite"]):
      _stop(f"Non-finite loss ({float(metrics['loss'])}) or gradient norm ({float(metrics['grad_norm'])}) "
            f"at step {step + 1}", last_good_step, workdir, ckpt)


def _all_finite(tree) -> bool:
  """Whether every floating-point value of `tree` is finite, agreed by all processes.

  Checked on the host, one shard at a time (each replicated piece once): a jitted reduction over
  the ~1,400 leaves of the hybrid's state compiles for 12 s on CPU, this reads it in a fraction of
  a second, and the save that follows copies the state to the host anyway.
  """
  finite = all(bool(np.isfinite(np.asarray(shard.data)).all())
               for leaf in jax.tree.leaves(tree) if jnp.issubdtype(leaf.dtype, jnp.inexact)
               for shard in leaf.addressable_shards if shard.replica_id == 0)
  if jax.process_count() > 1:
    finite = bool(np.all(multihost_utils.process_allgather(np.asarray(finite))))
  return finite


def _check_state_before_save(state, done, last_good_step, workdir, ckpt) -> None:
  """No non-finite parameter, BatchNorm statistic or Adam moment is ever written to a checkpoint."""
  if not _all_finite(state):
    _stop(f"The train state after step {done} holds non-finite values", last_good_step, workdir, ckpt)


def _stop(what: str, last_good_step, workdir, ckpt) -> None:
  ckpt.wait()
  directory = os.path.join(workdir, "checkpoints")
  kept = (f"The last good checkpoint (step {last_good_step}) is kept in {directory}; the same command "
          "resumes from it." if last_good_step is not None else
          "No checkpoint was saved before it (nothing to resume from); the next run starts afresh.")
  raise NonFiniteLossError(
      f"{what}; training stopped and nothing non-finite was saved. {kept} "
      "Lower train.learning_rate, set train.grad_clip_norm, or check the input data.")


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
