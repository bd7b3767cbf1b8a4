"""Import of the official Keras application weights (legacy HDF5) into the Flax backbone ports.

The official `keras.applications` downloads use the legacy HDF5 layout: a top-level attribute
`layer_names` and, per layer group, `weight_names` (`conv2d_17/kernel:0`, ...). Keras numbers some
layer names per session, so names cannot be trusted: Keras itself loads these files by the order of
the weighted layers, and so do we, through each backbone's explicit `keras_layers()` table (the
Keras file order of its sub-modules) and the shapes. Every source tensor is used, every target is
filled, and the model is updated only once everything has been checked (all or nothing).
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable, Sequence
from typing import Any

import h5py
import jax
import numpy as np
from flax import nnx

from leukojax.errors import LeukojaxError
from leukojax.models import layers

log = logging.getLogger(__name__)

Path = tuple[Any, ...]


class KerasWeightsError(LeukojaxError, ValueError):
  """A weight file (or converted checkpoint) that does not fit the model it is loaded into."""


def _attr_list(group: h5py.Group, name: str) -> list[str]:
  """Reads a (possibly chunked: `name0`, `name1`, ...) string-list attribute, bytes or str."""
  if name in group.attrs:
    raw = list(group.attrs[name])
  else:
    raw, chunk = [], 0
    while f"{name}{chunk}" in group.attrs:
      raw.extend(group.attrs[f"{name}{chunk}"])
      chunk += 1
  return [n.decode("utf8") if hasattr(n, "decode") else str(n) for n in raw]


def _weights_group(f: h5py.File, path: str) -> h5py.Group:
  """The group holding `layer_names`: the file root, or `model_weights` of a full-model file."""
  for group in (f, f.get("model_weights")):
    if group is not None and (_attr_list(group, "layer_names")):
      return group
  hint = " (this looks like a Keras 3 `.weights.h5` file)" if "layers" in f or "vars" in f else ""
  raise KerasWeightsError(
    f"{path}: no `layer_names` attribute at the root or in `model_weights`; not a legacy Keras "
    f"HDF5 weight file{hint}."
  )


FileLayer = tuple[str, list[tuple[str, h5py.Dataset]]]  # (layer name, [(weight name, dataset)])


def read_keras_layers(group: h5py.Group, path: str) -> list[FileLayer]:
  """The weighted layers of a legacy Keras weight group, in file order.

  Datasets are returned unread, so a no-top model never reads the (large) top of a with-top file.
  """
  out = []
  for name in _attr_list(group, "layer_names"):
    try:
      exists = name in group
    except (OSError, KeyError):
      exists = False
    if not exists:
      raise KerasWeightsError(
        f"{path}: layer {name!r} is listed but has no group (truncated file?)."
      )
    weight_names = _attr_list(group[name], "weight_names")
    if not weight_names:
      continue
    weights = []
    for weight_name in weight_names:
      dataset = group[name].get(weight_name)
      if not isinstance(dataset, h5py.Dataset):
        raise KerasWeightsError(
          f"{path}: layer {name!r} lists weight {weight_name!r} but the file has no such dataset "
          "(truncated or damaged file?)."
        )
      weights.append((weight_name, dataset))
    out.append((name, weights))
  return out


def _depthwise_to_flax(a: np.ndarray) -> np.ndarray:
  # (kh, kw, C, 1) -> (kh, kw, 1, C), the reshape Keras's own JAX backend does.
  return a.reshape(a.shape[:2] + (1, a.shape[2] * a.shape[3]))


def _identity(a: np.ndarray) -> np.ndarray:
  return a


Target = tuple[Path, tuple[int, ...], Callable[[np.ndarray], np.ndarray]]


def keras_targets(module: nnx.Module, path: Path) -> list[Target]:
  """`(state path, Keras shape, Keras->Flax transform)` of a module's variables, in Keras order.

  The legacy order is trainable weights then non-trainable ones: conv kernel, bias; BatchNorm gamma
  (absent when `scale=False`), beta, moving mean, moving variance; separable depthwise kernel,
  pointwise kernel, bias; dense kernel, bias.
  """

  def conv_targets(conv: nnx.Conv, prefix: Path) -> list[Target]:
    kernel = tuple(conv.kernel.get_value().shape)
    if conv.feature_group_count > 1:  # depthwise, multiplier 1
      out = [(prefix + ("kernel",), kernel[:2] + (kernel[3], 1), _depthwise_to_flax)]
    else:
      out = [(prefix + ("kernel",), kernel, _identity)]
    if conv.bias is not None:
      out.append((prefix + ("bias",), (conv.out_features,), _identity))
    return out

  if isinstance(module, layers.SeparableConv2D):
    return conv_targets(module.depthwise, path + ("depthwise",)) + conv_targets(
      module.pointwise, path + ("pointwise",)
    )
  if isinstance(module, nnx.Conv):
    return conv_targets(module, path)
  if isinstance(module, nnx.BatchNorm):
    names = (["scale"] if module.scale is not None else []) + ["bias", "mean", "var"]
    return [(path + (n,), (module.num_features,), _identity) for n in names]
  if isinstance(module, nnx.Linear):
    return [
      (path + ("kernel",), (module.in_features, module.out_features), _identity),
      (path + ("bias",), (module.out_features,), _identity),
    ]
  raise TypeError(f"No Keras weight mapping for {type(module).__name__} at {path_str(path)}.")


def get_submodule(model: nnx.Module, path: str) -> tuple[nnx.Module, Path]:
  """Resolves 'a/b/0/c' to the sub-module and its state path."""
  node: Any = model
  keys: list[Any] = []
  for part in path.split("/"):
    key: Any = int(part) if part.isdigit() else part
    node = node[key] if isinstance(key, int) else getattr(node, key)
    keys.append(key)
  return node, tuple(keys)


def path_str(path: Path) -> str:
  return "/".join(map(str, path))


def _matcher(dont_load: Sequence[str]) -> Callable[[Path], bool]:
  patterns = [re.compile(p) for p in dont_load]
  return lambda path: any(p.fullmatch(path_str(path)) for p in patterns)


def weight_variables(model: nnx.Module) -> dict[Path, nnx.Variable]:
  """Every parameter and BatchNorm statistic of the model, by state path."""
  return dict(nnx.to_flat_state(nnx.state(model, (nnx.Param, nnx.BatchStat))))


def apply_values(model: nnx.Module, values: dict[Path, np.ndarray]) -> None:
  """Writes checked host values into the model in one `nnx.update`, keeping dtypes and shardings."""
  variables = weight_variables(model)
  updates = []
  for path, value in values.items():
    variable = variables[path]
    old = variable.get_value()
    new = jax.device_put(np.asarray(value, dtype=old.dtype), old.sharding)
    updates.append((path, variable.replace(new)))
  nnx.update(model, nnx.from_flat_state(updates))


def check_complete(
  model: nnx.Module, values: dict[Path, Any], skip: Callable[[Path], bool], source: str
) -> None:
  """Every parameter and statistic must be filled unless `dont_load` keeps it initialised.

  A model built with `nnx.eval_shape` must be filled completely (RNG state included).
  """
  variables = weight_variables(model)
  missing = [path_str(p) for p in variables if p not in values and not skip(p)]
  # A model from nnx.eval_shape has no values yet: whatever is not loaded would stay abstract.
  abstract = [
    path_str(p)
    for p, v in nnx.to_flat_state(nnx.state(model))
    if p not in values and isinstance(v.get_value(), jax.ShapeDtypeStruct)
  ]
  if abstract and not missing:
    raise KerasWeightsError(
      f"{source}: the model is abstract (nnx.eval_shape) and {abstract[:4]} would get no values "
      "(kept by dont_load, or RNG state); build the model concretely."
    )
  if missing:
    raise KerasWeightsError(
      f"{source}: {len(missing)} model variable(s) would stay uninitialised: {missing[:8]}"
      f"{' ...' if len(missing) > 8 else ''}; add them to dont_load to keep them freshly "
      "initialised."
    )


def load_keras_weights(
  model: layers.Backbone, path: str | os.PathLike, *, dont_load: Sequence[str] = ()
) -> None:
  """Merges an official Keras HDF5 weight file into a freshly initialised backbone.

  A no-top model skips the top layers of a with-top file. `dont_load` holds regular expressions
  over variable paths (`predictions/kernel`, `predictions/.*`) that keep their initial values,
  e.g. a new head of another size (big_vision's `dont_load`); their source tensors are skipped
  unchecked. Raises `KerasWeightsError`, naming the layer and both shapes, and then leaves the
  model untouched.
  """
  path = os.fspath(path)
  skip = _matcher(dont_load)
  try:
    f = h5py.File(path, "r")
  except OSError as e:
    raise KerasWeightsError(
      f"{path}: cannot be read as HDF5 (truncated or not a weight file?): {e}"
    ) from e
  with f:
    file_layers = read_keras_layers(_weights_group(f, path), path)
    body = model.keras_layers()
    top = list(model.keras_top_layers)
    if len(file_layers) == len(body) + len(top):
      expected = body + top if model.include_top else body
      ignored = [] if model.include_top else [name for name, _ in file_layers[len(body) :]]
      if ignored:
        log.info("%s: no-top %s ignores the file's top layers %s.", path, model.name, ignored)
    elif len(file_layers) == len(body):
      expected = body
      if model.include_top:
        top_vars = [p for p in weight_variables(model) if p[0] in top]
        if not all(skip(p) for p in top_vars):
          raise KerasWeightsError(
            f"{path} has no classification top but the {model.name} model has one: load a "
            f"with-top file, build the model with include_top=False, or keep the head "
            f"initialised with dont_load=({', '.join(repr(t + '/.*') for t in top)})."
          )
    else:
      raise KerasWeightsError(
        f"{path} holds {len(file_layers)} weighted layers but {model.name} expects {len(body)} "
        f"(no top) or {len(body) + len(top)} (with top): a file of another architecture, or "
        f"truncated? First file layers: {[name for name, _ in file_layers[:4]]}."
      )

    values: dict[Path, np.ndarray] = {}
    for index, (module_path, (layer_name, weights)) in enumerate(zip(expected, file_layers)):
      module, state_path = get_submodule(model, module_path)
      targets = keras_targets(module, state_path)
      if len(weights) != len(targets):
        raise KerasWeightsError(
          f"{path}: weighted layer #{index} {layer_name!r} has {len(weights)} weights "
          f"{[w for w, _ in weights]} but {model.name} layer {module_path!r} "
          f"({type(module).__name__}) takes {len(targets)}: wrong architecture?"
        )
      for (weight_name, dataset), (target, keras_shape, to_flax) in zip(weights, targets):
        if skip(target):
          continue
        if tuple(dataset.shape) != keras_shape:
          raise KerasWeightsError(
            f"{path}: weight {weight_name!r} of layer #{index} {layer_name!r} has shape "
            f"{tuple(dataset.shape)} but {model.name} variable {path_str(target)!r} needs "
            f"{keras_shape} (Keras layout)."
          )
        try:
          values[target] = to_flax(np.asarray(dataset))
        except (OSError, KeyError) as e:
          raise KerasWeightsError(
            f"{path}: cannot read {weight_name!r} of layer {layer_name!r} (truncated file?): {e}"
          ) from e
  check_complete(model, values, skip, path)
  apply_values(model, values)
  log.info("Loaded %d arrays from %s into %s.", len(values), path, model.name)
