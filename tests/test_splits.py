"""Split protocols, dedup, task views and the subject-leakage guard (no images decoded here)."""

import numpy as np
import pytest

from leukojax.data import splits
from leukojax.data.catalog import scan_sources
from leukojax.data.views import get_view
from tests import fake_records


def _catalog(sources, dataset="cnmc2019", protocol="subject", task="binary"):
  wanted = splits.source_splits(dataset, protocol)
  catalog, _ = scan_sources(sources, wanted).apply_view(get_view(dataset, task))
  return catalog


def _split(sources, protocol="subject", fractions=(0.7, 0.15, 0.15), seed=0, dataset="cnmc2019", dedup=True,
           task="binary"):
  return splits.make_splits(_catalog(sources, dataset, protocol, task), dataset=dataset, protocol=protocol,
                            fractions=fractions, seed=seed, dedup=dedup)


def test_subject_protocol_is_disjoint_by_subject_and_stratified():
  result = _split(fake_records.cnmc_sources(subjects_per_class=(10, 20), images_per_subject=3))
  cat = result.catalog
  subjects = {k: set(cat.subject_id[v]) for k, v in result.rows.items()}
  assert not subjects["train"] & subjects["val"] and not subjects["train"] & subjects["test"]
  assert not subjects["val"] & subjects["test"]
  all_rows = np.concatenate(list(result.rows.values()))
  assert sorted(all_rows) == list(range(len(cat)))  # every image in exactly one split
  for name, want in (("train", (7, 14)), ("val", (2, 3)), ("test", (1, 3))):  # cumulative rounding
    per_class = [len({s for s, l in zip(cat.subject_id[result.rows[name]], cat.label[result.rows[name]]) if l == c})
                 for c in (0, 1)]
    assert tuple(per_class) == want, (name, per_class)


def test_subject_split_depends_on_seed_only():
  sources = fake_records.cnmc_sources(subjects_per_class=(10, 20), images_per_subject=2)
  a, b, c = (_split(sources, seed=s) for s in (0, 0, 1))
  assert all(np.array_equal(a.rows[k], b.rows[k]) for k in a.rows)
  assert not all(np.array_equal(a.rows[k], c.rows[k]) for k in a.rows)


def test_paper_random_is_stratified_over_images():
  sources = fake_records.cnmc_sources(subjects_per_class=(5, 10), images_per_subject=4)  # 20 HEM, 40 ALL
  result = _split(sources, protocol="paper_random", fractions=(0.6, 0.2, 0.2))
  counts = {k: np.bincount(result.catalog.label[v], minlength=2).tolist() for k, v in result.rows.items()}
  assert counts == {"train": [12, 24], "val": [4, 8], "test": [4, 8]}
  # Image-level: subjects are shared between splits, which is exactly the paper's flaw.
  cat = result.catalog
  assert set(cat.subject_id[result.rows["train"]]) & set(cat.subject_id[result.rows["test"]])


def test_official_protocol_uses_prelim_test_and_splits_folds_by_subject():
  sources = fake_records.cnmc_sources(subjects_per_class=(8, 12), images_per_subject=2, prelim_subjects=(2, 3))
  result = _split(sources, protocol="official", fractions=(0.7, 0.15, 0.15))
  cat = result.catalog
  assert set(cat.split[result.rows["test"]]) == {"prelim_test"}
  assert len(result.rows["test"]) == len(sources["prelim_test"])
  assert set(cat.split[result.rows["train"]]) | set(cat.split[result.rows["val"]]) <= set(splits.CNMC_TRAIN_FOLDS)
  # train/val share 0.7 : 0.15 of the fold subjects -> val gets round(0.176 * n) subjects per class.
  val_subjects = set(cat.subject_id[result.rows["val"]])
  assert len(val_subjects) == round(8 * 0.15 / 0.85) + round(12 * 0.15 / 0.85)


def test_leakage_guard_fires_on_a_crafted_assignment():
  splits.check_no_subject_leakage({"train": [b"1", b"2"], "val": [b"3"], "test": [b"4", b""]})
  with pytest.raises(splits.SubjectLeakageError, match=r"2 in \['test', 'train'\]"):
    splits.check_no_subject_leakage({"train": [b"1", b"2"], "val": [b"3"], "test": [b"2"]})


def test_taleqani_rejects_subject_protocols_and_points_to_paper_random():
  for protocol in ("subject", "official"):
    with pytest.raises(ValueError, match="paper_random") as err:
      splits.source_splits("taleqani_all", protocol)
    assert "patient" in str(err.value)


def test_dedup_keeps_the_first_copy_before_splitting():
  sources = fake_records.taleqani_sources(per_class=(10, 6, 6, 8), duplicates=3)
  result = _split(sources, protocol="paper_random", dataset="taleqani_all", task="four_class")
  assert result.duplicates_dropped == 3 and result.duplicate_label_conflicts == 0
  assert len(result.catalog) == 30
  assert not any(n.startswith(b"dup-") for n in result.catalog.file_name)  # the first copy is kept
  kept = _split(sources, protocol="paper_random", dataset="taleqani_all", task="four_class", dedup=False)
  assert len(kept.catalog) == 33 and kept.duplicates_dropped == 0


def test_dedup_keeps_the_external_test_copy_under_official():
  sources = fake_records.cnmc_sources(subjects_per_class=(6, 6), images_per_subject=2)
  sources["fold_0"].append(dict(sources["prelim_test"][0], subject_id=sources["fold_0"][0]["subject_id"]))
  result = _split(sources, protocol="official")
  assert result.duplicates_dropped == 1
  assert len(result.rows["test"]) == len(sources["prelim_test"])


def test_task_views():
  sources = fake_records.taleqani_sources(per_class=(10, 6, 6, 8))
  binary = _catalog(sources, "taleqani_all", "paper_random", "benign_vs_pro_b")
  assert np.bincount(binary.label).tolist() == [10, 8]  # benign=0, pro_b=1
  assert all(n.startswith(b"WBC-Pro") for n in binary.file_name[binary.label == 1])
  four = _catalog(sources, "taleqani_all", "paper_random", "four_class")
  assert np.bincount(four.label).tolist() == [10, 6, 6, 8]
  with pytest.raises(ValueError, match="benign_vs_pro_b"):
    get_view("taleqani_all", "binary")


def test_too_few_subjects_is_a_clear_error():
  with pytest.raises(ValueError, match="too few"):
    _split(fake_records.cnmc_sources(subjects_per_class=(2, 6)))
