"""Train-step throughput of LeukoJAX against Keras 3, interleaved, on the same synthetic batch.

LeukoJAX: the real step of the train loop (state from `state.create_train_state`, compiled by
`loop._compile_train_step`: `steps.train_step` under `jax.jit` with the mesh's shardings and the
state donated), fed a host batch through `sharding.global_batch` every step as the train loop is.
Keras: the model of `benchmarks.keras_models`, compiled with the same optimiser, its own
`train_step` jitted exactly as `make_train_function` does (`jax.jit(model.train_step,
donate_argnums=0)`) and driven like `model.fit`'s loop (state threaded through, no host sync per
step). `train_on_batch` would add a host sync per step, so these Keras numbers are Keras at its
fastest. Both compile ahead of time (reported separately), then timed windows alternate
LeukoJAX, Keras, LeukoJAX, ... and the medians are reported, so machine noise hits both alike.

  python -m benchmarks.train_step --models hybrid,xception --size cpu --dtypes float32
"""

from __future__ import annotations

import argparse
import gc
import pathlib
import tempfile
import time
import types
from typing import Any

from benchmarks import common


def load_config(model: str, image_size: int, batch: int, dtype: str):
  """The project's own config for `model` (configs/hybrid.py or configs/baselines.py), resized."""
  config = common.project_config("hybrid") if model == "hybrid" else common.project_config("baselines", model)
  config.data.image_size = image_size
  config.train.global_batch_size = batch
  config.model.dtype = dtype
  config.model.pretrained.enabled = False  # timing needs no ImageNet weights
  return config


def synthetic_batch(config, seed: int = 0) -> dict[str, Any]:
  """A host batch as the pipeline delivers it: pixels in [0, 255] put through the config's mode."""
  import numpy as np

  from leukojax.models.preprocessing import preprocess_input

  rng = np.random.default_rng(seed)
  b, s = config.train.global_batch_size, config.data.image_size
  pixels = rng.uniform(0, 255, (b, s, s, 3)).astype(np.float32)
  return {"image": preprocess_input(pixels, config.data.preprocessing).astype(np.float32),
          "label": rng.integers(0, 2, b).astype(np.int32)}


class LeukojaxRunner:
  """Builds the train state and compiles the step exactly as `training.loop.train` does."""

  def __init__(self, config, host_batch: dict[str, Any], steps_per_epoch: int = 100):
    import jax
    import jax.numpy as jnp
    import numpy as np

    from leukojax.training import loop, sharding, state as state_lib

    self.jax, self.sharding, self.host_batch = jax, sharding, host_batch
    self.mesh = sharding.create_mesh(config.mesh.fsdp)
    sharding.check_batch_size(config.train.global_batch_size, self.mesh)
    pipeline = types.SimpleNamespace(num_classes=2, steps_per_epoch=steps_per_epoch)
    self.graphs, self.state, shardings, tx, _ = state_lib.create_train_state(config, pipeline, self.mesh,
                                                                               load_weights=False)
    batch = sharding.global_batch(host_batch, self.mesh)
    start = time.perf_counter()
    self.step = loop._compile_train_step(  # pylint: disable=protected-access
        self.state, batch, graphdef=self.graphs.train, frozen=False, tx=tx,
        class_weights=jnp.asarray(np.ones(2, np.float32)), state_shardings=shardings,
        batch_shard=sharding.batch_sharding(self.mesh), mesh=self.mesh)
    self.compile_s = time.perf_counter() - start
    self.flops, self.memory = common.cost_flops(self.step), common.memory_bytes(self.step)
    self.metrics = None

  def window(self, steps: int) -> float:
    """Seconds per step over `steps` steps, host batch transfer included, synced once at the end."""
    start = time.perf_counter()
    for _ in range(steps):
      batch = self.sharding.global_batch(self.host_batch, self.mesh)
      self.state, self.metrics = self.step(self.state, batch)
    self.jax.block_until_ready((self.state, self.metrics))
    return (time.perf_counter() - start) / steps

  def check(self) -> None:
    if not bool(self.jax.device_get(self.metrics["finite"])):
      raise FloatingPointError("LeukoJAX step produced a non-finite loss on the benchmark batch.")


class KerasRunner:
  """The Keras twin, compiled ahead of time from Keras's own `train_step`."""

  def __init__(self, config, host_batch: dict[str, Any], total_steps: int = 1000):
    import jax

    from benchmarks import keras_models

    self.jax = jax
    self.model = keras_models.build(config.model, config.data.image_size, 1, dtype=config.model.dtype,
                                    seed=config.seed)
    keras_models.compile_like_leukojax(self.model, config.train, total_steps, 1)
    x, y = host_batch["image"], host_batch["label"].astype("float32")
    self.data = (x, y)
    self.model._symbolic_build(data_batch=(x, y, None))  # pylint: disable=protected-access  (as fit does)
    self.state = self.model._get_jax_state(  # pylint: disable=protected-access
        trainable_variables=True, non_trainable_variables=True, optimizer_variables=True,
        metrics_variables=True, purge_model_variables=False)
    start = time.perf_counter()
    self.step = jax.jit(self.model.train_step, donate_argnums=0).lower(self.state, self.data).compile()
    self.compile_s = time.perf_counter() - start
    self.flops, self.memory = common.cost_flops(self.step), common.memory_bytes(self.step)
    self.logs = None

  def window(self, steps: int) -> float:
    start = time.perf_counter()
    for _ in range(steps):
      self.logs, self.state = self.step(self.state, self.data)
    self.jax.block_until_ready((self.logs, self.state))
    return (time.perf_counter() - start) / steps


def measure(model: str, image_size: int, batch: int, dtype: str, *, repeats: int, steps: int, keras: bool,
            peaks: dict[str, Any]) -> dict[str, Any]:
  """Compiles both, warms up, then `repeats` interleaved windows of `steps` steps each."""
  import jax

  config = load_config(model, image_size, batch, dtype)
  host_batch = synthetic_batch(config)
  runners: dict[str, Any] = {"leukojax": LeukojaxRunner(config, host_batch)}
  if keras:
    runners["keras"] = KerasRunner(config, host_batch)
  samples: dict[str, list[float]] = {name: [] for name in runners}
  for runner in runners.values():
    runner.window(1)  # first execution: allocations, thread pools
  for _ in range(repeats):
    for name, runner in runners.items():
      samples[name].append(runner.window(steps))
  runners["leukojax"].check()
  warm_compile_s = None
  if jax.config.jax_compilation_cache_dir:  # the same step again, now from the persistent cache
    warm_compile_s = LeukojaxRunner(config, host_batch).compile_s

  # Model FLOPs: XLA's count for the LeukoJAX step, which does no redundant work; Keras's own count
  # is larger where XLA expands grouped-convolution gradients densely (kept as its flops_per_step),
  # so both MFUs divide the same useful work by each framework's time.
  model_flops = runners["leukojax"].flops
  result: dict[str, Any] = {"model": model, "dtype": dtype, "image_size": image_size, "batch": batch,
                            "model_flops_per_step": model_flops}
  peak = peaks.get(dtype, {})
  for name, runner in runners.items():
    step = common.summarize(samples[name])
    entry = {"compile_s": runner.compile_s, "step_s": step, "samples_s": samples[name],
             "images_per_s": batch / step["median"], "flops_per_step": runner.flops, "memory": runner.memory}
    achieved = model_flops / step["median"]
    entry["tflops_per_s"] = achieved / 1e12
    for kind in ("theoretical", "matmul"):
      if kind in peak:
        entry[f"mfu_{kind}"] = achieved / peak[kind]
    result[name] = entry
  result["leukojax"]["warm_compile_s"] = warm_compile_s
  if keras:
    result["ratio"] = result["leukojax"]["images_per_s"] / result["keras"]["images_per_s"]
  if jax.devices()[0].platform == "gpu":
    stats = jax.devices()[0].memory_stats() or {}
    result["process_peak_bytes_in_use"] = stats.get("peak_bytes_in_use")
  del runners
  gc.collect()
  jax.clear_caches()
  return result


def parse_size(size: str, model: str) -> int:
  if size == "paper":
    return common.PAPER_SIZE[model]
  if size == "cpu":
    return common.CPU_SIZE
  return int(size)


def main(argv: list[str] | None = None) -> dict[str, Any]:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--models", default=",".join(common.MODELS))
  parser.add_argument("--size", default="cpu", help="'cpu' (75 px), 'paper' (299 or 224 per model) or pixels")
  parser.add_argument("--batch", type=int, default=8)
  parser.add_argument("--dtypes", default="float32,bfloat16")
  parser.add_argument("--repeats", type=int, default=3, help="interleaved timing windows per framework")
  parser.add_argument("--steps", type=int, default=2, help="steps per timing window")
  parser.add_argument("--no-keras", dest="keras", action="store_false")
  parser.add_argument("--platform", default="cpu", help="JAX platform: cpu, gpu or tpu")
  parser.add_argument("--name", default=None, help="result file name (default train_step_<platform>_<size>)")
  parser.add_argument("--no-compile-cache", dest="compile_cache", action="store_false",
                      help="skip the warm persistent-cache compile of each LeukoJAX step")
  parser.add_argument("--peak_size", type=int, default=2048, help="matmul size of the measured CPU peak")
  parser.add_argument("--out_dir", default=str(common.RESULTS))
  args = parser.parse_args(argv)
  common.setup_environment(args.platform)
  import jax

  common.check_platform(jax, args.platform)

  cache_dir = tempfile.TemporaryDirectory() if args.compile_cache else None
  if cache_dir:  # empty, so the first compile of every step is cold and the second one warm
    jax.config.update("jax_compilation_cache_dir", cache_dir.name)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)

  from benchmarks import peak as peak_lib

  dtypes = args.dtypes.split(",")
  cpu = common.cpu_description()
  peaks = peak_lib.peaks(jax, dtypes, cpu, measure=jax.devices()[0].platform == "cpu", size=args.peak_size)
  load_before = common.load_average()
  results = []
  for model in args.models.split(","):
    for dtype in dtypes:
      size = parse_size(args.size, model)
      print(f"[train_step] {model} {size}px batch {args.batch} {dtype} ...", flush=True)
      r = measure(model, size, args.batch, dtype, repeats=args.repeats, steps=args.steps, keras=args.keras,
                  peaks=peaks)
      line = f"  LeukoJAX {r['leukojax']['images_per_s']:.2f} img/s"
      if args.keras:
        line += f", Keras {r['keras']['images_per_s']:.2f} img/s, ratio {r['ratio']:.2f}"
      print(line, flush=True)
      results.append(r)
  name = args.name or f"train_step_{args.platform}_{args.size}"
  payload = {"size": args.size, "batch": args.batch, "repeats": args.repeats, "steps": args.steps,
             "peaks": peaks, "load_before": load_before, "load_after": common.load_average(), "results": results}
  command = common.command_line("benchmarks.train_step", argv)
  print("wrote", common.write_result(name, payload, jax_module=jax, out_dir=pathlib.Path(args.out_dir),
                                     command=command))
  if cache_dir:
    cache_dir.cleanup()
  return payload


if __name__ == "__main__":
  main()
