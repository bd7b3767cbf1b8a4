"""Runs a benchmark suite, one fresh process per benchmark, then re-renders docs/benchmarks.md.

  python -m benchmarks.run --suite cpu     # everything at CPU size (75 px, batch 8): minutes on 2 cores
  python -m benchmarks.run --suite quick   # the depthwise models in float32: the headline table, ~5 min
  python -m benchmarks.run --suite paper   # CPU at the papers' sizes (299/224 px): slow on a laptop CPU
  python -m benchmarks.run --suite gpu     # on a GPU machine: bfloat16 at the papers' sizes, batch 32

Each benchmark writes benchmarks/results/<name>.json (date, machine, versions, command); a failed
benchmark stops the suite with its output, so no table is rendered from a half-run.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

from benchmarks import common

SUITES: dict[str, list[list[str]]] = {
    "quick": [
        ["train_step", "--size", "cpu", "--batch", "8", "--models", "hybrid,xception,mobilenet", "--dtypes",
         "float32", "--name", "train_step_cpu_final"],
    ],
    "cpu": [
        ["train_step", "--size", "cpu", "--batch", "8"],
        ["depthwise", "--size", "cpu", "--batch", "8", "--models", "xception,mobilenet"],
        ["depthwise", "--size", "cpu", "--batch", "8", "--models", "hybrid", "--impls", "xla,shifted_grads,shifted",
         "--layer_models", "", "--name", "depthwise_cpu_cpu_hybrid"],
        ["profile", "--size", "cpu", "--batch", "8", "--models", "xception,hybrid"],
        ["pipeline", "--size", "cpu"],
        ["scaling", "--size", "cpu", "--model", "mobilenet", "--batch", "16"],
        ["goodput", "--runs", "hybrid_sample,mobilenet_sample", "--epochs", "4"],
    ],
    "paper": [
        ["train_step", "--size", "paper", "--batch", "4", "--dtypes", "float32", "--repeats", "2", "--steps", "1"],
        ["pipeline", "--size", "paper"],
    ],
    "gpu": [
        ["train_step", "--platform", "gpu", "--size", "paper", "--batch", "32", "--dtypes", "bfloat16,float32",
         "--repeats", "5", "--steps", "10"],
        ["depthwise", "--platform", "gpu", "--size", "paper", "--batch", "32", "--dtype", "bfloat16",
         "--models", "xception,hybrid", "--steps", "10", "--repeats", "5"],
        ["profile", "--platform", "gpu", "--size", "paper", "--batch", "32", "--dtype", "bfloat16",
         "--models", "xception,hybrid", "--keras"],
        ["pipeline", "--size", "paper", "--workers", "0,2,4,8,12", "--batch", "32", "--batches", "20"],
    ],
}


def main(argv: list[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--suite", choices=sorted(SUITES), default="cpu")
  parser.add_argument("--skip", default="", help="comma-separated benchmark modules to leave out")
  args = parser.parse_args(argv)
  skip = set(filter(None, args.skip.split(",")))
  env = dict(os.environ, PYTHONPATH=str(common.REPO))
  start = time.perf_counter()
  print(f"[run] suite {args.suite}; load average before {common.load_average()}", flush=True)
  for module, *flags in SUITES[args.suite]:
    if module in skip:
      continue
    cmd = [sys.executable, "-m", f"benchmarks.{module}", *flags]
    print(f"[run] {' '.join(cmd[1:])}", flush=True)
    t0 = time.perf_counter()
    subprocess.run(cmd, cwd=common.REPO, env=env, check=True)
    print(f"[run] {module} took {time.perf_counter() - t0:.0f} s", flush=True)
  subprocess.run([sys.executable, "-m", "benchmarks.render"], cwd=common.REPO, env=env, check=True)
  print(f"[run] suite {args.suite} took {time.perf_counter() - start:.0f} s; load average after "
        f"{common.load_average()}", flush=True)


if __name__ == "__main__":
  main()
