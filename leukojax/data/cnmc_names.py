"""Subjects and true classes of C-NMC 2019 cells, read from their file names or the label CSV.

`leukojax.predict` scores a trained C-NMC run on a user's own cells only if it knows each cell's
subject and class. C-NMC carries both in the data itself, in three layouts:

* the published training layout, `<anything>/{all,hem}/UID_<subject>_<image>_<cell>_<all|hem>.bmp`;
* a flat folder of such `UID_` names;
* test-phase names `<n>.bmp` with the official label CSV (`C-NMC_test_prelim_phase_data_labels.csv`,
  `Patient_ID,new_names,labels`; Patient_ID is the cell's original `UID_` name), found beside the
  images or in the folder above (the Kaggle layout), or given explicitly.

The name patterns and the CSV reader are the TFDS builder's (one definition of what a C-NMC name
is); this module only decides which applies to a file and where its truth came from.
"""

from __future__ import annotations

import dataclasses
import pathlib
import re
from collections.abc import Sequence

from absl import logging

from leukojax.data import errors
from tfds_builders.cnmc2019.cnmc2019_dataset_builder import (CLASS_NAMES, PRELIM_CSV, PrelimLabel,
                                                             natural_key, read_prelim_labels,
                                                             subject_from_file_name)

UNKNOWN = -1
FROM_NAME = "file name"
_TEST_NAME = re.compile(r"^\d+\.[A-Za-z]+$")  # `17.bmp`: a test-phase cell, truth only in the CSV


@dataclasses.dataclass(frozen=True)
class CellTruth:
  """What is known of one cell: subject ('' if unknown), label (1 ALL, 0 HEM, -1 unknown), source."""

  subject_id: str = ""
  label: int = UNKNOWN
  source: str = ""  # FROM_NAME, or the label CSV's path; '' when nothing is known


def is_uid_name(name: str) -> bool:
  return name.upper().startswith("UID_")


def from_uid_name(path: str) -> CellTruth | None:
  """The subject and class of a `UID_` file (None if the name does not parse), checked against an
  `all/` or `hem/` folder above it.

  Any image extension is accepted (a user's PNG copy names the same cell), so the name is read
  as its `.bmp` original.
  """
  file = pathlib.Path(path)
  try:
    subject, suffix = subject_from_file_name(file.stem + ".bmp", path)
  except errors.FileNameError:
    return None
  folder = file.parent.name.lower()
  if folder in CLASS_NAMES and folder != suffix:
    raise errors.FileNameError(
        f"{path} is named as a {suffix} cell but lies in a {file.parent.name}/ folder: move it to "
        f"{suffix}/ (or fix its name if the folder is right). A folder named all/ or hem/ is read "
        "as the cells' class.")
  return CellTruth(subject, CLASS_NAMES.index(suffix), FROM_NAME)


def load_label_csv(path: str | pathlib.Path) -> dict[str, PrelimLabel]:
  """The official test-phase label CSV as `new_names -> row` (every row checked by the builder's reader)."""
  file = pathlib.Path(path)
  if not file.is_file():
    raise errors.CsvMismatchError(
        f"Label CSV {path} does not exist: give the path of {PRELIM_CSV} (columns "
        "Patient_ID,new_names,labels).")
  return {row.new_name: row for row in read_prelim_labels(file.read_bytes(), str(path))}


def find_label_csv(folder: pathlib.Path) -> pathlib.Path | None:
  """`PRELIM_CSV` beside the images or in the folder above them (Kaggle: `validation_data/`)."""
  for candidate in (folder / PRELIM_CSV, folder.parent / PRELIM_CSV):
    if candidate.is_file():
      return candidate
  return None


def _listing(names: Sequence[str], limit: int = 20) -> str:
  shown = ", ".join(names[:limit])
  return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def read_truth(paths: Sequence[str], labels_csv: str | None = None) -> tuple[list[CellTruth], list[str]]:
  """One `CellTruth` per path, in order, and the warnings to show the user.

  `UID_` names give subject and class; other names are looked up in `labels_csv`, else in the
  label CSV found beside their folder. A bad CSV, or a `UID_` file in the wrong class folder,
  raises a `DataError` naming the file. Test-phase names that no CSV lists stay unknown (-1) and
  are named in a warning, as are `UID_` names that do not parse.
  """
  given = load_label_csv(labels_csv) if labels_csv else None
  found: dict[pathlib.Path, tuple[str, dict[str, PrelimLabel]] | None] = {}  # folder -> (csv, rows)
  out: list[CellTruth] = []
  unparsed, not_listed, no_csv = [], {}, []
  for path in paths:
    file = pathlib.Path(path)
    if is_uid_name(file.name):
      truth = from_uid_name(path)  # a file in the wrong class folder stops here: contradictory input
      if truth is not None:
        out.append(truth)
        continue
      unparsed.append(path)
    if given is not None:
      table = (str(labels_csv), given)
    else:
      folder = file.parent.resolve()
      if folder not in found:
        csv_path = find_label_csv(folder)
        found[folder] = (str(csv_path), load_label_csv(csv_path)) if csv_path else None
      table = found[folder]
    row = table[1].get(file.name) if table else None
    if row is not None:
      out.append(CellTruth(row.subject_id, row.label, table[0]))
      continue
    if _TEST_NAME.match(file.name) and path not in unparsed:
      (not_listed.setdefault(table[0], []) if table else no_csv).append(path)
    out.append(CellTruth())
  warnings = []
  if unparsed:
    warnings.append(f"{len(unparsed)} file(s) start with UID_ but are not named "
                    f"UID_<subject>_<image>_<cell>_<all|hem>.<ext>, so their subject and class are unknown: "
                    f"{_listing(unparsed)}. Rename them to score them.")
  for csv_path, names in not_listed.items():
    warnings.append(f"{len(names)} test-phase image(s) have no row in {csv_path}, so their class is unknown: "
                    f"{_listing(sorted(names, key=natural_key))}. Add the rows or pass the right --labels CSV.")
  if no_csv:
    warnings.append(f"{len(no_csv)} test-phase image(s) have no label CSV ({PRELIM_CSV} beside them or in "
                    f"the folder above), so their class is unknown: {_listing(sorted(no_csv, key=natural_key))}. "
                    "Pass --labels CSV to score them.")
  for warning in warnings:
    logging.warning("%s", warning)
  return out, warnings
