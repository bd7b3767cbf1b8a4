r"""Results on the real C-NMC 2019 cells (docs/results.md, "C-NMC 2019"): one config per model.

`--config configs/cnmc.py:MODEL[,fold=K][,all_subjects][,imagenet][,hed=S][,cells=N][,res=N][,epochs=N]`
MODEL: hybrid (VGG16 + InceptionV3 + Xception), its parts vgg16, inception_v3, xception (the
papers' heads), allnet (ResNet50 for Xception), or efficientnet_lite0/1/2 (the backbones whose real
ImageNet weights can be had here).

Data: the 2,921 cells of 11 subjects (9 ALL, 2 healthy) of the official training fold_1 archive,
through the project's TFDS builder (checked against the official SHA-256 of every file); the 5
byte-identical pairs are removed before any split.
    python -m leukojax.main --config configs/cnmc.py:hybrid,fold=0 \
        --config.data.manual_dir=../shared/data/cnmc2019 --workdir workdirs/cnmc/hybrid_fold0
then the same with fold=1, and `python -m leukojax.cv workdirs/cnmc/hybrid_fold0
workdirs/cnmc/hybrid_fold1` for the pooled result over all 11 subjects.

* Protocol `subject_cv`, 2 folds (leave-one-healthy-subject-out): fold k tests on one healthy
  subject and about half of the ALL subjects, trains on the others; validation (checkpoint and
  threshold choice) is 15% of the training subjects' cells. No subject is ever on both sides of
  train and test. Split seed 0.
* `all_subjects`: trained once on all 11 subjects (85% of each subject's cells to train, 15% to
  validate, no test split), to score on new subjects with `python -m leukojax.predict`.
* CPU-sized, from scratch (no ImageNet weights on the machine that produced docs/results.md): cells
  cropped by a 340 px window centred on the cell (physical scale kept) and resized to 75 px
  (InceptionV3's minimum), at most 100 train+val cells per subject (`cells=N`; the test keeps every
  cell), HED stain jitter sigma 0.05 (`hed=0` turns it off) with random 90-degree turns and flips,
  class-weighted loss, Adam 3e-4 with warmup + cosine, BatchNorm momentum 0.9, global batch 16, 5 epochs.
  Hardware: 2 CPU cores (wall times in docs/results.md).
* `imagenet`: the same config with ImageNet weights, the backbone frozen for the first epoch
  (BatchNorm on its ImageNet statistics) while the head learns, then fine-tuned: the A/B of
  docs/results.md "Does ImageNet pretraining help?".
"""

from __future__ import annotations

from leukojax.configs import baselines, hybrid
from leukojax.configs.base import parse_variant

MODELS = ("hybrid", "vgg16", "inception_v3", "xception", "allnet", "efficientnet_lite0", "efficientnet_lite1",
          "efficientnet_lite2")
EPOCHS = {"hybrid": 5, "allnet": 5, "vgg16": 5, "inception_v3": 5, "xception": 5,
          "efficientnet_lite0": 5, "efficientnet_lite1": 5, "efficientnet_lite2": 5}


def get_config(arg: str | None = None):
  model, options = parse_variant(arg or "hybrid")
  if model not in MODELS:
    raise ValueError(f"Unknown model {model!r}; use one of {MODELS}.")
  if model in ("hybrid", "allnet"):
    c = hybrid.get_config("allnet" if model == "allnet" else None)
    c.model.tap_width = 64  # CPU-sized fusion head (the paper's: 128, 256, 512, 512/256)
    c.model.fuse_widths = (128, 128)
    c.model.post_pool_width = 256
    c.model.dense_widths = (256, 128)
  else:
    c = baselines.get_config(f"{model},cnmc")
  imagenet = options.get("imagenet") == "True"
  c.model.pretrained.enabled = imagenet
  c.train.freeze_backbone_epochs = 1.0 if imagenet else 0.0
  c.model.bn_momentum = 0.9  # from scratch, short schedule: forget the initial BatchNorm statistics
  d = c.data
  d.dataset, d.builder_config, d.task = "cnmc2019", "verified", "binary"
  d.split.protocol = "subject_cv"
  d.split.num_folds = 0  # = 2 here: one healthy subject per fold
  d.split.fold = int(options.get("fold", 0))
  d.split.val_fraction = 0.15
  d.max_cells_per_subject = int(options.get("cells", 100))
  d.image_size = int(options.get("res", 75))
  d.resize = "cell_crop"
  d.cell_window = 340
  d.balance = "class_weights"
  c.train.class_weighted_loss = True
  d.augment.rot90 = True
  d.augment.flip = True
  d.augment.small_angle_deg = 0.0
  d.augment.brightness = 0.0
  d.augment.hed_sigma = float(options.get("hed", 0.05))
  if options.get("all_subjects") == "True":
    d.split.protocol = "paper_random"  # every subject's cells in train and val; no test split
    d.split.fractions = (0.85, 0.15, 0.0)
  c.train.epochs = int(options.get("epochs", EPOCHS[model]))
  c.train.global_batch_size = 16
  c.train.learning_rate = 3e-4
  c.train.warmup_epochs = 0.5
  c.train.best_metric = "loss"  # validation cells come from training subjects: accuracy saturates
  c.train.log_every_steps = 10
  c.train.checkpoint_every_steps = 1000  # epoch ends only (an epoch is ~30 steps)
  c.eval.batch_size = 32
  fold = "all" if options.get("all_subjects") == "True" else f"fold{d.split.fold}"
  c.name = f"cnmc_{model}_{fold}" + ("" if d.augment.hed_sigma else "_nohed") + ("_imagenet" if imagenet else "")
  return c
