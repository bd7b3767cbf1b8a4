"""The Keras 3 references: `keras.applications` backbones with LeukoJAX's heads, and the hybrid.

The benchmark compares like with like, so these models are built to do the same arithmetic as
`leukojax.models` (checked by comparing XLA's FLOP counts of the two train steps, see train_step.py):

* baselines: backbone without top -> GlobalAveragePooling2D -> ReLU Dense layers of
  `classifier.PAPER_HEADS` -> Dense(num_outputs) logits;
* hybrid: the three applications see one input, each through its own ImageNet mode; the taps of
  `hybrid.HYBRID_TAPS` (by Keras layer: VGG16 `block1_pool`/`block3_pool`, InceptionV3 the second
  MaxPooling2D (`max_pooling2d_1`)/`mixed5`, Xception the first and third `Add`) and the final maps
  are max-pooled to one grid with the same adaptive windows, then 1x1 convolutions, concatenations,
  3x3/2 max pooling, dense layers, as `HybridCNN`.

Unavoidable differences: Keras has no adaptive max pooling layer, so `AdaptiveMaxPool` is a small
custom layer with `keras.ops` (the same slices and maxima); the ImageNet modes are a custom layer
too. Kernel initialisers differ (glorot vs lecun in some heads), which changes no timing.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import keras
import numpy as np

from leukojax.models.backbones import PREPROCESSING_MODE
from leukojax.models.classifier import PAPER_HEADS
from leukojax.models.hybrid import HYBRID_TAPS
from leukojax.models.preprocessing import CAFFE_MEAN_BGR

APPLICATIONS = {
    "vgg16": "VGG16", "vgg19": "VGG19", "inception_v3": "InceptionV3", "xception": "Xception",
    "resnet50": "ResNet50", "mobilenet": "MobileNet",
}
# Session-numbered Keras layers, found by position (as tests/test_backbones.py does).
_NTH_TAPS = {
    ("inception_v3", "stem_pool2"): (keras.layers.MaxPooling2D, 1),  # Keras max_pooling2d_1
    ("xception", "entry_stride4"): (keras.layers.Add, 0),  # Keras add
    ("xception", "entry_stride16"): (keras.layers.Add, 2),  # Keras add_2
}  # every other tap (VGG16, InceptionV3's mixed5, ALLNet's ResNet50) is a stable Keras layer name


@keras.saving.register_keras_serializable("leukojax_bench")
class ImagenetMode(keras.layers.Layer):
  """Keras `preprocess_input` as a layer: `caffe` (BGR, minus the ImageNet mean) or `tf` ([-1, 1])."""

  def __init__(self, mode: str, **kwargs):
    super().__init__(**kwargs)
    if mode not in ("caffe", "tf"):
      raise ValueError(f"Unsupported mode {mode!r}.")
    self.mode = mode

  def call(self, x):
    if self.mode == "caffe":
      return keras.ops.flip(x, axis=-1) - keras.ops.convert_to_tensor(np.asarray(CAFFE_MEAN_BGR), x.dtype)
    return x / 127.5 - 1.0

  def get_config(self):
    return {**super().get_config(), "mode": self.mode}


@keras.saving.register_keras_serializable("leukojax_bench")
class AdaptiveMaxPool(keras.layers.Layer):
  """PyTorch-style adaptive max pooling to `grid x grid`, the windows of `hybrid.adaptive_max_pool`."""

  def __init__(self, grid: int, **kwargs):
    super().__init__(**kwargs)
    self.grid = int(grid)

  def _pool_axis(self, x, axis: int):
    size = x.shape[axis]
    if size == self.grid:
      return x
    cells = []
    for i in range(self.grid):
      start, stop = (i * size) // self.grid, math.ceil((i + 1) * size / self.grid)
      window = x[:, start:stop] if axis == 1 else x[:, :, start:stop]
      cells.append(keras.ops.max(window, axis=axis, keepdims=True))
    return keras.ops.concatenate(cells, axis=axis)

  def call(self, x):
    return self._pool_axis(self._pool_axis(x, 1), 2)

  def compute_output_shape(self, input_shape):
    return (input_shape[0], self.grid, self.grid, input_shape[3])

  def get_config(self):
    return {**super().get_config(), "grid": self.grid}


def application(name: str, image_size: int) -> keras.Model:
  """A `keras.applications` backbone without top and without weights (the timing needs none)."""
  return getattr(keras.applications, APPLICATIONS[name])(
      weights=None, include_top=False, input_shape=(image_size, image_size, 3))


def tap_layer(name: str, model: keras.Model, tap: str) -> keras.layers.Layer:
  nth = _NTH_TAPS.get((name, tap))
  if nth is None:
    return model.get_layer(tap)
  kind, index = nth
  return [layer for layer in model.layers if isinstance(layer, kind)][index]


def build_classifier(name: str, image_size: int, num_outputs: int,
                     head_widths: Sequence[int] | None = None) -> keras.Model:
  """The single-backbone baseline: application -> GAP -> ReLU dense head -> logits (float32)."""
  widths = PAPER_HEADS[name] if head_widths is None else tuple(head_widths)
  inputs = keras.Input((image_size, image_size, 3))
  y = keras.layers.GlobalAveragePooling2D()(application(name, image_size)(inputs))
  for width in widths:
    y = keras.layers.Dense(width, activation="relu")(y)
  logits = keras.layers.Dense(num_outputs, dtype="float32")(y)
  return keras.Model(inputs, logits, name=f"{name}_classifier")


def build_hybrid(image_size: int, num_outputs: int, *, backbone_names: Sequence[str], tap_width: int,
                 fuse_widths: Sequence[int], post_pool_width: int, dense_widths: Sequence[int]) -> keras.Model:
  """`HybridCNN` in the Keras functional API; takes RGB pixels in [0, 255] like the LeukoJAX model."""
  inputs = keras.Input((image_size, image_size, 3))
  taps, finals = [], []
  for name in backbone_names:
    app = application(name, image_size)
    outputs = [tap_layer(name, app, tap).output for tap in HYBRID_TAPS[name]] + [app.output]
    branch = keras.Model(app.inputs, outputs, name=f"{name}_branch")
    *branch_taps, final = branch(ImagenetMode(PREPROCESSING_MODE[name])(inputs))
    taps += branch_taps
    finals.append(final)
  grid = min(int(f.shape[1]) for f in finals)
  concat1 = keras.layers.Concatenate()([
      keras.layers.Conv2D(tap_width, 1, activation="relu")(AdaptiveMaxPool(grid)(t)) for t in taps])
  fused = keras.layers.Conv2D(fuse_widths[1], 1, activation="relu")(
      keras.layers.Conv2D(fuse_widths[0], 1, activation="relu")(concat1))
  concat2 = keras.layers.Concatenate()([AdaptiveMaxPool(grid)(f) for f in finals])
  concat3 = keras.layers.Concatenate()([fused, concat2])
  y = keras.layers.MaxPooling2D(3, 2, padding="same")(concat3)
  y = keras.layers.Flatten()(keras.layers.Conv2D(post_pool_width, 1, activation="relu")(y))
  for width in dense_widths:
    y = keras.layers.Dense(width, activation="relu")(y)
  logits = keras.layers.Dense(num_outputs, dtype="float32")(y)
  return keras.Model(inputs, logits, name="hybrid")


def build(model_config, image_size: int, num_outputs: int, *, dtype: str, seed: int = 0) -> keras.Model:
  """The Keras twin of `factory.create_model(model_config, ...)`, compute in `dtype`.

  bfloat16 uses Keras's `mixed_bfloat16` policy: float32 variables, bfloat16 compute, the same
  split as LeukoJAX's `model.dtype='bfloat16'`.
  """
  keras.backend.clear_session()
  keras.utils.set_random_seed(seed)
  previous = keras.config.dtype_policy()
  keras.config.set_dtype_policy("mixed_bfloat16" if dtype == "bfloat16" else "float32")
  try:
    if model_config.name == "hybrid":
      return build_hybrid(image_size, num_outputs, backbone_names=tuple(model_config.backbones),
                          tap_width=model_config.tap_width, fuse_widths=tuple(model_config.fuse_widths),
                          post_pool_width=model_config.post_pool_width,
                          dense_widths=tuple(model_config.dense_widths))
    head = model_config.get("head_widths", None)
    return build_classifier(model_config.name, image_size, num_outputs, head)
  finally:
    keras.config.set_dtype_policy(previous)


def compile_like_leukojax(model: keras.Model, train_config, total_steps: int, num_outputs: int) -> None:
  """Adam with LeukoJAX's warmup + cosine schedule and global-norm clipping; logits losses.

  Metrics mirror what LeukoJAX's step returns (loss, accuracy); `jit_compile` is Keras's default
  on the JAX backend (one jitted stateless train step, state donated).
  """
  warmup = max(1, int(train_config.warmup_epochs * max(total_steps // max(train_config.epochs, 1), 1)))
  schedule = keras.optimizers.schedules.CosineDecay(
      0.0, decay_steps=max(total_steps - warmup, 1), warmup_target=train_config.learning_rate,
      warmup_steps=warmup)
  optimizer = keras.optimizers.Adam(schedule, global_clipnorm=train_config.grad_clip_norm or None)
  if num_outputs == 1:
    loss = keras.losses.BinaryCrossentropy(from_logits=True)
    metric = keras.metrics.BinaryAccuracy(threshold=0.0)  # logits: 0 is probability 0.5
  else:
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    metric = keras.metrics.SparseCategoricalAccuracy()
  model.compile(optimizer=optimizer, loss=loss, metrics=[metric], jit_compile=True)
