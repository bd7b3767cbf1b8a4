"""Explanations: Grad-CAM and LIME find the region a model depends on; the CLI on a trained run."""

from __future__ import annotations

import csv
import json
import os
import pathlib
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from PIL import Image

from leukojax.data import preprocess_images
from leukojax.data.config import default_data_config
from leukojax.data.stats import DataStats
from leukojax.explanation import agreement as agreement_lib
from leukojax.explanation import gradcam as gradcam_lib
from leukojax.explanation.lime_explainer import BatchedClassifier, LimeExplainer
from leukojax.models import outputs
from leukojax.explanation.explainer import Explainer, Options, resolve_target
from leukojax.models import layers
from leukojax.models.classifier import BackboneClassifier

REPO = pathlib.Path(__file__).resolve().parents[1]
SAMPLE = REPO / "tfds_builders" / "taleqani_all" / "sample" / "Original"
SIZE = 64
SQUARE = (slice(8, 24), slice(36, 56))  # rows, cols: top right, not symmetric (catches an h/w swap)


class RedDetector(layers.Backbone):
  """A fixed 'red blob' detector with the Backbone surface: redness -> avg pool -> 3x3 conv.

  Redness is relu(r - g - b): zero on grey, so the output depends only on where red is.
  """

  min_input_size = 8
  keras_top_layers = ()

  def __init__(self, name: str, pool: int):
    self.name, self.pool = name, pool
    self.include_top, self.num_classes, self.num_features = False, 0, 1
    self.tap_names = ("redness", "pooled")
    rngs = nnx.Rngs(0)
    self.conv = nnx.Conv(3, 1, (1, 1), use_bias=False, rngs=rngs)
    self.conv.kernel.value = jnp.array([1.0, -1.0, -1.0]).reshape(1, 1, 3, 1)
    self.conv2 = nnx.Conv(1, 1, (3, 3), use_bias=False, rngs=rngs)
    self.conv2.kernel.value = jnp.full((3, 3, 1, 1), 1.0 / 9.0)

  def __call__(self, x, taps=()):
    rec = layers.Taps(taps, self.tap_names, self.name)
    a = rec("redness", jax.nn.relu(self.conv(x)))
    a = rec("pooled", nnx.avg_pool(a, (self.pool, self.pool), (self.pool, self.pool)))
    return jax.nn.relu(self.conv2(a)), rec.result()


class ToyClassifier(nnx.Module):
  """BackboneClassifier's interface: logit = 3 * GAP(red map) - 0.05."""

  backbone_name = "red4"

  def __init__(self):
    self.backbone = RedDetector("red4", 4)

  def features(self, x, taps=()):
    return self.backbone(x, taps)

  def head_logits(self, feature_map):
    return 3.0 * jnp.mean(feature_map, axis=(1, 2)) - 0.05

  def __call__(self, x):
    return self.head_logits(self.features(x)[0])


class ToyFused(nnx.Module):
  """HybridCNN's interface with two branches on different grids (16x16 and 8x8)."""

  backbone_names = ("red4", "red8")
  weights = {"red4": 2.0, "red8": 5.0}
  bias = -0.05

  def __init__(self):
    self.backbones = nnx.Dict({"red4": RedDetector("red4", 4), "red8": RedDetector("red8", 8)})

  def branch_features(self, x):
    finals, taps = {}, {}
    for name in self.backbone_names:
      finals[name], taps[name] = self.backbones[name](x)
    return finals, taps

  def fuse(self, finals, taps):
    del taps
    return sum(self.weights[n] * jnp.mean(finals[n], axis=(1, 2)) for n in self.backbone_names) + self.bias

  def __call__(self, x):
    return self.fuse(*self.branch_features(x))


def red_square_image(seed: int = 0) -> np.ndarray:
  """Grey noise with a red square at SQUARE, floats in [0, 1]."""
  rng = np.random.default_rng(seed)
  image = 0.5 + rng.uniform(-0.05, 0.05, (SIZE, SIZE, 3))
  image[SQUARE] = (0.9, 0.1, 0.1)
  return image.astype(np.float32)


def square_mask(margin: int = 0) -> np.ndarray:
  mask = np.zeros((SIZE, SIZE), bool)
  mask[max(0, SQUARE[0].start - margin):SQUARE[0].stop + margin,
       max(0, SQUARE[1].start - margin):SQUARE[1].stop + margin] = True
  return mask


def assert_localised(heatmap: np.ndarray, cell: int = 4) -> None:
  """Peak in the square; nearly all mass within two map cells of it (the 3x3 conv spreads one)."""
  peak = np.unravel_index(np.argmax(heatmap), heatmap.shape)
  assert square_mask()[peak], f"Grad-CAM peak {peak} is outside the square {SQUARE}"
  near = square_mask(margin=2 * cell)
  assert heatmap[near].sum() >= 0.95 * heatmap.sum()
  assert heatmap[square_mask()].mean() > 5 * heatmap[~near].mean() + 1e-9


def test_the_toy_model_depends_on_the_square_only():
  model, image = ToyClassifier(), red_square_image()
  other = red_square_image(seed=1)  # the same square, different noise everywhere else
  other[SQUARE] = image[SQUARE]
  logits = np.asarray(model(jnp.stack([image, other])))
  assert logits[0, 0] > 0 and np.allclose(logits[0], logits[1])


@pytest.mark.parametrize("layer", [gradcam_lib.FINAL, "pooled", "redness"])
def test_gradcam_highlights_the_region_the_output_depends_on(layer):
  cam = gradcam_lib.GradCAM(ToyClassifier(), {"": layer})(red_square_image())
  assert cam.predicted == 1 and cam.target == 1
  assert cam.layers == {"red4": layer}
  assert_localised(cam.combined)


def test_gradcam_of_the_other_class_is_empty():
  """For one sigmoid unit, class 0's score is -logit: the red evidence counts against it."""
  explainer = gradcam_lib.GradCAM(ToyClassifier())
  cam = explainer(red_square_image(), target=0)
  assert cam.target == 0 and not cam.combined.any()
  with pytest.raises(ValueError, match="target class 2 is not one of 0..1"):
    explainer(red_square_image(), target=2)


def test_gradcam_per_branch_and_combined():
  model, image = ToyFused(), red_square_image()
  cam = gradcam_lib.GradCAM(model)(image)
  assert list(cam.maps) == ["red4", "red8"]
  assert cam.maps["red4"].shape == (16, 16) and cam.maps["red8"].shape == (8, 8)
  assert_localised(cam.upsampled["red4"], cell=4)
  assert_localised(cam.upsampled["red8"], cell=8)
  assert_localised(cam.combined, cell=8)
  # For GAP -> linear heads the combined map's pixels sum to the logit minus its bias.
  logit = float(model(jnp.asarray(image)[None])[0, 0])
  np.testing.assert_allclose(cam.combined.sum(), logit - model.bias, rtol=0.05)
  np.testing.assert_allclose(cam.logits, [logit], rtol=1e-6)


def test_gradcam_compiles_once_per_input_shape():
  explainer = gradcam_lib.GradCAM(ToyClassifier(), {"red4": "pooled"})
  for seed in range(3):
    explainer(red_square_image(seed))
  assert explainer.compilations == 1


def test_gradcam_layer_errors():
  with pytest.raises(gradcam_lib.GradCAMLayerError, match="not a tap of red4.*pooled"):
    gradcam_lib.GradCAM(ToyClassifier(), {"": "block5_pool"})
  with pytest.raises(gradcam_lib.GradCAMLayerError, match="backbones are \\['red4', 'red8'\\]"):
    gradcam_lib.GradCAM(ToyFused(), {"xception": "pooled"})


def test_intercept_taps_keeps_numbers_and_reaches_only_main_path_taps():
  """On a real backbone: a zero offset changes nothing; an off-path tap is reported, not silently empty."""
  model = BackboneClassifier(backbone="mobilenet", num_outputs=1, rngs=nnx.Rngs(0))
  model.eval()
  x = jnp.asarray(np.random.default_rng(0).uniform(-1, 1, (1, 32, 32, 3)), jnp.float32)
  with layers.intercept_taps({"mobilenet/conv1_relu": 0.0, "mobilenet/conv_pw_5_relu": 0.0}) as seen:
    out = model(x)
  np.testing.assert_array_equal(np.asarray(out), np.asarray(model(x)))
  assert seen["mobilenet/conv1_relu"].shape == (1, 16, 16, 32)
  with pytest.raises(ValueError, match="no backbone produced \\['xception/entry_stride8'\\]"):
    with layers.intercept_taps({"xception/entry_stride8": 0.0}):
      model(x)
  with pytest.raises(ValueError, match="cannot offset unknown tap"):
    with layers.intercept_taps({"mobilenet/nope": 0.0}):
      model(x)
  cam = gradcam_lib.GradCAM(model, {"": "conv1_relu"})(x)
  assert cam.maps["mobilenet"].shape == (16, 16) and cam.combined.shape == (32, 32)
  cam = gradcam_lib.GradCAM(model, {"": "conv_pw_5_relu"})(x)  # a block output, fed forward
  assert cam.maps["mobilenet"].shape == (4, 4)
  with pytest.raises(gradcam_lib.GradCAMLayerError, match="conv_dw_5_relu does not reach the output"):
    gradcam_lib.GradCAM(model, {"": "conv_dw_5_relu"})(x)  # recorded inside the block, beside the path


def test_batched_classifier_pads_to_one_compiled_batch():
  model = ToyClassifier()
  classifier = BatchedClassifier(model, lambda image: image.astype(np.float32) / 255.0, batch_size=8)
  images = (np.stack([red_square_image(s) for s in range(13)]) * 255).astype(np.uint8)
  for n in (3, 8, 13):
    probs = classifier(images[:n])
    expected = outputs.class_probabilities(outputs.probabilities(model(jnp.asarray(images[:n], jnp.float32) / 255.0)))
    np.testing.assert_allclose(probs, np.asarray(expected), rtol=1e-5, atol=1e-6)
    assert probs.shape == (n, 2)
  assert classifier.compilations == 1


def test_lime_finds_the_square_and_agrees_with_gradcam():
  model = ToyClassifier()
  image = (red_square_image() * 255).astype(np.uint8)
  classifier = BatchedClassifier(model, lambda im: im.astype(np.float32) / 255.0, batch_size=16)
  lime = LimeExplainer(classifier, num_samples=50, n_segments=30)(image, target=1)
  assert classifier.compilations == 1
  assert lime.segments.shape == (SIZE, SIZE) and set(lime.weights) == set(np.unique(lime.segments))
  best = lime.positive_order()[0]
  assert square_mask()[lime.segments == best].mean() > 0.8  # the most positive superpixel is red
  fraction = float(square_mask().mean())
  cam = gradcam_lib.GradCAM(model)(image.astype(np.float32)[None] / 255.0)
  agree = agreement_lib.measure(cam.combined, lime.segments, lime.positive_order(), fraction)
  assert agree.iou > 0.5 > 3 * agree.iou_chance


def test_agreement_definition():
  heat = np.zeros((10, 10))
  heat[:2, :] = np.arange(20).reshape(2, 10) + 1.0  # the top 20 pixels are the first two rows
  segments = np.repeat(np.arange(5), 20).reshape(10, 10)  # five horizontal bands of two rows
  # Bands 0 (rows 0-1) and 1 (rows 2-3): the prefix of area closest to 20 px is band 0 alone.
  result = agreement_lib.measure(heat, segments, [0, 1], fraction=0.2)
  assert result.lime_superpixels == [0] and result.iou == 1.0 and result.gradcam_area == 0.2
  result = agreement_lib.measure(heat, segments, [1, 0], fraction=0.2)
  assert result.iou == 0.0
  np.testing.assert_allclose(result.iou_chance, 0.04 / 0.36)
  flat = agreement_lib.gradcam_region(np.ones((10, 10)), 0.2)
  assert flat.all()  # no spatial information: the whole image, not an arbitrary 20%
  assert agreement_lib.measure(np.zeros((10, 10)), segments, [0], 0.2).iou is None  # flat-zero Grad-CAM
  assert agreement_lib.measure(heat, segments, [], 0.2).iou is None  # no positive superpixel
  with pytest.raises(ValueError, match="differ in size"):
    agreement_lib.measure(np.zeros((5, 5)), segments, [0], 0.2)


def test_explainer_prepares_images_as_preprocess_images():
  """The overlay image + normalisation reproduce `preprocess_images` (no second crop)."""
  config = default_data_config()
  config.image_size, config.resize, config.crop_fraction = 48, "center_crop", 0.75
  config.standardize, config.preprocessing = True, "tf"
  stats = DataStats(mean=[180.0, 150.0, 170.0], std=[40.0, 50.0, 45.0], num_images=10)
  raw = np.asarray(Image.open(SAMPLE / "Pro" / "WBC-Malignant-Pro-001.jpg").convert("RGB"))
  explainer = Explainer(ToyClassifier(), config, stats, ("benign", "pro_b"), Options(method="gradcam"))
  image, x = explainer.prepare(raw)
  assert image.dtype == np.uint8 and image.shape == (48, 48, 3)
  np.testing.assert_array_equal(x, preprocess_images([raw], config, stats))


def test_resolve_target():
  names = ("benign", "pro_b")
  assert resolve_target(None, names) is None
  assert resolve_target("pro_b", names) == 1 and resolve_target("0", names) == 0
  with pytest.raises(ValueError, match="Unknown target class 'early'"):
    resolve_target("early", names)
  with pytest.raises(ValueError, match="0..1"):
    resolve_target(2, names)


@pytest.mark.xdist_group("sample_run")  # with the other users of the fixture, so it is built once
def test_cli_explains_a_trained_run(sample_run, tmp_path):
  """The real CLI on the tiny trained run: PNGs, the agreement files, and a clear error for a bad file."""
  images = [SAMPLE / "Pro" / "WBC-Malignant-Pro-001.jpg", SAMPLE / "Benign" / "WBC-Benign-001.jpg"]
  broken = tmp_path / "broken.jpg"
  broken.write_bytes(b"not a jpeg")
  dot = tmp_path / "dot.png"  # decodable, but nothing like the 224x224 training images
  Image.new("RGB", (1, 1), (120, 40, 160)).save(dot)
  out = tmp_path / "explanations"
  cmd = [sys.executable, "-m", "leukojax.explain", f"--workdir={sample_run}", "--method=both",
         "--layer=conv1_relu", "--lime_samples=40", "--lime_batch_size=16", f"--out={out}",
         str(images[0]), str(broken), str(images[1]), str(dot)]
  result = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600,
                          env=dict(os.environ, JAX_PLATFORMS="cpu", TQDM_DISABLE="1"))
  assert result.returncode == 1, result.stderr[-3000:]
  assert f"{broken} (not an image file PIL recognises); replace it" in result.stderr
  for name in ("WBC-Malignant-Pro-001.png", "WBC-Benign-001.png"):
    with Image.open(out / name) as png:
      assert png.size[0] > 2 * png.size[1]  # original | Grad-CAM | LIME side by side
  summary = json.loads((out / "explanations.json").read_text())
  assert [r["file"] for r in summary["images"]] == [str(p) for p in images + [dot]]
  assert [bool(r["geometry"]) for r in summary["images"]] == [False, False, True]
  assert "1x1 px (height 1 px, width 1 px) is far from the training images 224-224 px high" in result.stderr
  assert summary["failed"] == [{"file": str(broken), "error": summary["failed"][0]["error"]}]
  assert summary["lime_compilations"] == 1
  for record in summary["images"]:
    assert record["gradcam_layers"] == {"mobilenet": "conv1_relu"}
    assert record["predicted_class"] in summary["class_names"]
    assert record["iou"] is None or 0.0 <= record["iou"] <= 1.0
    assert 0.0 <= record["gradcam_area"] <= 1.0 and 0.0 <= record["lime_area"] <= 1.0
  ious = [r["iou"] for r in summary["images"] if r["iou"] is not None]
  assert summary["mean_iou"] == (pytest.approx(np.mean(ious)) if ious else None)
  with open(out / "explanations.csv") as f:
    rows = list(csv.DictReader(f))
  assert [row["png"] for row in rows] == ["WBC-Malignant-Pro-001.png", "WBC-Benign-001.png", "dot.png"]
  assert rows[2]["geometry"].startswith("1x1 px") and not rows[0]["geometry"]
