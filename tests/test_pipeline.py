"""`build_pipeline` on in-memory sources: outputs, statistics, balance, determinism, resume, sharding."""

import hashlib
import itertools
import pickle

import numpy as np
import pytest

from leukojax.data import build_pipeline, default_data_config, describe_splits, load_stats, preprocess_images
from leukojax.data import transforms
from leukojax.models.preprocessing import preprocess_input
from tests import fake_records

SIZE = 16


def _config(**overrides):
  """The defaults at SIZE px; `augment__rot90=True` sets `augment.rot90`."""
  c = default_data_config()
  c.image_size = SIZE
  c.read_threads = 0
  c.update_from_flattened_dict({k.replace("__", "."): v for k, v in overrides.items()})
  return c


def _build(config=None, sources=None, *, batch=4, eval_batch=6, workdir=None, seed=0, index=0, count=1):
  return build_pipeline(config or _config(), global_batch_size=batch, eval_batch_size=eval_batch, workdir=workdir,
                        seed=seed, process_index=index, process_count=count,
                        sources=sources if sources is not None else fake_records.cnmc_sources(size=SIZE))


def _take(iterator, n):
  return [next(iterator) for _ in range(n)]


def _key(image: np.ndarray) -> str:
  return hashlib.sha256(np.asarray(image, np.uint8).tobytes()).hexdigest()


@pytest.mark.parametrize("mode, low, high", [("caffe", -123.68, 255 - 103.939), ("tf", -1, 1),
                                             ("torch", -0.485 / 0.229, (1 - 0.406) / 0.225), ("none", 0, 255)])
def test_output_shapes_dtypes_and_ranges_per_mode(mode, low, high):
  p = _build(_config(preprocessing=mode, standardize=False, balance="none"))
  batch = next(iter(p.train))
  assert batch["image"].shape == (4, SIZE, SIZE, 3) and batch["image"].dtype == np.float32
  assert batch["label"].shape == (4,) and batch["label"].dtype == np.int32
  assert set(batch) == {"image", "label"}
  assert low - 1e-4 <= batch["image"].min() and batch["image"].max() <= high + 1e-4
  ev = next(p.eval_splits["val"].batches())
  assert set(ev) == {"image", "label", "mask", "index"}
  assert ev["mask"].dtype == np.bool_ and ev["index"].dtype == np.int32
  # The mode is exactly Keras' preprocess_input on the raw pixels (standardize=False).
  raw = np.stack([p.eval_splits["val"].sources[s][i]["image"] for s, i in
                  zip(p.eval_splits["val"].source_split[:6], p.eval_splits["val"].source_index[:6])])
  np.testing.assert_allclose(ev["image"], preprocess_input(raw.astype(np.float32), mode), rtol=1e-5, atol=1e-4)


def test_standardisation_maps_train_statistics_onto_imagenet():
  p = _build(_config(preprocessing="none", standardize=True))
  images = np.concatenate([b["image"][b["mask"]] for b in p.eval_splits["train"].batches()])
  np.testing.assert_allclose(images.mean((0, 1, 2)), transforms.IMAGENET_MEAN_PIXELS, rtol=1e-4)
  np.testing.assert_allclose(images.std((0, 1, 2)), transforms.IMAGENET_STD_PIXELS, rtol=1e-3)
  # The predict tool's entry point prepares a raw image exactly as evaluation does.
  val = p.eval_splits["val"]
  raw = [val.sources[s][i]["image"] for s, i in zip(val.source_split[:3], val.source_index[:3])]
  np.testing.assert_array_equal(preprocess_images(raw, _config(preprocessing="none"), p.stats),
                                next(val.batches())["image"][:3])


def test_statistics_come_from_the_training_split_only(tmp_path):
  sources = fake_records.cnmc_sources(size=SIZE)
  p = _build(sources=sources, workdir=tmp_path)
  train = p.eval_splits["train"]
  train_pixels = np.stack([sources[s][i]["image"] for s, i in zip(train.source_split, train.source_index)])
  np.testing.assert_allclose(p.stats.mean, train_pixels.reshape(-1, 3).mean(0), rtol=1e-6)
  np.testing.assert_allclose(p.stats.std, train_pixels.reshape(-1, 3).std(0), rtol=1e-6)
  assert p.stats.num_images == len(train)
  # Whiten every val/test image: the training statistics must not move, the all-data ones do.
  for name in ("val", "test"):
    for s, i in zip(p.eval_splits[name].source_split, p.eval_splits[name].source_index):
      sources[s][i] = dict(sources[s][i], image=np.full_like(sources[s][i]["image"], 255))
  all_pixels = np.stack([r["image"] for k in ("fold_0", "fold_1", "fold_2") for r in sources[k]])
  assert _build(sources=sources).stats.mean == p.stats.mean
  assert np.abs(np.subtract(p.stats.mean, all_pixels.reshape(-1, 3).mean(0))).min() > 10
  # Cached in the workdir, reused by the next build and readable by the predict tool.
  assert load_stats(tmp_path) == p.stats
  assert _build(sources=sources, workdir=tmp_path, seed=5).stats == p.stats
  with pytest.raises(ValueError, match="another training split"):
    _build(_config(image_size=SIZE + 4), sources=sources, workdir=tmp_path)


def test_oversampling_balances_only_the_training_split_with_clockwise_copies():
  sources = fake_records.cnmc_sources(subjects_per_class=(6, 9), images_per_subject=4, size=SIZE)
  p = _build(_config(preprocessing="none", standardize=False), sources, batch=2)
  train = p.eval_splits["train"]
  natural = np.bincount(train.metadata["label"], minlength=2)
  assert natural[0] < natural[1]
  assert p.train_size == natural[1] + min(natural[0], natural[1] - natural[0]) + natural[0]
  assert p.summary["train_balanced_per_class"] == [min(2 * natural[0], natural[1]), natural[1]]
  # One epoch of the training stream: every original once, plus rotated copies of HEM only.
  seen = np.concatenate([b["image"] for b in _take(iter(p.train), p.train_size // 2)])
  originals = {_key(sources[s][i]["image"]): l for s, i, l in
               zip(train.source_split, train.source_index, train.metadata["label"])}
  rotated = {_key(np.rot90(sources[s][i]["image"], k=-1)): l for s, i, l in
             zip(train.source_split, train.source_index, train.metadata["label"])}
  keys = [_key(x) for x in seen]
  assert set(originals) <= set(keys)
  copies = [k for k in keys if k not in originals]
  assert len(copies) == p.train_size - len(originals)
  assert all(k in rotated and rotated[k] == 0 for k in copies)  # 90° clockwise copies of HEM
  # Val and test keep their natural counts.
  for name in ("val", "test"):
    assert len(p.eval_splits[name]) == sum(p.summary["splits"][name]["per_class"])
  assert "train*" in describe_splits(p)


def test_class_weights_mode_keeps_the_split_natural():
  p = _build(_config(balance="class_weights"))
  counts = np.bincount(p.eval_splits["train"].metadata["label"])
  assert p.train_size == counts.sum()
  np.testing.assert_allclose(p.class_weights, counts.sum() / (2 * counts), rtol=1e-6)


def test_order_is_deterministic_given_the_seed():
  config = _config(augment__rot90=True, augment__flip=True, augment__small_angle_deg=10.0, augment__brightness=0.2,
                   read_threads=2)
  a, b, c = (list(itertools.islice(iter(_build(config, seed=s).train), 5)) for s in (1, 1, 2))
  for x, y in zip(a, b):
    np.testing.assert_array_equal(x["image"], y["image"])
  assert any(not np.array_equal(x["image"], z["image"]) for x, z in zip(a, c))


def test_epochs_are_reshuffled():
  p = _build(_config(balance="none", preprocessing="none", standardize=False), batch=1)
  it = iter(p.train)
  first = [_key(b["image"][0]) for b in _take(it, p.train_size)]
  second = [_key(b["image"][0]) for b in _take(it, p.train_size)]
  assert sorted(first) == sorted(second) and first != second


def test_iterator_state_resume_gives_the_same_batches():
  p = _build(_config(augment__rot90=True, augment__brightness=0.1, read_threads=2), batch=4)  # threads prefetch
  it = iter(p.train)
  _take(it, 7)  # crosses an epoch boundary (56 examples, 14 steps per epoch) below
  state = it.get_state()
  expected = _take(it, 12)
  resumed = iter(p.train)
  resumed.set_state(state)
  for x, y in zip(expected, _take(resumed, 12)):
    np.testing.assert_array_equal(x["image"], y["image"])
    np.testing.assert_array_equal(x["label"], y["label"])


def test_grain_worker_processes(tmp_path):
  _build(workdir=tmp_path)  # statistics in-process first: each worker start re-imports grain and jax
  p = _build(_config(num_workers=2, augment__flip=True), workdir=tmp_path)
  it = iter(p.train)
  _take(it, 3)
  state = it.get_state()
  expected = _take(it, 4)
  it.close()
  resumed = iter(p.train)
  resumed.set_state(state)
  got = _take(resumed, 4)
  resumed.close()
  for x, y in zip(expected, got):
    assert x["image"].shape == (4, SIZE, SIZE, 3)
    np.testing.assert_array_equal(x["image"], y["image"])
  pickle.dumps(p.eval_splits["val"].dataset())  # what an evaluation's workers would receive


def test_worker_count_is_chosen_for_the_machine(monkeypatch):
  from leukojax.data import workers

  monkeypatch.setattr(workers, "host_cores", lambda: 16)
  assert default_data_config().num_workers == workers.AUTO
  assert workers.resolve_num_workers(workers.AUTO, backend="cpu") == 0  # the step already uses every core
  assert workers.resolve_num_workers(workers.AUTO, backend="gpu") == 14  # two cores left to drive the devices
  monkeypatch.setattr(workers, "host_cores", lambda: 64)
  assert workers.resolve_num_workers(workers.AUTO, backend="tpu") == workers.MAX_WORKERS
  assert workers.resolve_num_workers(3, backend="gpu") == 3 and workers.resolve_num_workers(0, backend="gpu") == 0
  with pytest.raises(ValueError, match="data.num_workers=-2"):
    workers.resolve_num_workers(-2)


def test_process_shards_are_disjoint_and_cover_the_data():
  config = _config(preprocessing="none", standardize=False)
  shards = [_build(config, batch=4, index=k, count=2) for k in (0, 1)]
  assert all(s.per_process_batch_size == 2 for s in shards)
  total = shards[0].train_size
  keys = []
  for s in shards:  # the first epoch's examples, dealt between the processes
    n = total // 2
    keys.append([_key(x) for b in _take(iter(s.train), n // 2) for x in b["image"]])
  assert not set(keys[0]) & set(keys[1])
  assert len(set(keys[0]) | set(keys[1])) == total == shards[0].steps_per_epoch * 4
  for name in ("val", "train"):  # eval: same number of padded batches, disjoint indices covering the split
    batches = [list(s.eval_splits[name].batches()) for s in shards]
    assert len(batches[0]) == len(batches[1]) == shards[0].eval_splits[name].num_batches()
    idx = [np.concatenate([b["index"][b["mask"]] for b in bs]) for bs in batches]
    assert not set(idx[0]) & set(idx[1])
    assert sorted(np.concatenate(idx)) == list(range(len(shards[0].eval_splits[name])))
    assert all((b["index"][~b["mask"]] == -1).all() and (b["image"][~b["mask"]] == 0).all()
               for bs in batches for b in bs)
  with pytest.raises(ValueError, match="multiple of process_count"):
    _build(config, batch=5, count=2)


def test_two_processes_read_the_global_batches_of_one():
  """Pieces of one global stream: the same examples, order and augmentations for any process count,
  each process's pieces picklable for grain's worker processes."""
  config = _config(augment__rot90=True, augment__brightness=0.1, augment__flip=True)
  one = iter(_build(config, batch=4).train)
  shards = [_build(config, batch=4, index=k, count=2) for k in (0, 1)]
  two = [iter(s.train) for s in shards]
  for _ in range(20):  # past an epoch boundary (14 steps per epoch)
    expected, pieces = next(one), [next(it) for it in two]
    for key in ("image", "label"):
      np.testing.assert_array_equal(expected[key], np.concatenate([p[key] for p in pieces]))
  assert two[1].get_state() == {"next_index": 40}  # 20 steps of 2 examples: the position on 2 processes
  pickle.dumps(shards[1].train)


def test_eval_metadata_and_padding():
  p = _build(eval_batch=5)
  val = p.eval_splits["val"]
  batches = list(val.batches())
  assert len(batches) == val.num_batches() == -(-len(val) // 5)
  assert all(b["image"].shape[0] == 5 for b in batches)
  index = np.concatenate([b["index"] for b in batches])
  mask = np.concatenate([b["mask"] for b in batches])
  labels = np.concatenate([b["label"] for b in batches])
  np.testing.assert_array_equal(index[mask], np.arange(len(val)))
  np.testing.assert_array_equal(labels[mask], val.metadata["label"])
  assert set(val.metadata) >= {"file_name", "subject_id", "label"}
  assert len(list(val.batches(10))) == -(-len(val) // 10)


def test_taleqani_views_and_protocol_error():
  sources = fake_records.taleqani_sources(per_class=(10, 6, 6, 8), size=SIZE, duplicates=2)
  config = _config(dataset="taleqani_all", task="benign_vs_pro_b", split__protocol="paper_random")
  p = _build(config, sources)
  assert p.class_names == ("benign", "pro_b") and p.num_classes == 2
  assert p.summary["duplicates_dropped"] == 2 and p.summary["dropped_by_task_view"] == 12
  assert sum(len(e) for k, e in p.eval_splits.items()) == 18
  assert not p.summary["has_subjects"] and "no subject ids" in describe_splits(p)
  with pytest.raises(ValueError, match="paper_random"):
    _build(_config(dataset="taleqani_all", task="four_class"), sources)


def test_center_crop_then_resize():
  image = np.zeros((40, 40, 3), np.uint8)
  image[10:30, 10:30] = 200
  out = transforms.crop_and_resize(image, 20, "center_crop", crop_fraction=0.5)
  assert out.shape == (20, 20, 3) and (out == 200).all()
