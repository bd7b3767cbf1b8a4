"""Defaults of `config.data`: every experiment config starts from `default_data_config()`.

Keeping the defaults in one place means a config file only states what differs from them, and the
pipeline can rely on every key being present (ConfigDict type-checks overrides).
"""

from __future__ import annotations

import ml_collections
from ml_collections import config_dict


def default_data_config() -> ml_collections.ConfigDict:
  """Returns the data defaults: C-NMC 2019, subject-disjoint 70/15/15, 224 px, `tf` mode."""
  c = ml_collections.ConfigDict()
  c.dataset = "cnmc2019"  # 'cnmc2019' | 'taleqani_all'
  c.builder_config = config_dict.placeholder(str)  # taleqani_all: 'original' | 'segmented'
  c.data_dir = config_dict.placeholder(str)  # TFDS data dir; None = the TFDS default
  c.manual_dir = config_dict.placeholder(str)  # where the manual download lies
  # 'binary' (C-NMC: hem=0, all=1); Taleqani: 'benign_vs_pro_b' (benign=0, pro_b=1) | 'four_class'.
  c.task = "binary"

  c.split = ml_collections.ConfigDict()
  c.split.protocol = "subject"  # 'subject' | 'subject_cv' | 'paper_random' | 'official'
  c.split.fractions = (0.7, 0.15, 0.15)  # train, val, test (the paper also uses 0.6, 0.2, 0.2)
  # subject_cv only: K folds of subjects per class (0 = as many as the rarest class has subjects:
  # leave-one-healthy-subject-out on the 11-subject archive), the fold tested, and the share of
  # the training subjects' cells held out for validation (checkpoint and threshold choice).
  c.split.num_folds = 0
  c.split.fold = 0
  c.split.val_fraction = 0.15
  c.split.seed = 0  # fixed apart from the training seed, so repeated runs share one split
  c.max_cells_per_subject = 0  # > 0: at most this many train+val cells per subject (test keeps all)
  c.dedup = True  # drop byte-identical images (same image_sha256) before splitting, keep the first

  c.image_size = 224
  # 'resize' | 'center_crop' (central crop_fraction square, then resize) | 'cell_crop' (C-NMC: a
  # cell_window square centred on the cell, then resize; keeps the physical scale, docs/data.md)
  c.resize = "resize"
  c.crop_fraction = 0.75  # side of the central crop relative to the shorter image side
  c.cell_window = 340  # 'cell_crop' only: side in source pixels of the window centred on the cell; <= 0 = tight box
  c.standardize = True  # train-split mean/std, mapped onto ImageNet statistics (docs/data.md)
  c.preprocessing = "tf"  # 'caffe' | 'tf' | 'torch' | 'none' (the hybrid applies modes itself)
  c.balance = "oversample_rot90"  # 'oversample_rot90' | 'class_weights' | 'none'

  c.augment = ml_collections.ConfigDict()  # training split only
  c.augment.rot90 = False  # random multiple of 90 degrees
  c.augment.flip = False  # random horizontal and vertical flips
  c.augment.small_angle_deg = 0.0  # uniform rotation in [-a, a] degrees; 0 = off
  c.augment.brightness = 0.0  # multiply by a factor uniform in [1 - b, 1 + b]; 0 = off
  c.augment.fill_mode = "nearest"  # small-angle rotation fill: 'nearest' | 'constant' | 'reflect'
  # HED stain jitter (Tellez et al. 2018): per HED channel x * U[1-s, 1+s] + U[-s, s]; black stays
  # black; 0 = off. Against learning a subject's staining (docs/data.md); 0.05 (configs/cnmc.py) shifts a
  # cell's pixels by 8-22 grey levels on average: strong next to a typical H value of ~0.11.
  c.augment.hed_sigma = 0.0

  # -1 = chosen for the machine (leukojax/data/workers.py: in-process on the CPU backend, a worker per
  # free host core on accelerators); 0 = in-process; >0 = grain multiprocessing with that many workers.
  c.num_workers = -1
  c.worker_buffer_size = 2  # batches each worker prepares ahead
  c.read_threads = 2  # in-process threads decoding examples (per process, per worker)
  c.prefetch_buffer_size = 64  # examples buffered by those threads
  # Decoded, cropped and resized images kept in memory after their first use, per process (divided
  # between worker processes); 0 = off. On CPU the pipeline shares the step's cores: preparing a
  # C-NMC cell is 3.3 of its 4 ms (leukojax/data/prepared.py). 75 px: 17 KB per image; 299 px: 268 KB.
  c.cache_prepared_mb = 1024.0
  return c
