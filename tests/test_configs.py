"""Every config variant named in the docs builds, and keeps the protocol docs/results.md states."""

import pytest

from leukojax.configs import baselines, cnmc, hybrid, taleqani
from leukojax.configs.base import BACKBONE_NAMES


@pytest.mark.parametrize("variant", [None, "paper", "official", "allnet", "sample", "smoke"])
def test_hybrid_variants_build(variant):
  c = hybrid.get_config(variant)
  assert c.model.name == "hybrid" and c.train.epochs > 0 and c.data.image_size >= 75


@pytest.mark.parametrize("backbone", BACKBONE_NAMES)
def test_baseline_variants_build(backbone):
  for variant in (backbone, f"{backbone},four_class", f"{backbone},pretrained"):
    c = baselines.get_config(variant)
    assert c.model.name == backbone


@pytest.mark.parametrize("model", taleqani.MODELS)
@pytest.mark.parametrize("four_class", [False, True])
def test_taleqani_protocol(model, four_class):
  spec = model + (",four_class" if four_class else "")
  scratch = taleqani.get_config(spec)
  assert scratch.data.dataset == "taleqani_all" and scratch.data.builder_config == "original"
  assert scratch.data.task == ("four_class" if four_class else "benign_vs_pro_b")
  assert scratch.data.dedup and scratch.data.split.protocol == "paper_random"  # no patient ids exist
  assert tuple(scratch.data.split.fractions) == (0.7, 0.15, 0.15)
  assert not scratch.model.pretrained.enabled and scratch.model.bn_momentum == 0.9
  assert scratch.data.image_size <= 96
  # ImageNet weights, as a user with the official files runs it: the papers' sizes, Keras's
  # BatchNorm momentum (the files carry real statistics) and a 10x lower learning rate.
  pretrained = taleqani.get_config(spec + ",pretrained")
  assert pretrained.model.pretrained.enabled and pretrained.model.bn_momentum is None
  assert pretrained.data.image_size in (224, 299) and pretrained.train.epochs == 25
  assert pretrained.train.learning_rate == pytest.approx(1e-5)
  assert taleqani.get_config(spec + ",res=64,epochs=2").data.image_size == 64


def test_unknown_names_are_errors():
  with pytest.raises(ValueError, match="Unknown model"):
    taleqani.get_config("alexnet")
  with pytest.raises(ValueError, match="Unknown hybrid variant"):
    hybrid.get_config("tiny")


cnmc = cnmc


@pytest.mark.parametrize("model", cnmc.MODELS)
def test_cnmc_protocol(model):
  """The real C-NMC experiments: subject cross-validation, cell crop, stain jitter, from scratch."""
  folds = [cnmc.get_config(f"{model},fold={k}") for k in (0, 1)]
  for k, c in enumerate(folds):
    assert c.data.dataset == "cnmc2019" and c.data.builder_config == "verified" and c.data.dedup
    assert c.data.split.protocol == "subject_cv" and c.data.split.fold == k and c.data.split.num_folds == 0
    assert c.data.resize == "cell_crop" and c.data.image_size == 75 and c.data.augment.hed_sigma == 0.05
    assert c.data.max_cells_per_subject == 100 and not c.model.pretrained.enabled
  assert folds[0].name != folds[1].name
  # Only the fold differs between the folds of one experiment (leukojax.cv checks the same).
  a, b = folds[0].to_dict(), folds[1].to_dict()
  a["data"]["split"].pop("fold"), b["data"]["split"].pop("fold"), a.pop("name"), b.pop("name")
  assert a == b
  assert cnmc.get_config(f"{model},hed=0").data.augment.hed_sigma == 0.0
  full = cnmc.get_config(f"{model},all_subjects")
  assert full.data.split.protocol == "paper_random" and tuple(full.data.split.fractions) == (0.85, 0.15, 0.0)
  expected = {"hybrid": ("vgg16", "inception_v3", "xception"), "allnet": ("vgg16", "inception_v3", "resnet50")}
  if model in expected:
    assert tuple(folds[0].model.backbones) == expected[model]
  else:
    assert folds[0].model.name == model


def _config_differences(a: dict, b: dict, prefix: str = "") -> set[str]:
  keys = set(a) | set(b)
  out = set()
  for k in keys:
    if isinstance(a.get(k), dict) and isinstance(b.get(k), dict):
      out |= _config_differences(a[k], b[k], f"{prefix}{k}.")
    elif a.get(k) != b.get(k):
      out.add(prefix + k)
  return out


@pytest.mark.parametrize("spec", ["taleqani.py:efficientnet_lite0", "taleqani.py:efficientnet_lite0,four_class",
                                  "cnmc.py:efficientnet_lite0,fold=0", "cnmc.py:efficientnet_lite0,fold=1"])
def test_imagenet_arm_differs_from_scratch_only_by_the_weights(spec):
  """The pretraining A/B of docs/results.md: ImageNet weights plus one frozen epoch, nothing else."""
  module = {"taleqani.py": taleqani, "cnmc.py": cnmc}[spec.split(":")[0]]
  arg = spec.split(":")[1]
  scratch, imagenet = module.get_config(arg), module.get_config(arg + ",imagenet")
  assert _config_differences(scratch.to_dict(), imagenet.to_dict()) == {
      "name", "model.pretrained.enabled", "train.freeze_backbone_epochs"}
  assert imagenet.model.pretrained.enabled and imagenet.train.freeze_backbone_epochs == 1.0
  assert imagenet.name == scratch.name + "_imagenet"
  with pytest.raises(ValueError, match="not both"):
    taleqani.get_config("efficientnet_lite0,pretrained,imagenet")
