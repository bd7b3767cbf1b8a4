"""The C-NMC 2019 builder on SYNTHETIC stand-in data in the layouts the real sample lacks.

Test phases, the TCIA layout and zip archives (tests/test_cnmc_real.py reads real cells). The
stand-in's files are not the official ones, so these builds use the `unverified` config.
"""

import collections
import csv
import hashlib
import io
import os
import pathlib
import shutil
import subprocess
import sys
import zipfile

import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image

from leukojax.data import errors
from leukojax.data.sources import load_split_sources
from leukojax.data.synthetic_cnmc import write_synthetic_cnmc
from tfds_builders.cnmc2019 import cnmc2019_dataset_builder as cnmc

REPO = pathlib.Path(__file__).resolve().parents[1]
SPLITS = ["fold_0", "fold_1", "fold_2", "prelim_test", "final_test"]
# The default synthetic set: per fold 2 ALL + 2 HEM subjects x 3 cells; prelim 2 + 2 subjects x 3
# cells; final 4 subjects x 3 cells, unlabelled.
EXPECTED = {
    "fold_0": ({"all": 6, "hem": 6}, {"1": 3, "2": 3, "H1": 3, "H2": 3}),
    "fold_1": ({"all": 6, "hem": 6}, {"3": 3, "4": 3, "H3": 3, "H4": 3}),
    "fold_2": ({"all": 6, "hem": 6}, {"5": 3, "6": 3, "H5": 3, "H6": 3}),
    "prelim_test": ({"all": 6, "hem": 6}, {"7": 3, "8": 3, "H7": 3, "H8": 3}),
    "final_test": ({"unlabelled": 12}, {"": 12}),
}
VARIANTS = [("kaggle", False), ("tcia", False), ("kaggle", True), ("tcia", True)]


def _records(src) -> list[dict]:
  return [src[i] for i in range(len(src))]


def _stats(records) -> tuple[dict, dict]:
  names = {0: "hem", 1: "all", -1: "unlabelled"}
  classes = collections.Counter(names[int(r["label"])] for r in records)
  subjects = collections.Counter(r["subject_id"].decode() for r in records)
  return dict(classes), dict(subjects)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
  """Each layout variant written once and built once: {(layout, zipped): (summary, sources)}."""
  out = {}
  for layout, zipped in VARIANTS:
    root = tmp_path_factory.mktemp(f"{layout}_{'zip' if zipped else 'dir'}")
    summary = write_synthetic_cnmc(root / "manual", layout=layout, zipped=zipped)
    sources = load_split_sources("cnmc2019", builder_config="unverified", data_dir=str(root / "data"),
                                 manual_dir=str(root / "manual"), decode_images=False)
    out[(layout, zipped)] = summary, sources
  return out


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
  """A minimal Kaggle-layout download (one cell per subject) that error tests copy and break."""
  root = tmp_path_factory.mktemp("tiny")
  write_synthetic_cnmc(root, subjects_per_class=1, cells_per_subject=1, prelim_subjects_per_class=1,
                       prelim_cells_per_subject=1, final_subjects=2, final_cells_per_subject=1)
  return root


def _build(manual_dir, data_dir, config="unverified"):
  builder = tfds.builder("cnmc2019", data_dir=str(data_dir), config=config)
  builder.download_and_prepare(
      download_config=tfds.download.DownloadConfig(manual_dir=str(manual_dir)))
  return builder


@pytest.fixture
def broken(tiny, tmp_path):
  """A fresh copy of the tiny download to damage; returns (manual_dir, data_dir)."""
  manual = tmp_path / "manual"
  shutil.copytree(tiny, manual)
  return manual, tmp_path / "data"


def test_counts_per_split_class_and_subject(built):
  summary, sources = built[("kaggle", False)]
  assert list(sources) == SPLITS
  for split, (classes, subjects) in EXPECTED.items():
    assert _stats(_records(sources[split])) == (classes, subjects), split
    assert summary["splits"][split] == {"num_examples": sum(classes.values()),
                                        "classes": classes, "subjects": subjects}


@pytest.mark.parametrize("variant", VARIANTS[1:],
                         ids=lambda v: f"{v[0]}-{'zip' if v[1] else 'dir'}")
def test_layouts_and_zips_give_identical_records(built, variant):
  reference = built[("kaggle", False)][1]
  summary, sources = built[variant]
  for split in SPLITS:
    assert _records(sources[split]) == _records(reference[split]), split
  builder = tfds.builder("cnmc2019", data_dir=str(pathlib.Path(summary["root"]).parent / "data"),
                         config="unverified")
  assert builder.info.metadata["layout"] == variant[0]
  assert builder.info.metadata["source"] == ("zip" if variant[1] else "folder")


def test_labels_match_folders_file_names_and_csv(built):
  summary, sources = built[("kaggle", False)]
  for split in SPLITS[:3]:
    for r in _records(sources[split]):
      name = r["file_name"].decode()
      assert cnmc.CLASS_NAMES[r["label"]] == name[:-4].rsplit("_", 1)[1]
      assert r["subject_id"].decode() == name.split("_")[1]
      assert r["fold"] == int(split[-1])
  csv_path = pathlib.Path(summary["root"]) / "C-NMC_Leukemia/validation_data" / cnmc.PRELIM_CSV
  rows = {row["new_names"]: row for row in csv.DictReader(csv_path.open())}
  prelim = _records(sources["prelim_test"])
  assert sorted(r["file_name"].decode() for r in prelim) == sorted(rows)
  for r in prelim:
    row = rows[r["file_name"].decode()]
    assert r["label"] == int(row["labels"]) and r["fold"] == -1
    assert r["subject_id"].decode() == row["Patient_ID"].split("_")[1]


def test_images_lossless_and_hashed(built, tmp_path):
  summary, _ = built[("kaggle", False)]
  data_dir = pathlib.Path(summary["root"]).parent / "data"
  sources = load_split_sources("cnmc2019", builder_config="unverified", data_dir=str(data_dir))
  r = sources["fold_1"][7]
  assert r["image"].dtype == np.uint8 and r["image"].shape == (450, 450, 3)
  path = next(pathlib.Path(summary["root"]).rglob(r["file_name"].decode()))
  data = path.read_bytes()
  assert r["image_sha256"].decode() == hashlib.sha256(data).hexdigest()
  with Image.open(io.BytesIO(data)) as im:
    assert im.format == "BMP" and im.mode == "RGB"
    np.testing.assert_array_equal(r["image"], np.asarray(im))


def test_final_test_keeps_challenge_order(built):
  records = _records(built[("tcia", True)][1]["final_test"])
  assert [r["file_name"].decode() for r in records] == [f"{i}.bmp" for i in range(1, 13)]
  assert {(r["label"], r["fold"], r["subject_id"]) for r in records} == {(-1, -1, b"")}
  assert sorted(cnmc.natural_key(n) for n in ["10.bmp", "2.bmp", "1.bmp"]) == [
      cnmc.natural_key(n) for n in ["1.bmp", "2.bmp", "10.bmp"]]


def test_tcia_package_folder_with_csv_inside(tiny, tmp_path):
  """TCIA's "PKG - C-NMC 2019/" wrapper, with the CSV inside the prelim folder, builds the same."""
  pkg = tmp_path / "manual/PKG - C-NMC 2019"
  src = tiny / "C-NMC_Leukemia"
  shutil.copytree(src / "training_data", pkg / "C-NMC_training_data")
  shutil.copytree(src / "validation_data/C-NMC_test_prelim_phase_data",
                  pkg / "C-NMC_test_prelim_phase_data")
  shutil.copy(src / "validation_data" / cnmc.PRELIM_CSV, pkg / "C-NMC_test_prelim_phase_data")
  shutil.copytree(src / "testing_data/C-NMC_test_final_phase_data",
                  pkg / "C-NMC_test_final_phase_data")
  got = load_split_sources("cnmc2019", builder_config="unverified", data_dir=str(tmp_path / "data"),
                           manual_dir=str(tmp_path / "manual"), decode_images=False)
  want = load_split_sources("cnmc2019", builder_config="unverified", data_dir=str(tmp_path / "data_ref"), manual_dir=str(tiny),
                            decode_images=False)
  for split in SPLITS:
    assert _records(got[split]) == _records(want[split]), split


def test_synthetic_generator_deterministic_and_learnable(tmp_path):
  kwargs = dict(subjects_per_class=1, cells_per_subject=1, prelim_subjects_per_class=1,
                prelim_cells_per_subject=1, final_subjects=2, final_cells_per_subject=1)
  a = write_synthetic_cnmc(tmp_path / "a", layout="tcia", **kwargs)
  b = write_synthetic_cnmc(tmp_path / "b", layout="tcia", **kwargs)
  c = write_synthetic_cnmc(tmp_path / "c", layout="tcia", seed=1, **kwargs)
  rel = lambda s: sorted(str(pathlib.Path(f).relative_to(s["root"])) for f in s["files"])
  assert rel(a) == rel(b) == rel(c) and a["splits"] == b["splits"]
  same = [(pathlib.Path(a["root"]) / f).read_bytes() == (pathlib.Path(b["root"]) / f).read_bytes()
          for f in rel(a)]
  differ = [(pathlib.Path(a["root"]) / f).read_bytes() != (pathlib.Path(c["root"]) / f).read_bytes()
            for f in rel(a) if f.endswith(".bmp")]
  assert all(same) and all(differ)
  brightness = collections.defaultdict(list)  # ALL cells are darker (large dark nucleus)
  for path in (tmp_path / "a/C-NMC_training_data").rglob("*.bmp"):
    pixels = np.asarray(Image.open(path), dtype=np.float32)
    with Image.open(path) as im:
      assert im.format == "BMP" and im.mode == "RGB" and im.size == (450, 450)
    brightness[path.parent.name].append(pixels[pixels.sum(-1) > 0].mean())
  assert max(brightness["all"]) < min(brightness["hem"])


@pytest.mark.parametrize("name,expected", [
    ("UID_11_10_1_all.bmp", ("11", "all")), ("UID_H10_43_1_hem.bmp", ("H10", "hem")),
    ("UID_h3_1_2_HEM.BMP", ("H3", "hem"))])
def test_subject_from_file_name(name, expected):
  assert cnmc.subject_from_file_name(name, name) == expected


@pytest.mark.parametrize("patient_id,expected", [
    ("UID_57_29_1_all.bmp", ("57", "all")), ("UID_H49_35_1_hem.bmp", ("H49", "hem")),
    ("57", ("57", None)), (" H49 ", ("H49", None)), ("UID_57", ("57", None))])
def test_subject_from_patient_id(patient_id, expected):
  assert cnmc.subject_from_patient_id(patient_id, "csv") == expected


def test_bad_file_name_raises(broken):
  manual, data = broken
  old = next(manual.rglob("fold_0/all/*.bmp"))
  old.rename(old.with_name("cell_0001.bmp"))
  with pytest.raises(errors.FileNameError, match=r"fold_0/all/cell_0001\.bmp.*UID_<subject>"):
    _build(manual, data)


def test_missing_manual_download(tmp_path):
  (tmp_path / "manual").mkdir()
  with pytest.raises(errors.MissingManualDownloadError,
                     match=r"(?s)No manual download found in .*manual.*andrewmvd/leukemia-classif"
                           r".*C-NMC_training_data/fold_"):
    load_split_sources("cnmc2019", builder_config="unverified", data_dir=str(tmp_path / "data"),
                       manual_dir=str(tmp_path / "manual"))


def test_partial_download_builds_what_exists(broken):
  manual, data = broken
  shutil.rmtree(manual / "C-NMC_Leukemia/testing_data")
  shutil.rmtree(manual / "C-NMC_Leukemia/training_data/fold_2")
  builder = _build(manual, data)
  assert sorted(builder.info.splits) == ["fold_0", "fold_1", "prelim_test"]
  assert builder.info.metadata["absent"] == [
      "fold_2 (training_data/fold_2/)", "final_test (C-NMC_test_final_phase_data/ images)"]


def test_unrecognised_layout(tmp_path):
  (tmp_path / "manual/images/all").mkdir(parents=True)
  (tmp_path / "manual/images/all/cell.bmp").write_bytes(b"x")
  with pytest.raises(errors.UnrecognizedLayoutError,
                     match=r"(?s)No C-NMC 2019 files found.*Found:.*images/all/cell\.bmp.*"
                           r"Expected one of these layouts.*Kaggle.*TCIA"):
    _build(tmp_path / "manual", tmp_path / "data")


def test_unexpected_class_folder(broken):
  manual, data = broken
  shutil.copytree(manual / "C-NMC_Leukemia/training_data/fold_0/all",
                  manual / "C-NMC_Leukemia/training_data/fold_0/blasts")
  with pytest.raises(errors.UnrecognizedLayoutError, match=r"fold_0/blasts/UID_1_1_1_all\.bmp"):
    _build(manual, data)


def test_empty_class_folder(broken):
  manual, data = broken
  for f in (manual / "C-NMC_Leukemia/training_data/fold_1/hem").iterdir():
    f.unlink()
  with pytest.raises(errors.EmptyClassFolderError, match=r"training_data/fold_1/hem/ is empty"):
    _build(manual, data)


def test_csv_row_naming_missing_file(broken):
  manual, data = broken
  (manual / "C-NMC_Leukemia/validation_data/C-NMC_test_prelim_phase_data/2.bmp").unlink()
  with pytest.raises(errors.CsvMismatchError,
                     match=r"labels\.csv line 3 names 2\.bmp, which is not in"):
    _build(manual, data)


def test_image_without_csv_row(broken):
  manual, data = broken
  csv_path = manual / "C-NMC_Leukemia/validation_data" / cnmc.PRELIM_CSV
  lines = csv_path.read_text().splitlines()
  csv_path.write_text("\n".join(lines[:-1]) + "\n")
  with pytest.raises(errors.CsvMismatchError, match=r"1 prelim image\(s\) have no row in .*2\.bmp"):
    _build(manual, data)


def test_two_copies_of_the_download(broken):
  manual, data = broken
  write_synthetic_cnmc(manual, zipped=True, subjects_per_class=1, cells_per_subject=1,
                       prelim_subjects_per_class=1, prelim_cells_per_subject=1, final_subjects=2,
                       final_cells_per_subject=1)
  with pytest.raises(errors.DataError, match=r"(copies|more than once).*(zip|Keep one)"):
    _build(manual, data)


def _truncate(path: pathlib.Path) -> None:
  data = path.read_bytes()
  path.write_bytes(data[: len(data) // 2])


def test_corrupt_image_raises_by_default(broken):
  manual, data = broken
  _truncate(manual / "C-NMC_Leukemia/training_data/fold_2/hem/UID_H3_1_1_hem.bmp")
  with pytest.raises(errors.CorruptImageError,
                     match=r"fold_2/hem/UID_H3_1_1_hem\.bmp.*on_corrupt='skip'"):
    _build(manual, data)


def test_corrupt_image_skipped_and_logged(broken, caplog):
  manual, data = broken
  bad = "C-NMC_Leukemia/testing_data/C-NMC_test_final_phase_data/1.bmp"
  _truncate(manual / bad)
  with zipfile.ZipFile(manual / "bad_member.zip", "w"):
    pass  # an empty zip beside the data is ignored (logged), not an error
  config = cnmc.CnmcConfig(name="skip_corrupt", on_corrupt="skip", verify=False)
  with caplog.at_level("WARNING"):
    builder = _build(manual, data, config=config)
  assert builder.info.splits["final_test"].num_examples == 1
  assert builder.info.splits["fold_0"].num_examples == 2
  assert builder.info.metadata["skipped_corrupt"] == [bad]
  assert f"skipping {bad}" in caplog.text
  reread = tfds.builder("cnmc2019", data_dir=str(data), config=config)
  assert reread.info.metadata["skipped_corrupt"] == [bad]


def test_damaged_zip_member(tmp_path):
  manual = tmp_path / "manual"
  write_synthetic_cnmc(manual, layout="tcia", zipped=True, subjects_per_class=1,
                       cells_per_subject=1, prelim_subjects_per_class=1,
                       prelim_cells_per_subject=1, final_subjects=2, final_cells_per_subject=1)
  archive = manual / "C-NMC_test_final_phase_data.zip"
  with zipfile.ZipFile(archive) as z:
    info = z.getinfo("C-NMC_test_final_phase_data/2.bmp")
  raw = bytearray(archive.read_bytes())
  start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)
  raw[start + info.compress_size // 2] ^= 0xFF  # flip a byte inside the compressed data
  archive.write_bytes(bytes(raw))
  with pytest.raises(errors.CorruptImageError,
                     match=r"C-NMC_test_final_phase_data\.zip/C-NMC_test_final_phase_data/2\.bmp "
                           r"from its zip archive"):
    _build(manual, tmp_path / "data")


def test_tfds_build_cli(tiny, tmp_path):
  # `python -m tfds_builders build` runs TFDS's own `build` command: the `tfds` script of
  # tensorflow-datasets 4.9.10 needs TensorFlow at start-up (see tfds_builders/__main__.py).
  result = subprocess.run(
      [sys.executable, "-m", "tfds_builders", "build", "tfds_builders/cnmc2019", "--config=unverified",
       f"--manual_dir={tiny}", f"--data_dir={tmp_path}", "--file_format=array_record"],
      cwd=REPO, capture_output=True, text=True, timeout=300,
      env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
  assert result.returncode == 0, result.stderr[-3000:]
  files = sorted(p.name for p in (tmp_path / "cnmc2019/unverified/2.0.0").iterdir())
  assert "cnmc2019-final_test.array_record-00000-of-00001" in files
  sources = load_split_sources("cnmc2019", builder_config="unverified", data_dir=str(tmp_path))
  assert {k: len(v) for k, v in sources.items()} == {
      "fold_0": 2, "fold_1": 2, "fold_2": 2, "prelim_test": 2, "final_test": 2}
