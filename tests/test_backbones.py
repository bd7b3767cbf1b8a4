"""Parity of the Flax backbone ports with `keras.applications`, through legacy HDF5 weight files.

Each Keras model (JAX backend, `weights=None`) gets random weights, random BatchNorm statistics and
random biases, is saved in the legacy HDF5 layout of the official downloads (with and without its
top), is imported into the Flax port, and both are compared on fixed inputs: the output and every
named tap, within 1e-4 max abs. `-s` prints the table of differences.

  .venv/bin/python -m pytest tests/test_backbones.py -q -s --durations=15
"""

from __future__ import annotations

import dataclasses
import pathlib

import h5py
import jax
import jax.numpy as jnp
import keras
import numpy as np
import pytest
from flax import nnx
from keras.src.initializers import random_initializers
from keras.src.legacy.saving import legacy_h5_format

from leukojax.models import preprocessing
from leukojax.models import backbones
from leukojax.models.keras_weights import load_keras_weights

TOLERANCE = 1e-4
BATCH = 2
# name: (keras.applications constructor, test input size, tap that is the no-top output)
CASES = {
  "vgg16": ("VGG16", 32, "block5_pool"),
  "vgg19": ("VGG19", 32, "block5_pool"),
  "inception_v3": ("InceptionV3", 75, "mixed10"),
  "xception": ("Xception", 71, "block14_sepconv2_act"),
  "resnet50": ("ResNet50", 32, "conv5_block3_out"),
  "mobilenet": ("MobileNet", 32, "conv_pw_13_relu"),
}
# (backbone, include_top) -> {"output" or tap: (max |flax - keras|, max |keras|)}
RESULTS: dict[tuple[str, bool], dict[str, tuple[float, float]]] = {}


class NumpyRandom:
  """Stands in for the backend `random` module of Keras's initialisers during model building.

  Keras draws every initial weight with its own XLA program per shape (~0.5 s each on this CPU);
  numpy draws cost nothing, and the values are random all the same.
  """

  def __init__(self, seed: int, backend_random):
    self._rng = np.random.default_rng(seed)
    self._backend_random = backend_random

  def __getattr__(self, name: str):  # seeds and the rest stay Keras's
    return getattr(self._backend_random, name)

  def uniform(self, shape, minval=0.0, maxval=1.0, dtype=None, seed=None):
    return jnp.asarray(self._rng.uniform(minval, maxval, shape), dtype or "float32")

  def normal(self, shape, mean=0.0, stddev=1.0, dtype=None, seed=None):
    return jnp.asarray(self._rng.normal(mean, stddev, shape), dtype or "float32")

  def truncated_normal(self, shape, mean=0.0, stddev=1.0, dtype=None, seed=None):
    x = mean + stddev * np.clip(self._rng.normal(size=shape), -2, 2)
    return jnp.asarray(x, dtype or "float32")


def build_keras(name: str, size: int, seed: int = 0) -> keras.Model:
  """A with-top Keras application (logits) with random weights, statistics and biases."""
  keras.backend.clear_session()
  with pytest.MonkeyPatch.context() as mp:
    mp.setattr(random_initializers, "random", NumpyRandom(seed, random_initializers.random))
    model = getattr(keras.applications, CASES[name][0])(
      weights=None, include_top=True, input_shape=(size, size, 3), classifier_activation=None
    )
  randomise_constants(model, np.random.default_rng(seed + 1))
  return model


def randomise_constants(model: keras.Model, rng: np.random.Generator) -> None:
  """Random BatchNorm gamma/beta/moving statistics and biases (Keras starts them as constants,
  which would hide a swapped, transposed or missing mapping)."""
  ranges = {
    "gamma": (0.5, 1.5),
    "beta": (-0.5, 0.5),
    "moving_mean": (-0.5, 0.5),
    "moving_variance": (0.5, 2.0),
    "bias": (-0.1, 0.1),
  }
  for layer in model.layers:
    for w in layer.weights:
      kind = w.path.rsplit("/", 1)[-1]
      if kind in ranges:
        w.assign(rng.uniform(*ranges[kind], w.shape).astype("float32"))


def save_legacy_h5(model: keras.Model, path: pathlib.Path) -> pathlib.Path:
  """Writes the layout of the official weight files (top-level `layer_names`, `weight_names`)."""
  with h5py.File(path, "w") as f:
    legacy_h5_format.save_weights_to_hdf5_group(f, model)
  return path


def keras_tap_layers(
  name: str, model: keras.Model, taps: tuple[str, ...]
) -> dict[str, keras.Layer]:
  """The Keras layer each Flax tap reproduces; session-numbered layers are found by position."""

  def nth(kind: type, i: int) -> keras.Layer:
    return [layer for layer in model.layers if isinstance(layer, kind)][i]

  special = {}
  if name == "inception_v3":
    pools = {"stem_pool1": 0, "stem_pool2": 1}
    special = {tap: nth(keras.layers.MaxPooling2D, i) for tap, i in pools.items()}
  elif name == "xception":
    adds = {
      "entry_stride4": 0, "entry_stride8": 1, "entry_stride16": 2, "middle_out": 10,
      "exit_stride32": 11,
    }  # fmt: skip
    special = {tap: nth(keras.layers.Add, i) for tap, i in adds.items()}
  return {tap: special[tap] if tap in special else model.get_layer(tap) for tap in taps}


def abstract_backbone(name: str, **kwargs) -> backbones.Backbone:
  """A backbone of shapes only (for shape checks)."""
  return nnx.eval_shape(lambda: backbones.create_backbone(name, rngs=nnx.Rngs(0), **kwargs))


def zeros_backbone(name: str, **kwargs) -> backbones.Backbone:
  """A concrete backbone without random init: its weights come from a file anyway, and on this CPU
  compiling the random initialisers costs more than the whole comparison."""
  graphdef, state = nnx.split(abstract_backbone(name, **kwargs))

  def concrete(s: jax.ShapeDtypeStruct) -> jax.Array:
    if jnp.issubdtype(s.dtype, jax.dtypes.prng_key):
      return jax.random.key(0)
    return jax.device_put(np.zeros(s.shape, s.dtype))

  return nnx.merge(graphdef, jax.tree.map(concrete, state))


@nnx.jit(static_argnames="taps")
def forward(model: nnx.Module, x: jax.Array, taps: tuple[str, ...]):
  return model(x, taps=taps)


@dataclasses.dataclass
class Reference:
  name: str
  size: int
  x: np.ndarray  # preprocessed in the backbone's mode
  top_file: pathlib.Path
  notop_file: pathlib.Path
  logits: np.ndarray
  taps: dict[str, np.ndarray]
  keras_model: keras.Model


@pytest.fixture(scope="module", params=list(CASES))
def reference(request, tmp_path_factory) -> Reference:
  name = request.param
  size, feature_tap = CASES[name][1], CASES[name][2]
  model = build_keras(name, size)
  folder = tmp_path_factory.mktemp(name)
  top_file = save_legacy_h5(model, folder / "top.h5")
  # A no-top file is the sub-model up to the last feature map: same layers, same order.
  notop = keras.Model(model.inputs, model.get_layer(feature_tap).output)
  notop_file = save_legacy_h5(notop, folder / "notop.h5")
  pixels = np.random.default_rng(42).uniform(0, 255, (BATCH, size, size, 3)).astype("float32")
  x = preprocessing.preprocess_input(pixels, backbones.PREPROCESSING_MODE[name])
  taps = abstract_backbone(name, include_top=True, input_size=size).tap_names
  tap_layers = keras_tap_layers(name, model, taps)
  outputs = [model.output, *(layer.output for layer in tap_layers.values())]
  probe = keras.Model(model.inputs, outputs)
  logits, *tap_values = probe.predict(x, batch_size=BATCH, verbose=0)
  return Reference(name, size, x, top_file, notop_file, logits, dict(zip(taps, tap_values)), model)


@pytest.fixture(scope="module", autouse=True)
def print_results():
  yield
  if RESULTS:
    print("\nmax |flax - keras| (max |keras|) per backbone, output and tap:")
    for (name, top), diffs in RESULTS.items():
      print(f"  {name} {'top' if top else 'notop'}:")
      for tap, (diff, scale) in diffs.items():
        print(f"    {tap:24s} {diff:.2e} ({scale:.2f})")


@pytest.mark.parametrize("include_top", [False, True], ids=["notop", "top"])
def test_matches_keras(reference: Reference, include_top: bool):
  name = reference.name
  model = zeros_backbone(name, include_top=include_top, input_size=reference.size)
  load_keras_weights(model, reference.top_file if include_top else reference.notop_file)
  model.eval()
  out, taps = forward(model, jnp.asarray(reference.x), tuple(model.tap_names))
  expected = {"output": reference.logits if include_top else reference.taps[CASES[name][2]]}
  expected |= {tap: reference.taps[tap] for tap in model.tap_names}
  got = {"output": out, **taps}
  assert set(got) == set(expected)
  diffs = {}
  for key, want in expected.items():
    assert got[key].shape == want.shape, (key, got[key].shape, want.shape)
    diffs[key] = (float(np.max(np.abs(np.asarray(got[key]) - want))), float(np.max(np.abs(want))))
  RESULTS[(name, include_top)] = diffs
  bad = {k: d for k, (d, _) in diffs.items() if not d <= TOLERANCE}
  assert not bad, f"{name}: differences above {TOLERANCE}: {bad}"
  assert all(s > 1e-2 for _, s in diffs.values()), "activations vanished; the test is void"


@pytest.mark.parametrize("reference", ["mobilenet"], indirect=True)
def test_bfloat16_compute_keeps_float32_params(reference: Reference):
  model = zeros_backbone("mobilenet", include_top=True, dtype=jnp.bfloat16)
  load_keras_weights(model, reference.top_file)
  model.eval()
  out, taps = forward(model, jnp.asarray(reference.x), ("conv_pw_5_relu",))
  assert out.dtype == jnp.bfloat16 and taps["conv_pw_5_relu"].dtype == jnp.bfloat16
  params = jax.tree.leaves(nnx.state(model, nnx.Param))
  assert {p.dtype for p in params} == {jnp.dtype(jnp.float32)}
  scale = np.abs(reference.logits).max()
  assert np.abs(np.asarray(out, np.float32) - reference.logits).max() < 0.05 * scale


@pytest.mark.parametrize("reference", ["mobilenet"], indirect=True)
def test_train_mode_batch_norm_matches_keras(reference: Reference):
  """Batch statistics and the moving-average update (momentum 0.99 in both conventions)."""
  keras_model = reference.keras_model
  model = zeros_backbone("mobilenet", include_top=True)
  load_keras_weights(model, reference.top_file)
  model.train()
  model.set_attributes(deterministic=True)  # Keras's dropout is random in training; compare BN only

  @nnx.jit
  def train_forward(model, x):
    return model(x)[0]

  out = train_forward(model, jnp.asarray(reference.x))
  dropout = keras_model.get_layer("dropout")
  rate, dropout.rate = dropout.rate, 0.0
  try:
    want, new_non_trainable = jax.jit(
      lambda t, n, x: keras_model.stateless_call(t, n, x, training=True)
    )(
      [v.value for v in keras_model.trainable_variables],
      [v.value for v in keras_model.non_trainable_variables],
      reference.x,
    )
  finally:
    dropout.rate = rate
  # Batch statistics over 2 samples of a 1x1 map are nearly degenerate and amplify float32
  # rounding, hence a looser bound on the logits than in inference.
  np.testing.assert_allclose(np.asarray(out), np.asarray(want), atol=1e-3)
  updated = dict(zip((v.path for v in keras_model.non_trainable_variables), new_non_trainable))
  for i in (1, 5, 13):
    bn, keras_bn = getattr(model, f"block{i}").conv_pw_bn, keras_model.get_layer(f"conv_pw_{i}_bn")
    want_mean = updated[keras_bn.moving_mean.path]
    want_var = updated[keras_bn.moving_variance.path]
    np.testing.assert_allclose(bn.mean[...], want_mean, atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(bn.var[...], want_var, atol=1e-5, rtol=1e-5)
    # and the statistics did move: 0.99 * old + 0.01 * batch
    assert not np.allclose(bn.mean[...], keras_bn.moving_mean.value, atol=1e-7)


@pytest.mark.parametrize("name", list(CASES))
def test_preprocessing_mode_matches_keras(name: str):
  module = getattr(keras.applications, name)
  pixels = np.random.default_rng(0).uniform(0, 255, (2, 8, 8, 3)).astype("float32")
  want = module.preprocess_input(pixels.copy())
  got = preprocessing.preprocess_input(pixels, backbones.PREPROCESSING_MODE[name])
  np.testing.assert_allclose(got, want, atol=1e-4)


# Documented tap shapes at the default input size (the model docstrings list all of them).
DOCUMENTED_SHAPES = {
  "vgg16": {"block1_pool": (112, 112, 64), "block5_pool": (7, 7, 512)},
  "vgg19": {"block3_pool": (28, 28, 256), "block5_pool": (7, 7, 512)},
  "inception_v3": {
    "stem_pool2": (35, 35, 192), "mixed0": (35, 35, 256), "mixed3": (17, 17, 768),
    "mixed5": (17, 17, 768), "mixed8": (8, 8, 1280), "mixed10": (8, 8, 2048),
  },
  "xception": {
    "entry_stride4": (74, 74, 128), "entry_stride8": (37, 37, 256), "entry_stride16": (19, 19, 728),
    "middle_out": (19, 19, 728), "exit_stride32": (10, 10, 1024),
    "block14_sepconv2_act": (10, 10, 2048),
  },
  "resnet50": {
    "pool1_pool": (56, 56, 64), "conv2_block3_out": (56, 56, 256),
    "conv3_block4_out": (28, 28, 512),
    "conv4_block1_add": (14, 14, 1024), "conv4_block6_out": (14, 14, 1024),
    "conv5_block3_out": (7, 7, 2048),
  },
  "mobilenet": {
    "conv_pw_5_relu": (28, 28, 256), "conv_pw_11_relu": (14, 14, 512),
    "conv_pw_13_relu": (7, 7, 1024),
  },
}  # fmt: skip


@pytest.mark.parametrize("name", list(CASES))
def test_registry_shapes_and_taps(name: str):
  size = backbones.DEFAULT_INPUT_SIZE[name]
  model = abstract_backbone(name, include_top=False)
  assert isinstance(model, backbones.BACKBONES[name]) and model.name == name
  x = jax.ShapeDtypeStruct((1, size, size, 3), jnp.float32)
  out, taps = nnx.eval_shape(lambda m, x: m(x, taps=m.tap_names), model, x)
  assert out.shape[-1] == model.num_features
  assert set(taps) == set(model.tap_names)
  for tap, shape in DOCUMENTED_SHAPES[name].items():
    assert taps[tap].shape == (1, *shape), tap
  with pytest.raises(ValueError, match="unknown tap"):
    nnx.eval_shape(lambda m, x: m(x, taps=("nope",)), model, x)
  with pytest.raises(TypeError, match="sequence of names"):
    nnx.eval_shape(lambda m, x: m(x, taps=model.tap_names[0]), model, x)
  small = backbones.MIN_INPUT_SIZE[name] - 1
  too_small = jax.ShapeDtypeStruct((1, small, small, 3), jnp.float32)
  with pytest.raises(ValueError, match="smaller than the minimum"):
    nnx.eval_shape(lambda m, x: m(x), model, too_small)
  with pytest.raises(ValueError):  # Keras refuses the same size
    keras_constructor = getattr(keras.applications, CASES[name][0])
    keras_constructor(weights=None, include_top=False, input_shape=(small, small, 3))
  top = abstract_backbone(name, include_top=True, num_classes=7)
  logits, _ = nnx.eval_shape(lambda m, x: m(x), top, x)
  assert logits.shape == (1, 7)


@pytest.mark.parametrize("name", backbones.NARROWABLE)
def test_narrowed_backbone_keeps_its_wiring_at_an_eighth_of_the_widths(name: str):
  """The hybrid smoke config's backbones: every tap at full spatial size, its channels / 8."""
  size = backbones.MIN_INPUT_SIZE[name] + 32
  x = jax.ShapeDtypeStruct((1, size, size, 3), jnp.float32)
  full, narrow = abstract_backbone(name), abstract_backbone(name, width_divisor=8)
  (out, taps), (narrow_out, narrow_taps) = (nnx.eval_shape(lambda m, x: m(x, taps=m.tap_names), m, x)
                                            for m in (full, narrow))
  assert narrow.num_features * 8 == full.num_features == out.shape[-1]
  assert narrow_out.shape == (*out.shape[:-1], out.shape[-1] // 8)
  for tap in full.tap_names:
    assert narrow_taps[tap].shape == (*taps[tap].shape[:-1], taps[tap].shape[-1] // 8), tap
  params = lambda m: sum(p.size for p in jax.tree.leaves(nnx.state(m, nnx.Param)))
  assert params(narrow) < params(full) / 40  # most weights are C_in x C_out: ~64x fewer
  with pytest.raises(ValueError, match="does not divide"):
    abstract_backbone(name, width_divisor=3)
  with pytest.raises(ValueError, match="classification top needs full width"):
    abstract_backbone(name, include_top=True, width_divisor=2)


def test_only_the_narrowable_backbones_take_a_width_divisor():
  with pytest.raises(ValueError, match="has no width divisor"):
    abstract_backbone("mobilenet", width_divisor=2)


def test_unknown_backbone():
  with pytest.raises(ValueError, match="Unknown backbone"):
    backbones.create_backbone("resnet18", rngs=nnx.Rngs(0))


def test_unoptimised_initialisation_draws_what_the_optimised_program_draws():
  """`create_backbone` compiles its one-off initialisation without XLA's optimisations (CPU): the
  values, and the state the Rngs is left in, must be those of the default compilation, or every
  earlier result would stop rerunning bit for bit."""
  kwargs = dict(include_top=True, num_classes=3, dtype=jnp.float32)
  rngs = nnx.Rngs(7)
  fast = backbones.create_backbone("mobilenet", **kwargs, rngs=rngs)
  reference_rngs = nnx.Rngs(7)
  reference = nnx.jit(lambda r: backbones.BACKBONES["mobilenet"](**kwargs, rngs=r))(reference_rngs)
  def raw(x):  # typed PRNG keys (dropout's) compare by their bits
    return jax.random.key_data(x) if jnp.issubdtype(x.dtype, jax.dtypes.prng_key) else x

  got, expected = jax.tree.map(raw, nnx.state(fast)), jax.tree.map(raw, nnx.state(reference))
  assert jax.tree.structure(got) == jax.tree.structure(expected)
  differ = [jax.tree_util.keystr(path) for (path, a), b in
            zip(jax.tree_util.tree_leaves_with_path(got), jax.tree.leaves(expected)) if not np.array_equal(a, b)]
  assert not differ, differ[:5]
  assert np.array_equal(jax.random.key_data(rngs.params()), jax.random.key_data(reference_rngs.params()))
