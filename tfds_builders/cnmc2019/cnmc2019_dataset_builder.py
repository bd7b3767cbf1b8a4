"""TFDS builder for C-NMC 2019 (ISBI 2019 ALL vs normal B-lymphoid cells), manual download.

    tfds build tfds_builders/cnmc2019 --manual_dir=/path/to/download --data_dir=DIR
        --file_format=array_record

Accepts the Kaggle and the TCIA layout, extracted, as the downloaded zip archives (read in
place with `zipfile`) or as tar archives (`.tar.xz` etc., unpacked once into the build's
extraction folder, never beside the archive), in any wrapper folder (`PKG - C-NMC 2019/...`).

A partial download (say one training fold and no test phases) builds the splits it has; the
absent parts are logged and listed in the dataset's metadata (`absent`), and only a config that
asks for an absent split fails (`leukojax.data.splits`). Every file the official download lists
(`kaggle_manifest.tsv`, shipped here as TFDS ships checksums) is checked against its size and
SHA-256: a mismatch stops the build naming the file, unless the `unverified` config is chosen.
Byte-identical files (the official data has 104 duplicated contents) are listed in the metadata
(`duplicates`); `leukojax.data.splits` removes them before any split.

Strict by design: every file inside the dataset folders must be understood, and each problem
raises a `DataError` (`leukojax.data.errors`) naming the file and the fix. Records are written in
a fixed order (`disable_shuffling`): training folds `all/` then `hem/`, and the test sets in the
challenge's numeric order `1.bmp, 2.bmp, ...`, so record i of `final_test` is image `i+1`.
"""

from __future__ import annotations

import collections
import csv
import dataclasses
import hashlib
import functools
import io
import pathlib
import re

from absl import logging
from etils import epath
import numpy as np
import tensorflow_datasets as tfds

from leukojax.data import errors, images
from tfds_builders import raw_files

CLASS_NAMES = ("hem", "all")  # label 1 = ALL, the positive class
SPLITS = ("fold_0", "fold_1", "fold_2", "prelim_test", "final_test")
IMAGE_SIZE = 450  # training and preliminary-test cells; the final-test files are larger
MANIFEST = pathlib.Path(__file__).with_name("kaggle_manifest.tsv")
SAMPLE_MANUAL_DIR = pathlib.Path(__file__).resolve().parent / "sample"  # 88 real cells, README there
CANONICAL_ROOT = "C-NMC_Leukemia"  # the manifest's paths are those of the Kaggle download
PRELIM_CSV = "C-NMC_test_prelim_phase_data_labels.csv"
_TRAIN_ROOTS = {"training_data": "kaggle", "C-NMC_training_data": "tcia"}
_PRELIM_DIR = "C-NMC_test_prelim_phase_data"
_FINAL_DIR = "C-NMC_test_final_phase_data"
_TRAIN_NAME = re.compile(r"^UID_(H?\d+)_(.+)_(all|hem)\.bmp$", re.IGNORECASE)
_IMAGE_CELL = re.compile(r"^(\d+)_(\d+)$")
_PATIENT_ID = re.compile(r"^(?:UID_)?(H?\d+)(?:_.*?(?:_(all|hem))?)?(?:\.bmp)?$", re.IGNORECASE)

EXPECTED_LAYOUT = f"""\
  Kaggle (andrewmvd/leukemia-classification), extracted, as the downloaded .zip, or as a
  .tar/.tar.gz/.tar.xz of the same folders:
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
  """`verify`: check files against the official sizes and SHA-256 (`kaggle_manifest.tsv`).

  `on_corrupt='skip'` leaves undecodable images out (logged, listed in the dataset's metadata);
  it needs a config name ending in `_skip_corrupt` (`verified_skip_corrupt`,
  `unverified_skip_corrupt`), so the build is stored apart from the complete one and never
  reused in its place. `None` means 'error'.
  """

  verify: bool = True
  on_corrupt: str | None = None


@dataclasses.dataclass(frozen=True)
class _Item:
  file: raw_files.RawFile
  file_name: str
  label: int  # -1 = unlabelled
  subject_id: str
  fold: int
  canonical: str  # the file's path in the Kaggle download (the manifest's key)
  image_index: int = -1  # from UID_<subject>_<image>_<cell>_<class>.bmp; -1 if unknown
  cell_index: int = -1


@functools.lru_cache(maxsize=1)
def load_manifest() -> dict[str, tuple[int, str]]:
  """The official download: Kaggle path -> (size in bytes, SHA-256 hex)."""
  out = {}
  with MANIFEST.open(encoding="utf-8") as f:
    for row in csv.DictReader(f, delimiter="\t"):
      out[row["path"]] = (int(row["bytes"]), row["sha256"])
  return out


def image_and_cell(name: str) -> tuple[int, int]:
  """`UID_H10_130_2_hem.bmp` -> (130, 2): the slide image and the cell within it."""
  m = _TRAIN_NAME.match(name)
  inner = _IMAGE_CELL.match(m.group(2)) if m else None
  return (int(inner.group(1)), int(inner.group(2))) if inner else (-1, -1)


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

  VERSION = tfds.core.Version("2.0.0")
  RELEASE_NOTES = {
      "1.0.0": "Kaggle/TCIA layouts, folders or zips; PNG-stored images.",
      "2.0.0": "Tar archives, partial downloads, checks against the official SHA-256 manifest, "
               "image and cell indices, duplicate list; images of any size (final test).",
  }
  MANUAL_DOWNLOAD_INSTRUCTIONS = MANUAL_DOWNLOAD_INSTRUCTIONS
  BUILDER_CONFIGS = [
      CnmcConfig(name="verified", description="Every listed file checked against the official "
                 "sizes and SHA-256 (kaggle_manifest.tsv)."),
      CnmcConfig(name="unverified", verify=False, description="No checksum check: for modified "
                 "or re-encoded copies, and the synthetic stand-in."),
      CnmcConfig(name="verified_skip_corrupt", on_corrupt="skip", description="As verified, but "
                 "undecodable images are left out and listed in metadata.json (skipped_corrupt)."),
      CnmcConfig(name="unverified_skip_corrupt", verify=False, on_corrupt="skip", description="As "
                 "unverified, but undecodable images are left out and listed in metadata.json."),
  ]
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
            "image": tfds.features.Image(shape=(None, None, 3), encoding_format="png"),
            "label": tfds.features.ClassLabel(names=CLASS_NAMES),
            "subject_id": tfds.features.Text(),
            "fold": tfds.features.Scalar(dtype=np.int64),
            "image_index": tfds.features.Scalar(dtype=np.int64),
            "cell_index": tfds.features.Scalar(dtype=np.int64),
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
    items, info = _index(raw_files.scan(root, raw_files.extract_root(dl_manager)), root)
    config = self.builder_config
    verify = bool(getattr(config, "verify", True))
    info.update(_check_sizes(items, info.pop("csv_file", None), verify))
    log = errors.CorruptImageLog(errors.resolve_on_corrupt(getattr(config, "on_corrupt", None), config.name))
    self.info.metadata.update(info, on_corrupt=log.policy, skipped_corrupt=log.skipped,
                              duplicates=[])
    seen: dict[str, str] = {}  # sha256 -> first file, across all splits
    return {split: self._generate_examples(split, items[split], log, verify, seen)
            for split in SPLITS if split in items}

  def _generate_examples(self, split: str, items: list[_Item], log: errors.CorruptImageLog,
                         verify: bool, seen: dict[str, str]):
    size = None if split == "final_test" else (IMAGE_SIZE, IMAGE_SIZE)
    for item in items:
      try:
        data = item.file.read()  # a damaged zip member fails here
        sha = hashlib.sha256(data).hexdigest()
        if verify:
          _check_sha(item, sha)
        image = images.check_image(data, item.file.rel, size=size, formats=("BMP",),
                                   convert_to_rgb=True)
      except errors.CorruptImageError as e:
        log.handle(e, item.file.rel)
        continue
      if sha in seen:
        self.info.metadata["duplicates"].append([seen[sha], item.file.rel])
        logging.info("cnmc2019: %s is byte-identical to %s.", item.file.rel, seen[sha])
      else:
        seen[sha] = item.file.rel
      png = io.BytesIO()
      image.save(png, format="PNG", compress_level=3)
      yield f"{split}/{item.file_name}", {
          "image": png.getvalue(),
          "label": item.label,
          "subject_id": item.subject_id,
          "fold": item.fold,
          "image_index": item.image_index,
          "cell_index": item.cell_index,
          "file_name": item.file_name,
          "image_sha256": sha,
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
  items: dict[str, list[_Item]] = {s: [] for s in SPLITS[:3]}
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
    canonical = f"{CANONICAL_ROOT}/training_data/{fold_dir}/{cls}/{f.name}"
    items[fold_dir].append(_Item(f, f.name, CLASS_NAMES.index(cls), sid, int(fold_dir[-1]),
                                 canonical, *image_and_cell(f.name)))
  absent = []
  for fold_dir in SPLITS[:3]:
    if not folds_found[fold_dir]:  # a fold not downloaded at all: build without it
      del items[fold_dir]
      absent.append(f"{fold_dir} (training_data/{fold_dir}/)")
      continue
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
  for split in items:
    _check_unique([(it.file_name, it.file.rel) for it in items[split]])
  _check_unique([(f.name, f.rel) for f in final])
  csv_file = None
  if prelim and csvs:
    items["prelim_test"], csv_file = _prelim_items(prelim, csvs)
  elif prelim:
    absent.append(f"prelim_test labels ({PRELIM_CSV}: the {len(prelim)} images of "
                  f"{_PRELIM_DIR}/ cannot be labelled without it)")
  else:
    absent.append(f"prelim_test ({_PRELIM_DIR}/ images"
                  + ("; the label file is here)" if csvs else f" and {PRELIM_CSV})"))
    csv_file = _single_csv(csvs) if csvs else None
    if csv_file is not None:
      read_prelim_labels(csv_file.read(), csv_file.rel)  # a label file alone is still checked
  if final:
    items["final_test"] = [
        _Item(f, f.name, -1, "", -1, f"{CANONICAL_ROOT}/testing_data/{_FINAL_DIR}/{f.name}")
        for f in final]
  else:
    absent.append(f"final_test ({_FINAL_DIR}/ images)")
  if not items:
    raise errors.MissingManualDownloadError(
        f"The C-NMC 2019 download in {root} has no images to build: missing {'; '.join(absent)}."
        f"\n{MANUAL_DOWNLOAD_INSTRUCTIONS}")
  for split in items:  # training: all/ then hem/; tests: the challenge's numeric order
    items[split].sort(key=lambda it: (-it.label if it.fold >= 0 else 0, natural_key(it.file_name)))
  sources = {"zip" if ".zip/" in f.rel.lower() else "tar" if _in_tar(f.rel) else "folder"
             for f, *_ in train}
  info = {"layout": "+".join(layouts), "source": "+".join(sorted(sources)), "absent": absent,
          "csv_file": csv_file}
  logging.info("cnmc2019: %s layout from %s; %s", info["layout"], root,
               {s: len(v) for s, v in items.items()})
  if absent:
    logging.warning("cnmc2019: partial download in %s; building without: %s. A config that "
                    "needs one of these stops with the missing part named.", root,
                    "; ".join(absent))
  return items, info


def _in_tar(rel: str) -> bool:
  return any(raw_files.is_tar(p) for p in rel.split("/")[:-1])


def _check_sizes(items: dict[str, list[_Item]], csv_file, verify: bool) -> dict:
  """Checks every listed file's size against the manifest (hashes follow as images are read)."""
  manifest = load_manifest()
  unlisted = [it.file.rel for split in items.values() for it in split
              if it.canonical not in manifest]
  if not verify:
    logging.warning("cnmc2019: the 'unverified' config: files are NOT checked against the "
                    "official sizes and SHA-256.")
    return {"verified": False, "not_in_manifest": len(unlisted)}
  checked = [it for split in items.values() for it in split if it.canonical in manifest]
  for it in checked:
    want = manifest[it.canonical][0]
    if it.file.size is not None and it.file.size != want:
      raise errors.ChecksumError(
          f"{it.file.rel} has {it.file.size} bytes; the official file ({it.canonical}) has "
          f"{want}. {_CHECKSUM_FIX}")
  if csv_file is not None:
    canonical = f"{CANONICAL_ROOT}/validation_data/{PRELIM_CSV}"
    data = csv_file.read()
    if hashlib.sha256(data).hexdigest() != manifest[canonical][1]:
      raise errors.ChecksumError(
          f"{csv_file.rel} differs from the official {canonical} (SHA-256). {_CHECKSUM_FIX}")
  if unlisted:
    logging.warning("cnmc2019: %d file(s) are not in the official download's list and are not "
                    "checked: %s", len(unlisted), ", ".join(unlisted[:10]))
  return {"verified": True, "not_in_manifest": len(unlisted)}


_CHECKSUM_FIX = ("Re-download it (a damaged or modified copy), or, for a copy you changed on "
                 "purpose, build the 'unverified' config (--config=unverified, "
                 "data.builder_config='unverified').")


def _check_sha(item: _Item, sha: str) -> None:
  want = load_manifest().get(item.canonical)
  if want is not None and want[1] != sha:
    raise errors.ChecksumError(
        f"{item.file.rel} differs from the official file {item.canonical} (SHA-256 {sha[:16]}... "
        f"instead of {want[1][:16]}...). {_CHECKSUM_FIX}")


def _single_csv(csvs: list[raw_files.RawFile]) -> raw_files.RawFile:
  contents = {c.read() for c in csvs}
  if len(contents) > 1:
    raise errors.DuplicateFileError(
        f"Found {len(csvs)} different copies of {PRELIM_CSV}: "
        f"{', '.join(c.rel for c in csvs)}. Keep one.")
  return csvs[0]


@dataclasses.dataclass(frozen=True)
class PrelimLabel:
  """One row of the preliminary-test label file."""

  new_name: str  # the test image's name, `<n>.bmp`
  label: int  # 1 = ALL, 0 = HEM
  subject_id: str
  original_name: str  # Patient_ID: the cell's original `UID_...` name
  line: int


def read_prelim_labels(data: bytes, where: str) -> list[PrelimLabel]:
  """Parses the official label CSV (CRLF, `Patient_ID,new_names,labels`), checking every row."""
  text = data.decode("utf-8-sig")
  reader = csv.DictReader(io.StringIO(text))
  wanted = {"Patient_ID", "new_names", "labels"}
  header = {h.strip() for h in reader.fieldnames or []}
  if not wanted <= header:
    raise errors.CsvMismatchError(
        f"{where} has columns {sorted(header)}; expected Patient_ID,new_names,labels.")
  out, names = [], set()
  for line, row in enumerate(reader, start=2):
    row = {k.strip(): (v or "").strip() for k, v in row.items() if k}
    at = f"{where} line {line}"
    name, label = row["new_names"], row["labels"]
    if label not in ("0", "1"):
      raise errors.CsvMismatchError(f"{at}: labels={label!r}; expected 0 (HEM) or 1 (ALL).")
    if name in names:
      raise errors.CsvMismatchError(f"{at}: {name} is listed twice. Remove one row.")
    sid, suffix = subject_from_patient_id(row["Patient_ID"], at)
    if suffix is not None and suffix != CLASS_NAMES[int(label)]:
      raise errors.CsvMismatchError(
          f"{at}: Patient_ID {row['Patient_ID']} says {suffix} but labels={label}.")
    names.add(name)
    out.append(PrelimLabel(name, int(label), sid, row["Patient_ID"], line))
  return out


def _prelim_items(images: list[raw_files.RawFile],
                  csvs: list[raw_files.RawFile]) -> tuple[list[_Item], raw_files.RawFile]:
  """Joins the prelim images with the label CSV; each side must cover the other exactly."""
  csv_file = _single_csv(csvs)
  labels = read_prelim_labels(csv_file.read(), csv_file.rel)
  _check_unique([(f.name, f.rel) for f in images])
  by_name = {f.name: f for f in images}
  rows = {}
  for row in labels:
    if row.new_name not in by_name:
      raise errors.CsvMismatchError(
          f"{csv_file.rel} line {row.line} names {row.new_name}, which is not in {_PRELIM_DIR}/. "
          "Restore the image or remove the row.")
    canonical = f"{CANONICAL_ROOT}/validation_data/{_PRELIM_DIR}/{row.new_name}"
    rows[row.new_name] = _Item(by_name[row.new_name], row.new_name, row.label, row.subject_id, -1,
                               canonical, *image_and_cell(row.original_name))
  unlisted = sorted(set(by_name) - set(rows), key=natural_key)
  if unlisted:
    raise errors.CsvMismatchError(
        f"{len(unlisted)} prelim image(s) have no row in {csv_file.rel}: "
        f"{', '.join(by_name[n].rel for n in unlisted[:10])}. Add the rows or remove the images.")
  return list(rows.values()), csv_file


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
