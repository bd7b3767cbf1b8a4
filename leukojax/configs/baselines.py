r"""Single-backbone baselines of Kim et al. on the Taleqani ALL dataset (and Helwan's heads).

`--config configs/baselines.py:BACKBONE[,four_class][,cnmc][,smoke][,pretrained][,res=N][,epochs=N]`
with BACKBONE one of vgg16, vgg19, xception, mobilenet, resnet50, inception_v3. `cnmc` trains the
same baseline on C-NMC 2019 (subject split); `smoke` is the tiny test size (with `cnmc`: on
the bundled real C-NMC sample, `subject_cv`).

* default task: benign vs Pro-B (Pro-B positive), as Kim et al. (accuracy: VGG16 98.5%, VGG19 97.1%,
  Xception 93.8%, MobileNet 38.2%); `four_class`: benign / Early Pre-B / Pre-B / Pro-B (Kim: ~83%).
* Image-level stratified 70/15/15 split after removing byte-identical duplicates: this dataset has
  no patient ids, so patient-disjoint evaluation is impossible (say so beside every result).
* Each backbone gets its own Keras ImageNet preprocessing mode; ImageNet weights are used when the
  official Keras files are present (model.pretrained.enabled=True), else from scratch.
    python -m leukojax.main --config configs/baselines.py:vgg16 \
        --config.data.manual_dir=../shared/data/taleqani_all --workdir workdirs/vgg16_prob
  Hardware: a GPU for 224 px; on 2 CPU cores use res=64 and a few epochs (docs/results.md).
"""

from __future__ import annotations

from leukojax.configs.base import BACKBONE_NAMES, BUNDLED_CNMC_SAMPLE, base_config, parse_variant
from leukojax.models.backbones import PREPROCESSING_MODE
from leukojax.models.classifier import PAPER_HEADS


def get_config(arg: str | None = None):
  backbone, options = parse_variant(arg or "vgg16")
  if backbone not in BACKBONE_NAMES:
    raise ValueError(f"Unknown backbone {backbone!r}; use one of {BACKBONE_NAMES}.")
  four_class = options.get("four_class") == "True"
  c = base_config()
  c.name = f"{backbone}_{'four_class' if four_class else 'benign_vs_pro_b'}"
  c.data.dataset = "taleqani_all"
  c.data.builder_config = "original"
  c.data.task = "four_class" if four_class else "benign_vs_pro_b"
  c.data.split.protocol = "paper_random"
  c.data.image_size = 224
  c.data.preprocessing = PREPROCESSING_MODE[backbone]
  c.data.balance = "class_weights"
  c.train.class_weighted_loss = True
  c.data.augment.small_angle_deg = 20.0  # Kim et al.: ImageDataGenerator rotation up to 20 degrees
  c.data.augment.brightness = 0.2
  c.model.name = backbone
  c.model.head_widths = PAPER_HEADS[backbone]
  c.model.pretrained.enabled = options.get("pretrained", "False") == "True"
  c.model.bn_momentum = None if c.model.pretrained.enabled else 0.9  # from scratch: forget the init stats
  c.train.epochs = 25  # Kim et al.
  c.train.global_batch_size = 32
  c.train.learning_rate = 1e-4
  if options.get("cnmc") == "True":  # the same baseline on C-NMC 2019 (Helwan's VGG16/Xception rows)
    c.name = f"{backbone}_cnmc"
    c.data.dataset = "cnmc2019"
    c.data.builder_config = None
    c.data.task = "binary"
    c.data.split.protocol = "subject"
    c.data.augment.small_angle_deg = 0.0
    c.data.augment.brightness = 0.0
    c.train.epochs = 40
  if options.get("smoke") == "True":  # tiny, for tests: 32 px, narrow head, 2 epochs, batch 4
    c.data.image_size = 32
    c.model.head_widths = (8,)
    c.train.epochs = 2
    c.train.global_batch_size = 4
    c.train.warmup_epochs = 0.5
    c.train.log_every_steps = 2
    c.train.checkpoint_every_steps = 1000  # epoch ends only (the kill tests ask for mid-epoch saves)
    c.eval.batch_size = 8
    if options.get("cnmc") == "True":  # the bundled real C-NMC sample, leave one healthy subject out
      c.data.manual_dir = BUNDLED_CNMC_SAMPLE
      c.data.split.protocol = "subject_cv"
      c.data.resize = "cell_crop"
  if "res" in options:
    c.data.image_size = int(options["res"])
  if "epochs" in options:
    c.train.epochs = int(options["epochs"])
  return c
