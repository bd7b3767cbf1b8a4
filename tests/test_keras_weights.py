"""Keras weight import: the documented errors, top handling, `dont_load`, file lookup, download
hash check and the Orbax conversion. Uses a small random Keras MobileNet (32x32).

  .venv/bin/python -m pytest tests/test_keras_weights.py -q
"""

from __future__ import annotations

import inspect
import pathlib
import shutil

import h5py
import jax
import keras
import numpy as np
import pytest
from flax import nnx

from leukojax.models import convert, keras_weights, pretrained
from leukojax.models.keras_weights import KerasWeightsError, load_keras_weights
from tests.test_backbones import build_keras, save_legacy_h5, zeros_backbone


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, pathlib.Path]:
  model = build_keras("mobilenet", 32, seed=3)
  folder = tmp_path_factory.mktemp("mobilenet")
  notop = keras.Model(model.inputs, model.get_layer("conv_pw_13_relu").output)
  return {
    "top": save_legacy_h5(model, folder / "top.h5"),
    "notop": save_legacy_h5(notop, folder / "notop.h5"),
  }


def values(model: nnx.Module) -> dict[str, np.ndarray]:
  return {
    keras_weights.path_str(p): np.asarray(v.get_value())
    for p, v in keras_weights.weight_variables(model).items()
  }


def assert_same(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> None:
  assert a.keys() == b.keys()
  for key in a:
    np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def copy_with(src: pathlib.Path, dst: pathlib.Path, edit) -> pathlib.Path:
  shutil.copy(src, dst)
  with h5py.File(dst, "r+") as f:
    edit(f)
  return dst


def test_no_top_model_ignores_the_files_top(files):
  from_top, from_notop = zeros_backbone("mobilenet"), zeros_backbone("mobilenet")
  load_keras_weights(from_top, files["top"])
  load_keras_weights(from_notop, files["notop"])
  assert_same(values(from_top), values(from_notop))
  assert not np.all(values(from_top)["conv1/kernel"] == 0)


def test_top_model_needs_a_top_or_dont_load(files):
  model = zeros_backbone("mobilenet", include_top=True)
  message = r"no classification top.*dont_load=\('conv_preds/\.\*'\)"
  with pytest.raises(KerasWeightsError, match=message):
    load_keras_weights(model, files["notop"])
  load_keras_weights(model, files["notop"], dont_load=("conv_preds/.*",))
  got = values(model)
  assert np.all(got["conv_preds/kernel"] == 0)  # the head stays as initialised
  assert not np.all(got["block13/conv_pw/kernel"] == 0)


def test_new_head_with_dont_load(files):
  model = zeros_backbone("mobilenet", include_top=True, num_classes=3)
  message = r"'conv_preds'.*\(1, 1, 1024, 1000\).*\(1, 1, 1024, 3\)"
  with pytest.raises(KerasWeightsError, match=message):
    load_keras_weights(model, files["top"])
  load_keras_weights(model, files["top"], dont_load=("conv_preds/.*",))
  reference = zeros_backbone("mobilenet")
  load_keras_weights(reference, files["notop"])
  got = values(model)
  assert np.all(got.pop("conv_preds/kernel") == 0) and np.all(got.pop("conv_preds/bias") == 0)
  assert_same(got, values(reference))


def test_truncated_file_raises_and_loads_nothing(files, tmp_path):
  data = files["top"].read_bytes()
  broken = tmp_path / "truncated.h5"
  broken.write_bytes(data[: len(data) // 2])
  model = zeros_backbone("mobilenet", include_top=True)
  before = values(model)
  with pytest.raises(KerasWeightsError, match="truncated"):
    load_keras_weights(model, broken)
  assert_same(values(model), before)


def test_missing_layers_raise(files, tmp_path):
  def drop_last_layers(f):
    names = list(f.attrs["layer_names"])
    f.attrs["layer_names"] = names[:-10]

  short = copy_with(files["notop"], tmp_path / "short.h5", drop_last_layers)
  message = r"holds 48 weighted layers but mobilenet expects 54 \(no top\) or 55"
  with pytest.raises(KerasWeightsError, match=message):
    load_keras_weights(zeros_backbone("mobilenet"), short)

  def delete_group(f):
    del f["conv_pw_3"]

  holed = copy_with(files["notop"], tmp_path / "holed.h5", delete_group)
  with pytest.raises(KerasWeightsError, match=r"'conv_pw_3' is listed but has no group"):
    load_keras_weights(zeros_backbone("mobilenet"), holed)


def test_wrong_architecture_raises(files):
  with pytest.raises(KerasWeightsError, match=r"holds 55 weighted layers but vgg16 expects 13"):
    load_keras_weights(zeros_backbone("vgg16"), files["top"])


def test_shape_mismatch_names_layer_and_shapes_and_loads_nothing(files, tmp_path):
  def shrink(f):
    group = f["conv_pw_7"]
    name = [n for n in group.attrs["weight_names"]][0]
    name = name.decode() if isinstance(name, bytes) else name
    del group[name]
    group.create_dataset(name, data=np.zeros((1, 1, 512, 500), np.float32))

  bad = copy_with(files["notop"], tmp_path / "bad.h5", shrink)
  model = zeros_backbone("mobilenet")
  before = values(model)
  with pytest.raises(
    KerasWeightsError,
    match=r"layer #\d+ 'conv_pw_7' has shape \(1, 1, 512, 500\) but mobilenet variable "
    r"'block7/conv_pw/kernel' needs \(1, 1, 512, 512\)",
  ):
    load_keras_weights(model, bad)
  assert_same(values(model), before)  # earlier layers were not written either


def test_full_model_file_with_str_and_chunked_attributes(files, tmp_path):
  """`model_weights` of a full-model save; attributes as str, `layer_names` split in chunks."""
  path = tmp_path / "full_model.h5"
  with h5py.File(files["notop"], "r") as src, h5py.File(path, "w") as dst:
    group = dst.create_group("model_weights")
    names = keras_weights._attr_list(src, "layer_names")
    for name in names:
      src.copy(src[name], group, name)
      weight_names = keras_weights._attr_list(src[name], "weight_names")
      group[name].attrs["weight_names"] = np.array(weight_names, dtype=h5py.string_dtype())
    half = len(names) // 2  # one chunk of fixed-length bytes, one of variable-length str
    group.attrs["layer_names0"] = np.array([n.encode() for n in names[:half]])
    group.attrs["layer_names1"] = np.array(names[half:], dtype=h5py.string_dtype())
  a, b = zeros_backbone("mobilenet"), zeros_backbone("mobilenet")
  load_keras_weights(a, path)
  load_keras_weights(b, files["notop"])
  assert_same(values(a), values(b))


def test_find_weights_file(tmp_path, monkeypatch):
  monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
  spec = pretrained.WEIGHTS_FILES[("xception", False)]
  with pytest.raises(pretrained.WeightsNotFoundError) as error:
    pretrained.find_weights_file("xception", include_top=False)
  message = str(error.value)
  assert spec.file_name in message and spec.url in message
  assert str(tmp_path / "keras" / "models") in message
  cached = tmp_path / "keras" / "models" / spec.file_name
  cached.parent.mkdir(parents=True)
  cached.write_bytes(b"x")
  assert pretrained.find_weights_file("xception", include_top=False) == cached
  assert pretrained.find_weights_file("xception", include_top=False, path=cached.parent) == cached
  assert pretrained.find_weights_file("xception", include_top=False, path=cached) == cached
  message = "nowhere.h5 does not exist.*" + spec.file_name
  with pytest.raises(pretrained.WeightsNotFoundError, match=message):
    pretrained.find_weights_file("xception", include_top=False, path=tmp_path / "nowhere.h5")


def test_download_checks_the_published_hash(tmp_path, monkeypatch):
  source = tmp_path / "served.h5"
  source.write_bytes(b"weights" * 1000)
  good = pretrained.WeightsFile("w.h5", source.as_uri(), pretrained.file_md5(source))
  assert pretrained.download_weights(good, tmp_path / "cache").read_bytes() == source.read_bytes()
  bad = pretrained.WeightsFile("v.h5", source.as_uri(), "0" * 32)
  with pytest.raises(KerasWeightsError, match="expected the published 0000"):
    pretrained.download_weights(bad, tmp_path / "cache")
  assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == ["w.h5"]  # nothing half-written
  # find_weights_file downloads only when asked, into the Keras cache, checking the official md5.
  monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
  fetched = []
  fake_fetch = lambda url, dest: (fetched.append(url), shutil.copy(source, dest))  # noqa: E731
  with pytest.raises(pretrained.WeightsNotFoundError):
    pretrained.find_weights_file("resnet50", include_top=False, fetch=fake_fetch)
  assert not fetched
  with pytest.raises(KerasWeightsError, match="4d473c1dd8becc155b73f8504c6f6626"):
    pretrained.find_weights_file("resnet50", include_top=False, download=True, fetch=fake_fetch)
  assert fetched == [pretrained.WEIGHTS_FILES[("resnet50", False)].url]
  assert not list((tmp_path / "keras" / "models").iterdir())


def test_weights_table_matches_installed_keras():
  from keras.src.applications import inception_v3, mobilenet, resnet, vgg16, vgg19, xception

  modules = {"vgg16": vgg16, "vgg19": vgg19, "inception_v3": inception_v3, "xception": xception}
  for name, module in modules.items():
    assert pretrained.WEIGHTS_FILES[(name, True)].url == module.WEIGHTS_PATH
    assert pretrained.WEIGHTS_FILES[(name, False)].url == module.WEIGHTS_PATH_NO_TOP
    source = inspect.getsource(module)
    for top in (True, False):
      spec = pretrained.WEIGHTS_FILES[(name, top)]
      assert f'"{spec.file_name}"' in source and f'file_hash="{spec.md5}"' in source
  for top, md5 in zip((True, False), resnet.WEIGHTS_HASHES["resnet50"]):
    spec = pretrained.WEIGHTS_FILES[("resnet50", top)]
    assert spec.md5 == md5 and spec.url == resnet.BASE_WEIGHTS_PATH + spec.file_name
  for top, file_name in (
    (True, "mobilenet_1_0_224_tf.h5"),
    (False, "mobilenet_1_0_224_tf_no_top.h5"),
  ):
    spec = pretrained.WEIGHTS_FILES[("mobilenet", top)]
    assert spec.file_name == file_name and spec.url == mobilenet.BASE_WEIGHT_PATH + file_name


def test_convert_and_load_converted(files, tmp_path):
  out = tmp_path / "converted"
  convert.main([
    "--backbone", "mobilenet", "--weights", str(files["top"]), "--include_top", "--out", str(out)
  ])  # fmt: skip
  direct = zeros_backbone("mobilenet", include_top=True)
  load_keras_weights(direct, files["top"])
  restored = zeros_backbone("mobilenet", include_top=True)
  pretrained.load_converted(restored, out)
  assert_same(values(restored), values(direct))
  no_top = zeros_backbone("mobilenet")
  pretrained.load_pretrained(no_top, out)  # a converted folder; the stored top is ignored
  body = {k: v for k, v in values(direct).items() if not k.startswith("conv_preds")}
  assert_same(values(no_top), body)
  with pytest.raises(KerasWeightsError, match="holds mobilenet weights, not vgg16"):
    pretrained.load_converted(zeros_backbone("vgg16"), out)
  assert jax.tree.leaves(nnx.state(restored, nnx.Param))[0].dtype == np.float32


def test_local_files_are_checked_against_the_published_hash(files, tmp_path, monkeypatch, caplog):
  """Random weights in the official layout stand in for the real file; its 'published' md5 is patched in."""
  key = ("mobilenet", True)
  real = pretrained.WEIGHTS_FILES[key]
  loaded = pretrained.load_pretrained(zeros_backbone("mobilenet", include_top=True), files["top"])
  assert loaded["official"] is None and "publishes no hash" in caplog.text  # MobileNet: none published
  md5 = pretrained.file_md5(files["top"])
  monkeypatch.setitem(pretrained.WEIGHTS_FILES, key, pretrained.WeightsFile(real.file_name, real.url, md5))
  loaded = pretrained.load_pretrained(zeros_backbone("mobilenet", include_top=True), files["top"])
  assert loaded == {"source": str(files["top"]), "md5": md5, "official": True}
  monkeypatch.setitem(pretrained.WEIGHTS_FILES, key, pretrained.WeightsFile(real.file_name, real.url, "f" * 32))
  model = zeros_backbone("mobilenet", include_top=True)
  before = values(model)
  with pytest.raises(KerasWeightsError, match=rf"top\.h5 has md5 {md5}, not the published f{{32}}.*"
                                              r"model\.pretrained\.custom_weights=True"):
    pretrained.load_pretrained(model, files["top"])
  assert_same(values(model), before)  # refused before anything changed
  assert pretrained.load_pretrained(model, files["top"], custom=True)["official"] is False
  out = tmp_path / "custom"
  with pytest.raises(KerasWeightsError, match="--custom_weights"):
    convert.main(["--backbone", "mobilenet", "--weights", str(files["top"]), "--include_top", "--out", str(out)])
  convert.main(["--backbone", "mobilenet", "--weights", str(files["top"]), "--include_top", "--out", str(out),
                "--custom_weights"])
  with pytest.raises(KerasWeightsError, match="converted from a custom file.*custom_weights"):
    pretrained.load_pretrained(zeros_backbone("mobilenet", include_top=True), out)
  restored = zeros_backbone("mobilenet", include_top=True)
  assert pretrained.load_pretrained(restored, out, custom=True) == {"source": str(out), "md5": md5, "official": False}
  assert_same(values(restored), values(model))
