"""`python -m leukojax.explain --workdir W [--method both] [--layer BACKBONE=TAP ...] IMAGES...`.

Writes one PNG per image (original | Grad-CAM | LIME) and explanations.json/.csv with the
Grad-CAM/LIME agreement into `--out` (default W/explanations). docs/explanations.md has the details.
Exits with status 1 when an image could not be read (the others are still explained).
"""

from __future__ import annotations

import sys

from absl import app, flags, logging

from leukojax.runtime import cli, startup

_WORKDIR = flags.DEFINE_string("workdir", None,
                                "A training workdir (python -m leukojax.main ... --workdir W).")
_METHOD = flags.DEFINE_enum("method", "both", ["gradcam", "lime", "both"], "Which explanation(s).")
_OUT = flags.DEFINE_string("out", None, "Output folder; default WORKDIR/explanations.")
_CHECKPOINT = flags.DEFINE_string("checkpoint", "best", "'best', 'latest' or a step number.")
_LAYER = flags.DEFINE_multi_string(
    "layer", [], "Grad-CAM layer, BACKBONE=TAP (repeatable; a bare TAP for a single-backbone model). "
    "Default: each backbone's final feature map ('final').")
_TARGET = flags.DEFINE_string("target_class", None,
                              "Class to explain (name or index); default: the predicted one.")
_SAMPLES = flags.DEFINE_integer("lime_samples", 1000, "Perturbed images LIME draws per image.")
_BATCH = flags.DEFINE_integer("lime_batch_size", 50, "Fixed batch size of the jitted LIME classifier.")
_SEGMENTATION = flags.DEFINE_enum("segmentation", "slic", ["slic", "quickshift"], "LIME superpixels.")
_SEGMENTS = flags.DEFINE_integer("n_segments", 50, "Approximate SLIC superpixel count.")
_HIDE = flags.DEFINE_integer("hide_color", 128, "Grey level (0-255) of a switched-off superpixel.")
_FRACTION = flags.DEFINE_float("top_fraction", 0.2, "Area fraction of the top regions compared by the IoU.")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of LIME's sampling and of quickshift.")
startup.define_distributed_flags()
flags.mark_flags_as_required(["workdir"])


def parse_layers(values: list[str]) -> dict[str, str]:
  """['xception=entry_stride8', 'conv1_relu'] -> {'xception': 'entry_stride8', '': 'conv1_relu'}."""
  layers = {}
  for value in values:
    backbone, _, tap = value.rpartition("=")
    if not tap:
      raise app.UsageError(f"--layer {value!r}: expected BACKBONE=TAP or TAP.")
    layers[backbone] = tap
  return layers


def main(argv: list[str]) -> None:
  paths = argv[1:]
  if not paths:
    raise app.UsageError("Give the image files to explain after the flags.")
  from leukojax.explanation import explainer  # after flag parsing: importing JAX must not start devices

  startup.start_jax()
  options = explainer.Options(
      method=_METHOD.value, layers=parse_layers(_LAYER.value), target_class=_TARGET.value,
      lime_samples=_SAMPLES.value, lime_batch_size=_BATCH.value, segmentation=_SEGMENTATION.value,
      n_segments=_SEGMENTS.value, hide_color=_HIDE.value, top_fraction=_FRACTION.value, seed=_SEED.value)
  from leukojax.data.images import expand_image_paths  # folders too, as leukojax.predict

  summary = explainer.explain_workdir(_WORKDIR.value, expand_image_paths(paths), options, out_dir=_OUT.value,
                                   checkpoint=_CHECKPOINT.value)
  out = _OUT.value or f"{_WORKDIR.value}/explanations"
  logging.info("Explained %d image(s) into %s; mean Grad-CAM/LIME IoU %s (chance %s).",
               len(summary["images"]), out, summary["mean_iou"], summary["mean_iou_chance"])
  if summary["failed"]:
    for failure in summary["failed"]:
      print(failure["error"], file=sys.stderr)
    sys.exit(f"leukojax.explain: error: {len(summary['failed'])} of {len(summary['failed']) + len(summary['images'])} "
             "inputs could not be read (listed above); the explanations of the others are written.")


def run() -> None:
  """Console-script entry point (pyproject.toml [project.scripts])."""
  cli.run("leukojax.explain", main)


if __name__ == "__main__":
  run()
