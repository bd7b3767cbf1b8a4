"""Reads the tensors of a PyTorch checkpoint (`torch.save` of a state dict) without PyTorch, and
without running any code from the file.

A `.pth` file is a pickle, and unpickling an untrusted pickle can run arbitrary code. This reader
unpickles with an allow-list of three kinds of object: ordered dicts, tensors
(`torch._utils._rebuild_tensor_v2`) and typed storages. Anything else is refused, naming the file
and what it asked for. That is what `torch.load(weights_only=True)` allows for a state dict. It reads
torch's legacy stream format, which older files such as the EfficientNet-Lite checkpoints use; a
zip-format file (torch >= 1.6) is refused with the conversion to use.
"""

from __future__ import annotations

import collections
import dataclasses
import os
import pickle
import struct
import zipfile
from typing import Any, BinaryIO

import numpy as np

from leukojax.errors import LeukojaxError

_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_STORAGE_DTYPES = {
    "FloatStorage": np.float32, "DoubleStorage": np.float64, "HalfStorage": np.float16,
    "LongStorage": np.int64, "IntStorage": np.int32, "ShortStorage": np.int16,
    "CharStorage": np.int8, "ByteStorage": np.uint8, "BoolStorage": np.bool_,
}


class TorchCheckpointError(LeukojaxError):
  """A checkpoint that is not a plain state dict of tensors, or is damaged."""


@dataclasses.dataclass(frozen=True)
class _StorageType:
  dtype: Any


@dataclasses.dataclass(frozen=True)
class _StorageRef:
  key: str
  dtype: Any


@dataclasses.dataclass(frozen=True)
class _TensorRef:
  storage: _StorageRef
  offset: int
  shape: tuple[int, ...]
  stride: tuple[int, ...]


def _rebuild_tensor_v2(storage, storage_offset, size, stride, *unused) -> _TensorRef:
  return _TensorRef(storage, int(storage_offset), tuple(size), tuple(stride))


class _RestrictedUnpickler(pickle.Unpickler):
  """Builds only dicts, tensor references and storage references; refuses every other global."""

  def __init__(self, file, path: str, storage_dtypes: dict[str, Any]):
    super().__init__(file)
    self._path, self._dtypes = path, storage_dtypes

  def find_class(self, module: str, name: str):
    if (module, name) == ("collections", "OrderedDict"):
      return collections.OrderedDict
    if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
      return _rebuild_tensor_v2
    if module == "torch" and name in _STORAGE_DTYPES:
      return _StorageType(_STORAGE_DTYPES[name])
    raise TorchCheckpointError(
        f"{self._path} asks to build {module}.{name}: only a state dict of tensors is read (no code from "
        "the file is run). Save the model's state_dict() alone, or convert it with PyTorch.")

  def persistent_load(self, pid):
    kind, storage_type, key, *_ = pid
    if kind != "storage" or not isinstance(storage_type, _StorageType):
      raise TorchCheckpointError(f"{self._path}: unexpected persistent object {kind!r}.")
    self._dtypes[str(key)] = storage_type.dtype
    return _StorageRef(str(key), storage_type.dtype)


def _materialise(tree: Any, storages: dict[str, np.ndarray], path: str) -> dict[str, np.ndarray]:
  if not isinstance(tree, dict):
    raise TorchCheckpointError(f"{path} holds a {type(tree).__name__}, not a state dict of tensors.")
  out = {}
  for name, ref in tree.items():
    if not isinstance(ref, _TensorRef):
      raise TorchCheckpointError(f"{path}: entry {name!r} is not a tensor.")
    flat = storages[ref.storage.key]
    itemsize = flat.dtype.itemsize
    view = np.lib.stride_tricks.as_strided(flat[ref.offset:], shape=ref.shape,
                                           strides=tuple(s * itemsize for s in ref.stride))
    out[str(name)] = np.array(view)  # a copy: contiguous, independent of the file's buffer
  return out


def _read_legacy(f: BinaryIO, path: str) -> dict[str, np.ndarray]:
  dtypes: dict[str, Any] = {}

  def load():
    return _RestrictedUnpickler(f, path, dtypes).load()

  if load() != _LEGACY_MAGIC:
    raise TorchCheckpointError(f"{path} is not a PyTorch checkpoint (wrong magic number).")
  load()  # protocol version
  load()  # system info: endianness and type sizes, the same on every platform torch supports
  tree = load()
  keys = load()
  storages = {}
  for key in keys:
    (numel,) = struct.unpack("<q", f.read(8))
    dtype = np.dtype(dtypes[str(key)])
    data = f.read(numel * dtype.itemsize)
    if len(data) != numel * dtype.itemsize:
      raise TorchCheckpointError(f"{path} is truncated (storage {key}): download it again.")
    storages[str(key)] = np.frombuffer(data, dtype=dtype)
  return _materialise(tree, storages, path)


def read_state_dict(path: str | os.PathLike) -> dict[str, np.ndarray]:
  """{name: array} of a PyTorch state-dict checkpoint, read as data only."""
  path = os.fspath(path)
  if not os.path.exists(path):
    raise TorchCheckpointError(f"{path} does not exist.")
  if zipfile.is_zipfile(path):
    raise TorchCheckpointError(
        f"{path} is a zip-format checkpoint (torch >= 1.6), which this reader does not read yet: load it "
        "with torch.load(path, weights_only=True) and save the state dict with "
        "torch.save(sd, path, _use_new_zipfile_serialization=False).")
  with open(path, "rb") as f:
    try:
      return _read_legacy(f, path)
    except (pickle.UnpicklingError, EOFError, struct.error, KeyError) as error:
      raise TorchCheckpointError(f"{path} is not a readable PyTorch checkpoint ({error}).") from error
