"""Scaling: one global batch on 1, 2, 4, 8 fake CPU devices and on 2 processes (`launch/local.sh`).

Each configuration runs in a fresh process (the device count is fixed when JAX starts) that builds
the real train step (`train_step.LeukojaxRunner`: the mesh over every device of every process, the
batch sharded over it, BatchNorm on the global batch) and times it. On a CPU the fake devices
share the same cores, so this measures the cost of sharding (partitioned program, collectives,
per-device dispatch), not a speed-up: the overhead column is step time / 1-device step time - 1.

  python -m benchmarks.scaling --model mobilenet --size cpu --batch 16 --devices 1,2,4,8 --processes 2
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from typing import Any

from benchmarks import common


def worker(args: argparse.Namespace) -> None:
  """One configuration: build, compile, time `steps` steps `repeats` times; process 0 writes JSON.

  Compile times are not the point here, so the project's persistent cache makes reruns quick.
  """
  common.setup_environment("cpu", compile_cache=common.PROJECT_CACHE)
  from leukojax.runtime import distributed

  distributed.initialize(args.coordinator_address, args.num_processes, args.process_id)
  import jax

  from benchmarks import train_step

  config = train_step.load_config(args.model, train_step.parse_size(args.size, args.model), args.batch,
                                  args.dtype)
  full = train_step.synthetic_batch(config)
  per_process = args.batch // jax.process_count()
  local = slice(jax.process_index() * per_process, (jax.process_index() + 1) * per_process)
  runner = train_step.LeukojaxRunner(config, {k: v[local] for k, v in full.items()})
  runner.window(1)
  samples = [runner.window(args.steps) for _ in range(args.repeats)]
  runner.check()
  if jax.process_index() == 0:
    with open(args.out, "w") as f:
      json.dump({"devices": jax.device_count(), "processes": jax.process_count(),
                 "compile_s": runner.compile_s, "step_s": common.summarize(samples), "samples_s": samples,
                 "memory": runner.memory, "flops_per_step": runner.flops}, f)


def run_config(args: argparse.Namespace, devices: int, processes: int, out: str) -> dict[str, Any]:
  """Launches one configuration in fresh processes and returns what process 0 wrote."""
  flags = [f"--model={args.model}", f"--size={args.size}", f"--batch={args.batch}", f"--dtype={args.dtype}",
           f"--steps={args.steps}", f"--repeats={args.repeats}", f"--out={out}", "--worker"]
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  env.update(JAX_PLATFORMS="cpu", PYTHONPATH=str(common.REPO))
  if processes == 1:
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    cmd = [sys.executable, "-m", "benchmarks.scaling", *flags]
  else:
    env.update(LEUKOJAX_MODULE="benchmarks.scaling", PYTHON=sys.executable,
               LOCAL_DEVICES=str(devices // processes))
    cmd = ["bash", str(common.REPO / "launch" / "local.sh"), str(processes), *flags]
  result = subprocess.run(cmd, cwd=common.REPO, env=env, capture_output=True, text=True, timeout=args.timeout)
  if result.returncode != 0:
    raise RuntimeError(f"{' '.join(cmd)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
  with open(out) as f:
    return json.load(f)


def main(argv: list[str] | None = None) -> dict[str, Any]:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--model", default="mobilenet")
  parser.add_argument("--size", default="cpu")
  parser.add_argument("--batch", type=int, default=16, help="global batch, the same in every configuration")
  parser.add_argument("--dtype", default="float32")
  parser.add_argument("--devices", default="1,2,4,8")
  parser.add_argument("--processes", type=int, default=2, help="also run this many processes (0: skip)")
  parser.add_argument("--steps", type=int, default=2)
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--timeout", type=int, default=900)
  parser.add_argument("--name", default=None)
  parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
  parser.add_argument("--out", default=None, help=argparse.SUPPRESS)
  parser.add_argument("--coordinator_address", default=None, help=argparse.SUPPRESS)
  parser.add_argument("--num_processes", type=int, default=None, help=argparse.SUPPRESS)
  parser.add_argument("--process_id", type=int, default=None, help=argparse.SUPPRESS)
  args = parser.parse_args(argv)
  if args.worker:
    worker(args)
    return {}

  common.setup_environment("cpu")
  import jax  # noqa: F401  (only so the result records its version)

  load_before = common.load_average()
  configs = [(int(d), 1) for d in args.devices.split(",")]
  if args.processes > 1:
    configs.append((args.processes, args.processes))  # one device per process
  rows = []
  with tempfile.TemporaryDirectory() as tmp:
    for devices, processes in configs:
      print(f"[scaling] {args.model} batch {args.batch}: {devices} devices, {processes} processes ...", flush=True)
      row = run_config(args, devices, processes, os.path.join(tmp, f"{devices}_{processes}.json"))
      rows.append(row)
      print(f"  step {row['step_s']['median']:.3f} s", flush=True)
  base = next((r["step_s"]["median"] for r in rows if r["devices"] == 1), None)
  for row in rows:
    row["overhead_vs_1_device"] = row["step_s"]["median"] / base - 1 if base else None
  payload = {"model": args.model, "size": args.size, "batch": args.batch, "dtype": args.dtype, "rows": rows,
             "load_before": load_before, "load_after": common.load_average()}
  command = common.command_line("benchmarks.scaling", argv)
  print("wrote", common.write_result(args.name or f"scaling_{args.size}", payload, command=command))
  return payload


if __name__ == "__main__":
  main()
