"""Sharding declared once: a ('data', 'fsdp') mesh over every device of every process.

The global batch is split over both axes; parameters are replicated, or with `mesh.fsdp > 1` their
largest divisible dimension is split over 'fsdp' (ZeRO-3 style; XLA inserts the gathers). BatchNorm
statistics are computed on the global batch because the batch is one sharded array.
"""

from __future__ import annotations

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

BATCH_AXES = ("data", "fsdp")
# Parameters smaller than this stay replicated under FSDP: splitting them saves nothing.
FSDP_MIN_SIZE = 2**16


def create_mesh(fsdp: int = 1, devices: list | None = None) -> Mesh:
  """A 2-D mesh over all global devices (or `devices`); `fsdp` devices per parameter shard group."""
  devices = jax.devices() if devices is None else list(devices)
  if len(devices) % fsdp:
    raise ValueError(f"mesh.fsdp={fsdp} does not divide the {len(devices)} devices.")
  grid = np.asarray(devices).reshape(len(devices) // fsdp, fsdp)
  return Mesh(grid, BATCH_AXES)


def check_batch_size(global_batch_size: int, mesh: Mesh) -> None:
  """Fails fast with the fix when the global batch cannot be split evenly."""
  if global_batch_size % mesh.size:
    raise ValueError(
        f"The global batch size {global_batch_size} is not divisible by the {mesh.size} devices of "
        f"the mesh ({jax.process_count()} processes). Choose a multiple of {mesh.size}, e.g. "
        f"--config.train.global_batch_size={max(mesh.size, global_batch_size // mesh.size * mesh.size)}.")
  if global_batch_size % jax.process_count():
    raise ValueError(f"The global batch size {global_batch_size} is not divisible by the "
                     f"{jax.process_count()} processes.")


def batch_sharding(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P(BATCH_AXES))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def param_sharding(shape: tuple[int, ...], mesh: Mesh) -> NamedSharding:
  """Replicated, or the largest dimension divisible by the fsdp axis split over it."""
  fsdp = mesh.shape["fsdp"]
  if fsdp == 1 or int(np.prod(shape)) < FSDP_MIN_SIZE:
    return replicated(mesh)
  for axis in sorted(range(len(shape)), key=lambda a: -shape[a]):
    if shape[axis] % fsdp == 0:
      spec = [None] * len(shape)
      spec[axis] = "fsdp"
      return NamedSharding(mesh, P(*spec))
  return replicated(mesh)


def state_shardings(abstract_state, mesh: Mesh):
  """A sharding for every leaf of an (abstract) state pytree."""
  return jax.tree.map(lambda leaf: param_sharding(tuple(leaf.shape), mesh), abstract_state)


def compute_shardings(params, mesh: Mesh):
  """Where parameters live during the forward pass: replicated. None when they are stored so anyway."""
  if mesh.shape["fsdp"] == 1:
    return None
  return jax.tree.map(lambda _: replicated(mesh), params)


def global_batch(local_batch: dict[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
  """Assembles the per-process batches into one global array per key, sharded over the batch axes."""
  sharding = batch_sharding(mesh)
  return {key: jax.make_array_from_process_local_data(sharding, value)
          for key, value in local_batch.items()}
