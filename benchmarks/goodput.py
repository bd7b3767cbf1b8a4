"""Goodput: the real train loop's training images/s against the bare compiled step and the pipeline.

* loop: `python -m leukojax.main` in a subprocess, as a user runs it (grain pipeline with the
  config's augmentation, metric writing, per-epoch validation, checkpointing). The loop writes
  `time/wall_s` at every epoch end into history.jsonl; epochs 2.. (epoch 1 holds the compilation)
  give the loop's images/s = training images of those epochs / their wall seconds.
* step: `benchmarks.train_step.LeukojaxRunner` on the same config and batch: the same compiled
  step fed one synthetic host batch, median of timed windows.
* pipeline: the run's training iterator alone (`leukojax.data.build_pipeline`, same config).

  python -m benchmarks.goodput --runs hybrid_sample,mobilenet_sample --epochs 4
  python -m benchmarks.goodput --runs lite0_cnmc,hybrid_cnmc --epochs 3 --name goodput_cnmc
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

from benchmarks import common

# name -> (config file, variant, manual_dir or None): the bundled real samples, so it runs anywhere.
TALEQANI_SAMPLE = str(common.REPO / "tfds_builders" / "taleqani_all" / "sample")
# The real C-NMC fold_1 archive (11 subjects, 2,921 cells): epochs of 30-90 steps instead of the
# samples' 2-4, so the fixed cost of each epoch's validation and checkpoint is weighed as in real use.
CNMC_ARCHIVE = str(common.REPO.parent / "shared" / "data" / "cnmc2019")
RUNS: dict[str, tuple[str, str, str | None]] = {
    "hybrid_sample": ("hybrid.py", "sample", None),  # what `make demo` trains: C-NMC cells, 75 px, batch 8
    "mobilenet_sample": ("baselines.py", "mobilenet,res=75", TALEQANI_SAMPLE),  # Taleqani, benign vs Pro-B
    "hybrid_cnmc": ("cnmc.py", "hybrid", CNMC_ARCHIVE),  # docs/results.md's hybrid run: 100 cells/subject
    "lite0_cnmc": ("cnmc.py", "efficientnet_lite0,cells=1000", CNMC_ARCHIVE),  # every cell of the 11 subjects
}


def load_config(config_file: str, variant: str, manual_dir: str | None, epochs: int, data_dir: str,
                cache_prepared_mb: float | None = None):
  config = common.project_config(pathlib.Path(config_file).stem, variant)
  config.train.epochs = epochs
  if cache_prepared_mb is not None:
    config.data.cache_prepared_mb = cache_prepared_mb
  config.data.data_dir = data_dir
  if manual_dir:
    config.data.manual_dir = manual_dir
  return config


def loop_rate(config_file: str, variant: str, manual_dir: str | None, epochs: int, data_dir: str,
              workdir: pathlib.Path, cache_prepared_mb: float | None = None) -> dict:
  cmd = [sys.executable, "-m", "leukojax.main", f"--config={common.REPO / 'configs' / config_file}:{variant}",
         f"--workdir={workdir}", f"--config.train.epochs={epochs}", f"--config.data.data_dir={data_dir}"]
  if cache_prepared_mb is not None:
    cmd.append(f"--config.data.cache_prepared_mb={cache_prepared_mb}")
  if manual_dir:
    cmd.append(f"--config.data.manual_dir={manual_dir}")
  start = time.perf_counter()
  result = subprocess.run(cmd, cwd=common.REPO, capture_output=True, text=True, env=dict(os.environ))
  if result.returncode:
    raise RuntimeError(f"{' '.join(cmd)} failed:\n{result.stderr[-3000:]}")
  total_s = time.perf_counter() - start
  history = [json.loads(line) for line in (workdir / "history.jsonl").read_text().splitlines()]
  first, last = history[0], history[-1]
  config = json.loads((workdir / "config.json").read_text())
  images = (last["step"] - first["step"]) * config["train"]["global_batch_size"]
  seconds = last["time/wall_s"] - first["time/wall_s"]
  timed = history[1:]
  # Per timed epoch, the validation pass's share (older runs' histories lack the field).
  validation = ({"validation_s": statistics.mean(h["time/validation_s"] for h in timed)}
                if timed and all("time/validation_s" in h for h in timed) else {})
  return {"images_per_s": images / seconds, "epochs_timed": len(timed), "images": images,
          "epoch_s": seconds / max(len(timed), 1), **validation,
          "seconds": seconds, "first_epoch_s": first["time/wall_s"], "process_s": total_s,
          "steps_per_epoch": history[1]["step"] - first["step"] if len(history) > 1 else first["step"]}


def step_rate(config, repeats: int, steps: int) -> dict:
  from benchmarks import train_step

  host_batch = train_step.synthetic_batch(config)
  runner = train_step.LeukojaxRunner(config, host_batch)
  runner.window(1)
  windows = [runner.window(steps) for _ in range(repeats)]
  median = statistics.median(windows)
  return {"images_per_s": config.train.global_batch_size / median, "step_s": median, "windows": windows,
          "compile_s": runner.compile_s}


def pipeline_rate(config, batches: int) -> dict:
  from leukojax.data import build_pipeline
  from leukojax.data.workers import resolve_num_workers

  pipeline = build_pipeline(config.data, global_batch_size=config.train.global_batch_size,
                            eval_batch_size=config.eval.batch_size, workdir=None, seed=config.seed)
  iterator = iter(pipeline.train)
  next(iterator)
  start = time.perf_counter()
  for _ in range(batches):
    next(iterator)
  seconds = time.perf_counter() - start
  return {"images_per_s": batches * config.train.global_batch_size / seconds,
          "workers": resolve_num_workers(config.data.num_workers), "train_images": pipeline.train_size}


def main(argv: list[str] | None = None) -> dict[str, Any]:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--runs", default=",".join(RUNS))
  parser.add_argument("--epochs", type=int, default=4)
  parser.add_argument("--repeats", type=int, default=5)
  parser.add_argument("--steps", type=int, default=5)
  parser.add_argument("--batches", type=int, default=30)
  parser.add_argument("--cache_prepared_mb", type=float, default=None,
                      help="data.cache_prepared_mb for every run (0: no prepared-image store); default: the config's")
  parser.add_argument("--name", default="goodput_cpu")
  args = parser.parse_args(argv)
  if args.epochs < 2:
    parser.error("--epochs must be at least 2: epoch 1 holds the compilation and is not timed.")
  common.setup_environment("cpu")
  load_before = common.load_average()
  rows = []
  runs = args.runs.split(",")
  for name in runs:
    if name not in RUNS:
      parser.error(f"unknown run {name!r}: choose from {', '.join(RUNS)}")
    if RUNS[name][2] and not os.path.isdir(RUNS[name][2]):
      parser.error(f"run {name!r} reads {RUNS[name][2]}, which does not exist: unpack or link the data there "
                   "(the C-NMC runs need the fold_1 archive of ../shared/data/cnmc2019)")
  with tempfile.TemporaryDirectory() as tmp:
    for name in runs:
      config_file, variant, manual_dir = RUNS[name]
      data_dir = os.path.join(tmp, "tfds")
      loop = loop_rate(config_file, variant, manual_dir, args.epochs, data_dir, pathlib.Path(tmp) / name,
                       args.cache_prepared_mb)
      config = load_config(config_file, variant, manual_dir, args.epochs, data_dir, args.cache_prepared_mb)
      step = step_rate(config, args.repeats, args.steps)
      data = pipeline_rate(config, args.batches)
      row = {"run": name, "config": f"configs/{config_file}:{variant}", "image_size": config.data.image_size,
             "batch": config.train.global_batch_size, "model": config.model.name, "loop": loop, "step": step,
             "pipeline": data, "goodput": loop["images_per_s"] / step["images_per_s"],
             "pipeline_vs_step": data["images_per_s"] / step["images_per_s"]}
      print(f"[goodput] {name}: loop {loop['images_per_s']:.2f} img/s, step {step['images_per_s']:.2f} img/s "
            f"({row['goodput']:.0%}), pipeline {data['images_per_s']:.0f} img/s "
            f"({row['pipeline_vs_step']:.1f}x the step)", flush=True)
      rows.append(row)
  payload = {"epochs": args.epochs, "rows": rows, "load_before": load_before, "load_after": common.load_average()}
  print("wrote", common.write_result(args.name, payload, command=common.command_line("benchmarks.goodput", argv)))
  return payload


if __name__ == "__main__":
  main()
