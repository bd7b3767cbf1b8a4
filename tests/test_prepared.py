"""Prepared images kept in memory (`leukojax.data.prepared`): the same stream, fewer decodes, bounded."""

import itertools
import pickle

import numpy as np
import pytest

from leukojax.data.prepared import PreparedStore
from tests import fake_records
from tests.test_pipeline import _build, _config


class CountingSources(dict):
  """In-memory sources that count the records read (each read is a decode in a real TFDS source)."""

  def __init__(self, sources):
    super().__init__({name: _Counting(records, self) for name, records in sources.items()})
    self.reads = 0


class _Counting(list):
  def __init__(self, records, owner):
    super().__init__(records)
    self.owner = owner

  def __getitem__(self, i):
    self.owner.reads += 1
    return super().__getitem__(i)


AUGMENTED = dict(augment__rot90=True, augment__flip=True, augment__hed_sigma=0.05, read_threads=2)


def _stream(cache_mb: float, sources=None, n: int = 30):
  pipeline = _build(_config(cache_prepared_mb=cache_mb, balance="oversample_rot90", **AUGMENTED),
                    sources=sources)
  train = list(itertools.islice(iter(pipeline.train), n))
  evaluated = [list(pipeline.eval_splits[name].batches()) for name in ("val", "val", "train")]
  return pipeline, train, evaluated


def test_stream_and_evaluation_batches_are_bit_identical_with_and_without_the_store():
  _, train_off, eval_off = _stream(0)
  pipeline, train_on, eval_on = _stream(64)
  store = pipeline.eval_splits["val"].store
  assert store is not None and len(store) > 0
  for x, y in zip(train_off + sum(eval_off, []), train_on + sum(eval_on, [])):
    assert x.keys() == y.keys()
    for key in x:
      np.testing.assert_array_equal(x[key], y[key])


def test_each_row_is_read_once_then_served_from_memory():
  sources = CountingSources(fake_records.cnmc_sources(size=16))
  pipeline = _build(_config(cache_prepared_mb=64, balance="oversample_rot90", **AUGMENTED), sources=sources)
  iterator = iter(pipeline.train)
  for _ in range(pipeline.steps_per_epoch):  # one epoch reads every training row
    next(iterator)
  list(pipeline.eval_splits["val"].batches())
  reads_after_first_pass = sources.reads
  for _ in range(3 * pipeline.steps_per_epoch):
    next(iterator)
  for _ in range(2):
    list(pipeline.eval_splits["val"].batches())
  assert sources.reads == reads_after_first_pass  # later epochs and validations decode nothing

  without = CountingSources(fake_records.cnmc_sources(size=16))
  pipeline = _build(_config(cache_prepared_mb=0, balance="oversample_rot90", **AUGMENTED), sources=without)
  iterator = iter(pipeline.train)
  before = without.reads
  for _ in range(2 * pipeline.steps_per_epoch):
    next(iterator)
  assert without.reads - before >= 2 * pipeline.steps_per_epoch * 4  # every example read, every epoch


def test_the_budget_bounds_the_store_and_the_rest_is_prepared_as_before():
  image = np.zeros((16, 16, 3), np.uint8)
  store = PreparedStore(budget_bytes=3 * image.nbytes)
  for i in range(10):
    store.put(("train", i, False), image + i)
  assert len(store) == 3 and store.size_bytes == 3 * image.nbytes
  assert store.get(("train", 5, False)) is None
  np.testing.assert_array_equal(store.get(("train", 2, False)), image + 2)
  _, small_train, small_eval = _stream(0.002)  # ~2 KB: room for a few 16 px images only
  _, train, evaluated = _stream(0)
  for x, y in zip(small_train + sum(small_eval, []), train + sum(evaluated, [])):
    np.testing.assert_array_equal(x["image"], y["image"])


def test_stored_images_are_read_only_and_the_store_pickles_empty():
  store = PreparedStore(budget_bytes=2**20)
  original = np.arange(48, dtype=np.uint8).reshape(4, 4, 3)
  store.put(("train", 0, True), original)
  original[:] = 0  # the caller's array is not the stored one
  stored = store.get(("train", 0, True))
  assert stored.sum() > 0
  with pytest.raises(ValueError):
    stored[0, 0, 0] = 1
  copy = pickle.loads(pickle.dumps(store))  # what a grain worker process receives
  assert len(copy) == 0 and copy.budget_bytes == store.budget_bytes
  copy.put(("train", 0, True), stored)
  assert len(copy) == 1
