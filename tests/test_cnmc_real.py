"""The C-NMC 2019 builder and the subject protocols on REAL cells: the bundled sample (88 original
BMPs of fold_1, 8 subjects) and the real preliminary-test label file it ships."""

import collections
import hashlib
import os
import shutil
import stat
import tarfile

import numpy as np
import pytest
import tensorflow_datasets as tfds

from leukojax.data import errors, splits
from leukojax.data.catalog import scan_sources
from leukojax.data.sources import load_split_sources
from leukojax.data.views import get_view
from tfds_builders.cnmc2019 import cnmc2019_dataset_builder as cnmc

SAMPLE = cnmc.SAMPLE_MANUAL_DIR
FOLD_1 = SAMPLE / "C-NMC_Leukemia/training_data/fold_1"
CSV = SAMPLE / "C-NMC_Leukemia/validation_data" / cnmc.PRELIM_CSV
SUBJECT_CELLS = {"2": 7, "16": 7, "30": 7, "34": 7, "44": 7, "51": 7, "H10": 23, "H14": 23}
ABSENT = ["fold_0 (training_data/fold_0/)", "fold_2 (training_data/fold_2/)",
          "prelim_test (C-NMC_test_prelim_phase_data/ images; the label file is here)",
          "final_test (C-NMC_test_final_phase_data/ images)"]


def _build(manual_dir, data_dir, config="verified"):
  builder = tfds.builder("cnmc2019", data_dir=str(data_dir), config=config)
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=str(manual_dir)))
  return builder


@pytest.fixture(scope="module")
def sample_build(tmp_path_factory):
  data_dir = tmp_path_factory.mktemp("cnmc_real")
  builder = _build(SAMPLE, data_dir)
  return builder, builder.as_data_source(split="fold_1")


def test_sample_builds_verified_with_absent_parts_named(sample_build):
  builder, _ = sample_build
  assert list(builder.info.splits) == ["fold_1"]
  assert builder.info.splits["fold_1"].num_examples == 88
  meta = builder.info.metadata
  assert meta["verified"] is True and meta["not_in_manifest"] == 0
  assert meta["absent"] == ABSENT
  assert [[p.rsplit("/", 1)[1] for p in pair] for pair in meta["duplicates"]] == [
      ["UID_H10_130_2_hem.bmp", "UID_H10_163_2_hem.bmp"]]


def test_every_real_name_parsed_and_hash_official(sample_build):
  _, src = sample_build
  manifest = cnmc.load_manifest()
  records = [src[i] for i in range(len(src))]
  assert collections.Counter(r["subject_id"].decode() for r in records) == SUBJECT_CELLS
  for r in records:
    name = r["file_name"].decode()
    _, subject, image, cell, cls = name[:-4].split("_")
    assert (r["subject_id"].decode(), int(r["image_index"]), int(r["cell_index"])) == (
        subject.upper(), int(image), int(cell))
    assert cnmc.CLASS_NAMES[r["label"]] == cls and r["fold"] == 1
    assert r["image"].shape == (450, 450, 3)
    official = manifest[f"C-NMC_Leukemia/training_data/fold_1/{cls}/{name}"]
    assert r["image_sha256"].decode() == official[1]
    assert hashlib.sha256((FOLD_1 / cls / name).read_bytes()).hexdigest() == official[1]


def test_real_prelim_label_file_parses():
  rows = cnmc.read_prelim_labels(CSV.read_bytes(), CSV.name)
  assert CSV.read_bytes().count(b"\r\n") == 1868  # header + 1,867 rows, CRLF as published
  assert len(rows) == 1867
  assert collections.Counter(r.label for r in rows) == {1: 1219, 0: 648}
  assert len({r.subject_id for r in rows}) == 28
  first = rows[0]
  assert (first.new_name, first.label, first.subject_id, first.original_name) == (
      "1.bmp", 1, "57", "UID_57_29_1_all.bmp")
  assert cnmc.image_and_cell(first.original_name) == (29, 1)


def test_tar_xz_read_only_builds_the_same_records(sample_build, tmp_path):
  """The archive as shipped (.tar.xz), in a read-only folder: unpacked into the build's cache."""
  manual = tmp_path / "manual"
  manual.mkdir()
  with tarfile.open(manual / "C-NMC_Leukemia_sample.tar.xz", "w:xz", preset=0) as tar:
    tar.add(FOLD_1, arcname="C-NMC_Leukemia/training_data/fold_1")
  os.chmod(manual, stat.S_IRUSR | stat.S_IXUSR)
  try:
    builder = _build(manual, tmp_path / "data")
  finally:
    os.chmod(manual, stat.S_IRWXU)
  assert sorted(p.name for p in manual.iterdir()) == ["C-NMC_Leukemia_sample.tar.xz"]
  assert builder.info.metadata["source"] == "tar"
  got = builder.as_data_source(split="fold_1")
  _, want = sample_build
  for i in (0, 41, 87):
    a, b = got[i], want[i]
    assert a["file_name"] == b["file_name"] and a["image_sha256"] == b["image_sha256"]
    np.testing.assert_array_equal(a["image"], b["image"])


@pytest.fixture
def sample_copy(tmp_path):
  manual = tmp_path / "manual"
  shutil.copytree(SAMPLE / "C-NMC_Leukemia", manual / "C-NMC_Leukemia")
  return manual


def test_changed_bytes_stop_the_build_naming_the_file(sample_copy, tmp_path):
  path = sample_copy / "C-NMC_Leukemia/training_data/fold_1/all/UID_2_1_1_all.bmp"
  if not path.exists():
    path = sorted((sample_copy / "C-NMC_Leukemia/training_data/fold_1/all").iterdir())[0]
  data = bytearray(path.read_bytes())
  data[-1] ^= 0x01  # one pixel's blue value changes by one: decodes fine, same size
  path.write_bytes(bytes(data))
  with pytest.raises(errors.ChecksumError, match=rf"{path.name} differs from the official file.*unverified"):
    _build(sample_copy, tmp_path / "data")
  builder = _build(sample_copy, tmp_path / "data_unverified", config="unverified")  # the explicit opt-out
  assert builder.info.metadata["verified"] is False and builder.info.splits["fold_1"].num_examples == 88


def test_wrong_size_is_caught_before_any_image_is_read(sample_copy, tmp_path):
  path = sorted((sample_copy / "C-NMC_Leukemia/training_data/fold_1/hem").iterdir())[3]
  path.write_bytes(path.read_bytes() + b"\0")
  with pytest.raises(errors.ChecksumError, match=rf"{path.name} has 608455 bytes; the official"):
    _build(sample_copy, tmp_path / "data")


def _catalog(builder_sources, protocol):
  wanted = splits.source_splits("cnmc2019", protocol, available=list(builder_sources))
  catalog, _ = scan_sources(builder_sources, wanted).apply_view(get_view("cnmc2019", "binary"))
  return catalog


@pytest.fixture(scope="module")
def sample_sources(sample_build):
  builder, _ = sample_build
  return load_split_sources("cnmc2019", builder_config="verified", data_dir=str(builder.data_dir_root),
                            decode_images=False)


def test_subject_cv_leaves_one_healthy_subject_out(sample_sources):
  catalog = _catalog(sample_sources, "subject_cv")
  tested = collections.Counter()
  for fold in (0, 1):
    result = splits.make_splits(catalog, dataset="cnmc2019", protocol="subject_cv", fractions=(0.7, 0.15, 0.15),
                                seed=0, dedup=True, fold=fold)
    assert result.duplicates_dropped == 1  # the real H10 pair, removed before the split
    cat = result.catalog
    sub = {k: {s.decode() for s in cat.subject_id[v]} for k, v in result.rows.items()}
    assert not (sub["train"] | sub["val"]) & sub["test"]
    assert sub["val"] <= sub["train"]  # validation: held-out cells of the training subjects
    healthy_test = {s for s in sub["test"] if s.startswith("H")}
    assert len(healthy_test) == 1 and len(sub["test"] - healthy_test) == 3
    assert len({s for s in sub["train"] if s.startswith("H")}) == 1
    tested.update(sub["test"])
  assert tested == {s: 1 for s in SUBJECT_CELLS}  # every subject tested exactly once
  with pytest.raises(ValueError, match=r"num_folds=3.*rarest class \(2"):
    splits.make_splits(catalog, dataset="cnmc2019", protocol="subject_cv", fractions=(0.7, 0.15, 0.15),
                       seed=0, dedup=True, num_folds=3)


def test_protocols_needing_absent_parts_name_them(sample_sources):
  with pytest.raises(errors.MissingManualDownloadError, match=r"'official' tests on 'prelim_test'.*prelim_phase"):
    splits.source_splits("cnmc2019", "official", available=list(sample_sources))
  catalog = _catalog(sample_sources, "subject")
  with pytest.raises(ValueError, match=r"Class 0 has 2 subject\(s\): too few"):
    splits.make_splits(catalog, dataset="cnmc2019", protocol="subject", fractions=(0.7, 0.15, 0.15), seed=0,
                       dedup=True)
