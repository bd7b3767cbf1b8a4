r"""Results on the real Taleqani ALL dataset (docs/results.md): one config per model and task.

`--config configs/taleqani.py:MODEL[,four_class][,pretrained|imagenet][,full][,res=N][,epochs=N]`
MODEL: mobilenet, vgg16, vgg19, xception, resnet50, inception_v3 (single-backbone baselines with
the papers' heads), hybrid (VGG16 + InceptionV3 + Xception) or allnet (ResNet50 for Xception).

Protocol (every row of docs/results.md): the `original` images through the project's TFDS builder,
byte-identical duplicates removed BEFORE splitting, then a stratified image-level 70/15/15 split with
split seed 0. The dataset has no patient ids, so patient-disjoint evaluation is impossible: tests
on this data measure image-level generalisation only. The best validation-accuracy epoch is
evaluated on the test split (95% bootstrap intervals over images: `python -m leukojax.evaluate`).

* Default (CPU-sized, from scratch: no ImageNet weights can be had on the machine that produced
  docs/results.md): 96 px (Xception, hybrid: 80 px), Adam with warmup + cosine, class-weighted loss,
  random 90-degree rotations and flips plus Kim et al.'s augmentation (rotation up to 20 degrees,
  brightness +-20%), BatchNorm momentum 0.9 (Keras's 0.99 keeps the initial statistics in the
  moving averages for hundreds of steps, and evaluation then outputs a constant: plausibly the
  cause of Kim et al.'s 38.2% MobileNet). Hardware: 2 CPU cores; wall times in docs/results.md.
    python -m leukojax.main --config configs/taleqani.py:mobilenet \
        --config.data.manual_dir=../shared/data/taleqani_all --workdir workdirs/taleqani/mobilenet_binary
  Expected: far above the majority rate from scratch; below the papers' ImageNet-pretrained figures.
* `four_class`: benign / Early Pre-B / Pre-B / Pro-B (Kim et al.: ~83%); default task: benign vs
  Pro-B, Pro-B positive (Kim et al.: VGG16 98.5%, VGG19 97.1%, Xception 93.8%, MobileNet 38.2%).
* `pretrained`: ImageNet weights from the official Keras files (docs/pretrained.md), the backbones'
  native sizes (`full`) and a 10x lower learning rate, as a fine-tuning run should use.
* `imagenet`: the scratch config (same resolution, epochs, optimiser, learning-rate schedule,
  augmentation and BatchNorm momentum) with ImageNet weights, the backbone frozen for the first
  epoch (BatchNorm on its ImageNet statistics) while the head learns, then fine-tuned: the A/B of
  docs/results.md "Does ImageNet pretraining help?". Real weights exist here for
  `efficientnet_lite0`, `_lite1` and `_lite2` only (docs/pretrained.md).
* `full`: the papers' sizes and schedule (224 px, hybrid/Xception/InceptionV3 299 px; 25 epochs as
  Kim et al.). Hardware: a GPU.
"""

from __future__ import annotations

from leukojax.configs import baselines, hybrid
from leukojax.configs.base import BACKBONE_NAMES, parse_variant

MODELS = (*BACKBONE_NAMES, "hybrid", "allnet")
# CPU-sized input per model: InceptionV3 needs >= 75 px and Xception >= 71; the depthwise-heavy and
# fused models are also the slowest per pixel on a CPU.
CPU_SIZE = {"xception": 80, "inception_v3": 80, "hybrid": 80, "allnet": 80}
# Epochs sized so each run takes well under two hours on 2 CPU cores (docs/results.md has the wall
# times); four classes have 2.6x the training images per epoch, so they get about half the epochs.
LITE = ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2")
CPU_EPOCHS = {"mobilenet": 30, **dict.fromkeys(LITE, 30), "vgg16": 12, "vgg19": 12, "resnet50": 12,
              "inception_v3": 10, "xception": 10, "hybrid": 8, "allnet": 8}
CPU_EPOCHS_FOUR_CLASS = {"mobilenet": 12, **dict.fromkeys(LITE, 12), "vgg16": 6, "vgg19": 6, "resnet50": 6,
                         "inception_v3": 5, "xception": 5, "hybrid": 4, "allnet": 4}
# From scratch: BatchNorm networks train well at 1e-3; VGG (no BatchNorm) and the hybrid (whose
# VGG16 branch has none) need a lower rate to stay stable.
SCRATCH_LR = {"vgg16": 1e-4, "vgg19": 1e-4, "hybrid": 3e-4, "allnet": 3e-4}
FULL_SIZE = {"xception": 299, "inception_v3": 299, "hybrid": 299, "allnet": 299}


def get_config(arg: str | None = None):
  model, options = parse_variant(arg or "mobilenet")
  if model not in MODELS:
    raise ValueError(f"Unknown model {model!r}; use one of {MODELS}.")
  four_class = options.get("four_class") == "True"
  pretrained = options.get("pretrained") == "True"
  imagenet = options.get("imagenet") == "True"
  if pretrained and imagenet:
    raise ValueError("Use `pretrained` (the fine-tuning recipe) or `imagenet` (the scratch recipe with "
                     "ImageNet weights), not both.")
  full = options.get("full") == "True" or pretrained
  task = "four_class" if four_class else "benign_vs_pro_b"

  if model in ("hybrid", "allnet"):
    c = hybrid.get_config("allnet" if model == "allnet" else None)
    c.model.tap_width, c.model.fuse_widths = 64, (128, 128)
    c.model.post_pool_width, c.model.dense_widths = 256, (256, 128)
  else:
    c = baselines.get_config(f"{model},four_class" if four_class else model)
  c.name = f"taleqani_{model}_{task}"
  c.data.dataset = "taleqani_all"
  c.data.builder_config = "original"
  c.data.task = task
  c.data.split.protocol = "paper_random"  # stratified, image-level: no patient ids exist
  c.data.split.fractions = (0.7, 0.15, 0.15)
  c.data.dedup = True
  c.data.balance = "class_weights"
  c.train.class_weighted_loss = True
  c.data.augment.rot90 = True  # a cell has no preferred orientation
  c.data.augment.flip = True
  c.data.augment.small_angle_deg = 20.0  # Kim et al.'s ImageDataGenerator settings
  c.data.augment.brightness = 0.2
  c.model.pretrained.enabled = pretrained or imagenet
  c.model.bn_momentum = None if pretrained else 0.9  # Keras's 0.99 for ImageNet weights

  c.train.global_batch_size = 32
  c.train.optimizer = "adam"
  c.train.warmup_epochs = 1.0
  c.train.schedule = "cosine"
  c.train.best_metric = "accuracy"
  c.train.log_every_steps = 10
  c.train.checkpoint_every_steps = 100
  c.eval.batch_size = 64
  if full:
    c.data.image_size = FULL_SIZE.get(model, 224)
    c.train.epochs = 25
    c.train.learning_rate = 1e-4
  else:
    c.data.image_size = CPU_SIZE.get(model, 96)
    c.train.epochs = (CPU_EPOCHS_FOUR_CLASS if four_class else CPU_EPOCHS)[model]
    c.train.learning_rate = SCRATCH_LR.get(model, 1e-3)
  if pretrained:
    c.train.learning_rate /= 10
  if imagenet:
    c.name += "_imagenet"
    c.train.freeze_backbone_epochs = 1.0
  if "res" in options:
    c.data.image_size = int(options["res"])
  if "epochs" in options:
    c.train.epochs = int(options["epochs"])
  return c
