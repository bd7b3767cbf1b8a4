"""`describe_splits`: the split statistics a run prints, so every result states what it ran on."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from leukojax.data.pipeline import Pipeline

MAX_LISTED = 50  # skipped files named one per line; more are counted (all are in the build's metadata.json)


def describe_build(build: Mapping[str, Any]) -> list[str]:
  """The TFDS build a run read: complete, or which corrupt files it left out."""
  skipped = build.get("skipped_corrupt", [])
  if build.get("on_corrupt") != "skip":
    return [f"data build {build['name']}: complete (corrupt images stop the build)"]
  lines = [f"data build {build['name']}: on_corrupt=skip, {len(skipped)} corrupt image(s) left out"
           + (":" if skipped else "")]
  lines += [f"  skipped {name}" for name in skipped[:MAX_LISTED]]
  if len(skipped) > MAX_LISTED:
    lines.append(f"  ... and {len(skipped) - MAX_LISTED} more (all listed in the build's metadata.json)")
  return lines


def describe_splits(pipeline: Pipeline) -> str:
  """Counts per split and class, subjects per split, dedup and balancing, as a small text table."""
  s = pipeline.summary
  names = pipeline.class_names
  lines = [
      f"dataset {s['dataset']}, task {s['task']}, split protocol {s['protocol']}"
      + ("" if s["has_subjects"] else " (no subject ids: image-level splits)"),
      *describe_build(s["build"]),
      f"duplicates dropped (same image_sha256): {s['duplicates_dropped']}"
      f" ({s['duplicate_label_conflicts']} with a different label)"
      + (f"; records outside the task's classes: {s['dropped_by_task_view']}" if s["dropped_by_task_view"] else ""),
      f"{'split':<8}{'images':>8}{'subjects':>10}  " + "  ".join(f"{n:>12}" for n in names),
  ]
  for split, d in s["splits"].items():
    subjects = str(d["subjects"]) if s["has_subjects"] else "-"
    lines.append(f"{split:<8}{d['images']:>8}{subjects:>10}  " + "  ".join(f"{c:>12}" for c in d["per_class"]))
  if s["has_subjects"] and s.get("test_subjects"):
    lines.append(f"test subjects: {', '.join(s['test_subjects'])}")
  balanced = s["train_balanced_per_class"]
  lines.append(f"{'train*':<8}{sum(balanced):>8}{'':>10}  " + "  ".join(f"{c:>12}" for c in balanced))
  lines.append(
      "train* = the training stream after balancing (oversampled copies rotated 90° clockwise); "
      "class weights " + ", ".join(f"{n} {w:.3f}" for n, w in zip(names, pipeline.class_weights))
  )
  lines.append(
      f"global batch {pipeline.global_batch_size} ({pipeline.per_process_batch_size} per process), "
      f"{pipeline.steps_per_epoch} steps per epoch"
  )
  return "\n".join(lines)
