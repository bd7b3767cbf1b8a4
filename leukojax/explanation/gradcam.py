"""Grad-CAM (Selvaraju et al., 2017) for LeukoJAX classifiers, one map per backbone.

For a layer with activation `A [h, w, C]` and the target class score `y` (the class's logit; for a
single sigmoid output, the logit for the positive class and minus the logit for the negative one),
the map is `ReLU(sum_k alpha_k A[..., k])` with `alpha_k = mean_ij dy/dA[i, j, k]`.

The layer is configurable per backbone:

* `final` (the default): the backbone's last feature map, the classic Grad-CAM choice. The gradient
  is taken directly through the head (`BackboneClassifier.head_logits`, `HybridCNN.fuse`), which
  works for every backbone.
* a tap name (`model.backbone.tap_names`): the gradient w.r.t. a zero offset added at that tap
  (`leukojax.models.layers.intercept_taps`). A tap that a backbone records beside its main path
  (taps recorded inside a block: MobileNet's `conv_dw_*_relu`, ResNet50's `*_add`) never
  reaches the output this way; that is detected on the first image and reported as an error naming
  the taps that work, rather than returning an empty map.

For the hybrid, each branch's map is taken w.r.t. the same fused output, and `combine` sums them on
one scale (see its docstring).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import jax
import jax.extend.core as jex_core
import jax.numpy as jnp
import numpy as np
from absl import logging
from flax import nnx

from leukojax.errors import LeukojaxError
from leukojax.models import layers as layers_lib
from leukojax.models import outputs
from leukojax.models.classifier import BackboneClassifier
from leukojax.models.hybrid import HybridCNN

FINAL = "final"
# What `final` is, per backbone (the tap equal to the last feature map), for titles and docs.
FINAL_TAP: dict[str, str] = {
    "vgg16": "block5_pool",
    "vgg19": "block5_pool",
    "inception_v3": "mixed10",
    "xception": "block14_sepconv2_act",
    "resnet50": "conv5_block3_out",
    "mobilenet": "conv_pw_13_relu",
    "efficientnet_lite0": "head",
    "efficientnet_lite1": "head",
    "efficientnet_lite2": "head",
}

# Finer taps on each backbone's main path, for small inputs where the final map has a few cells
# (at 75 px: VGG16 2x2, InceptionV3 1x1, Xception 3x3); each is 7x7 or more at 75 px.
SMALL_INPUT_LAYERS: dict[str, str] = {
    "vgg16": "block4_conv3",
    "vgg19": "block4_conv4",
    "inception_v3": "mixed2",
    "xception": "entry_stride8",
    "resnet50": "pool1_pool",
    "mobilenet": "conv1_relu",
    "efficientnet_lite0": "block2",  # 56x56 at 224 px, 19x19 at 75
    "efficientnet_lite1": "block3",  # the same stride-4 stage's last block
    "efficientnet_lite2": "block3",
}
COARSE_CELLS = 4  # a map with fewer cells than this on a side can hardly localise anything


class GradCAMLayerError(LeukojaxError, ValueError):
  """A requested Grad-CAM layer does not exist or does not reach the model's output."""


def is_fused(model: nnx.Module) -> bool:
  """A multi-backbone model with `HybridCNN`'s interface (`branch_features`, `fuse`)."""
  return all(hasattr(model, a) for a in ("branch_features", "fuse", "backbones", "backbone_names"))


def backbones_of(model: nnx.Module) -> dict[str, layers_lib.Backbone]:
  """The backbones of a classifier by name, in the model's order.

  Any module with `HybridCNN`'s or `BackboneClassifier`'s interface works (`features` + `head_logits`,
  `backbone`, `backbone_name`), which is how the tests explain small models of known behaviour.
  """
  if is_fused(model):
    return {name: model.backbones[name] for name in model.backbone_names}
  if all(hasattr(model, a) for a in ("features", "head_logits", "backbone", "backbone_name")):
    return {model.backbone_name: model.backbone}
  raise TypeError(f"Grad-CAM needs the interface of {HybridCNN.__name__} or {BackboneClassifier.__name__}; "
                  f"{type(model).__name__} has neither.")


def resolve_layers(model: nnx.Module, requested: Mapping[str, str] | None = None) -> dict[str, str]:
  """`{backbone: 'final' or tap}` for every backbone; `requested` overrides the default `final`.

  A key may be `''` for a single-backbone model (so `--layer conv_pw_5_relu` works without naming it).
  """
  backbones = backbones_of(model)
  chosen = {name: FINAL for name in backbones}
  for key, tap in (requested or {}).items():
    name = key or (next(iter(backbones)) if len(backbones) == 1 else "")
    if name not in backbones:
      raise GradCAMLayerError(f"Grad-CAM layer for {key!r}: the model's backbones are {list(backbones)}; "
                              "write BACKBONE=TAP (e.g. xception=entry_stride8).")
    if tap != FINAL and tap != FINAL_TAP.get(name) and tap not in backbones[name].tap_names:
      raise GradCAMLayerError(f"Grad-CAM layer {tap!r} is not a tap of {name}; use 'final' or one of "
                              f"{list(backbones[name].tap_names)}.")
    chosen[name] = FINAL if tap == FINAL_TAP.get(name) else tap
  return chosen


def target_score(logits: jax.Array, target: jax.Array) -> jax.Array:
  """The score Grad-CAM differentiates: the class logit (one sigmoid unit: +logit or -logit)."""
  if logits.shape[-1] == 1:
    return jnp.where(target == 1, logits[0], -logits[0])
  return logits[target]


def combine(upsampled: Mapping[str, np.ndarray], grids: Mapping[str, tuple[int, int]]) -> np.ndarray:
  """Sums branch maps after scaling each by its cells per pixel, `h*w / (H*W)`.

  Why that scale: for a backbone followed by global average pooling and a linear layer, the cells
  of its (pre-ReLU) Grad-CAM map sum exactly to its contribution to the logit, whatever its grid.
  Scaled this way, each upsampled map's pixels sum to its cells' sum, so maps of different grids
  (the hybrid's 2x2, 1x1 and 3x3 at 75 px) add on one scale, weighted by how much each branch's
  features move the score, instead of each being normalised to its own maximum.
  """
  total = None
  for name, up in upsampled.items():
    h, w = grids[name]
    scaled = up * (h * w) / float(up.shape[0] * up.shape[1])
    total = scaled if total is None else total + scaled
  return total


@dataclasses.dataclass
class GradCAMResult:
  logits: np.ndarray  # [num_outputs]
  predicted: int
  target: int
  maps: dict[str, np.ndarray]  # per backbone, on its layer's grid [h, w]
  upsampled: dict[str, np.ndarray]  # per backbone, bilinearly resized to the input [H, W]
  combined: np.ndarray  # [H, W] (`combine`; a single backbone: its map on that scale)
  layers: dict[str, str]  # backbone -> tap name actually used


class GradCAM:
  """Grad-CAM maps of one model, all backbones in one jitted call per image (batch 1, fixed shape)."""

  def __init__(self, model: nnx.Module, layers: Mapping[str, str] | None = None):
    self.layers = resolve_layers(model, layers)
    self.backbone_names = tuple(backbones_of(model))
    self._hybrid = is_fused(model)
    self._graphdef, self._state = nnx.split(model)
    self._fn = jax.jit(self._maps)
    self._offsets: dict[tuple[int, ...], dict[str, jax.Array]] = {}
    self.num_classes = 0  # known after the first image

  def layer_names(self) -> dict[str, str]:
    """Backbone -> the tap name used (`final` spelt out)."""
    return {b: FINAL_TAP.get(b, FINAL) if t == FINAL else t for b, t in self.layers.items()}

  def _forward(self, model: nnx.Module, x: jax.Array, offsets: Mapping[str, jax.Array]):
    """Logits and the explained activation per backbone, with `offsets[backbone]` added to it."""
    at_taps = {f"{b}/{t}": offsets[b] for b, t in self.layers.items() if t != FINAL}
    with layers_lib.intercept_taps(at_taps) as seen:
      if self._hybrid:
        finals, taps = model.branch_features(x)
      else:
        finals, taps = {self.backbone_names[0]: model.features(x)[0]}, None
    finals = {b: f + offsets[b].astype(f.dtype) if self.layers[b] == FINAL else f
              for b, f in finals.items()}
    if self._hybrid:
      logits = model.fuse(finals, taps)
    else:
      logits = model.head_logits(finals[self.backbone_names[0]])
    acts = {b: finals[b] if t == FINAL else seen[f"{b}/{t}"] for b, t in self.layers.items()}
    return logits, acts

  def _maps(self, state, x: jax.Array, requested_target: jax.Array, offsets: Mapping[str, jax.Array]):
    model = nnx.merge(self._graphdef, state)

    def score(offsets):
      logits, acts = self._forward(model, x, offsets)
      predicted = outputs.decide(outputs.probabilities(logits))[0]
      target = jnp.where(requested_target >= 0, requested_target, predicted)
      return target_score(logits[0], target), (logits[0], target, acts)

    grads, (logits, target, acts) = jax.grad(score, has_aux=True)(offsets)
    maps, upsampled = {}, {}
    for b in self.layers:
      a, g = acts[b][0].astype(jnp.float32), grads[b][0].astype(jnp.float32)
      alpha = jnp.mean(g, axis=(0, 1))
      maps[b] = jax.nn.relu(jnp.einsum("hwc,c->hw", a, alpha))
      upsampled[b] = jax.image.resize(maps[b], x.shape[1:3], method="linear")
    return logits, target, maps, upsampled

  def _zero_offsets(self, x: jax.Array) -> dict[str, jax.Array]:
    """Zero offsets shaped like each explained activation (found abstractly, once per input shape)."""
    if x.shape not in self._offsets:
      def shapes(state, x):
        return self._forward(nnx.merge(self._graphdef, state), x, {b: jnp.zeros(()) for b in self.layers})

      logits, acts = jax.eval_shape(shapes, self._state, x)
      self.num_classes = max(2, logits.shape[-1])  # one sigmoid unit: two classes
      for b, a in acts.items():
        if min(a.shape[1:3]) < COARSE_CELLS:
          logging.warning("Grad-CAM %s/%s is %dx%d at %dx%d px: too coarse to localise; a finer layer is, "
                          "e.g., --layer %s=%s.", b, self.layer_names()[b], a.shape[1], a.shape[2],
                          x.shape[1], x.shape[2], b, SMALL_INPUT_LAYERS.get(b, "TAP"))
      self._offsets[x.shape] = {b: jnp.zeros(a.shape, jnp.float32) for b, a in acts.items()}
      self._check_reaches_output(x, self._offsets[x.shape])
    return self._offsets[x.shape]

  def _check_reaches_output(self, x: jax.Array, zeros: dict[str, jax.Array]) -> None:
    """Fails if an offset tap is not an input of the logits' computation (a tap beside the main path).

    Structural, on the traced program (the jaxpr), not numeric: a model whose output barely depends
    on its input (a from-scratch run after a few steps) gives a flat map, not this error.
    """
    taps = sorted(b for b, t in self.layers.items() if t != FINAL)
    if not taps:
      return
    logits_of = lambda offsets: self._forward(nnx.merge(self._graphdef, self._state), x, offsets)[0]
    jaxpr = jax.make_jaxpr(logits_of)(zeros).jaxpr
    live = {v for v in jaxpr.outvars if isinstance(v, jex_core.Var)}
    for eqn in reversed(jaxpr.eqns):  # every input of an equation that feeds the output is live
      if any(v in live for v in eqn.outvars):
        live.update(v for v in eqn.invars if isinstance(v, jex_core.Var))
    invar_of = dict(zip(sorted(zeros), jaxpr.invars))  # a dict flattens in key order
    for b in taps:
      if invar_of[b] not in live:
        raise GradCAMLayerError(
            f"Grad-CAM layer {b}/{self.layers[b]} does not reach the output: {b} records this tap beside "
            "its main path, so its gradient is zero. Use 'final' or a tap on the main path (e.g. VGG "
            "block*_pool, InceptionV3 mixed*, Xception entry_stride*, MobileNet/ResNet50 conv1_relu).")

  def __call__(self, x: np.ndarray, target: int | None = None) -> GradCAMResult:
    """`x`: one preprocessed input `[1, H, W, 3]` (or `[H, W, 3]`); `target`: a class, else the predicted."""
    x = jnp.asarray(x, jnp.float32)
    if x.ndim == 3:
      x = x[None]
    if x.shape[0] != 1:
      raise ValueError(f"Grad-CAM explains one image at a time; got a batch of {x.shape[0]}.")
    zeros = self._zero_offsets(x)
    if target is not None and not 0 <= target < self.num_classes:
      raise ValueError(f"Grad-CAM target class {target} is not one of 0..{self.num_classes - 1}.")
    target = jnp.int32(-1 if target is None else target)
    logits, tgt, maps, upsampled = self._fn(self._state, x, target, zeros)
    # In the model's backbone order (jax returns dicts sorted by key).
    maps = {b: np.asarray(maps[b]) for b in self.layers}
    upsampled = {b: np.asarray(upsampled[b]) for b in self.layers}
    logits = np.asarray(logits)
    return GradCAMResult(
        logits=logits, predicted=int(np.asarray(outputs.decide(outputs.probabilities(jnp.asarray(logits)[None])))[0]), target=int(tgt),
        maps=maps, upsampled=upsampled,
        combined=combine(upsampled, {b: m.shape for b, m in maps.items()}),
        layers=self.layer_names())

  @property
  def compilations(self) -> int:
    """How many times the jitted map function was compiled (one per input shape)."""
    return self._fn._cache_size()  # pylint: disable=protected-access
