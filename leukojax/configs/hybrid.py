r"""The hybrid CNN (VGG16 + InceptionV3 + Xception) of Helwan et al. on C-NMC 2019 (ALL vs HEM).

Variants (`--config configs/hybrid.py:VARIANT[,res=N]`):

* (default) C-NMC 2019, subject-disjoint 70/15/15 split of the training folds, 299 px, the paper's
  40 epochs with global batch 32, Adam, ImageNet weights from ~/.keras/models.
    python -m leukojax.main --config configs/hybrid.py --config.data.manual_dir=/data/C-NMC_Leukemia
  Hardware: one or more GPUs/TPUs (CPU works, at about a minute per image per step... do not).
  Expected: the challenge's subject-disjoint regime, weighted F1 about 0.85-0.91 (challenge entries).
* `paper`: the paper's protocol (stratified random 70/15/15 over cells, so subjects leak across
  splits) to compare with its table (accuracy 0.9687, F1 0.9695).
* `official`: train/val from the training folds by subject, test = the labelled preliminary test.
* `allnet`: ALLNet, ResNet50 in place of Xception (paper F1 0.9429).
* `sample`: what `make demo` runs: the bundled REAL C-NMC sample (88 cells of 8 subjects,
  tfds_builders/cnmc2019/sample), subject-disjoint (`subject_cv` fold 0: tests on one healthy and
  three ALL subjects that training never sees), cells cropped to a 340 px window and resized to 75
  px, HED stain jitter, from scratch, 8 epochs of batch 8 on 2 CPU cores in a few minutes.
  Expected: a working end-to-end run; ~37 training cells of 4 subjects give no meaningful accuracy
  (docs/results.md has the real experiment on 11 subjects: configs/cnmc.py).
    python -m leukojax.main --config configs/hybrid.py:sample --workdir workdirs/demo
* `smoke`: tiny, for tests: the same data as `sample`, narrow hybrid head and backbones at 1/8 of
  their widths (`model.backbone_width_divisor`), 2 epochs of batch 4.
"""

from __future__ import annotations

from leukojax.configs.base import BUNDLED_CNMC_SAMPLE, base_config, parse_variant


def get_config(arg: str | None = None):
  variant, options = parse_variant(arg)
  c = base_config()
  c.name = f"hybrid_{variant or 'cnmc'}"
  c.data.dataset = "cnmc2019"
  c.data.task = "binary"
  c.data.image_size = 299
  c.data.preprocessing = "none"  # each branch applies its own Keras ImageNet mode
  c.data.balance = "oversample_rot90"  # the paper: minority class + its 90-degree rotations
  c.model.name = "hybrid"
  c.model.pretrained.enabled = True
  c.train.epochs = 40
  c.train.global_batch_size = 32
  c.train.optimizer = "adam"
  c.train.learning_rate = 1e-4
  c.train.best_metric = "accuracy"

  if variant == "paper":
    c.data.split.protocol = "paper_random"
  elif variant == "official":
    c.data.split.protocol = "official"
  elif variant == "allnet":
    c.model.backbones = ("vgg16", "inception_v3", "resnet50")
  elif variant in ("sample", "smoke"):
    c.model.pretrained.enabled = False  # no ImageNet weights can be had on this machine
    c.model.bn_momentum = 0.9  # from scratch, few steps: forget the initial BatchNorm statistics
    c.data.image_size = 75  # InceptionV3's minimum
    c.model.tap_width = 16
    c.model.fuse_widths = (32, 32)
    c.model.post_pool_width = 64
    c.model.dense_widths = (64, 32)
    c.train.learning_rate = 3e-4
    c.train.warmup_epochs = 0.5
    c.train.log_every_steps = 5
    c.eval.batch_size = 16
    c.data.builder_config = "verified"
    c.data.manual_dir = BUNDLED_CNMC_SAMPLE
    c.data.data_dir = "workdirs/tfds_sample"  # beside the workdirs; never mixed with a full build
    c.data.split.protocol = "subject_cv"  # 2 healthy subjects: leave one out, fold 0
    c.data.resize = "cell_crop"
    c.data.balance = "class_weights"
    c.train.class_weighted_loss = True
    c.data.augment.rot90 = True
    c.data.augment.flip = True
    c.data.augment.hed_sigma = 0.05
    # ~7 validation cells of the training subjects: accuracy saturates at once and, ties going to
    # the earlier step, would report a half-trained checkpoint; the loss keeps ranking them.
    c.train.best_metric = "loss"
    if variant == "sample":
      c.train.epochs = 8
      c.train.global_batch_size = 8
      c.train.checkpoint_every_steps = 10
    else:
      c.train.epochs = 2
      c.train.global_batch_size = 4
      c.train.checkpoint_every_steps = 1000  # epoch ends only
      c.eval.batch_size = 8
      # The same three backbones and wiring at 1/8 of their widths (1.0 M parameters, not 57.6 M):
      # what costs a test minutes is compiling and running full-width convolutions, not the wiring.
      c.model.backbone_width_divisor = 8
  elif variant:
    raise ValueError(f"Unknown hybrid variant {variant!r}: use paper, official, allnet, sample or smoke.")

  if "res" in options:
    c.data.image_size = int(options["res"])
  return c
