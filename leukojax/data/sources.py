"""Random-access TFDS data sources per split, building the dataset on first use.

The pipeline reads records through `tfds.data_source`-style `ArrayRecordDataSource`s (no
TensorFlow needed). If the requested dataset is not yet prepared in `data_dir`, it is built from
the manual download in `manual_dir` (array_record format), so `make demo` or a first training run
needs no separate `tfds build` step.
"""

from __future__ import annotations

import dataclasses
import importlib
import os
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


def resolve_builder_config(dataset: str, builder_config: str | None) -> str | None:
  """The builder config a new run reads: `builder_config`, or its skip-corrupt twin under `$LEUKOJAX_ON_CORRUPT=skip`.

  The variable asks for a build that leaves undecodable files out; such builds live under their
  own config name (`<name>_skip_corrupt`), never under the complete build's. None stays None
  (TFDS's first config) unless the variable switches it. Training writes the result into the
  run's config, so the run records, and later commands read, the build it really used.
  """
  if os.environ.get(errors.ON_CORRUPT_ENV) != "skip":
    return builder_config
  register_builders(dataset)
  names = [c.name for c in tfds.builder_cls(dataset).BUILDER_CONFIGS]
  name = builder_config or names[0]
  skip_name = errors.skip_config_name(name)
  if skip_name not in names:
    raise errors.DataError(
        f"{errors.ON_CORRUPT_ENV}=skip is set, but {dataset} has no skip-corrupt variant of builder config "
        f"{name!r} (it has {names}). Unset {errors.ON_CORRUPT_ENV}, or pick one of those configs.")
  if skip_name != name:
    logging.warning("%s=skip: reading builder config %r instead of %r (corrupt images left out, listed in "
                    "the dataset's metadata and in every run's splits.txt and report).",
                    errors.ON_CORRUPT_ENV, skip_name, name)
  return skip_name


def get_builder(
    dataset: str, *, builder_config: str | None = None, data_dir: str | None = None
) -> tfds.core.DatasetBuilder:
  """Returns the TFDS builder (not yet prepared, maybe), registering it first."""
  register_builders(dataset)
  return tfds.builder(dataset, config=builder_config or None, data_dir=data_dir, file_format=FILE_FORMAT)


@dataclasses.dataclass(frozen=True)
class LoadedDataset:
  """Random-access sources per split, and what the build left out (stated in every run's summary)."""

  sources: dict[str, Sequence[dict[str, Any]]]
  build: dict[str, Any]


def build_info(builder: tfds.core.DatasetBuilder) -> dict[str, Any]:
  """The build's name, its corrupt-image policy and the files it skipped (from its metadata.json)."""
  metadata = builder.info.metadata or {}
  return {
      "name": builder.info.full_name,
      "on_corrupt": metadata.get("on_corrupt", "error"),
      "skipped_corrupt": list(metadata.get("skipped_corrupt", [])),
  }


def load_dataset(
    dataset: str,
    *,
    builder_config: str | None = None,
    data_dir: str | None = None,
    manual_dir: str | None = None,
    decode_images: bool = True,
) -> LoadedDataset:
  """Returns the random-access source of every split of `dataset`, and its build info.

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
  build = build_info(builder)
  config_name = builder.builder_config.name if builder.builder_config else ""
  if build["on_corrupt"] == "skip" and not config_name.endswith(errors.SKIP_SUFFIX):
    raise errors.DataError(
        f"{builder.info.full_name} in {builder.data_dir} was built with on_corrupt=skip (it lacks "
        f"{len(build['skipped_corrupt'])} file(s)) but is stored under the complete build's name, by an "
        f"older LeukoJAX. Delete {builder.data_dir} and rebuild; to leave corrupt files out, use builder "
        f"config {errors.skip_config_name(config_name)!r}.")
  decoders = None if decode_images else {"image": tfds.decode.SkipDecoding()}
  sources = {str(split): builder.as_data_source(split=split, decoders=decoders)
             for split in builder.info.splits}
  return LoadedDataset(sources=sources, build=build)


def load_split_sources(dataset: str, **kwargs: Any) -> dict[str, Sequence[dict[str, Any]]]:
  """`{split name: random-access source of records}`: `load_dataset(...).sources`."""
  return load_dataset(dataset, **kwargs).sources
