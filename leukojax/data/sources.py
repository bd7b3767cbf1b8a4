"""Random-access TFDS data sources per split, building the dataset on first use.

The pipeline reads records through `tfds.data_source`-style `ArrayRecordDataSource`s (no
TensorFlow needed). If the requested dataset is not yet prepared in `data_dir`, it is built from
the manual download in `manual_dir` (array_record format), so `make demo` or a first training run
needs no separate `tfds build` step.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from typing import Any

from absl import logging
import tensorflow_datasets as tfds

from leukojax.data import errors

# Importing a builder module registers its dataset name with TFDS.
BUILDER_MODULES: dict[str, str] = {
    "cnmc2019": "tfds_builders.cnmc2019.cnmc2019_dataset_builder",
    "taleqani_all": "tfds_builders.taleqani_all.taleqani_all_dataset_builder",
}
FILE_FORMAT = "array_record"


def register_builders(dataset: str | None = None) -> None:
  """Imports the builder module of `dataset` (all of them if None) so TFDS knows the name."""
  names = BUILDER_MODULES if dataset is None else [dataset]
  for name in names:
    if name not in BUILDER_MODULES:
      raise errors.DataError(
          f"Unknown dataset {name!r}; LeukoJAX has builders for {sorted(BUILDER_MODULES)}.")
    importlib.import_module(BUILDER_MODULES[name])


def get_builder(
    dataset: str, *, builder_config: str | None = None, data_dir: str | None = None
) -> tfds.core.DatasetBuilder:
  """Returns the TFDS builder (not yet prepared, maybe), registering it first."""
  register_builders(dataset)
  return tfds.builder(dataset, config=builder_config or None, data_dir=data_dir,
                      file_format=FILE_FORMAT)


def load_split_sources(
    dataset: str,
    *,
    builder_config: str | None = None,
    data_dir: str | None = None,
    manual_dir: str | None = None,
    decode_images: bool = True,
) -> dict[str, Sequence[dict[str, Any]]]:
  """Returns `{split name: random-access source of records}` for every split of `dataset`.

  Builds the dataset first if `data_dir` does not hold it (from `manual_dir`; None = TFDS's
  `<data_dir>/downloads/manual`). An existing build is reused as it is, whatever `manual_dir` now
  holds: delete `<data_dir>/<dataset>/` to rebuild. Records are dicts as in
  docs/architecture.md (text as bytes). `decode_images=False` leaves `image` as the stored
  PNG/JPEG bytes, for fast passes over the labels and ids only.
  """
  builder = get_builder(dataset, builder_config=builder_config, data_dir=data_dir)
  if builder.is_prepared():
    logging.info("Reusing %s prepared at %s.", builder.info.full_name, builder.data_path)
  else:
    logging.info("Building %s into %s from manual_dir=%s (first use).", builder.info.full_name,
                 builder.data_dir, manual_dir or "<data_dir>/downloads/manual")
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir=manual_dir))
  formats = {f.value for f in builder.info.available_file_formats()}
  if FILE_FORMAT not in formats:
    raise errors.DataError(
        f"{builder.info.full_name} in {builder.data_dir} is stored as {sorted(formats)}, which "
        f"has no random access; rebuild it with --file_format={FILE_FORMAT} (delete that folder "
        "first, or use another data_dir).")
  decoders = None if decode_images else {"image": tfds.decode.SkipDecoding()}
  return {
      str(split): builder.as_data_source(split=split, decoders=decoders)
      for split in builder.info.splits
  }
