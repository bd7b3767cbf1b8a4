"""What every benchmark shares: environment set-up, machine description, JSON results, statistics.

Each benchmark module writes one JSON file to `benchmarks/results/` with the date, the machine, the
library versions and the exact command, so `benchmarks.render` can rebuild docs/benchmarks.md from
measurements alone and anyone can rerun the line that produced a number.
"""

from __future__ import annotations

import datetime
import json
import os
import pathlib
import platform
import resource
import shlex
import statistics
import sys
from collections.abc import Sequence
from typing import Any

from leukojax.runtime import provenance

REPO = pathlib.Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"

# Input sizes: the papers' (ImageNet resolution of each backbone's weights) and one that a 2-core
# CPU trains in seconds (75 px is InceptionV3's minimum, so every model accepts it).
PAPER_SIZE = {"hybrid": 299, "inception_v3": 299, "xception": 299, "vgg16": 224, "vgg19": 224,
              "resnet50": 224, "mobilenet": 224}
CPU_SIZE = 75
PROJECT_CACHE = str(REPO / ".cache" / "jax")  # the tests' persistent compilation cache (gitignored)
MODELS = ("hybrid", "vgg16", "vgg19", "inception_v3", "xception", "resnet50", "mobilenet")


def project_config(name: str, variant: str | None = None):
  """`configs/<name>.py:<variant>`, imported as the package module it is (`leukojax.configs.<name>`)."""
  import importlib

  return importlib.import_module(f"leukojax.configs.{name}").get_config(variant)


def setup_environment(platform_name: str = "cpu", devices: int | None = None,
                      compile_cache: str | None = None) -> None:
  """Sets the JAX/Keras environment before either is imported (they read it once, at import).

  The persistent compilation cache is off unless `compile_cache` names a folder: an inherited
  JAX_COMPILATION_CACHE_DIR would turn measured compile times into cache reads.
  """
  os.environ.setdefault("KERAS_BACKEND", "jax")
  os.environ.pop("JAX_COMPILATION_CACHE_DIR", None)
  if compile_cache:
    os.environ["JAX_COMPILATION_CACHE_DIR"] = compile_cache
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
  if platform_name == "gpu":  # let JAX pick CUDA or ROCm, whichever jaxlib plugin is installed
    os.environ.pop("JAX_PLATFORMS", None)
  elif platform_name:
    os.environ["JAX_PLATFORMS"] = platform_name
  if devices:
    flags = os.environ.get("XLA_FLAGS", "")
    os.environ["XLA_FLAGS"] = f"{flags} --xla_force_host_platform_device_count={devices}".strip()
  from absl import flags as absl_flags  # grain workers and absl users expect parsed flags

  if not absl_flags.FLAGS.is_parsed():
    absl_flags.FLAGS.mark_as_parsed()


def check_platform(jax_module, wanted: str) -> None:
  """Fails when JAX did not start on the platform a benchmark was asked to measure."""
  got = jax_module.devices()[0].platform
  if wanted and got != wanted:
    raise RuntimeError(f"Asked for --platform {wanted} but JAX runs on {got}; install the matching jaxlib "
                       "plugin (e.g. jax[cuda12]) or choose --platform cpu.")


def cpu_description() -> dict[str, Any]:
  """Model name, vendor, family, logical CPUs, nominal MHz and SIMD flags from /proc/cpuinfo."""
  info: dict[str, Any] = {"model_name": platform.processor() or platform.machine(), "cpus": os.cpu_count()}
  try:
    text = pathlib.Path("/proc/cpuinfo").read_text()
  except OSError:
    return info
  first = text.split("\n\n", 1)[0]
  fields = dict(line.split(":", 1) for line in first.splitlines() if ":" in line)
  fields = {k.strip(): v.strip() for k, v in fields.items()}
  flags = set(fields.get("flags", "").split())
  info.update(model_name=fields.get("model name", info["model_name"]), vendor=fields.get("vendor_id", ""),
              family=int(fields.get("cpu family", "0") or 0), model=int(fields.get("model", "0") or 0),
              mhz=float(fields.get("cpu MHz", "0") or 0),
              simd=sorted(f for f in flags if f.startswith(("avx", "fma", "amx"))))
  return info


def load_average() -> list[float]:
  """1-, 5- and 15-minute load averages: how shared the machine was while measuring."""
  try:
    return [round(x, 2) for x in os.getloadavg()]
  except OSError:
    return []


def machine(jax_module=None) -> dict[str, Any]:
  """The machine and software a result was measured on."""
  out: dict[str, Any] = {"hostname": platform.node(), "python": platform.python_version(),
                         "cpu": cpu_description(), "load_average": load_average()}
  try:
    out["memory_gib"] = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
  except (ValueError, OSError):
    pass
  if jax_module is not None:
    devices = jax_module.devices()
    out.update(jax=jax_module.__version__, platform=devices[0].platform,
               device_kind=devices[0].device_kind, device_count=len(devices),
               process_count=jax_module.process_count())
    if "leukojax.models.depthwise" in sys.modules:  # which depthwise convolution the steps traced
      out["depthwise"] = sys.modules["leukojax.models.depthwise"].implementation()
  return out


def git_revision() -> str:
  return provenance.code_version()


def command_line(module: str, argv: Sequence[str] | None = None) -> str:
  """The command that produced a result, as a user would retype it (`argv`: what main() parsed)."""
  return shlex.join(["python", "-m", module, *(sys.argv[1:] if argv is None else argv)])


def write_result(name: str, payload: dict[str, Any], *, jax_module=None, out_dir: pathlib.Path = RESULTS,
                 command: str | None = None) -> pathlib.Path:
  """Writes `out_dir/name.json` with the date, machine, versions and command around `payload`."""
  out_dir.mkdir(parents=True, exist_ok=True)
  versions = {}
  for lib in ("jax", "jaxlib", "flax", "optax", "keras", "grain"):
    mod = sys.modules.get(lib)
    if mod is not None:
      versions[lib] = getattr(mod, "__version__", "?")
  record = {"benchmark": name, "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
            "command": command or command_line(f"benchmarks.{name}"), "git": git_revision(),
            "machine": machine(jax_module),
            "versions": versions, "max_rss_mib": max_rss_mib(), **payload}
  path = out_dir / f"{name}.json"
  path.write_text(json.dumps(record, indent=2, default=_plain) + "\n")
  return path


def read_result(name: str, out_dir: pathlib.Path = RESULTS) -> dict[str, Any] | None:
  path = out_dir / f"{name}.json"
  return json.loads(path.read_text()) if path.exists() else None


def max_rss_mib() -> float:
  """Peak resident memory of this process (Linux reports KiB)."""
  return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def summarize(samples: Sequence[float]) -> dict[str, float]:
  """Median (what the tables show), min and max of per-step times."""
  return {"median": statistics.median(samples), "min": min(samples), "max": max(samples), "n": len(samples)}


def cost_flops(compiled) -> float:
  """FLOPs per call from XLA's cost analysis of a compiled executable (NaN when unavailable)."""
  try:
    cost = compiled.cost_analysis()
  except Exception:  # pylint: disable=broad-except  (some backends do not implement it)
    return float("nan")
  if isinstance(cost, (list, tuple)):
    cost = cost[0] if cost else {}
  return float((cost or {}).get("flops", float("nan")))


def memory_bytes(compiled) -> dict[str, int]:
  """XLA's memory analysis of an executable: arguments + outputs - donated aliases + temporaries.

  This is the device memory the step needs at its peak, independent of what else the process holds,
  so two models measured in one process do not pollute each other's figure.
  """
  try:
    m = compiled.memory_analysis()
  except Exception:  # pylint: disable=broad-except
    return {}
  if m is None:
    return {}
  out = {k: int(getattr(m, f"{k}_size_in_bytes", 0)) for k in ("argument", "output", "alias", "temp",
                                                                 "generated_code")}
  out["peak"] = out["argument"] + out["output"] - out["alias"] + out["temp"]
  return out


def _plain(value: Any) -> Any:
  if hasattr(value, "tolist"):
    return value.tolist()
  return str(value)
