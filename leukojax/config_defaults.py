"""Defaults every experiment config starts from; a config file states only what differs.

Configs live in `configs/` (loaded by path through `ml_collections.config_flags`), so the shared part
lives here, inside the installed package, where they can import it.
"""

from __future__ import annotations

import importlib.util
import os
from types import ModuleType

import ml_collections
from ml_collections import config_dict

from leukojax.data.config import default_data_config

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUNDLED_TALEQANI_SAMPLE = os.path.join(REPO_ROOT, "tfds_builders", "taleqani_all", "sample")
BUNDLED_CNMC_SAMPLE = os.path.join(REPO_ROOT, "tfds_builders", "cnmc2019", "sample")  # 88 real cells
BACKBONE_NAMES = ("vgg16", "vgg19", "inception_v3", "xception", "resnet50", "mobilenet")


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
  c.model.dtype = "float32"  # compute dtype: 'float32' | 'bfloat16' (parameters stay float32)
  # BatchNorm moving-average momentum; None keeps Keras's 0.99 (right for ImageNet fine-tuning).
  # From scratch on short schedules use 0.9 (leukojax/models/factory.py says why).
  c.model.bn_momentum = config_dict.placeholder(float)
  c.model.pretrained = ml_collections.ConfigDict()
  c.model.pretrained.enabled = False  # ImageNet weights from the official Keras files
  c.model.pretrained.download = False  # fetch missing files (checksummed); never implicit
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
  c.eval.threshold = 0.5

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


def config_module(name: str) -> ModuleType:
  """Imports `configs/<name>.py` by path, so one config file can extend another from any cwd."""
  path = os.path.join(REPO_ROOT, "configs", f"{name}.py")
  spec = importlib.util.spec_from_file_location(f"leukojax_configs.{name}", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module
