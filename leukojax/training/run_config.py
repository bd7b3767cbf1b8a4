"""A workdir's config: checked before any work, compared on every rerun, never lost to a failed run.

A rerun on a workdir with checkpoints resumes it, so the requested config must be the one the
checkpoints were trained under. Fields that say where things are (`data.data_dir`,
`data.manual_dir`) may differ freely; a few fields are safe to resume under when asked for
(`--allow_config_change`), because they change how long or how visibly the run goes on, not what
the state means; every other change is refused, naming each field, before anything is written.
An accepted change is recorded in `config_history.jsonl`, and `config.json` takes the new values
only once the run has finished.
"""

from __future__ import annotations

import datetime
import json
import os
from collections.abc import Mapping, Sequence
from typing import Any

import ml_collections

from leukojax.errors import ConfigError

STORED = "config.json"
HISTORY = "config_history.jsonl"
# Where the data lives, not what it is; host memory for prepared images (the stream is the same);
# whether the end of training writes the report (the trained state is the same).
FREE_FIELDS = ("data.data_dir", "data.manual_dir", "data.cache_prepared_mb", "eval.final_report")
RESUMABLE_FIELDS = (  # safe to resume under, with --allow_config_change
    "train.epochs", "train.log_every_steps", "train.checkpoint_every_steps", "eval.batch_size",
    "eval.tta", "eval.bootstrap_resamples", "eval.bootstrap_seed", "eval.confidence", "eval.threshold_criterion")

# Fields added after workdirs existed: absent from an older config.json means this value.
ADDED_FIELDS: dict[str, Any] = {"model.pretrained.custom_weights": False,
                                 **{f"model.pretrained.paths.efficientnet_lite{i}": "" for i in range(3)}}


class ConfigChangeError(ConfigError):
  """A rerun asks for a config its workdir's checkpoints were not trained under."""


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
  """{'train.epochs': 3, ...}; lists and tuples compare as lists (JSON has no tuples)."""
  flat: dict[str, Any] = {}
  for key, value in tree.items():
    name = f"{prefix}{key}"
    if isinstance(value, Mapping):
      flat.update(flatten(value, f"{name}."))
    else:
      flat[name] = list(value) if isinstance(value, tuple) else value
  return flat


def as_record(config: ml_collections.ConfigDict) -> dict[str, Any]:
  return json.loads(config.to_json_best_effort())


def read_stored(workdir: str) -> dict[str, Any] | None:
  path = os.path.join(workdir, STORED)
  if not os.path.exists(path):
    return None
  try:
    with open(path) as f:
      return json.load(f)
  except json.JSONDecodeError as error:
    raise ConfigError(f"{path} is not valid JSON ({error}); it was edited or truncated. Restore it, or "
                      "train into a new --workdir.") from None


def differences(stored: Mapping[str, Any], requested: Mapping[str, Any]) -> dict[str, tuple[Any, Any]]:
  """field -> (stored, requested) for every field that differs, the run's runtime record aside."""
  old = ADDED_FIELDS | flatten({k: v for k, v in stored.items() if k != "runtime"})
  new = ADDED_FIELDS | flatten({k: v for k, v in requested.items() if k != "runtime"})
  missing = object()
  return {k: (old.get(k, missing), new.get(k, missing)) for k in sorted(old.keys() | new.keys())
          if old.get(k, missing) != new.get(k, missing) and k not in FREE_FIELDS}


def _show(value: Any) -> str:
  return "(absent)" if value.__class__ is object else json.dumps(value)


def check_rerun(stored: Mapping[str, Any] | None, requested: Mapping[str, Any], *, workdir: str,
                has_checkpoints: bool, allow: Sequence[str] = ()) -> dict[str, tuple[Any, Any]]:
  """The accepted changes (empty for a fresh workdir or the same config); raises on any other."""
  unknown = sorted(set(allow) - set(RESUMABLE_FIELDS))
  if unknown:
    raise ConfigError(f"--allow_config_change={','.join(unknown)}: only {', '.join(RESUMABLE_FIELDS)} "
                      "can change on a resumed run.")
  if stored is None or not has_checkpoints:
    return {}
  changes = differences(stored, requested)
  refused = {k: v for k, v in changes.items() if k not in allow}
  if refused:
    lines = [f"  {k}: {_show(old)} -> {_show(new)}" for k, (old, new) in refused.items()]
    resumable = [k for k in refused if k in RESUMABLE_FIELDS]
    hint = (f" To resume under the new {', '.join(resumable)}, add --allow_config_change={','.join(resumable)}."
            if resumable and len(resumable) == len(refused) else "")
    raise ConfigChangeError(
        f"{workdir} holds checkpoints trained under another config ({os.path.join(workdir, STORED)}); "
        f"this run asks for:\n" + "\n".join(lines) + f"\nNothing was changed.{hint} To train with this config, "
        "give a new --workdir (or delete this one's checkpoints/).")
  return changes


def record_changes(workdir: str, changes: Mapping[str, tuple[Any, Any]]) -> None:
  """Appends the accepted changes to config_history.jsonl (process 0 only, as config.json)."""
  entry = {"time": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
           "changes": {k: [old, new] for k, (old, new) in changes.items()}}
  with open(os.path.join(workdir, HISTORY), "a") as f:
    f.write(json.dumps(entry) + "\n")
