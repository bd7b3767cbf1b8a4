"""TFDS builder for the ALL image dataset of Taleqani Hospital (Aria, Ghaderzadeh et al. 2021).

    tfds build tfds_builders/taleqani_all --manual_dir=/path/to/download --data_dir=DIR
        --file_format=array_record [--config=original|segmented]

Manual download (Kaggle `mehradaria/leukemia` or Mendeley): `Original/` or `Segmented/` with the
class folders `Benign, Early, Pre, Pro`, found directly in the manual_dir or one or two wrapper
folders below it. The JPEG bytes are stored unchanged (`image_sha256` is the file's sha256), so
byte-identical duplicates in the published set stay visible for deduplication. There are no
patient ids: any split of this dataset is image-level. `SAMPLE_MANUAL_DIR` is a bundled real
subset (240 images, `sample/README.md`) for tests and the demo.
"""

from __future__ import annotations

import dataclasses
import hashlib
import pathlib
import re

from absl import logging
from etils import epath
import tensorflow_datasets as tfds

from leukojax.data import errors, images
from tfds_builders import raw_files

# Folder -> label name; the order gives the label ids (benign=0 ... pro_b=3).
CLASSES = {"Benign": "benign", "Early": "early_pre_b", "Pre": "pre_b", "Pro": "pro_b"}
CLASS_NAMES = tuple(CLASSES.values())
IMAGE_SUFFIXES = (".jpg", ".jpeg")
SAMPLE_MANUAL_DIR = pathlib.Path(__file__).resolve().parent / "sample"

MANUAL_DOWNLOAD_INSTRUCTIONS = """\
Download the "Acute Lymphoblastic Leukemia (ALL) image dataset" (Aria et al. 2021) from Kaggle
(`kaggle datasets download mehradaria/leukemia`, then unzip) or Mendeley Data, and put its
folders into the manual_dir (`--manual_dir=...`, or `<data_dir>/downloads/manual/`):
    Original/{Benign,Early,Pre,Pro}/*.jpg     (config `original`)
    Segmented/{Benign,Early,Pre,Pro}/*.jpg    (config `segmented`)
One or two wrapper folders above `Original/` are fine. A real 240-image subset of `Original/` is
bundled: --manual_dir=tfds_builders/taleqani_all/sample"""


@dataclasses.dataclass(eq=False)
class TaleqaniConfig(tfds.core.BuilderConfig):
  """`folder`: which variant to read; `on_corrupt`: 'error' (None) | 'skip'.

  'skip' needs a config name ending in `_skip_corrupt` (`original_skip_corrupt`,
  `segmented_skip_corrupt`), so the build is stored apart from the complete one.
  """

  folder: str = "Original"
  on_corrupt: str | None = None


def _natural_key(name: str) -> tuple:
  return tuple(int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", name))


class Builder(tfds.core.GeneratorBasedBuilder):
  """Taleqani ALL: 224x224 blood-smear JPEGs, benign / early pre-B / pre-B / pro-B ALL."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Configs original and segmented; JPEG bytes kept unchanged."}
  MANUAL_DOWNLOAD_INSTRUCTIONS = MANUAL_DOWNLOAD_INSTRUCTIONS
  BUILDER_CONFIGS = [
      TaleqaniConfig(name="original", folder="Original", description="Original/ images."),
      TaleqaniConfig(name="segmented", folder="Segmented", description="Segmented/ images."),
      TaleqaniConfig(name="original_skip_corrupt", folder="Original", on_corrupt="skip",
                     description="Original/ images; undecodable ones left out, listed in metadata.json."),
      TaleqaniConfig(name="segmented_skip_corrupt", folder="Segmented", on_corrupt="skip",
                     description="Segmented/ images; undecodable ones left out, listed in metadata.json."),
  ]
  # See the C-NMC builder: metadata files located without importlib.resources.
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
            # Stored as the file's own bytes (no re-encoding); any size, 3 channels.
            "image": tfds.features.Image(shape=(None, None, 3), encoding_format="jpeg"),
            "label": tfds.features.ClassLabel(names=CLASS_NAMES),
            "file_name": tfds.features.Text(),
            "image_sha256": tfds.features.Text(),
        }),
        supervised_keys=("image", "label"),
        homepage="https://www.kaggle.com/datasets/mehradaria/leukemia",
        disable_shuffling=True,
        metadata=tfds.core.MetadataDict(),
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    root = raw_files.manual_root(dl_manager, MANUAL_DOWNLOAD_INSTRUCTIONS)
    config = self.builder_config
    folder = find_variant_folder(root, config.folder)
    items = _index(folder)
    log = errors.CorruptImageLog(errors.resolve_on_corrupt(config.on_corrupt, config.name))
    self.info.metadata.update(folder=str(folder.relative_to(root)) or ".", on_corrupt=log.policy,
                              skipped_corrupt=log.skipped)
    return {"train": self._generate_examples(items, log, root)}

  def _generate_examples(self, items, log: errors.CorruptImageLog, root: pathlib.Path):
    for cls, path in items:
      where = str(path.relative_to(root))
      data = path.read_bytes()
      try:
        images.check_image(data, where, formats=("JPEG",))
      except errors.CorruptImageError as e:
        log.handle(e, where)
        continue
      yield f"{cls}/{path.name}", {
          "image": data,  # bytes as they are: no re-encoding
          "label": CLASSES[cls],
          "file_name": path.name,
          "image_sha256": hashlib.sha256(data).hexdigest(),
      }
    if log.skipped:
      logging.warning("taleqani_all: %s", log.summary())


def find_variant_folder(root: pathlib.Path, folder: str) -> pathlib.Path:
  """Finds `<folder>/` (e.g. `Original/`) at most two wrapper folders below `root`."""
  found = []
  for depth_glob in ("", "*/", "*/*/"):
    found += [p for p in sorted(root.glob(depth_glob + folder)) if p.is_dir()]
  if len(found) > 1:
    raise errors.DuplicateFileError(
        f"Found {len(found)} copies of {folder}/ under {root}: "
        f"{', '.join(str(p.relative_to(root)) for p in found)}. Keep one.")
  if found:
    return found[0]
  seen = sorted(str(p.relative_to(root)) + ("/" if p.is_dir() else "")
                for p in list(root.glob("*")) + list(root.glob("*/*")))[:25]
  hint = ""
  if root.name == folder or (root / "Benign").is_dir():
    hint = f"Point manual_dir at the folder that contains {folder}/, not at {folder}/ itself. "
  elif any(root.glob("**/*.zip")):
    hint = "Zip archives are not read for this dataset: extract them first. "
  raise errors.MissingManualDownloadError(
      f"No {folder}/ folder in {root}. {hint}Found:\n    "
      + "\n    ".join(seen or ["(nothing)"]) + f"\n{MANUAL_DOWNLOAD_INSTRUCTIONS}")


def _index(folder: pathlib.Path) -> list[tuple[str, pathlib.Path]]:
  """Lists (class folder, image path) in class order, then natural file-name order."""
  entries = {p.name: p for p in folder.iterdir() if not p.name.startswith(".")}
  unexpected = sorted(set(entries) - set(CLASSES))
  if unexpected:
    raise errors.UnrecognizedLayoutError(
        f"Unexpected entries in {folder}: {unexpected}. Expected only the class folders "
        f"{list(CLASSES)}. Remove or rename them.\n{MANUAL_DOWNLOAD_INSTRUCTIONS}")
  items = []
  for cls in CLASSES:
    cdir = folder / cls
    if not cdir.is_dir():
      raise errors.MissingManualDownloadError(
          f"Class folder {cdir} is missing (found {sorted(entries)}); the download is incomplete."
          f"\n{MANUAL_DOWNLOAD_INSTRUCTIONS}")
    files = [p for p in cdir.iterdir() if not p.name.startswith(".") and p.name not in (
        "Thumbs.db", "desktop.ini")]
    bad = [p for p in files if not p.is_file() or p.suffix.lower() not in IMAGE_SUFFIXES]
    if bad:
      raise errors.UnrecognizedLayoutError(
          f"Unexpected entries in {cdir}: {[p.name for p in bad][:10]}; class folders hold only "
          f"{IMAGE_SUFFIXES} images. Remove them.")
    if not files:
      raise errors.EmptyClassFolderError(
          f"Class folder {cdir} is empty: put the {cls} images there (re-extract the download).")
    items += [(cls, p) for p in sorted(files, key=lambda p: _natural_key(p.name))]
  logging.info("taleqani_all: %d images under %s (%s)", len(items), folder,
               {c: sum(1 for k, _ in items if k == c) for c in CLASSES})
  return items
