"""Depthwise convolutions: XLA's grouped convolution against `leukojax.models.depthwise`.

Two measurements, both interleaved A B C A B C in one process:
* the whole LeukoJAX train step of each model traced once with each implementation ('xla',
  'shifted_grads', and 'shifted', the default on CPU): the step-time difference between 'xla' and
  the fastest is the share of the step that XLA's grouped convolutions waste;
* each distinct depthwise layer of Xception alone (forward + both gradients), at the model's shapes.

  python -m benchmarks.depthwise --models xception,mobilenet,hybrid --size cpu --batch 8
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from benchmarks import common

IMPLS = ("xla", "shifted_grads", "shifted")


def _runner(config, batch, impl: str):
  from benchmarks import train_step
  from leukojax.models import depthwise

  previous, depthwise.IMPLEMENTATION = depthwise.IMPLEMENTATION, impl
  try:  # the implementation is read while tracing, i.e. while the runner compiles
    return train_step.LeukojaxRunner(config, batch)
  finally:
    depthwise.IMPLEMENTATION = previous


def step_comparison(model: str, size: int, batch: int, dtype: str, repeats: int, steps: int,
                    impls: tuple[str, ...] = IMPLS) -> dict[str, Any]:
  """Train-step time of `model` with each depthwise implementation in `impls` ('xla' first)."""
  import jax

  from benchmarks import train_step

  config = train_step.load_config(model, size, batch, dtype)
  host_batch = train_step.synthetic_batch(config)
  runners = {impl: _runner(config, host_batch, impl) for impl in impls}
  samples: dict[str, list[float]] = {impl: [] for impl in impls}
  for runner in runners.values():
    runner.window(1)
  for _ in range(repeats):
    for impl, runner in runners.items():
      samples[impl].append(runner.window(steps))
  out: dict[str, Any] = {"model": model, "image_size": size, "batch": batch, "dtype": dtype}
  for impl, runner in runners.items():
    out[impl] = {"step_s": common.summarize(samples[impl]), "compile_s": runner.compile_s,
                 "flops_per_step": runner.flops, "memory": runner.memory}
  xla = out["xla"]["step_s"]["median"]
  out["speedup"] = xla / out["shifted_grads"]["step_s"]["median"]  # the gradients alone
  fastest = out["shifted"] if "shifted" in out else out["shifted_grads"]
  out["speedup_shifted"] = xla / out["shifted"]["step_s"]["median"] if "shifted" in out else None  # the default
  out["depthwise_share_of_xla_step"] = 1 - fastest["step_s"]["median"] / xla  # what the grouped form wastes
  del runners
  jax.clear_caches()
  return out


def xception_layers(size: int, batch: int) -> list[tuple[int, int, int]]:
  """(spatial size, channels, count) of Xception's depthwise layers at `size` (all stride 1, 3x3)."""
  import jax
  import jax.numpy as jnp
  from flax import nnx

  from leukojax.models import backbones

  model = nnx.eval_shape(lambda: backbones.create_backbone("xception", rngs=nnx.Rngs(0)))
  shapes: dict[tuple[int, int], int] = {}

  def record(x, kernel, *args, **kwargs):
    key = (int(x.shape[1]), int(x.shape[-1]))
    shapes[key] = shapes.get(key, 0) + 1
    return jax.lax.conv_general_dilated(x, kernel, *args, **kwargs)

  graphdef, state = nnx.split(model)

  def run(state, x):
    m = nnx.merge(graphdef, state)
    for path, module in nnx.iter_graph(m):
      if isinstance(module, nnx.Conv) and module.feature_group_count > 1:
        module.conv_general_dilated = record
    return m(x)[0]

  jax.eval_shape(run, state, jax.ShapeDtypeStruct((batch, size, size, 3), jnp.float32))
  return [(h, c, n) for (h, c), n in sorted(shapes.items())]


def layer_comparison(size: int, batch: int, dtype: str, repeats: int) -> list[dict[str, Any]]:
  """Forward + input and kernel gradients of each Xception depthwise layer shape, both ways."""
  import jax
  import jax.numpy as jnp
  import numpy as np

  from leukojax.models import depthwise

  rows = []
  rng = np.random.default_rng(0)
  for h, c, count in xception_layers(size, batch):
    x = jnp.asarray(rng.standard_normal((batch, h, h, c)), dtype)
    k = jnp.asarray(rng.standard_normal((3, 3, 1, c)), jnp.float32)
    fns = {}
    for impl in IMPLS:
      def conv(x, k, impl=impl):
        pads = ((1, 1), (1, 1))
        if impl == "xla":
          return jax.lax.conv_general_dilated(x, k.astype(x.dtype), (1, 1), pads,
                                              dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=c)
        if impl == "shifted_grads":
          return depthwise.grouped_with_shifted_grads(x, k.astype(x.dtype), (1, 1), pads)
        return depthwise.shifted_depthwise(x, k, (1, 1), pads, x.dtype)
      fns[impl] = jax.jit(jax.grad(lambda x, k, f=conv: jnp.sum(f(x, k).astype(jnp.float32) ** 2), (0, 1)))
      jax.block_until_ready(fns[impl](x, k))
    times: dict[str, list[float]] = {impl: [] for impl in IMPLS}
    for _ in range(repeats):
      for impl, fn in fns.items():
        start = time.perf_counter()
        jax.block_until_ready(fn(x, k))
        times[impl].append(time.perf_counter() - start)
    row = {"spatial": h, "channels": c, "layers": count}
    for impl in IMPLS:
      row[f"{impl}_s"] = float(np.median(times[impl]))
    row["speedup"] = row["xla_s"] / row["shifted_grads_s"]
    rows.append(row)
    print(f"  xception depthwise {h}x{h}x{c} (x{count}): "
          + ", ".join(f"{impl} {row[f'{impl}_s'] * 1e3:.1f} ms" for impl in IMPLS), flush=True)
  return rows


def main(argv: list[str] | None = None) -> dict[str, Any]:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--models", default="xception,mobilenet,hybrid")
  parser.add_argument("--size", default="cpu")
  parser.add_argument("--batch", type=int, default=8)
  parser.add_argument("--dtype", default="float32")
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--steps", type=int, default=2)
  parser.add_argument("--impls", default=",".join(IMPLS), help="implementations to time; 'xla' and "
                      "'shifted_grads' are required")
  parser.add_argument("--layer_models", default="xception", help="'xception' or '' (no per-layer table)")
  parser.add_argument("--platform", default="cpu")
  parser.add_argument("--name", default=None)
  args = parser.parse_args(argv)
  common.setup_environment(args.platform)
  import jax

  common.check_platform(jax, args.platform)
  load_before = common.load_average()

  from benchmarks import train_step

  steps = []
  for model in filter(None, args.models.split(",")):
    size = train_step.parse_size(args.size, model)
    print(f"[depthwise] {model} {size}px batch {args.batch} {args.dtype} ...", flush=True)
    impls = tuple(args.impls.split(","))
    row = step_comparison(model, size, args.batch, args.dtype, args.repeats, args.steps, impls)
    print("  step " + ", ".join(f"{impl} {row[impl]['step_s']['median']:.3f} s" for impl in impls), flush=True)
    steps.append(row)
  layer_rows = []
  if args.layer_models == "xception" and train_step.parse_size(args.size, "xception") >= 71:  # its minimum
    layer_rows = layer_comparison(train_step.parse_size(args.size, "xception"), args.batch, args.dtype,
                                  args.repeats)
  payload = {"size": args.size, "batch": args.batch, "dtype": args.dtype, "steps": steps,
             "xception_layers": layer_rows, "load_before": load_before,
             "load_after": common.load_average()}
  command = common.command_line("benchmarks.depthwise", argv)
  name = args.name or f"depthwise_{args.platform}_{args.size}"
  print("wrote", common.write_result(name, payload, jax_module=jax, command=command))
  return payload


if __name__ == "__main__":
  main()
