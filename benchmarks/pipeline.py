"""Input-pipeline throughput: the real `leukojax.data.build_pipeline` on the bundled real Taleqani sample.

Two measurements:
* per-stage cost of one example (decode JPEG, resize, augment, standardise + ImageNet mode), timed
  on the transforms the pipeline itself uses, so the slow stage is named;
* images/s of the training iterator with 0, 1, 2 grain worker processes, after a warm-up (worker
  start-up is reported apart), for the hybrid's augmentation (90-degree turns, flips) and the
  baselines' (20-degree rotation, brightness: Kim et al.'s ImageDataGenerator settings).

`benchmarks.render` sets these beside the train step's images/s: the pipeline must outrun the step.

  python -m benchmarks.pipeline --size cpu --workers 0,1,2
"""

from __future__ import annotations

import argparse
import tempfile
import time
from typing import Any

from benchmarks import common

AUGMENTS = {
    "hybrid": {"rot90": True, "flip": True},  # configs/hybrid.py:sample
    "baselines": {"small_angle_deg": 20.0, "brightness": 0.2},  # configs/baselines.py
}


def data_config(image_size: int, augment: str, data_dir: str, workers: int):
  """configs/hybrid.py:sample's data config (real sample, benign vs Pro-B) at `image_size`."""
  from benchmarks.train_step import load_config

  config = load_config("hybrid", image_size, 8, "float32")
  hybrid_sample = _hybrid_sample_data()
  for key in ("dataset", "builder_config", "task", "manual_dir", "split"):
    config.data[key] = hybrid_sample[key]
  config.data.data_dir = data_dir
  config.data.image_size = image_size
  config.data.augment.update(AUGMENTS[augment])
  if augment == "baselines":
    config.data.preprocessing = "tf"
  config.data.num_workers = workers
  return config.data


def _hybrid_sample_data():
  return common.project_config("hybrid", "sample").data


def stage_costs(data, stats, n: int = 48) -> dict[str, float]:
  """Mean seconds per example of each transform, on the first `n` training records (encoded bytes)."""
  import numpy as np

  from leukojax.data import transforms as T
  from leukojax.data.sources import load_split_sources

  encoded = load_split_sources(data.dataset, builder_config=data.builder_config, data_dir=data.data_dir,
                               manual_dir=data.manual_dir, decode_images=False)["train"]
  records = [encoded[i] for i in range(min(n, len(encoded)))]
  augment = T.Augment(**data.augment.to_dict())
  normalize = T.Normalize(stats.mean, stats.std, standardize=data.standardize, mode=data.preprocessing)
  rng = np.random.default_rng(0)
  times = {"decode": 0.0, "resize": 0.0, "augment": 0.0, "normalize": 0.0}
  for record in records:
    start = time.perf_counter()
    image = T.to_rgb_uint8(record["image"])
    t1 = time.perf_counter()
    image = T.crop_and_resize(image, data.image_size, data.resize, data.crop_fraction)
    t2 = time.perf_counter()
    element = augment.random_map({"image": image, "label": 0}, rng) if augment.active else {"image": image,
                                                                                           "label": 0}
    t3 = time.perf_counter()
    normalize.map(element)
    t4 = time.perf_counter()
    for key, value in zip(times, (t1 - start, t2 - t1, t3 - t2, t4 - t3)):
      times[key] += value
  return {k: v / len(records) for k, v in times.items()}


def throughput(data, batch: int, batches: int, warmup: int) -> dict[str, float]:
  """Images/s of `build_pipeline(...).train` after `warmup` batches (start-up timed apart)."""
  from leukojax.data import build_pipeline

  start = time.perf_counter()
  with tempfile.TemporaryDirectory() as workdir:
    pipeline = build_pipeline(data, global_batch_size=batch, eval_batch_size=batch, workdir=workdir, seed=0)
    iterator = iter(pipeline.train)
    for _ in range(warmup):
      next(iterator)
    startup = time.perf_counter() - start
    start = time.perf_counter()
    for _ in range(batches):
      next(iterator)
    elapsed = time.perf_counter() - start
    del iterator
  return {"images_per_s": batch * batches / elapsed, "startup_s": startup, "batches": batches}


def main(argv: list[str] | None = None) -> dict[str, Any]:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--size", default="cpu", help="'cpu' (75 px), 'paper' (299 px) or pixels")
  parser.add_argument("--workers", default="0,1,2")
  parser.add_argument("--augments", default="hybrid,baselines")
  parser.add_argument("--batch", type=int, default=8)
  parser.add_argument("--batches", type=int, default=20)
  parser.add_argument("--warmup", type=int, default=2)
  parser.add_argument("--data_dir", default=None, help="TFDS data dir (default: a temporary one, built once)")
  parser.add_argument("--name", default=None)
  args = parser.parse_args(argv)
  common.setup_environment("cpu")
  from leukojax.data import build_pipeline

  size = {"cpu": common.CPU_SIZE, "paper": common.PAPER_SIZE["hybrid"]}.get(args.size) or int(args.size)
  load_before = common.load_average()
  with tempfile.TemporaryDirectory() as tmp:
    data_dir = args.data_dir or tmp
    start = time.perf_counter()  # first use builds the TFDS dataset from the bundled JPEGs
    first = build_pipeline(data_config(size, "hybrid", data_dir, 0), global_batch_size=args.batch,
                           eval_batch_size=args.batch, workdir=None, seed=0)
    build_s = time.perf_counter() - start
    rows = []
    for augment in args.augments.split(","):
      data = data_config(size, augment, data_dir, 0)
      stages = stage_costs(data, first.stats)
      print(f"[pipeline] {augment} {size}px per image: "
            + ", ".join(f"{k} {v * 1e3:.2f} ms" for k, v in stages.items()), flush=True)
      for workers in map(int, args.workers.split(",")):
        result = throughput(data_config(size, augment, data_dir, workers), args.batch, args.batches, args.warmup)
        print(f"  {workers} workers: {result['images_per_s']:.0f} images/s", flush=True)
        rows.append({"augment": augment, "workers": workers, "image_size": size, **result,
                     "stage_seconds": stages})
  payload = {"size": args.size, "image_size": size, "batch": args.batch, "train_images": first.train_size,
             "build_s": build_s, "rows": rows, "load_before": load_before, "load_after": common.load_average()}
  command = common.command_line("benchmarks.pipeline", argv)
  print("wrote", common.write_result(args.name or f"pipeline_{args.size}", payload, command=command))
  return payload


if __name__ == "__main__":
  main()
