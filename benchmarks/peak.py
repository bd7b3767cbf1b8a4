"""The peak FLOP/s that model FLOPs utilisation (MFU) is measured against.

Two peaks are stated, never one silently: the *theoretical* peak (vendor figure for accelerators;
for CPUs cores x clock x FLOPs per cycle from the micro-architecture) and, on CPU, the *practical*
peak, the FLOP/s a large jitted matmul reaches on this machine in this process (what XLA can get
at best, so MFU against it says how far a model's step is from XLA's own ceiling).
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

# Dense (no sparsity) peaks in FLOP/s by device kind (vendor data sheets). float32 matmuls on
# NVIDIA GPUs run as TF32 under JAX's default precision, hence the TF32 figure.
ACCELERATOR_PEAKS: dict[str, dict[str, float]] = {
    "NVIDIA H100 80GB HBM3": {"bfloat16": 989e12, "float32": 494.7e12},
    "NVIDIA H100": {"bfloat16": 989e12, "float32": 494.7e12},
    "NVIDIA H200": {"bfloat16": 989e12, "float32": 494.7e12},
    "NVIDIA A100-SXM4-80GB": {"bfloat16": 312e12, "float32": 156e12},
    "NVIDIA A100-SXM4-40GB": {"bfloat16": 312e12, "float32": 156e12},
}


def cpu_flops_per_cycle(cpu: dict[str, Any], dtype: str) -> tuple[float, str]:
  """FLOPs per cycle per core and the reasoning, from vendor, family and SIMD flags.

  AMD Zen 2-4 (family 23/25) have two 256-bit FMA pipes (AVX-512 is double-pumped on Zen 4):
  2 x 8 lanes x 2 = 32 float32 FLOPs/cycle; Zen 5 (family 26) and Intel cores with AVX-512 have
  two 512-bit pipes: 64. AVX-512 BF16 (`vdpbf16ps`) doubles the rate for bfloat16 inputs.
  """
  simd, vendor, family = set(cpu.get("simd", ())), cpu.get("vendor", ""), cpu.get("family", 0)
  if vendor == "AuthenticAMD" and family in (23, 25):
    per_cycle, why = 32.0, f"AMD family {family}: 2 x 256-bit FMA"
  elif "avx512f" in simd:
    per_cycle, why = 64.0, "2 x 512-bit FMA (AVX-512)"
  elif "fma" in simd:
    per_cycle, why = 32.0, "2 x 256-bit FMA (AVX2)"
  else:
    per_cycle, why = 8.0, "SSE, no FMA"
  if dtype == "bfloat16" and "avx512_bf16" in simd:
    per_cycle, why = 2 * per_cycle, why + ", x2 for AVX-512 BF16 dot products"
  return per_cycle, why


def theoretical_peak(jax_module, dtype: str, cpu: dict[str, Any]) -> tuple[float, str]:
  """(FLOP/s, basis) for the first device and `dtype`."""
  device = jax_module.devices()[0]
  if device.platform != "cpu":
    for kind, peaks in ACCELERATOR_PEAKS.items():
      if device.device_kind.startswith(kind):
        return peaks[dtype], f"{kind} data sheet, dense {dtype}"
    return float("nan"), f"no peak known for {device.device_kind}"
  per_cycle, why = cpu_flops_per_cycle(cpu, dtype)
  cores, mhz = cpu.get("cpus", 1), cpu.get("mhz", 0.0)
  return cores * mhz * 1e6 * per_cycle, f"{cores} cores x {mhz:.0f} MHz x {per_cycle:.0f} FLOP/cycle ({why})"


def matmul_peak(jax_module, dtype: str, *, size: int = 2048, seconds: float = 1.0) -> float:
  """Achieved FLOP/s of a jitted size^3 matmul chain in `dtype` (median of several timed runs)."""
  jnp = jax_module.numpy
  a = jnp.asarray(np.random.default_rng(0).standard_normal((size, size)), dtype)
  chain = 4  # several dots per call, so dispatch overhead is negligible

  @jax_module.jit
  def run(x):
    for _ in range(chain):
      x = jnp.dot(x, a, preferred_element_type=jnp.float32).astype(dtype) * 0.01
    return x

  run(a).block_until_ready()
  times, deadline = [], time.perf_counter() + seconds
  while time.perf_counter() < deadline or len(times) < 3:
    start = time.perf_counter()
    run(a).block_until_ready()
    times.append(time.perf_counter() - start)
  return chain * 2 * size**3 / float(np.median(times))


def peaks(jax_module, dtypes, cpu: dict[str, Any], *, measure: bool = True,
          size: int = 2048) -> dict[str, dict[str, Any]]:
  """Per dtype: theoretical peak and basis, and (when `measure`) a `size`^3 matmul's achieved FLOP/s."""
  out = {}
  for dtype in dtypes:
    value, basis = theoretical_peak(jax_module, dtype, cpu)
    entry: dict[str, Any] = {"theoretical": value, "theoretical_basis": basis}
    if measure:
      entry["matmul"] = matmul_peak(jax_module, dtype, size=size)
      entry["matmul_size"] = size
    out[dtype] = entry
  return out
