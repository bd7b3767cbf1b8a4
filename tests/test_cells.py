"""`leukojax.data.cells`, the `cell_crop` resize and the HED stain jitter, on REAL C-NMC 2019 cells.

The images are the bundled real sample (88 cells of fold_1: 42 ALL, 46 HEM, 450x450 BMPs on an
exactly black background). The thresholds below were checked on these files; each fails when the
code it guards is broken (a cut cell, an off-centre window, a tinted background, a lost window).
"""

from __future__ import annotations

import functools
import hashlib
import pathlib
import pickle

import ml_collections
import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from leukojax.data import build_pipeline, cells, default_data_config, preprocess_images
from leukojax.data import pipeline as pipeline_lib
from leukojax.data import transforms as T
from leukojax.data.stats import DataStats

SAMPLE = (pathlib.Path(__file__).resolve().parents[1] / "tfds_builders" / "cnmc2019" / "sample"
          / "C-NMC_Leukemia" / "training_data" / "fold_1")
FILES = sorted(SAMPLE.glob("*/*.bmp"))
ALL_FILES = [f for f in FILES if f.parent.name == "all"]
HEM_FILES = [f for f in FILES if f.parent.name == "hem"]
# Two of each class, spread over the subjects, for the per-image checks.
SOME = [ALL_FILES[0], ALL_FILES[len(ALL_FILES) // 2], HEM_FILES[0], HEM_FILES[-1]]

pytestmark = pytest.mark.skipif(len(FILES) != 88, reason=f"the bundled real C-NMC sample is missing from {SAMPLE}")


@functools.lru_cache(maxsize=None)
def _load(path: pathlib.Path) -> np.ndarray:
  with Image.open(path) as im:
    image = np.asarray(im.convert("RGB"))
  image.setflags(write=False)
  return image


def _centre(box: tuple[int, int, int, int]) -> tuple[float, float]:
  top, left, height, width = box
  return top + height / 2, left + width / 2


def _largest_cell() -> pathlib.Path:
  return max(FILES, key=lambda f: max(cells.cell_box(_load(f))[2:]))


def test_mask_finds_one_cell_inside_the_frame():
  for path in FILES:
    image = _load(path)
    mask = cells.cell_mask(image)
    h, w = mask.shape
    assert mask.dtype == bool and mask.shape == image.shape[:2]
    assert ndimage.label(mask)[1] == 1, path.name
    top, left, height, width = cells.cell_box(image)
    assert 0 < top and 0 < left and top + height < h and left + width < w, path.name
    assert height * width > 0.08 * h * w, path.name
    # The whole cell: every non-black pixel (one component in these files) and nothing outside its box.
    assert mask[image.max(axis=-1) > 0].all(), path.name
    assert mask.sum() == mask[top : top + height, left : left + width].sum(), path.name
    assert mask[top].any() and mask[top + height - 1].any() and mask[:, left].any() and mask[:, left + width - 1].any()


def test_mask_and_box_without_a_cell():
  black = np.zeros((40, 30, 3), np.uint8)
  assert not cells.cell_mask(black).any()
  assert cells.cell_box(black) == (0, 0, 40, 30)
  assert cells.cell_window(black, 20).shape == (40, 40, 3)  # the "cell" is the frame: never cut
  assert cells.cell_window(black, 50).shape == (50, 50, 3)


def test_mask_keeps_the_largest_component_and_fills_holes():
  image = np.array(_load(FILES[0]))
  top, left, height, width = cells.cell_box(image)
  cy, cx = int(_centre((top, left, height, width))[0]), int(_centre((top, left, height, width))[1])
  image[cy - 3 : cy + 3, cx - 3 : cx + 3] = 0  # a black hole inside the cell
  image[2:5, 2:5] = 255  # a speck in the corner
  mask = cells.cell_mask(image)
  assert mask[cy - 3 : cy + 3, cx - 3 : cx + 3].all() and not mask[2:5, 2:5].any()
  assert cells.cell_box(image) == (top, left, height, width)


@pytest.mark.parametrize("path", SOME, ids=lambda p: p.name)
@pytest.mark.parametrize("window", [340, 600])  # 600: leaves the 450 px frame, padded with black
def test_cell_window_is_centred_and_keeps_the_cell(path, window):
  image = _load(path)
  box = cells.cell_box(image)
  out = cells.cell_window(image, window)
  assert out.shape == (window, window, 3) and out.dtype == np.uint8
  out_box = cells.cell_box(out)
  assert out_box[2:] == box[2:]
  cy, cx = _centre(out_box)
  assert abs(cy - window / 2) <= 1 and abs(cx - window / 2) <= 1
  top, left, height, width = out_box
  np.testing.assert_array_equal(out[top : top + height, left : left + width],
                                image[box[0] : box[0] + height, box[1] : box[1] + width])
  assert out.astype(np.int64).sum() == image.astype(np.int64).sum()  # nothing lost, nothing added


def test_cell_larger_than_the_window_is_not_cut():
  path = _largest_cell()
  image = _load(path)
  top, left, height, width = cells.cell_box(image)
  assert max(height, width) > 300  # the sample's largest box side is 316 px
  out = cells.cell_window(image, 100)
  assert out.shape == (max(height, width),) * 2 + (3,)
  assert cells.cell_mask(out).sum() == cells.cell_mask(image).sum()
  assert out.astype(np.int64).sum() == image.astype(np.int64).sum()
  # Also a small cell with a window just below its box: the side grows to exactly the box side.
  small = _load(min(FILES, key=lambda f: max(cells.cell_box(_load(f))[2:])))
  side = max(cells.cell_box(small)[2:])
  assert cells.cell_window(small, side - 1).shape[0] == side


@pytest.mark.parametrize("path", SOME, ids=lambda p: p.name)
def test_tight_window_is_the_larger_box_side(path):
  image = _load(path)
  _, _, height, width = cells.cell_box(image)
  for window in (0, -5):
    out = cells.cell_window(image, window)
    assert out.shape == (max(height, width), max(height, width), 3)
    cy, cx = _centre(cells.cell_box(out))
    assert abs(cy - out.shape[0] / 2) <= 1 and abs(cx - out.shape[1] / 2) <= 1


def test_crop_and_resize_cell_crop():
  image = _load(SOME[0])
  out = T.crop_and_resize(image, 64, mode="cell_crop", cell_window=340)
  assert out.shape == (64, 64, 3) and out.dtype == np.uint8
  expected = np.asarray(Image.fromarray(cells.cell_window(image, 340)).resize((64, 64), Image.BILINEAR))
  np.testing.assert_array_equal(out, expected)
  tight = T.crop_and_resize(image, 64, mode="cell_crop", cell_window=0)
  assert (tight > 0).mean() > (out > 0).mean()  # a tighter window: the cell fills more of the output
  assert T.crop_and_resize(image, 64, mode="cell_crop").shape == (64, 64, 3)  # default window


def test_prepare_image_and_eval_transforms_pass_the_window():
  image = _load(SOME[2])
  prepare = T.PrepareImage(48, "cell_crop", 0.75, cell_window=200)
  np.testing.assert_array_equal(prepare.map({"image": image, "label": 0})["image"],
                                T.crop_and_resize(image, 48, "cell_crop", cell_window=200))
  stats = DataStats(mean=(100.0, 80.0, 120.0), std=(40.0, 40.0, 40.0), num_images=1)
  config = default_data_config()
  config.image_size, config.resize, config.cell_window = 48, "cell_crop", 200
  assert T.eval_transforms(config, stats)[0].cell_window == 200
  old = ml_collections.ConfigDict({k: v for k, v in config.to_dict().items() if k != "cell_window"})
  assert T.eval_transforms(old, stats)[0].cell_window == 340  # configs saved before the key still load
  a, b = preprocess_images([image], config, stats), preprocess_images([image], old, stats)
  assert a.shape == b.shape == (1, 48, 48, 3) and not np.allclose(a, b)


def _prepared(path: pathlib.Path, size: int = 96) -> np.ndarray:
  return T.crop_and_resize(_load(path), size, "cell_crop", cell_window=340)


@pytest.mark.parametrize("path", SOME, ids=lambda p: p.name)
def test_hed_jitter_changes_the_cell_not_the_background(path):
  image = _prepared(path)
  background = image.max(axis=-1) == 0
  assert 0.3 < background.mean() < 0.95
  out = T.hed_jitter(image, 0.05, np.random.default_rng(0))
  assert out.dtype == np.float32 and out.shape == image.shape
  assert out.min() >= 0 and out.max() <= 255
  assert (out[background] == 0).all()
  assert np.abs(out[~background] - image[~background]).mean() > 1.0
  np.testing.assert_array_equal(out, T.hed_jitter(image.astype(np.float32), 0.05, np.random.default_rng(0)))
  assert not np.array_equal(out, T.hed_jitter(image, 0.05, np.random.default_rng(1)))


def test_hed_jitter_near_identity_for_a_tiny_sigma():
  image = _prepared(SOME[1])
  out = T.hed_jitter(image, 1e-6, np.random.default_rng(0))
  fg = image.max(axis=-1) > 0
  assert np.abs(out[fg] - image[fg]).mean() < 0.5  # rgb2hed -> hed2rgb round trip on 0..1 pixels


def test_augment_hed_order_determinism_and_activity():
  image = _prepared(SOME[3])
  assert not T.Augment(hed_sigma=0.0).active
  assert T.Augment(hed_sigma=0.05).active
  with pytest.raises(ValueError, match="hed_sigma"):
    T.Augment(hed_sigma=-0.1)
  augment = T.Augment(rot90=True, flip=True, brightness=0.2, hed_sigma=0.05)
  augment = pickle.loads(pickle.dumps(augment))  # grain workers pickle it
  out = augment.random_map({"image": image, "label": 1}, np.random.default_rng(7))["image"]
  np.testing.assert_array_equal(out, augment.random_map({"image": image, "label": 1}, np.random.default_rng(7))["image"])
  # The documented order: turns and flips, then the HED jitter, then brightness.
  rng = np.random.default_rng(7)
  x = np.rot90(image, k=int(rng.integers(4)))
  if rng.random() < 0.5:
    x = x[:, ::-1]
  if rng.random() < 0.5:
    x = x[::-1]
  x = T.hed_jitter(np.asarray(x, np.float32), 0.05, rng)
  x = np.clip(x * rng.uniform(0.8, 1.2), 0.0, 255.0)
  np.testing.assert_allclose(out, x, rtol=0, atol=1e-3)
  assert out.dtype == np.float32 and (out[x == 0] == 0).all()
  # Off: Augment draws nothing for it, so streams of configs without hed_sigma are unchanged.
  plain = T.Augment(rot90=True, flip=True, brightness=0.2)
  with_zero = T.Augment(rot90=True, flip=True, brightness=0.2, hed_sigma=0.0)
  np.testing.assert_array_equal(plain.random_map({"image": image}, np.random.default_rng(3))["image"],
                                with_zero.random_map({"image": image}, np.random.default_rng(3))["image"])


def test_cell_features_real_cells():
  feats = {path: cells.cell_features(_load(path)) for path in FILES}
  keys = {"area", "equivalent_diameter", "bbox_height", "bbox_width", "circularity", "dark25_grey",
          *(f"{s}_{c}" for s in ("mean", "std") for c in "rgbhed")}
  for path, f in feats.items():
    assert set(f) == keys and all(np.isfinite(v) for v in f.values()), path.name
    image = _load(path)
    mask = cells.cell_mask(image)
    assert f["area"] == mask.sum()
    assert (f["bbox_height"], f["bbox_width"]) == tuple(float(v) for v in cells.cell_box(image)[2:])
    assert f["equivalent_diameter"] == pytest.approx(np.sqrt(4 * f["area"] / np.pi))
    assert 0.3 < f["circularity"] <= 1.0, path.name
    assert f["mean_r"] == pytest.approx(image[mask][:, 0].mean())
    grey = image[mask].astype(np.float64) @ np.array([0.299, 0.587, 0.114])
    assert f["dark25_grey"] < grey.mean()  # the darkest quarter (nucleus) is darker than the cell
    assert f["mean_h"] > 0 and f["std_g"] > 0
  all_areas = np.array([feats[p]["area"] for p in ALL_FILES])
  hem_areas = np.array([feats[p]["area"] for p in HEM_FILES])
  assert all_areas.max() > hem_areas.min()
  # Blasts are larger: in this sample the median ALL cell has ~1.4x the median HEM cell's area.
  assert np.median(all_areas) > 1.2 * np.median(hem_areas)
  empty = cells.cell_features(np.zeros((10, 10, 3), np.uint8))
  assert empty["area"] == 0 and np.isnan(empty["mean_r"])


def test_fingerprint_names_the_window_only_for_cell_crop():
  class Catalog:
    image_sha256 = np.array([b"ab"])
    file_name = np.array([b"x.bmp"])

  config = default_data_config()
  plain = pipeline_lib._fingerprint(config, Catalog, np.array([0]))  # pylint: disable=protected-access
  assert "cell_window" not in plain  # statistics saved before the key existed still match
  config.resize = "cell_crop"
  crop = pipeline_lib._fingerprint(config, Catalog, np.array([0]))  # pylint: disable=protected-access
  assert crop["cell_window"] == 340
  config.cell_window = 0
  assert pipeline_lib._fingerprint(config, Catalog, np.array([0]))["cell_window"] == 0  # pylint: disable=protected-access


def _real_sources() -> dict[str, list[dict]]:
  records = []
  for path in FILES:
    label = int(path.parent.name == "all")
    subject = path.name.split("_")[1]
    records.append({"image": _load(path), "label": label, "file_name": path.name.encode(),
                     "image_sha256": hashlib.sha256(path.read_bytes()).hexdigest().encode(),
                     "subject_id": subject.encode(), "fold": 1})
  return {"fold_0": [], "fold_1": records, "fold_2": []}


def test_pipeline_cell_crop_on_real_cells(tmp_path):
  config = default_data_config()
  config.image_size, config.resize, config.cell_window, config.read_threads = 32, "cell_crop", 300, 0
  config.split.protocol = "paper_random"  # the sample holds only two HEM subjects
  config.augment.hed_sigma = 0.05
  p = build_pipeline(config, global_batch_size=4, eval_batch_size=8, workdir=tmp_path, seed=0,
                     sources=_real_sources())
  assert p.stats.fingerprint["cell_window"] == 300
  batch = next(iter(p.train))
  assert batch["image"].shape == (4, 32, 32, 3) and np.isfinite(batch["image"]).all()
  # Evaluation and the predict path (`preprocess_images`) see the same cell crop.
  val = p.eval_splits["val"]
  first = next(iter(val.batches()))
  name = val.metadata["file_name"][first["index"][0]].decode()
  expected = preprocess_images([_load(SAMPLE / name.split("_")[-1][:-4] / name)], config, p.stats)
  np.testing.assert_allclose(first["image"][0], expected[0], atol=1e-5)
