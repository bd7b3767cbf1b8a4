"""The pipeline through the real TFDS builders: the bundled Taleqani sample and a synthetic C-NMC set."""

import pickle
import shutil

import numpy as np
import pytest

from leukojax.data import build_pipeline, default_data_config, describe_splits, load_stats
from leukojax.data import errors, synthetic_cnmc
from leukojax.data.sources import resolve_builder_config
from leukojax.data.catalog import RowSource
from tfds_builders.taleqani_all import taleqani_all_dataset_builder as taleqani

SIZE = 32


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  return str(tmp_path_factory.mktemp("tfds"))


@pytest.fixture(scope="module")
def cnmc_manual(tmp_path_factory):
  root = tmp_path_factory.mktemp("cnmc_manual")
  synthetic_cnmc.write_synthetic_cnmc(root, subjects_per_class=2, cells_per_subject=2)  # 6 subjects per class
  return str(root)


def _taleqani_config(data_dir, **overrides):
  c = default_data_config()
  c.update(dataset="taleqani_all", builder_config="original", data_dir=data_dir, image_size=SIZE,
           manual_dir=str(taleqani.SAMPLE_MANUAL_DIR), task="benign_vs_pro_b")
  c.split.protocol = "paper_random"
  c.update_from_flattened_dict(overrides)
  return c


def _cnmc_config(data_dir, manual_dir, **overrides):
  c = default_data_config()
  c.update(data_dir=data_dir, manual_dir=manual_dir, image_size=SIZE, builder_config="unverified")
  c.update_from_flattened_dict(overrides)
  return c


def test_taleqani_sample_benign_vs_pro_b(data_dir, tmp_path):
  p = build_pipeline(_taleqani_config(data_dir), global_batch_size=4, eval_batch_size=8, workdir=tmp_path, seed=0)
  s = p.summary
  assert s["duplicates_dropped"] == 8  # the sample's 8 byte-identical Pro-B pairs (sample/README.md)
  assert s["dropped_by_task_view"] == 120  # early pre-B and pre-B
  assert sum(d["images"] for d in s["splits"].values()) == 60 + 52
  assert [sum(d["per_class"][k] for d in s["splits"].values()) for k in (0, 1)] == [60, 52]
  assert p.class_names == ("benign", "pro_b") and not s["has_subjects"]
  batch = next(iter(p.train))
  assert batch["image"].shape == (4, SIZE, SIZE, 3) and batch["image"].dtype == np.float32
  assert np.isfinite(batch["image"]).all()
  val = list(p.eval_splits["val"].batches())
  assert sum(int(b["mask"].sum()) for b in val) == len(p.eval_splits["val"])
  assert all(n.startswith(b"WBC-") for n in p.eval_splits["test"].metadata["file_name"])
  assert load_stats(tmp_path) == p.stats and p.stats.num_images == s["splits"]["train"]["images"]
  assert p.stats.geometry == {"height": [224, 224], "width": [224, 224], "max_aspect": 1.0}  # the originals'
  # Worker processes receive the real ArrayRecord sources and transforms by pickling.
  train = p.eval_splits["train"]
  src = RowSource(train.sources, train.source_split, train.source_index, train.metadata["label"])
  assert np.array_equal(pickle.loads(pickle.dumps(src))[3]["image"], src[3]["image"])
  pickle.dumps(p.train)


def test_taleqani_sample_four_class_and_subject_protocol_error(data_dir):
  p = build_pipeline(_taleqani_config(data_dir, task="four_class"), global_batch_size=4, eval_batch_size=4,
                     workdir=None, seed=0)
  assert p.num_classes == 4 and p.summary["train_balanced_per_class"][0] == max(p.summary["train_balanced_per_class"])
  with pytest.raises(ValueError, match="paper_random"):
    build_pipeline(_taleqani_config(data_dir, **{"split.protocol": "subject"}), global_batch_size=4,
                   eval_batch_size=4, workdir=None, seed=0)


def test_synthetic_cnmc_subject_and_official_protocols(data_dir, cnmc_manual, tmp_path):
  p = build_pipeline(_cnmc_config(data_dir, cnmc_manual), global_batch_size=4, eval_batch_size=4,
                     workdir=tmp_path, seed=0)
  subjects = {k: set(e.metadata["subject_id"]) for k, e in p.eval_splits.items()}
  assert not subjects["train"] & subjects["val"] and not subjects["train"] & subjects["test"]
  assert [p.summary["splits"][k]["subjects"] for k in ("train", "val", "test")] == [8, 2, 2]
  assert next(iter(p.train))["image"].shape == (4, SIZE, SIZE, 3)
  assert "split protocol subject" in describe_splits(p)

  official = build_pipeline(_cnmc_config(data_dir, cnmc_manual, **{"split.protocol": "official"}),
                            global_batch_size=4, eval_batch_size=4, workdir=None, seed=0)
  test = official.eval_splits["test"]
  assert len(test) == 12 and set(test.metadata["label"]) == {0, 1}  # the labelled preliminary test
  assert not set(test.metadata["subject_id"]) & set(official.eval_splits["train"].metadata["subject_id"])


def test_skipped_files_reach_the_run_summary(tmp_path, monkeypatch):
  """A skip build of the real sample with one image destroyed: the summary and splits.txt name it."""
  manual = tmp_path / "manual"
  for folder in ("Benign", "Early", "Pre", "Pro"):
    (manual / "Original" / folder).mkdir(parents=True)
    for path in sorted((taleqani.SAMPLE_MANUAL_DIR / "Original" / folder).iterdir())[:8]:
      shutil.copyfile(path, manual / "Original" / folder / path.name)
  bad = sorted((manual / "Original/Pro").iterdir())[0]
  bad.write_bytes(bad.read_bytes()[:100])
  monkeypatch.setenv(errors.ON_CORRUPT_ENV, "skip")
  config = _taleqani_config(str(tmp_path / "tfds"), manual_dir=str(manual))
  config.builder_config = resolve_builder_config(config.dataset, config.builder_config)
  p = build_pipeline(config, global_batch_size=4, eval_batch_size=4, workdir=None, seed=0)
  where = f"Original/Pro/{bad.name}"
  assert p.summary["build"] == {"name": "taleqani_all/original_skip_corrupt/1.0.0", "on_corrupt": "skip",
                                "skipped_corrupt": [where]}
  assert sum(d["images"] for d in p.summary["splits"].values()) == 15
  text = describe_splits(p)
  assert "on_corrupt=skip, 1 corrupt image(s) left out" in text and f"skipped {where}" in text
