"""Split protocols (subject, subject_cv, paper_random, official), dedup and the leakage guard.

The paper split C-NMC at random over cells, so one subject's cells sit in train and test alike;
`subject` (the default) keeps every subject in one split. `subject_cv` is for few subjects (the 11
of the real fold_1 archive have 2 healthy ones, too few for a healthy subject in each of three
splits): fold k of K tests on the k-th group of every class's subjects and trains on the rest.
See docs/data.md for the exact rules.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping, Sequence

import numpy as np

from leukojax.errors import LeukojaxError
from leukojax.data import errors
from leukojax.data.catalog import Catalog

PROTOCOLS: tuple[str, ...] = ("subject", "subject_cv", "paper_random", "official")
SUBJECT_DISJOINT: tuple[str, ...] = ("subject", "subject_cv", "official")
SPLITS: tuple[str, ...] = ("train", "val", "test")
CNMC_TRAIN_FOLDS: tuple[str, ...] = ("fold_0", "fold_1", "fold_2")
CNMC_OFFICIAL_TEST = "prelim_test"  # the labelled preliminary test; final_test has no labels


class SubjectLeakageError(LeukojaxError, ValueError):
  """A subject's images appear in more than one split of a subject-disjoint protocol."""


@dataclasses.dataclass(frozen=True)
class SplitResult:
  """The catalogue after the task view and dedup, and the rows of each split in it."""

  catalog: Catalog
  rows: dict[str, np.ndarray]  # 'train' | 'val' | 'test' -> int64 rows of `catalog`, sorted
  protocol: str
  duplicates_dropped: int
  duplicate_label_conflicts: int  # dropped duplicates whose label differed from the kept copy


def source_splits(dataset: str, protocol: str, available: Sequence[str] | None = None) -> tuple[str, ...]:
  """Names the source splits a protocol reads; rejects protocols the dataset cannot support.

  `available` (the built splits; None = all) lets a partial C-NMC download train on the folds it
  has; a protocol that needs an absent split stops here, naming it.
  """
  if protocol not in PROTOCOLS:
    raise ValueError(f"Unknown split protocol {protocol!r}; expected one of {PROTOCOLS}.")
  if dataset == "cnmc2019":
    have = set(CNMC_TRAIN_FOLDS + (CNMC_OFFICIAL_TEST,)) if available is None else set(available)
    folds = tuple(f for f in CNMC_TRAIN_FOLDS if f in have)
    if not folds:
      raise errors.MissingManualDownloadError(
          f"The C-NMC build has no training fold (has {sorted(have)}): every protocol trains on "
          "training_data/fold_{0,1,2}/. Add at least one fold to the manual download, delete the "
          "prepared <data_dir>/cnmc2019/ and run again.")
    if protocol == "official" and CNMC_OFFICIAL_TEST not in have:
      raise errors.MissingManualDownloadError(
          f"split.protocol='official' tests on {CNMC_OFFICIAL_TEST!r}, which this C-NMC build lacks "
          "(the download has no validation_data/C-NMC_test_prelim_phase_data/ images with their "
          "label CSV). Add them to the manual download, delete the prepared <data_dir>/cnmc2019/ "
          "and run again, or use split.protocol='subject' or 'subject_cv'.")
    return folds + ((CNMC_OFFICIAL_TEST,) if protocol == "official" else ())
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


def subject_folds(labels: np.ndarray, subjects: np.ndarray, num_folds: int, seed: int) -> dict[bytes, int]:
  """Deals every class's subjects into `num_folds` groups (shuffled by `seed`, then round-robin).

  A subject's class is its majority label. `num_folds=0` means as many folds as the rarest class
  has subjects (leave-one-healthy-subject-out on the 11-subject C-NMC archive). Every fold gets at
  least one subject of every class.
  """
  if any(len(s) == 0 for s in subjects):
    raise ValueError("Subject cross-validation needs a subject id on every record.")
  uniq, inverse = np.unique(subjects.astype(bytes), return_inverse=True)
  subject_class = np.array([np.bincount(labels[inverse == k]).argmax() for k in range(len(uniq))])
  per_class = {int(c): np.flatnonzero(subject_class == c) for c in np.unique(subject_class)}
  fewest = min(len(v) for v in per_class.values())
  k = fewest if num_folds == 0 else int(num_folds)
  if k < 2 or k > fewest:
    raise ValueError(
        f"split.num_folds={num_folds}: subject cross-validation needs 2 <= folds <= the subjects of "
        f"the rarest class ({fewest}; per class {({c: len(v) for c, v in per_class.items()})}), so "
        "that every fold tests on a subject of every class.")
  rng = np.random.default_rng(seed)
  fold_of: dict[bytes, int] = {}
  for c in sorted(per_class):
    for i, member in enumerate(rng.permutation(per_class[c])):
      fold_of[bytes(uniq[member])] = i % k
  return fold_of


def subject_cv_split(labels: np.ndarray, subjects: np.ndarray, *, num_folds: int, fold: int,
                     val_fraction: float, seed: int) -> list[np.ndarray]:
  """`subject_cv`: test = the subjects of fold `fold`; val = `val_fraction` of the other subjects'
  cells (stratified per subject: validation only picks checkpoints and thresholds, and with one
  healthy subject left for training it cannot hold a healthy subject of its own); train = the rest.
  """
  fold_of = subject_folds(labels, subjects, num_folds, seed)
  k = max(fold_of.values()) + 1
  if not 0 <= fold < k:
    raise ValueError(f"split.fold={fold} is out of range: this protocol has {k} folds (0..{k - 1}).")
  if not 0 <= val_fraction < 1:
    raise ValueError(f"split.val_fraction must be in [0, 1); got {val_fraction}.")
  test = np.array([fold_of[bytes(s)] == fold for s in subjects])
  rng = np.random.default_rng([seed, fold])
  val = np.zeros(len(labels), bool)
  for s in sorted({bytes(x) for x in subjects[~test]}):
    rows = rng.permutation(np.flatnonzero((subjects.astype(bytes) == s) & ~test))
    val[rows[: _round_half_up(val_fraction * len(rows))]] = True
  train = ~test & ~val
  return [np.flatnonzero(m).astype(np.int64) for m in (train, val, test)]


def cap_per_subject(subject_ids: np.ndarray, rows: dict[str, np.ndarray], cap: int, seed: int,
                    splits: Sequence[str] = ("train", "val")) -> dict[str, np.ndarray]:
  """Keeps at most `cap` cells of each subject over `splits` together (chosen at random by `seed`).

  Bounds the cost of an epoch on a CPU and keeps one subject with many cells (757 of 2,921 in the
  real archive) from dominating training; the test split always keeps every cell.
  """
  if cap <= 0:
    return rows
  rng = np.random.default_rng([seed, cap])
  pooled = np.concatenate([rows[s] for s in splits])
  keep = []
  ids = subject_ids[pooled].astype(bytes)
  for s in sorted(set(ids.tolist())):
    members = pooled[ids == s]
    keep.append(members if len(members) <= cap else rng.choice(members, cap, replace=False))
  kept = np.concatenate(keep) if keep else np.zeros(0, np.int64)
  out = dict(rows)
  for s in splits:
    out[s] = np.sort(rows[s][np.isin(rows[s], kept)]).astype(np.int64)
  return out


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
    num_folds: int = 0,
    fold: int = 0,
    val_fraction: float = 0.15,
) -> SplitResult:
  """Dedups (optional), then assigns rows to train/val/test under `protocol`.

  `catalog` holds the source splits of `source_splits(dataset, protocol)` with task labels;
  `num_folds`, `fold` and `val_fraction` are read by `subject_cv` only.
  """
  source_splits(dataset, protocol, available=sorted(set(catalog.split.tolist())) or None)
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
    elif protocol == "subject_cv":
      parts = subject_cv_split(catalog.label[pool], catalog.subject_id[pool], num_folds=num_folds,
                               fold=fold, val_fraction=val_fraction, seed=seed)
    else:
      parts = subject_split(catalog.label[pool], catalog.subject_id[pool], fractions, seed)
    rows = {name: pool[p] for name, p in zip(SPLITS, parts)}
  rows = {k: np.sort(v).astype(np.int64) for k, v in rows.items()}
  if protocol == "subject_cv":  # validation shares the training subjects by design; test never
    check_no_subject_leakage({"train+val": catalog.subject_id[np.concatenate([rows["train"], rows["val"]])],
                              "test": catalog.subject_id[rows["test"]]})
  elif protocol in SUBJECT_DISJOINT:
    check_no_subject_leakage({k: catalog.subject_id[v] for k, v in rows.items()})
  if len(rows["train"]) == 0:
    raise ValueError("The training split is empty.")
  return SplitResult(catalog, rows, protocol, dropped, conflicts)
