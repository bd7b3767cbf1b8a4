"""Defaults every experiment config starts from; a config file states only what differs.

The experiment configs are modules of this package (`leukojax/configs/<name>.py`, importing each
other like code), loaded by path through `ml_collections.config_flags` as
`--config configs/hybrid.py:VARIANT` (`configs/` in the checkout is a link to this folder) or, from
an installed package, `--config $(python -c 'import leukojax.configs as c; print(c.DIR)')/hybrid.py`.
Every key any code reads is declared here, so `--config.x.y=...` overrides are checked.
"""

from __future__ import annotations

import importlib.util
import os

import ml_collections
from ml_collections import config_dict

from leukojax.data.config import default_data_config

# The bundled samples are package data of `tfds_builders` (found without importing it).
_BUILDERS_DIR = os.path.dirname(importlib.util.find_spec("tfds_builders").origin)
BUNDLED_TALEQANI_SAMPLE = os.path.join(_BUILDERS_DIR, "taleqani_all", "sample")
BUNDLED_CNMC_SAMPLE = os.path.join(_BUILDERS_DIR, "cnmc2019", "sample")  # 88 real cells
BACKBONE_NAMES = ("vgg16", "vgg19", "inception_v3", "xception", "resnet50", "mobilenet",
                  "efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2")


def base_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.name = "run"  # the default workdir is workdirs/<name>
  c.seed = 0
  c.data = default_data_config()

  c.model = ml_collections.ConfigDict()
  c.model.name = "hybrid"  # 'hybrid' or a backbone name (a single-backbone baseline)
  c.model.backbones = ("vgg16", "inception_v3", "xception")  # hybrid only; ALLNet: resnet50 for xception
  c.model.tap_width = 128  # hybrid: 1x1 conv width of each tap branch
  c.model.fuse_widths = (256, 256)  # hybrid: the two 1x1 convs after concatenate1
  c.model.post_pool_width = 512  # hybrid: the 1x1 conv after the 3x3/2 max pool
  c.model.dense_widths = (512, 256)  # hybrid: the two fully connected layers
  c.model.head_widths = (512, 512)  # baselines: dense layers after global average pooling
  # hybrid: 2, 4 or 8 narrows its three backbones by that factor (small test models; from scratch only)
  c.model.backbone_width_divisor = 1
  c.model.dtype = "float32"  # compute dtype: 'float32' | 'bfloat16' (parameters stay float32)
  # BatchNorm moving-average momentum; None keeps Keras's 0.99 (right for ImageNet fine-tuning).
  # From scratch on short schedules use 0.9 (leukojax/models/factory.py says why).
  c.model.bn_momentum = config_dict.placeholder(float)
  c.model.pretrained = ml_collections.ConfigDict()
  c.model.pretrained.enabled = False  # ImageNet weights from the official Keras files
  c.model.pretrained.download = False  # fetch missing files (checksummed); never implicit
  c.model.pretrained.custom_weights = False  # accept weight files whose md5 is not the published one
  c.model.pretrained.paths = ml_collections.ConfigDict({name: "" for name in BACKBONE_NAMES})

  c.train = ml_collections.ConfigDict()
  c.train.epochs = 40
  c.train.global_batch_size = 32  # across all devices and processes
  c.train.optimizer = "adam"  # 'adam' | 'adamw' | 'sgd'
  c.train.learning_rate = 1e-4
  c.train.schedule = "cosine"  # 'cosine' (after warmup) | 'constant'
  c.train.warmup_epochs = 1.0
  c.train.weight_decay = 0.0  # adamw only
  c.train.grad_clip_norm = 1.0  # 0 = no clipping
  c.train.freeze_backbone_epochs = 0.0  # backbones frozen (BatchNorm on running stats) this long
  c.train.backbone_lr_ratio = 1.0  # backbone learning rate / head learning rate
  c.train.grad_accum_steps = 1
  c.train.class_weighted_loss = False  # weights from the training split (data.balance='class_weights')
  c.train.best_metric = "accuracy"  # validation metric that picks the reported checkpoint
  c.train.log_every_steps = 50
  c.train.checkpoint_every_steps = 500  # besides every epoch end

  c.eval = ml_collections.ConfigDict()
  c.eval.batch_size = 64
  c.eval.tta = False  # average the 8 dihedral views in the final report (leukojax.evaluate --tta)
  c.eval.bootstrap_resamples = 1000  # resamples behind every confidence interval
  c.eval.bootstrap_seed = 0
  c.eval.confidence = 0.95
  c.eval.threshold_criterion = "youden"  # how the tuned threshold is chosen on val: 'youden' | 'f1'
  # When training ends, evaluate the best checkpoint (report, plots, predictions). False: train only,
  # and write the same files later with `python -m leukojax.evaluate --workdir W` (on any machine).
  c.eval.final_report = True

  c.mesh = ml_collections.ConfigDict()
  c.mesh.fsdp = 1  # devices per parameter-shard group; 1 = parameters replicated
  return c


def parse_variant(arg: str | None) -> tuple[str, dict[str, str]]:
  """'sample,res=96' -> ('sample', {'res': '96'}): big_vision-style config arguments."""
  name, options = "", {}
  for part in filter(None, (arg or "").split(",")):
    if "=" in part:
      key, value = part.split("=", 1)
      options[key] = value
    elif not name:
      name = part
    else:
      options[part] = "True"
  return name, options
