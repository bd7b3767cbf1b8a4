"""The kept 'best' checkpoint follows the metric's direction: highest accuracy, lowest loss, ties earliest."""

import grain
import numpy as np
import pytest

from leukojax.training.checkpoints import Checkpointer, metric_mode


def test_metric_mode():
  assert metric_mode("loss") == "min" and metric_mode("val_loss") == "min"
  assert metric_mode("accuracy") == "max" and metric_mode("AUC") == "max"


@pytest.mark.parametrize("metric, values, best", [
    ("accuracy", [0.5, 0.9, 0.9, 0.7], 2),  # a tie goes to the earlier step, as Keras's save-best-only
    ("loss", [0.9, 0.2, 0.2, 0.4], 2),
])
def test_best_checkpoint_follows_the_metric(tmp_path, metric, values, best):
  ckpt = Checkpointer(str(tmp_path / "checkpoints"), best_metric=metric)
  iterator = iter(grain.MapDataset.range(8).to_iter_dataset())
  for step, value in enumerate(values, start=1):
    ckpt.save(step, {"w": np.full(3, step, np.float32)}, iterator, {"step": step}, metrics={metric: value})
  ckpt.wait()
  assert ckpt.best_step() == best
  assert set(ckpt.manager.all_steps()) == {best, len(values)}  # the best and the latest are kept
  ckpt.close()
