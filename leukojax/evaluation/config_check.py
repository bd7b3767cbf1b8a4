"""The whole config checked before any work: no dataset is built, no file written, for a bad one.

Each part is checked by the code that will use it (the data pipeline's field check, the task
views, the optimiser, an abstract build of the model), so the check cannot drift from what a run
needs; a failure becomes one `ConfigError` naming the field.
"""

from __future__ import annotations

import ml_collections

from leukojax.errors import ConfigError


def check_config(config: ml_collections.ConfigDict) -> None:
  """Raises `ConfigError` for a config a run would fail on later (after minutes of work)."""
  from flax import nnx

  from leukojax.data.pipeline import check_data_config
  from leukojax.data.views import get_view
  from leukojax.models import MIN_INPUT_SIZE, factory
  from leukojax.training import optimizer
  from leukojax.training.state import build_model

  try:
    check_data_config(config.data)
    view = get_view(config.data.dataset, config.data.task)
  except ValueError as error:
    raise ConfigError(f"{error} (config.data)") from None
  model = config.model
  dtype = model.get("dtype", "float32")
  if dtype not in factory.DTYPES:
    raise ConfigError(f"model.dtype={dtype!r}: expected one of {sorted(factory.DTYPES)} (parameters stay float32).")
  names = tuple(model.backbones) if model.name == "hybrid" else (model.name,)
  unknown = [n for n in names if n not in MIN_INPUT_SIZE]
  if unknown:
    where = "model.backbones" if model.name == "hybrid" else "model.name"
    raise ConfigError(f"{where}: unknown model {', '.join(map(repr, unknown))}; expected 'hybrid' or one of "
                      f"{sorted(MIN_INPUT_SIZE)}.")
  smallest = max(MIN_INPUT_SIZE[n] for n in names)
  if config.data.image_size < smallest:
    raise ConfigError(f"data.image_size={config.data.image_size} is below {smallest}, the smallest input "
                      f"{'/'.join(names)} accept{'s' if len(names) == 1 else ''}.")
  divisor = model.get("backbone_width_divisor", 1)
  if divisor != 1 and (model.name != "hybrid" or model.pretrained.enabled):
    raise ConfigError(f"model.backbone_width_divisor={divisor} narrows the hybrid's backbones from scratch only: "
                      "no ImageNet weight file fits a narrowed backbone, and the baselines have no divisor "
                      "(set it to 1).")
  metrics = validation_metrics(view.num_classes)
  if config.train.best_metric not in metrics:
    raise ConfigError(f"train.best_metric={config.train.best_metric!r}: expected one of {sorted(metrics)}.")
  try:
    optimizer.make_optimizer(config.train, optimizer.make_schedule(config.train, steps_per_epoch=100))
  except (ValueError, KeyError) as error:
    raise ConfigError(f"{error} (config.train)") from None
  try:
    nnx.eval_shape(lambda: build_model(config, view.num_classes))  # shapes only: seconds, no weights
  except (ValueError, KeyError, TypeError) as error:
    raise ConfigError(f"config.model cannot be built: {error}") from None


def validation_metrics(num_classes: int) -> set[str]:
  """The scalars every validation pass reports for this many classes (what `best_metric` can rank)."""
  import numpy as np

  from leukojax.evaluation import metrics

  labels = np.arange(2 * num_classes) % num_classes
  if num_classes == 2:
    scalars = metrics.binary_metrics(labels, np.array([0.2, 0.8, 0.4, 0.6]))
  else:
    probs = np.eye(num_classes)[labels] * 0.5 + 0.5 / num_classes
    scalars = metrics.multiclass_metrics(labels, probs, tuple(map(str, range(num_classes))))
  return {"loss", *(k for k, v in scalars.items() if isinstance(v, (int, float)))}
