"""Where a train step's time goes: a jax.profiler trace of a few steps, grouped by kind of HLO op.

Each op the trace records is looked up in the compiled HLO and classed as dense convolution,
depthwise (grouped) convolution, matmul, pooling, reduction, layout copy or elementwise; the
table says which kind holds the step back (XLA's depthwise-convolution backward pass is the known
suspect: the `depthwise` row is its share). Times are summed over the executor's threads, so they
are CPU time on CPU (shares, not wall time) and kernel time on GPU.

  python -m benchmarks.profile --model xception --size cpu --batch 8
"""

from __future__ import annotations

import argparse
import collections
import glob
import re
import tempfile
from typing import Any

from benchmarks import common

_COMPUTATION = re.compile(r"^(?:ENTRY )?%?([\w.\-]+) \(.*\{\s*$")
_INSTRUCTION = re.compile(r"^\s+(?:ROOT )?%?([\w.\-]+) = (?:.*?) ([a-z][a-z0-9\-]*)\((.*)$")
_GROUPS = re.compile(r"(?:feature|batch)_group_count=(\d+)")
_CALLS = re.compile(r"calls=%?([\w.\-]+)")


def _op_kind(opcode: str, rest: str) -> str | None:
  if opcode == "convolution":
    groups = [int(g) for g in _GROUPS.findall(rest)]
    return "depthwise conv" if any(g > 1 for g in groups) else "conv"
  if opcode in ("dot", "custom-call") and ("dot" in opcode or "gemm" in rest or "matmul" in rest):
    return "matmul"
  if opcode in ("reduce-window", "select-and-scatter"):
    return "pooling"
  if opcode == "reduce":
    return "reduction"
  if opcode in ("copy", "transpose"):
    return "layout copy"
  return None


def classify_hlo(hlo_text: str) -> dict[str, str]:
  """Instruction name -> kind, looking inside fusions (a fusion takes its heaviest inner op's kind)."""
  computations: dict[str, list[tuple[str, str, str]]] = collections.defaultdict(list)
  current = None
  for line in hlo_text.splitlines():
    header = _COMPUTATION.match(line)
    if header:
      current = header.group(1)
      continue
    inst = _INSTRUCTION.match(line)
    if inst and current is not None:
      computations[current].append(inst.groups())
  rank = ["depthwise conv", "conv", "matmul", "pooling", "reduction", "layout copy"]

  def kind_of(computation: str, seen: frozenset = frozenset()) -> str | None:
    kinds = set()
    for _, opcode, rest in computations.get(computation, ()):
      kind = _op_kind(opcode, rest)
      if kind is None and opcode in ("fusion", "call") and (called := _CALLS.search(rest)):
        if called.group(1) not in seen:
          kind = kind_of(called.group(1), seen | {computation})
      if kind:
        kinds.add(kind)
    return next((k for k in rank if k in kinds), None)

  out = {}
  for computation, instructions in computations.items():
    for name, opcode, rest in instructions:
      kind = _op_kind(opcode, rest)
      if kind is None and opcode == "fusion" and (called := _CALLS.search(rest)):
        kind = kind_of(called.group(1))
      out[name] = kind or ("elementwise" if opcode == "fusion" or opcode in ("select", "add", "multiply")
                           else "other")
  return out


def op_times(trace_dir: str, names: set[str]) -> dict[str, float]:
  """Total seconds per HLO op name found in the trace (executor threads on CPU, XLA Ops on GPU)."""
  from jax.profiler import ProfileData

  totals: collections.Counter = collections.Counter()
  for path in glob.glob(f"{trace_dir}/**/*.xplane.pb", recursive=True):
    for plane in ProfileData.from_file(path).planes:
      for line in plane.lines:
        if not (line.name.startswith("tf_XLA") or line.name == "XLA Ops"):
          continue
        for event in line.events:
          if event.name in names:
            totals[event.name] += event.duration_ns / 1e9
  return dict(totals)


def profile_runner(runner, steps: int = 2) -> dict[str, Any]:
  """Traces `steps` steps of a benchmark runner and returns the time per op kind and the top ops."""
  import jax

  kinds = classify_hlo(runner.step.as_text())
  runner.window(1)
  with tempfile.TemporaryDirectory() as trace_dir:
    jax.profiler.start_trace(trace_dir)
    wall = runner.window(steps)
    jax.profiler.stop_trace()
    times = op_times(trace_dir, set(kinds))
  by_kind: collections.Counter = collections.Counter()
  for name, seconds in times.items():
    by_kind[kinds[name]] += seconds / steps
  total = sum(by_kind.values()) or float("nan")
  top = sorted(times.items(), key=lambda kv: -kv[1])[:10]
  return {"step_s": wall, "op_seconds_per_step": total,
          "by_kind": {k: {"seconds": v, "share": v / total} for k, v in by_kind.most_common()},
          "top_ops": [{"op": n, "kind": kinds[n], "seconds": s / steps} for n, s in top]}


def main(argv: list[str] | None = None) -> dict[str, Any]:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--models", default="xception,hybrid")
  parser.add_argument("--size", default="cpu")
  parser.add_argument("--batch", type=int, default=8)
  parser.add_argument("--dtype", default="float32")
  parser.add_argument("--steps", type=int, default=2)
  parser.add_argument("--keras", action="store_true", help="profile the Keras twin too")
  parser.add_argument("--platform", default="cpu")
  parser.add_argument("--name", default=None)
  args = parser.parse_args(argv)
  common.setup_environment(args.platform)
  import jax

  common.check_platform(jax, args.platform)
  load_before = common.load_average()

  from benchmarks import train_step

  results = []
  for model in args.models.split(","):
    size = train_step.parse_size(args.size, model)
    config = train_step.load_config(model, size, args.batch, args.dtype)
    batch = train_step.synthetic_batch(config)
    runners = {"leukojax": train_step.LeukojaxRunner(config, batch)}
    if args.keras:
      runners["keras"] = train_step.KerasRunner(config, batch)
    for framework, runner in runners.items():
      profile = profile_runner(runner, args.steps)
      results.append({"model": model, "framework": framework, "image_size": size, "batch": args.batch,
                      "dtype": args.dtype, **profile})
      shares = ", ".join(f"{k} {v['share']:.0%}" for k, v in profile["by_kind"].items())
      print(f"[profile] {framework} {model} {size}px: {shares}", flush=True)
    del runners
    jax.clear_caches()
  payload = {"size": args.size, "batch": args.batch, "dtype": args.dtype, "results": results,
             "load_before": load_before, "load_after": common.load_average()}
  command = common.command_line("benchmarks.profile", argv)
  name = args.name or f"profile_{args.platform}_{args.size}"
  print("wrote", common.write_result(name, payload, jax_module=jax, command=command))
  return payload


if __name__ == "__main__":
  main()
