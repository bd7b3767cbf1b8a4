"""One train step of a small BatchNorm model on a fixed global batch, on meshes of this run's
devices and processes; process 0 writes the loss and the updated parameters of each mesh to
--out/devices{D}_fsdp{F}.npz.

tests/test_sharding.py runs it once with 8 fake CPU devices (meshes of 1 device, of 8 and of 8
with fsdp=2: one process, one model build, three compiled steps) and compares the results: the
sharded step must equal the single-device one. It also runs as N processes (`LEUKOJAX_MODULE=
tests.one_step launch/local.sh N --out=...`) for debugging a multi-host difference.
"""

from __future__ import annotations

import functools

import numpy as np
from absl import app, flags

from leukojax.runtime import startup

_OUT = flags.DEFINE_string("out", None, "The folder process 0 writes each mesh's loss and parameters to.")
_MESHES = flags.DEFINE_list("meshes", ["all:1"], "DEVICES:FSDP per mesh: its first DEVICES global devices "
                            "('all' for every one), FSDP of them per parameter shard group.")
startup.define_distributed_flags()

GLOBAL_BATCH = 16  # at 8 the late 1x1 BatchNorm maps amplify float32 reduction noise past 1e-5
IMAGE_SIZE = 32


def main(argv):
  del argv
  from leukojax.runtime import distributed

  flag_values = flags.FLAGS
  distributed.initialize(flag_values.coordinator_address, flag_values.num_processes,
                         flag_values.process_id)
  import jax
  import jax.numpy as jnp
  from flax import nnx

  from leukojax.training import optimizer, sharding
  from leukojax.training import state as state_lib
  from leukojax.configs.base import base_config
  from leukojax.models import factory

  config = base_config()
  config.model.name = "mobilenet"
  config.model.head_widths = (16,)
  config.train.epochs = 1
  config.train.warmup_epochs = 0.0
  config.train.learning_rate = 0.01
  config.train.optimizer = "sgd"  # update proportional to the gradient: Adam's first step is
  # lr * sign(g), which turns float noise in near-zero gradients into differences of 2 * lr
  model = factory.create_model(config.model, image_size=IMAGE_SIZE, num_outputs=1, rngs=nnx.Rngs(0))
  graphs, params, model_state = state_lib.split_model(model)
  tx = optimizer.make_optimizer(config.train, optimizer.make_schedule(config.train, steps_per_epoch=10))
  state = state_lib.TrainState(params=params, model_state=model_state, opt_state=tx.init(params),
                               step=jnp.zeros((), jnp.int32))

  rng = np.random.default_rng(0)
  images = rng.uniform(-1, 1, (GLOBAL_BATCH, IMAGE_SIZE, IMAGE_SIZE, 3)).astype(np.float32)
  labels = rng.integers(0, 2, GLOBAL_BATCH).astype(np.int32)
  per_process = GLOBAL_BATCH // jax.process_count()
  local = slice(jax.process_index() * per_process, (jax.process_index() + 1) * per_process)
  host = jax.device_get(state)
  for spec in _MESHES.value:
    devices, fsdp = spec.split(":")
    mesh = sharding.create_mesh(int(fsdp), jax.devices()[:None if devices == "all" else int(devices)])
    outcome = _one_step(host, {"image": images[local], "label": labels[local]}, mesh, graphs, tx)
    if jax.process_index() == 0:
      np.savez(f"{_OUT.value}/devices{mesh.size}_fsdp{fsdp}.npz", devices=mesh.size,
               processes=jax.process_count(), **outcome)


def _one_step(host_state, local_batch, mesh, graphs, tx) -> dict[str, np.ndarray]:
  """The loss, the parameters and BatchNorm statistics after the step, and the parameters' updates."""
  import jax
  import jax.numpy as jnp
  from jax.experimental import multihost_utils

  from leukojax.training import sharding, steps

  sharding.check_batch_size(GLOBAL_BATCH, mesh)
  state_shardings = sharding.state_shardings(host_state, mesh)
  state = jax.device_put(host_state, state_shardings)
  batch = sharding.global_batch(local_batch, mesh)
  step = jax.jit(functools.partial(steps.train_step, graphdef=graphs.train, tx=tx,
                                   class_weights=jnp.ones(2), frozen=False,
                                   compute_shardings=sharding.compute_shardings(state.params, mesh)),
                 in_shardings=(state_shardings, sharding.batch_sharding(mesh)),
                 out_shardings=(state_shardings, sharding.replicated(mesh)))
  new_state, metrics = step(state, batch)

  def gathered(tree) -> dict[str, np.ndarray]:
    return {jax.tree_util.keystr(path): np.asarray(multihost_utils.process_allgather(leaf, tiled=True))
            for path, leaf in jax.tree_util.tree_leaves_with_path(tree)}

  after = gathered({"params": new_state.params, "model_state": new_state.model_state})
  before = gathered({"params": state.params})
  updates = {f"update{name}": after[name] - value for name, value in before.items()}
  return {"loss": np.asarray(metrics["loss"]), **after, **updates}

if __name__ == "__main__":
  app.run(main)
