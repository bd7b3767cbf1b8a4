"""Split protocols (subject, paper_random, official), deduplication and the subject-leakage guard.

The paper split C-NMC at random over cells, so one subject's cells sit in train and test alike;
`subject` (the default) keeps every subject in one split. See docs/data.md for the exact rules.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping, Sequence

import numpy as np

from leukojax.data.catalog import Catalog

PROTOCOLS: tuple[str, ...] = ("subject", "paper_random", "official")
SPLITS: tuple[str, ...] = ("train", "val", "test")
CNMC_TRAIN_FOLDS: tuple[str, ...] = ("fold_0", "fold_1", "fold_2")
CNMC_OFFICIAL_TEST = "prelim_test"  # the labelled preliminary test; final_test has no labels


class SubjectLeakageError(ValueError):
  """A subject's images appear in more than one split of a subject-disjoint protocol."""


@dataclasses.dataclass(frozen=True)
class SplitResult:
  """The catalogue after the task view and dedup, and the rows of each split in it."""

  catalog: Catalog
  rows: dict[str, np.ndarray]  # 'train' | 'val' | 'test' -> int64 rows of `catalog`, sorted
  protocol: str
  duplicates_dropped: int
  duplicate_label_conflicts: int  # dropped duplicates whose label differed from the kept copy


def source_splits(dataset: str, protocol: str) -> tuple[str, ...]:
  """Names the source splits a protocol reads; rejects protocols the dataset cannot support."""
  if protocol not in PROTOCOLS:
    raise ValueError(f"Unknown split protocol {protocol!r}; expected one of {PROTOCOLS}.")
  if dataset == "cnmc2019":
    return CNMC_TRAIN_FOLDS + ((CNMC_OFFICIAL_TEST,) if protocol == "official" else ())
  if dataset == "taleqani_all":
    if protocol != "paper_random":
      raise ValueError(
          f"Split protocol {protocol!r} needs patient ids, and the Taleqani ALL dataset has none "
          "(its file names carry no patient), so subject-disjoint splits are impossible and "
          "there is no official test set. Use split.protocol='paper_random' (stratified, "
          "image-level, after dedup) and report the results as image-level."
      )
    return ("train",)
  raise ValueError(f"Unknown dataset {dataset!r}.")


def check_fractions(fractions: Sequence[float]) -> tuple[float, float, float]:
  f = tuple(float(x) for x in fractions)
  if len(f) != 3 or min(f) < 0 or abs(sum(f) - 1.0) > 1e-6 or f[0] <= 0:
    raise ValueError(f"split.fractions must be (train, val, test) >= 0 summing to 1 with train > 0; got {f}.")
  return f  # type: ignore[return-value]


def dedup_rows(catalog: Catalog, first: Sequence[str] = ()) -> tuple[np.ndarray, int, int]:
  """Keeps the first of byte-identical images (same image_sha256); returns (rows, dropped, conflicts).

  Rows of the source splits in `first` are visited first, so an external test set is kept whole
  and its duplicates are removed from the training pool instead.
  """
  order = np.argsort(~np.isin(catalog.split, list(first)), kind="stable")
  kept: dict[bytes, int] = {}
  keep, conflicts = [], 0
  for row in order:
    sha = catalog.image_sha256[row]
    if not sha:  # no hash recorded: nothing to compare
      keep.append(row)
    elif sha in kept:
      conflicts += int(catalog.label[kept[sha]] != catalog.label[row])
    else:
      kept[sha] = row
      keep.append(row)
  rows = np.sort(np.asarray(keep, dtype=np.int64))
  return rows, len(catalog) - len(rows), conflicts


def _round_half_up(x: float) -> int:
  return int(np.floor(x + 0.5 + 1e-9))  # Python's round() rounds halves to even, and 0.7+0.15 != 0.85


def _counts(n: int, fractions: Sequence[float]) -> tuple[int, int, int]:
  """Splits `n` items into (train, val, test) by rounding the cumulative fractions.

  A split with a non-zero fraction that rounds to nothing takes one item from train, when train
  can spare it.
  """
  b1 = _round_half_up(fractions[0] * n)
  b2 = max(b1, _round_half_up((fractions[0] + fractions[1]) * n))
  counts = [b1, b2 - b1, n - b2]
  for k in (1, 2):
    if fractions[k] > 0 and counts[k] == 0 and counts[0] > 1:
      counts[k], counts[0] = 1, counts[0] - 1
  return counts[0], counts[1], counts[2]


def _cut(items: np.ndarray, counts: tuple[int, int, int]) -> list[np.ndarray]:
  a, b = counts[0], counts[0] + counts[1]
  return [items[:a], items[a:b], items[b:]]


def random_split(labels: np.ndarray, fractions: Sequence[float], seed: int) -> list[np.ndarray]:
  """`paper_random`: stratified random over images; returns positions for train, val, test."""
  rng = np.random.default_rng(seed)
  parts: list[list[np.ndarray]] = [[], [], []]
  for c in np.unique(labels):
    items = rng.permutation(np.flatnonzero(labels == c))
    for part, chunk in zip(parts, _cut(items, _counts(len(items), fractions))):
      part.append(chunk)
  return [np.sort(np.concatenate(p)).astype(np.int64) if p else np.zeros(0, np.int64) for p in parts]


def subject_split(
    labels: np.ndarray, subjects: np.ndarray, fractions: Sequence[float], seed: int
) -> list[np.ndarray]:
  """`subject`: whole subjects to one split, stratified by class; returns positions per split.

  Subjects are dealt per class (a subject's class is its majority label; in C-NMC each subject has
  one class), so each split gets about `fractions` of the subjects of every class.
  """
  if any(len(s) == 0 for s in subjects):
    raise ValueError("Subject-disjoint splitting needs a subject id on every record.")
  rng = np.random.default_rng(seed)
  uniq, inverse = np.unique(subjects.astype(bytes), return_inverse=True)
  per_subject = [np.bincount(labels[inverse == k]) for k in range(len(uniq))]
  subject_class = np.array([counts.argmax() for counts in per_subject])
  mixed = sum(int((counts > 0).sum() > 1) for counts in per_subject)
  if mixed:
    logging.warning("%d subject(s) have images of more than one class; stratifying by their majority class.", mixed)
  split_of_subject = np.zeros(len(uniq), dtype=np.int64)
  for c in np.unique(subject_class):
    members = rng.permutation(np.flatnonzero(subject_class == c))
    counts = _counts(len(members), fractions)
    if min(n for n, f in zip(counts, fractions) if f > 0) <= 0:
      raise ValueError(
          f"Class {c} has {len(members)} subject(s): too few to put at least one in each split "
          f"with fractions {tuple(fractions)}."
      )
    for k, chunk in enumerate(_cut(members, counts)):
      split_of_subject[chunk] = k
  assigned = split_of_subject[inverse]
  return [np.flatnonzero(assigned == k).astype(np.int64) for k in range(3)]


def check_no_subject_leakage(subjects_by_split: Mapping[str, Sequence[bytes]]) -> None:
  """Raises `SubjectLeakageError` if any (non-empty) subject id appears in two splits."""
  seen: dict[bytes, str] = {}
  leaks: dict[bytes, set[str]] = {}
  for split, subjects in subjects_by_split.items():
    for s in set(bytes(x) for x in subjects if len(x)):
      if s in seen and seen[s] != split:
        leaks.setdefault(s, {seen[s]}).add(split)
      seen.setdefault(s, split)
  if leaks:
    shown = ", ".join(f"{s.decode(errors='replace')} in {sorted(v)}" for s, v in sorted(leaks.items())[:10])
    raise SubjectLeakageError(
        f"{len(leaks)} subject(s) appear in more than one split ({shown}); a subject-disjoint "
        "protocol must keep each subject's images in one split."
    )


def make_splits(
    catalog: Catalog,
    *,
    dataset: str,
    protocol: str,
    fractions: Sequence[float],
    seed: int,
    dedup: bool,
) -> SplitResult:
  """Dedups (optional), then assigns rows to train/val/test under `protocol`.

  `catalog` holds the source splits of `source_splits(dataset, protocol)` with task labels.
  """
  source_splits(dataset, protocol)  # validates the pair
  fractions = check_fractions(fractions)
  external = (CNMC_OFFICIAL_TEST,) if protocol == "official" else ()
  dropped = conflicts = 0
  if dedup:
    kept, dropped, conflicts = dedup_rows(catalog, first=external)
    catalog = catalog.take(kept)
    logging.info("Dedup by image_sha256 dropped %d duplicate(s) (%d with another label).", dropped, conflicts)
  is_test = np.isin(catalog.split, list(external))
  pool = np.flatnonzero(~is_test)
  if protocol == "official":  # folds split by subject into train/val; the preliminary test is test
    tv = (fractions[0] / (fractions[0] + fractions[1]), fractions[1] / (fractions[0] + fractions[1]), 0.0)
    train, val, _ = subject_split(catalog.label[pool], catalog.subject_id[pool], tv, seed)
    rows = {"train": pool[train], "val": pool[val], "test": np.flatnonzero(is_test)}
    if (catalog.label[rows["test"]] < 0).any():
      raise ValueError(f"The official test split {CNMC_OFFICIAL_TEST!r} has unlabelled records.")
  else:
    if protocol == "paper_random":
      parts = random_split(catalog.label[pool], fractions, seed)
    else:
      parts = subject_split(catalog.label[pool], catalog.subject_id[pool], fractions, seed)
    rows = {name: pool[p] for name, p in zip(SPLITS, parts)}
  rows = {k: np.sort(v).astype(np.int64) for k, v in rows.items()}
  if protocol in ("subject", "official"):
    check_no_subject_leakage({k: catalog.subject_id[v] for k, v in rows.items()})
  if len(rows["train"]) == 0:
    raise ValueError("The training split is empty.")
  return SplitResult(catalog, rows, protocol, dropped, conflicts)
