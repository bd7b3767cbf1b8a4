"""Orbax checkpoints that keep the latest state (for resuming) and the best one (for reporting).

One `CheckpointManager` holds three items per step: the train `state` (sharded arrays), the grain
`data` iterator position (one file per process; a checkpoint resumes on another process count
too, `_data_state_saved_by_other_processes`) and `meta` (epoch, validation metrics,
standardisation statistics). Its preservation policy keeps the newest checkpoint AND the one with
the best validation metric: a best-only policy would delete the state a preempted run resumes from.
Checkpoints written mid-epoch (step interval, SIGTERM) carry no metric and are only ever "latest".
"""

from __future__ import annotations

import json
import os
from typing import Any

import grain
import jax
import orbax.checkpoint as ocp
from etils import epath
from absl import logging
from orbax.checkpoint import checkpoint_managers

from leukojax.errors import LeukojaxError


def metric_mode(metric: str) -> str:
  """'min' for a loss, 'max' for every other validation metric (accuracy, AUC, F1, ...)."""
  return "min" if metric == "loss" or metric.endswith("_loss") else "max"


class Checkpointer:
  """Saves asynchronously; restores the latest, the best or a given step onto given shardings."""

  def __init__(self, directory: str, *, best_metric: str, best_mode: str | None = None):
    self.best_metric = best_metric
    self.best_mode = best_mode or metric_mode(best_metric)
    sign = 1.0 if self.best_mode == "max" else -1.0

    def rank(metrics: dict[str, float]) -> tuple[float, int]:
      # Higher is better. Ties go to the earlier step (Keras's save-best-only keeps the first epoch to
      # reach a value); BestN keeps the last of its ascending sort, so the step enters negated.
      return sign * float(metrics[best_metric]), -int(metrics["step"])

    self._rank = rank
    policy = checkpoint_managers.AnyPreservationPolicy([
        checkpoint_managers.LatestN(1),
        checkpoint_managers.BestN(get_metric_fn=rank, n=1, keep_checkpoints_without_metrics=False),
    ])
    # `best_fn` as well as the policy: only then does Orbax write each step's metrics to disk, so a
    # restarted run still knows which kept checkpoint is the best (without it the best was deleted
    # at the first save after a resume).
    options = ocp.CheckpointManagerOptions(preservation_policy=policy, best_fn=rank, enable_async_checkpointing=True,
                                           cleanup_tmp_directories=True)
    self.manager = ocp.CheckpointManager(
        os.path.abspath(directory), options=options,
        item_handlers={"state": ocp.StandardCheckpointHandler(),
                       "data": grain.checkpoint.CheckpointHandler(),
                       "meta": ocp.JsonCheckpointHandler()})

  def save(self, step: int, state: Any, data_iterator: Any, meta: dict[str, Any],
           metrics: dict[str, float] | None = None, force: bool = True) -> None:
    if metrics is not None:
      metrics = {**metrics, "step": step}
    args = ocp.args.Composite(state=ocp.args.StandardSave(state),
                              data=grain.checkpoint.CheckpointSave(data_iterator),
                              meta=ocp.args.JsonSave({**meta, "metrics": metrics}))
    self.manager.save(step, args=args, metrics=metrics, force=force)

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def best_step(self) -> int | None:
    """The step with the best validation metric among the kept checkpoints (None if none has one)."""
    scored = []
    for step in self.manager.all_steps():
      metrics = self.restore_meta(step).get("metrics")
      if metrics and self.best_metric in metrics:
        scored.append((self._rank({**metrics, "step": step}), step))
    return max(scored)[1] if scored else None

  def restore_meta(self, step: int) -> dict[str, Any]:
    return self.manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]

  def restore(self, step: int, abstract_state: Any, data_iterator: Any | None = None):
    """Restores `state` onto the shardings of `abstract_state` (any device count) and the iterator."""
    items = {"state": ocp.args.StandardRestore(abstract_state), "meta": ocp.args.JsonRestore()}
    data_state = None if data_iterator is None else self._data_state_saved_by_other_processes(step)
    if data_iterator is not None and data_state is None:
      items["data"] = grain.checkpoint.CheckpointRestore(data_iterator)
    restored = self.manager.restore(step, args=ocp.args.Composite(**items))
    if data_state is not None:
      data_iterator.set_state(data_state)
    logging.info("Restored checkpoint step %d from %s.", step, self.manager.directory)
    return restored["state"], restored["meta"]

  def _data_state_saved_by_other_processes(self, step: int) -> dict[str, Any] | None:
    """This process's data position in a checkpoint saved by M other processes (None: saved by these).

    Each of M processes reads every M-th piece of one global stream (`data.pipeline._train_stream`),
    so after `step` steps each has read step * B / M examples, and all their files agree. The
    same point of the stream on P processes is that count times M / P.
    """
    directory = epath.Path(self.manager.directory) / str(step) / "data"
    own = directory / f"process_{jax.process_index()}-of-{jax.process_count()}.json"
    saved = sorted(directory.glob("process_*-of-*.json")) if directory.exists() else []
    if own.exists() or not saved:
      return None
    saved_by = int(saved[0].name.rsplit("-of-", 1)[1].removesuffix(".json"))
    states = [json.loads(path.read_text()) for path in saved]
    read = states[0].get("next_index") if set(states[0]) == {"next_index"} else None
    if read is None or any(state != states[0] for state in states) or read * saved_by % jax.process_count():
      raise LeukojaxError(
          f"{directory} ({', '.join(p.name for p in saved)}) holds no common position of the training stream "
          f"to continue on {jax.process_count()} process(es): resume this checkpoint on the {saved_by} "
          "process(es) that saved it (with data.num_workers as then).")
    logging.warning("Checkpoint step %d was saved by %d process(es); resuming it on %d process(es) at the "
                    "same point of the training stream.", step, saved_by, jax.process_count())
    return {"next_index": read * saved_by // jax.process_count()}

  def restore_variables(self, step: int, abstract_variables: Any) -> Any:
    """Only the parameters and model state of `step` (Orbax partial restore), onto the shardings of
    `abstract_variables` (`state.ModelVariables`): evaluation never reads the optimiser's moments."""
    path = epath.Path(self.manager.directory) / str(step) / "state"
    if not path.exists():
      raise FileNotFoundError(f"{path} does not exist: step {step} has no saved state.")
    target = {"params": abstract_variables.params, "model_state": abstract_variables.model_state}
    restored = ocp.PyTreeCheckpointer().restore(path, args=ocp.args.PyTreeRestore(
        item=target, restore_args=ocp.checkpoint_utils.construct_restore_args(target), partial_restore=True))
    logging.info("Restored the parameters and model state of step %d from %s.", step, self.manager.directory)
    return abstract_variables.replace(params=restored["params"], model_state=restored["model_state"])

  def wait(self) -> None:
    self.manager.wait_until_finished()

  def close(self) -> None:
    self.manager.wait_until_finished()
    self.manager.close()


def abstract_like(state: Any, shardings: Any) -> Any:
  """ShapeDtypeStructs carrying the target shardings, the restore target Orbax reshards onto."""
  return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), state, shardings)
