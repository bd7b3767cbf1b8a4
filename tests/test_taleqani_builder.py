"""The Taleqani ALL TFDS builder on the bundled REAL sample (240 images) and broken copies of it."""

import collections
import hashlib
import io
import pathlib
import shutil

import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image

from leukojax.data import errors
from leukojax.data import sources
from leukojax.data.sources import load_split_sources
from tfds_builders.taleqani_all import taleqani_all_dataset_builder as taleqani

SAMPLE = taleqani.SAMPLE_MANUAL_DIR
FOLDERS = ("Benign", "Early", "Pre", "Pro")
DUPLICATE_PAIRS = [(17, 18), (19, 20), (21, 22), (26, 27), (29, 30), (37, 38), (50, 51), (61, 62)]


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
  """The bundled sample built once; records with the image bytes as stored (not decoded)."""
  data_dir = tmp_path_factory.mktemp("data")
  sources = load_split_sources("taleqani_all", builder_config="original", data_dir=str(data_dir),
                               manual_dir=str(SAMPLE), decode_images=False)
  return data_dir, [sources["train"][i] for i in range(len(sources["train"]))]


def _build(manual_dir, data_dir, config="original"):
  builder = tfds.builder("taleqani_all", data_dir=str(data_dir), config=config)
  builder.download_and_prepare(
      download_config=tfds.download.DownloadConfig(manual_dir=str(manual_dir)))
  return builder


@pytest.fixture
def small(tmp_path):
  """A 3-images-per-class copy of the sample to break; returns (manual_dir, data_dir)."""
  for folder in FOLDERS:
    dst = tmp_path / "manual/Original" / folder
    dst.mkdir(parents=True)
    for path in sorted((SAMPLE / "Original" / folder).iterdir())[:3]:
      shutil.copyfile(path, dst / path.name)  # not the mode: tests overwrite the copies
  return tmp_path / "manual", tmp_path / "data"


def test_sample_counts_and_labels(sample):
  _, records = sample
  assert len(records) == 240
  names = taleqani.CLASS_NAMES
  assert names == ("benign", "early_pre_b", "pre_b", "pro_b")
  assert collections.Counter(names[r["label"]] for r in records) == {n: 60 for n in names}
  for folder, name in zip(FOLDERS, names):
    on_disk = sorted(p.name for p in (SAMPLE / "Original" / folder).iterdir())
    assert sorted(r["file_name"].decode() for r in records if names[r["label"]] == name) == on_disk
  assert not any("subject_id" in r for r in records)  # no patient ids in this dataset


def test_sample_bytes_unchanged_and_hashed(sample):
  _, records = sample
  by_name = {r["file_name"].decode(): r for r in records}
  for folder in FOLDERS:
    for path in (SAMPLE / "Original" / folder).iterdir():
      data = path.read_bytes()
      assert by_name[path.name]["image"] == data  # stored JPEG bytes = the file, no re-encoding
      assert by_name[path.name]["image_sha256"].decode() == hashlib.sha256(data).hexdigest()


def test_sample_duplicates_present(sample):
  _, records = sample
  sha = {r["file_name"].decode(): r["image_sha256"] for r in records}
  for a, b in DUPLICATE_PAIRS:
    assert sha[f"WBC-Malignant-Pro-{a:03d}.jpg"] == sha[f"WBC-Malignant-Pro-{b:03d}.jpg"]
  assert len(set(sha.values())) == 240 - len(DUPLICATE_PAIRS)


def test_decoded_without_tensorflow(sample):
  data_dir, _ = sample
  src = tfds.data_source("taleqani_all/original", split="train", data_dir=str(data_dir))
  r = src[0]
  assert r["image"].dtype == np.uint8 and r["image"].shape == (224, 224, 3)
  assert r["file_name"] == b"WBC-Benign-001.jpg" and r["label"] == 0
  with Image.open(SAMPLE / "Original/Benign/WBC-Benign-001.jpg") as im:
    np.testing.assert_array_equal(r["image"], np.asarray(im))


def test_sample_readme_states_source_and_licence():
  text = (SAMPLE / "README.md").read_text()
  for needle in ("10.34740/KAGGLE/DSV/2175623", "5113", "CC BY 4.0", "first 60", "8 pairs"):
    assert needle in text


def test_segmented_missing_from_sample(tmp_path):
  with pytest.raises(errors.MissingManualDownloadError,
                     match=r"(?s)No Segmented/ folder in .*sample.*Found:.*Original/.*mehradaria"):
    _build(SAMPLE, tmp_path, config="segmented")


def test_missing_manual_download(tmp_path):
  (tmp_path / "manual").mkdir()
  with pytest.raises(errors.MissingManualDownloadError,
                     match=r"(?s)No manual download found.*Original/\{Benign,Early,Pre,Pro\}"):
    _build(tmp_path / "manual", tmp_path / "data")


def test_wrapper_folder_accepted(small):
  manual, data = small
  shutil.move(manual / "Original", manual / "Acute Lymphoblastic Leukemia" / "Original")
  builder = _build(manual, data)
  assert builder.info.splits["train"].num_examples == 12
  assert builder.info.metadata["folder"] == "Acute Lymphoblastic Leukemia/Original"


def test_missing_class_folder(small):
  manual, data = small
  shutil.rmtree(manual / "Original/Pre")
  with pytest.raises(errors.MissingManualDownloadError, match=r"Class folder .*Original/Pre is "
                                                              r"missing"):
    _build(manual, data)


def test_empty_class_folder(small):
  manual, data = small
  for path in (manual / "Original/Early").iterdir():
    path.unlink()
  with pytest.raises(errors.EmptyClassFolderError, match=r"Original/Early is empty"):
    _build(manual, data)


def test_unrecognised_layout(small):
  manual, data = small
  (manual / "Original/Malignant").mkdir()
  with pytest.raises(errors.UnrecognizedLayoutError, match=r"\['Malignant'\].*Benign"):
    _build(manual, data)


def test_non_image_file(small):
  manual, data = small
  (manual / "Original/Pro/notes.txt").write_text("x")
  with pytest.raises(errors.UnrecognizedLayoutError, match=r"Original/Pro.*notes\.txt"):
    _build(manual, data)


def _truncate(path: pathlib.Path) -> None:
  data = path.read_bytes()
  path.write_bytes(data[: len(data) // 2])


def test_corrupt_image_raises(small):
  manual, data = small
  _truncate(manual / "Original/Pre/WBC-Malignant-Pre-002.jpg")
  with pytest.raises(errors.CorruptImageError,
                     match=r"Original/Pre/WBC-Malignant-Pre-002\.jpg .*truncated.*on_corrupt"):
    _build(manual, data)


def test_grey_image_rejected(small):
  manual, data = small
  path = manual / "Original/Benign/WBC-Benign-001.jpg"
  buf = io.BytesIO()
  Image.open(path).convert("L").save(buf, format="JPEG")
  path.write_bytes(buf.getvalue())
  with pytest.raises(errors.CorruptImageError, match=r"WBC-Benign-001\.jpg has mode L"):
    _build(manual, data)


def test_corrupt_image_skipped_by_config(small, caplog):
  manual, data = small
  _truncate(manual / "Original/Pro/WBC-Malignant-Pro-003.jpg")
  with caplog.at_level("WARNING"):
    builder = _build(manual, data, config="original_skip_corrupt")
  assert builder.info.splits["train"].num_examples == 11
  assert builder.info.metadata["skipped_corrupt"] == ["Original/Pro/WBC-Malignant-Pro-003.jpg"]
  assert "skipping Original/Pro/WBC-Malignant-Pro-003.jpg" in caplog.text


def test_skip_build_never_stands_in_for_the_complete_one(small, monkeypatch):
  manual, data = small
  bad = "Original/Early/WBC-Malignant-Early-001.jpg"
  (manual / bad).write_bytes(b"not a jpeg")
  monkeypatch.setenv(errors.ON_CORRUPT_ENV, "skip")
  with pytest.raises(errors.DataError, match=r"'original' is the complete build.*'original_skip_corrupt'"):
    _build(manual, data)  # the variable no longer turns the complete config into a skipping one
  name = sources.resolve_builder_config("taleqani_all", "original")
  assert name == "original_skip_corrupt" and sources.resolve_builder_config("taleqani_all", None) == name
  loaded = sources.load_dataset("taleqani_all", builder_config=name, data_dir=str(data), manual_dir=str(manual))
  assert len(loaded.sources["train"]) == 11
  assert loaded.build == {"name": "taleqani_all/original_skip_corrupt/1.0.0", "on_corrupt": "skip",
                          "skipped_corrupt": [bad]}
  monkeypatch.setenv(errors.ON_CORRUPT_ENV, "ignore")
  with pytest.raises(errors.DataError, match=r"on_corrupt='ignore' is not one of"):
    _build(manual, data.parent / "data2")
  monkeypatch.delenv(errors.ON_CORRUPT_ENV)
  with pytest.raises(errors.DataError, match=r"'mine'.*does not end in '_skip_corrupt'.*'mine_skip_corrupt'"):
    _build(manual, data.parent / "data3", config=taleqani.TaleqaniConfig(name="mine", on_corrupt="skip"))


def test_skip_build_under_the_complete_name_is_refused(small):
  """A build an older LeukoJAX made with LEUKOJAX_ON_CORRUPT=skip under the default name."""
  manual, data = small
  builder = _build(manual, data)
  meta = pathlib.Path(builder.data_dir) / "metadata.json"
  meta.write_text(meta.read_text().replace('"on_corrupt": "error"', '"on_corrupt": "skip"'))
  with pytest.raises(errors.DataError, match=r"built with on_corrupt=skip.*complete build's name.*rebuild"):
    sources.load_dataset("taleqani_all", builder_config="original", data_dir=str(data))
