"""The kept 'best' checkpoint follows the metric's direction (highest accuracy, lowest loss, ties earliest);
no non-finite state is ever saved."""

import grain
import jax.numpy as jnp
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


def test_the_best_checkpoint_survives_a_restart(tmp_path):
  """A resumed run (a new Checkpointer on the folder) still keeps the best of the earlier run."""
  iterator = iter(grain.MapDataset.range(8).to_iter_dataset())
  for steps_and_values in ([(9, 0.2), (18, 0.5)], [(27, 0.6), (36, 0.4)]):
    ckpt = Checkpointer(str(tmp_path / "checkpoints"), best_metric="loss")
    for step, value in steps_and_values:
      ckpt.save(step, {"w": np.full(3, step, np.float32)}, iterator, {"step": step}, metrics={"loss": value})
    ckpt.wait()
    ckpt.close()
  ckpt = Checkpointer(str(tmp_path / "checkpoints"), best_metric="loss")
  assert set(ckpt.manager.all_steps()) == {9, 36} and ckpt.best_step() == 9
  ckpt.close()


def test_the_host_side_guard_names_the_step_and_never_lets_a_non_finite_state_be_saved(tmp_path):
  """The train step applies every update; the loop's host checks stop the run before any save."""
  from leukojax.training import loop
  ckpt = Checkpointer(str(tmp_path / "checkpoints"), best_metric="loss")
  ok, bad = {"finite": True, "loss": 0.5, "grad_norm": 1.0}, {"finite": False, "loss": float("nan"),
                                                               "grad_norm": float("inf")}
  loop._raise_if_non_finite([(3, ok), (4, ok)], 4, str(tmp_path), ckpt)  # all finite: no error
  with pytest.raises(loop.NonFiniteLossError, match=r"at step 6.*last good checkpoint \(step 4\)"):
    loop._raise_if_non_finite([(4, ok), (5, bad), (6, bad)], 4, str(tmp_path), ckpt)
  with pytest.raises(loop.NonFiniteLossError, match="No checkpoint was saved before it"):
    loop._raise_if_non_finite([(0, bad)], None, str(tmp_path), ckpt)

  state = {"params": {"w": jnp.ones(3)}, "opt_state": {"nu": jnp.zeros(3)}, "step": jnp.int32(7)}
  loop._check_state_before_save(state, 7, 4, str(tmp_path), ckpt)
  state["opt_state"]["nu"] = jnp.array([0.0, jnp.inf, 0.0])  # one Adam moment overflowed
  with pytest.raises(loop.NonFiniteLossError, match="after step 7 holds non-finite values"):
    loop._check_state_before_save(state, 7, 4, str(tmp_path), ckpt)
