"""TFDS builder for C-NMC 2019 (ISBI 2019 ALL vs normal B-lymphoid cells), manual download.

    tfds build tfds_builders/cnmc2019 --manual_dir=/path/to/download --data_dir=DIR
        --file_format=array_record

Accepts the Kaggle and the TCIA layout, extracted or as the downloaded zip archives (read in
place with `zipfile`), in any wrapper folder (`PKG - C-NMC 2019/...`). Strict by design: every
file inside the dataset folders must be understood, and each problem raises a `DataError`
(`leukojax.data.errors`) naming the file and the fix. Records are written in a fixed order
(`disable_shuffling`): training folds `all/` then `hem/`, and the test sets in the challenge's
numeric order `1.bmp, 2.bmp, ...`, so record i of `final_test` is image `i+1`.
"""

from __future__ import annotations

import collections
import csv
import dataclasses
import hashlib
import io
import re

from absl import logging
from etils import epath
import numpy as np
import tensorflow_datasets as tfds

from leukojax.data import errors
from tfds_builders import raw_files

CLASS_NAMES = ("hem", "all")  # label 1 = ALL, the positive class
SPLITS = ("fold_0", "fold_1", "fold_2", "prelim_test", "final_test")
IMAGE_SIZE = 450
PRELIM_CSV = "C-NMC_test_prelim_phase_data_labels.csv"
_TRAIN_ROOTS = {"training_data": "kaggle", "C-NMC_training_data": "tcia"}
_PRELIM_DIR = "C-NMC_test_prelim_phase_data"
_FINAL_DIR = "C-NMC_test_final_phase_data"
_TRAIN_NAME = re.compile(r"^UID_(H?\d+)_(.+)_(all|hem)\.bmp$", re.IGNORECASE)
_PATIENT_ID = re.compile(r"^(?:UID_)?(H?\d+)(?:_.*?(?:_(all|hem))?)?(?:\.bmp)?$", re.IGNORECASE)

EXPECTED_LAYOUT = f"""\
  Kaggle (andrewmvd/leukemia-classification), extracted or as the downloaded .zip:
    C-NMC_Leukemia/training_data/fold_{{0,1,2}}/{{all,hem}}/UID_*.bmp
    C-NMC_Leukemia/validation_data/{_PRELIM_DIR}/<n>.bmp
    C-NMC_Leukemia/validation_data/{PRELIM_CSV}
    C-NMC_Leukemia/testing_data/{_FINAL_DIR}/<n>.bmp
  TCIA (collection C-NMC 2019), extracted or as the downloaded .zip files:
    C-NMC_training_data/fold_{{0,1,2}}/{{all,hem}}/UID_*.bmp
    {_PRELIM_DIR}/<n>.bmp
    {PRELIM_CSV}   (beside or inside {_PRELIM_DIR}/)
    {_FINAL_DIR}/<n>.bmp
  Any wrapper folder above these is fine (e.g. "PKG - C-NMC 2019/")."""

MANUAL_DOWNLOAD_INSTRUCTIONS = f"""\
Download C-NMC 2019 (SBILab; licence CC BY 3.0) from either
  * TCIA: https://www.cancerimagingarchive.net/collection/c-nmc-2019/ (collection "C-NMC 2019"),
    the training data, the preliminary test data with {PRELIM_CSV}, and the final test data; or
  * Kaggle: `kaggle datasets download andrewmvd/leukemia-classification`
and put the downloaded files (zip archives as they are, or extracted) into the manual_dir
(`--manual_dir=...`, or `<data_dir>/downloads/manual/`). Expected:
{EXPECTED_LAYOUT}"""


@dataclasses.dataclass(eq=False)
class CnmcConfig(tfds.core.BuilderConfig):
  """Custom configs only: `on_corrupt='skip'` leaves undecodable images out (logged, counted).

  Use a new name, e.g. `CnmcConfig(name='skip_corrupt', on_corrupt='skip')`, so such a build is
  stored apart from the complete one. `None` reads `$LEUKOJAX_ON_CORRUPT`, default 'error'.
  """

  on_corrupt: str | None = None


@dataclasses.dataclass(frozen=True)
class _Item:
  file: raw_files.RawFile
  file_name: str
  label: int  # -1 = unlabelled
  subject_id: str
  fold: int


def natural_key(name: str) -> tuple:
  """Sort key giving `1.bmp, 2.bmp, ..., 10.bmp` (the challenge's order), not `1, 10, 2`."""
  return tuple(int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", name))


def subject_from_file_name(name: str, where: str) -> tuple[str, str]:
  """`UID_11_10_1_all.bmp` -> ('11', 'all'); `UID_H10_43_1_hem.bmp` -> ('H10', 'hem')."""
  m = _TRAIN_NAME.match(name)
  if not m:
    raise errors.FileNameError(
        f"Cannot read the subject from {where}: C-NMC training images are named "
        "UID_<subject>_<image>_<cell>_<all|hem>.bmp (e.g. UID_11_10_1_all.bmp, "
        "UID_H10_43_1_hem.bmp). Rename or remove the file.")
  return m.group(1).upper(), m.group(3).lower()


def subject_from_patient_id(patient_id: str, where: str) -> tuple[str, str | None]:
  """Normalises the prelim CSV's Patient_ID to the training form; also returns its class suffix.

  The CSV holds the original file name (`UID_57_29_1_all.bmp`); bare ids (`57`, `H49`, `UID_57`)
  are accepted too. The result is what `subject_from_file_name` gives: `57`, `H49`.
  """
  m = _PATIENT_ID.match(patient_id.strip())
  if not m:
    raise errors.CsvMismatchError(
        f"{where}: Patient_ID {patient_id!r} is not a C-NMC subject (expected an original name "
        "like UID_57_29_1_all.bmp or an id like 57 / H49). Fix the row.")
  return m.group(1).upper(), (m.group(2) or "").lower() or None


class Builder(tfds.core.GeneratorBasedBuilder):
  """C-NMC 2019: 450x450 single-cell images, ALL (1) vs HEM (0), subjects from file names."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Kaggle/TCIA layouts, folders or zips; PNG-stored images."}
  MANUAL_DOWNLOAD_INSTRUCTIONS = MANUAL_DOWNLOAD_INSTRUCTIONS
  BUILDER_CONFIGS = []  # the default build has no config; see CnmcConfig for on_corrupt
  # README/CITATIONS/TAGS/checksums beside this file. Set explicitly: TFDS infers them through
  # `importlib.resources`, which fails when `tfds_builders` resolves as a namespace package
  # (a stale editable install).
  pkg_dir_path = epath.Path(__file__).parent

  @tfds.core.utils.classproperty
  @classmethod
  def code_path(cls) -> epath.Path:
    return epath.Path(__file__)

  def __init__(self, *, file_format=None, **kwargs):
    super().__init__(file_format=file_format or "array_record", **kwargs)

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
        features=tfds.features.FeaturesDict({
            # PNG: lossless, decodable with PIL alone (the source BMPs are not storable as is).
            "image": tfds.features.Image(shape=(IMAGE_SIZE, IMAGE_SIZE, 3), encoding_format="png"),
            "label": tfds.features.ClassLabel(names=CLASS_NAMES),
            "subject_id": tfds.features.Text(),
            "fold": tfds.features.Scalar(dtype=np.int64),
            "file_name": tfds.features.Text(),
            "image_sha256": tfds.features.Text(),
        }),
        supervised_keys=("image", "label"),
        homepage="https://www.cancerimagingarchive.net/collection/c-nmc-2019/",
        disable_shuffling=True,
        metadata=tfds.core.MetadataDict(),
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    root = raw_files.manual_root(dl_manager, MANUAL_DOWNLOAD_INSTRUCTIONS)
    items, info = _index(raw_files.scan(root), root)
    config = self.builder_config
    log = errors.CorruptImageLog(errors.resolve_on_corrupt(getattr(config, "on_corrupt", None)))
    self.info.metadata.update(info, on_corrupt=log.policy, skipped_corrupt=log.skipped)
    return {split: self._generate_examples(split, items[split], log) for split in SPLITS}

  def _generate_examples(self, split: str, items: list[_Item], log: errors.CorruptImageLog):
    for item in items:
      try:
        data = item.file.read()  # a damaged zip member fails here
        image = errors.check_image(data, item.file.rel, size=(IMAGE_SIZE, IMAGE_SIZE),
                                   formats=("BMP",), convert_to_rgb=True)
      except errors.CorruptImageError as e:
        log.handle(e, item.file.rel)
        continue
      png = io.BytesIO()
      image.save(png, format="PNG", compress_level=3)
      yield f"{split}/{item.file_name}", {
          "image": png.getvalue(),
          "label": item.label,
          "subject_id": item.subject_id,
          "fold": item.fold,
          "file_name": item.file_name,
          "image_sha256": hashlib.sha256(data).hexdigest(),
      }
    if log.skipped:
      logging.warning("cnmc2019 %s: %s", split, log.summary())


def _index(files: list[raw_files.RawFile], root) -> tuple[dict[str, list[_Item]], dict]:
  """Sorts the manual download's files into splits, checking every one; no image is read here."""
  train, prelim, final, csvs, dirs, ignored = [], [], [], [], set(), []
  for f in files:
    parts = f.rel.split("/")
    dirs.update("/".join(parts[:i]) for i in range(1, len(parts)))
    if f.is_dir:
      dirs.add(f.rel)
      continue
    roots = [i for i, p in enumerate(parts[:-1]) if p in _TRAIN_ROOTS]
    if f.name == PRELIM_CSV:
      csvs.append(f)
    elif roots:
      tail = parts[roots[-1]:]
      if len(tail) != 4 or not re.fullmatch(r"fold_\d+", tail[1]) or not f.name.lower().endswith(
          ".bmp"):
        raise errors.UnrecognizedLayoutError(
            f"Unexpected file {f.rel} in the training data: expected "
            f"{tail[0]}/fold_<k>/<all|hem>/UID_*.bmp. Remove it. Accepted layouts:\n"
            + EXPECTED_LAYOUT)
      train.append((f, _TRAIN_ROOTS[tail[0]], tail[1], tail[2]))
    elif len(parts) > 1 and parts[-2] in (_PRELIM_DIR, _FINAL_DIR):
      if not f.name.lower().endswith(".bmp"):
        raise errors.UnrecognizedLayoutError(
            f"Unexpected file {f.rel}: {parts[-2]}/ holds only .bmp images (and the prelim CSV). "
            "Remove it.")
      (prelim if parts[-2] == _PRELIM_DIR else final).append(f)
    else:
      ignored.append(f.rel)
  if not (train or prelim or final or csvs):
    raise errors.UnrecognizedLayoutError(
        f"No C-NMC 2019 files found in {root}. Found:\n{raw_files.listing(files)}\n"
        f"Expected one of these layouts:\n{EXPECTED_LAYOUT}")
  if ignored:
    logging.warning("cnmc2019: ignoring %d file(s) outside the dataset folders: %s",
                    len(ignored), ", ".join(ignored[:10]))
  layouts = sorted({layout for _, layout, _, _ in train})
  missing = [what for what, found in (
      ("training data (fold_0..2/all,hem)", train), (f"{_PRELIM_DIR}/ images", prelim),
      (PRELIM_CSV, csvs), (f"{_FINAL_DIR}/ images", final)) if not found]
  if missing:
    raise errors.MissingManualDownloadError(
        f"The C-NMC 2019 download in {root} is incomplete: missing {'; '.join(missing)}. "
        f"Add the missing part(s) as described:\n{MANUAL_DOWNLOAD_INSTRUCTIONS}")

  items = {s: [] for s in SPLITS}
  folds_found = collections.defaultdict(set)
  for f, _, fold_dir, cls in train:
    if fold_dir not in SPLITS[:3] or cls not in CLASS_NAMES:
      raise errors.UnrecognizedLayoutError(
          f"Unexpected folder for {f.rel}: training images go in fold_{{0,1,2}}/{{all,hem}}/.\n"
          + EXPECTED_LAYOUT)
    sid, suffix = subject_from_file_name(f.name, f.rel)
    if suffix != cls:
      raise errors.FileNameError(
          f"{f.rel} is named as a {suffix} cell but lies in the {cls}/ folder; move it.")
    folds_found[fold_dir].add(cls)
    items[fold_dir].append(_Item(f, f.name, CLASS_NAMES.index(cls), sid, int(fold_dir[-1])))
  for fold_dir in SPLITS[:3]:
    for cls in CLASS_NAMES:
      if cls in folds_found[fold_dir]:
        continue
      folder = [d for d in dirs if d.endswith(f"/{fold_dir}/{cls}") or d == f"{fold_dir}/{cls}"]
      if folder:
        raise errors.EmptyClassFolderError(
            f"Class folder {folder[0]}/ is empty: put the {fold_dir} {cls} images there "
            "(re-extract the download).")
      raise errors.MissingManualDownloadError(
          f"No {fold_dir}/{cls}/ images in {root}: the training data is incomplete. Expected:\n"
          + EXPECTED_LAYOUT)
  for split in SPLITS[:3]:
    _check_unique([(it.file_name, it.file.rel) for it in items[split]])
  _check_unique([(f.name, f.rel) for f in final])
  items["prelim_test"] = _prelim_items(prelim, csvs)
  items["final_test"] = [_Item(f, f.name, -1, "", -1) for f in final]
  for split in SPLITS:  # training: all/ then hem/; tests: the challenge's numeric order
    items[split].sort(key=lambda it: (-it.label if it.fold >= 0 else 0, natural_key(it.file_name)))
  info = {"layout": "+".join(layouts), "source": "+".join(sorted(
      {"zip" if ".zip/" in f.rel.lower() else "folder" for f, *_ in train}))}
  logging.info("cnmc2019: %s layout from %s; %s", info["layout"], root,
               {s: len(v) for s, v in items.items()})
  return items, info


def _prelim_items(images: list[raw_files.RawFile], csvs: list[raw_files.RawFile]) -> list[_Item]:
  """Joins the prelim images with the label CSV; each side must cover the other exactly."""
  contents = {c.read() for c in csvs}
  if len(contents) > 1:
    raise errors.DuplicateFileError(
        f"Found {len(csvs)} different copies of {PRELIM_CSV}: "
        f"{', '.join(c.rel for c in csvs)}. Keep one.")
  csv_file = csvs[0]
  text = contents.pop().decode("utf-8-sig")
  reader = csv.DictReader(io.StringIO(text))
  wanted = {"Patient_ID", "new_names", "labels"}
  header = {h.strip() for h in reader.fieldnames or []}
  if not wanted <= header:
    raise errors.CsvMismatchError(
        f"{csv_file.rel} has columns {sorted(header)}; expected Patient_ID,new_names,labels.")
  _check_unique([(f.name, f.rel) for f in images])
  by_name = {f.name: f for f in images}
  rows = {}
  for line, row in enumerate(reader, start=2):
    row = {k.strip(): (v or "").strip() for k, v in row.items() if k}
    where = f"{csv_file.rel} line {line}"
    name, label = row["new_names"], row["labels"]
    if label not in ("0", "1"):
      raise errors.CsvMismatchError(f"{where}: labels={label!r}; expected 0 (HEM) or 1 (ALL).")
    if name in rows:
      raise errors.CsvMismatchError(f"{where}: {name} is listed twice. Remove one row.")
    if name not in by_name:
      raise errors.CsvMismatchError(
          f"{where} names {name}, which is not in {_PRELIM_DIR}/. Restore the image or remove "
          "the row.")
    sid, suffix = subject_from_patient_id(row["Patient_ID"], where)
    if suffix is not None and suffix != CLASS_NAMES[int(label)]:
      raise errors.CsvMismatchError(
          f"{where}: Patient_ID {row['Patient_ID']} says {suffix} but labels={label}.")
    rows[name] = _Item(by_name[name], name, int(label), sid, -1)
  unlisted = sorted(set(by_name) - set(rows), key=natural_key)
  if unlisted:
    raise errors.CsvMismatchError(
        f"{len(unlisted)} prelim image(s) have no row in {csv_file.rel}: "
        f"{', '.join(by_name[n].rel for n in unlisted[:10])}. Add the rows or remove the images.")
  return list(rows.values())


def _check_unique(names_and_paths: list[tuple[str, str]]) -> None:
  """Example keys are `<split>/<file name>`: a repeated name means a second copy somewhere."""
  dup = _duplicates(name for name, _ in names_and_paths)
  if dup:
    paths = [rel for name, rel in names_and_paths if name in dup]
    raise errors.DuplicateFileError(
        f"The same image appears more than once: {', '.join(paths[:10])}. The manual_dir "
        "probably holds two copies of the download (e.g. a zip and its extracted folder); keep "
        "one.")


def _duplicates(values) -> set[str]:
  return {v for v, n in collections.Counter(values).items() if n > 1}
