"""The optax optimiser: Adam/AdamW, warmup + cosine, clipping, freeze-then-fine-tune, accumulation.

Backbone and head parameters get separate optimisers through `optax.multi_transform`. With
`freeze_backbone_epochs`, the backbone's optimiser sits inside `optax.conditionally_mask`: while
frozen its updates are zero and its state (Adam's step count and moments) is left untouched, so at
the unfreeze it starts as a fresh Adam, bias correction included, on a schedule that starts there
(the train step does not even compute backbone gradients while frozen). It then trains at
`backbone_lr_ratio` times the head's rate.
"""

from __future__ import annotations

import dataclasses

import jax
import ml_collections
import optax

BACKBONE_ROOTS = ("backbone", "backbones")


@dataclasses.dataclass(frozen=True)
class Schedule:
  """Step counts of a run, in train steps (one global batch each)."""
  steps_per_epoch: int
  total_steps: int
  warmup_steps: int
  freeze_steps: int
  accum_steps: int


def make_schedule(train_config: ml_collections.ConfigDict, steps_per_epoch: int) -> Schedule:
  return Schedule(
      steps_per_epoch=steps_per_epoch,
      total_steps=int(train_config.epochs * steps_per_epoch),
      warmup_steps=int(train_config.warmup_epochs * steps_per_epoch),
      freeze_steps=int(train_config.freeze_backbone_epochs * steps_per_epoch),
      accum_steps=int(train_config.grad_accum_steps))


def param_labels(params) -> object:
  """'backbone' for pretrained parameters, 'head' for the rest, by their path in the model."""
  def label(path, _):
    return "backbone" if getattr(path[0], "key", None) in BACKBONE_ROOTS else "head"
  return jax.tree_util.tree_map_with_path(label, params)


def _warmup_cosine(peak: float, warmup: int, total: int, cosine: bool) -> optax.Schedule:
  warmup = min(warmup, max(total - 1, 0))
  if not cosine:
    return optax.join_schedules([optax.linear_schedule(0.0, peak, max(warmup, 1)),
                                 optax.constant_schedule(peak)], [warmup]) if warmup else (
                                     optax.constant_schedule(peak))
  return optax.warmup_cosine_decay_schedule(0.0 if warmup else peak, peak, warmup, max(total, 1))


def learning_rates(train_config: ml_collections.ConfigDict, schedule: Schedule):
  """(head schedule, backbone schedule), both over optimiser updates (train steps / accumulation).

  The backbone's is 0 while frozen; its optimiser (`make_optimizer`) sees the schedule from the
  unfreeze on (`backbone_after_freeze`), which this one shifts to the run's update count for logging.
  """
  k = schedule.accum_steps
  total, warmup, freeze = schedule.total_steps // k, schedule.warmup_steps // k, schedule.freeze_steps // k
  cosine = train_config.schedule == "cosine"
  lr = train_config.learning_rate
  head = _warmup_cosine(lr, warmup, total, cosine)
  if freeze <= 0:
    return head, _warmup_cosine(lr * train_config.backbone_lr_ratio, warmup, total, cosine)
  after = backbone_after_freeze(train_config, schedule)
  return head, optax.join_schedules([optax.constant_schedule(0.0), after], [freeze])


def backbone_after_freeze(train_config: ml_collections.ConfigDict, schedule: Schedule) -> optax.Schedule:
  """The backbone's schedule counted from its first update after the unfreeze."""
  k = schedule.accum_steps
  total, warmup, freeze = schedule.total_steps // k, schedule.warmup_steps // k, schedule.freeze_steps // k
  return _warmup_cosine(train_config.learning_rate * train_config.backbone_lr_ratio, warmup, total - freeze,
                        train_config.schedule == "cosine")


def _base(name: str, schedule: optax.Schedule, weight_decay: float) -> optax.GradientTransformation:
  if name == "adam":
    return optax.adam(schedule)
  if name == "adamw":
    return optax.adamw(schedule, weight_decay=weight_decay)
  if name == "sgd":
    return optax.sgd(schedule, momentum=0.9)
  raise ValueError(f"Unknown optimizer {name!r}; use adam, adamw or sgd.")


def make_optimizer(train_config: ml_collections.ConfigDict, schedule: Schedule) -> optax.GradientTransformation:
  head_lr, backbone_lr = learning_rates(train_config, schedule)
  freeze_updates = schedule.freeze_steps // schedule.accum_steps
  if freeze_updates > 0:
    backbone = optax.conditionally_mask(
        _base(train_config.optimizer, backbone_after_freeze(train_config, schedule), train_config.weight_decay),
        lambda update: update >= freeze_updates)
  else:
    backbone = _base(train_config.optimizer, backbone_lr, train_config.weight_decay)
  parts = []
  if train_config.grad_clip_norm:
    parts.append(optax.clip_by_global_norm(train_config.grad_clip_norm))
  parts.append(optax.multi_transform(
      {"head": _base(train_config.optimizer, head_lr, train_config.weight_decay), "backbone": backbone},
      param_labels))
  tx = optax.chain(*parts)
  if schedule.accum_steps > 1:
    tx = optax.MultiSteps(tx, every_k_schedule=schedule.accum_steps)
  return tx
