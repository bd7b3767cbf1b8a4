"""Renders benchmarks/results/*.json into the marked sections of docs/benchmarks.md.

The doc's prose is written by hand; every table lives between `<!-- benchmarks:NAME -->` and
`<!-- /benchmarks:NAME -->` and is rebuilt here from `benchmarks/results/NAME.json`, headed by the
date, machine, load and the command that produced it. A result that does not exist yet renders as
the command that would produce it, so the doc never shows a number nobody measured.

  python -m benchmarks.render
"""

from __future__ import annotations

import argparse
import pathlib
import re
from collections.abc import Callable
from typing import Any

from benchmarks import common

DOC = common.REPO / "docs" / "benchmarks.md"
MiB = 2**20


def _header(r: dict[str, Any]) -> list[str]:
  m = r["machine"]
  cpu = m.get("cpu", {})
  where = (f"{m.get('device_kind', '?')} x{m.get('device_count', '?')}" if m.get("platform") not in (None, "cpu")
           else f"{cpu.get('model_name', '?')}, {cpu.get('cpus', '?')} CPUs, {m.get('memory_gib', '?')} GiB")
  load = ""
  if r.get("load_before") is not None:
    load = f"; load average (1/5/15 min) {r['load_before']} before, {r.get('load_after')} after"
  versions = "".join(f"; {k} {v}" for k, v in r.get("versions", {}).items())
  depthwise = f"; depthwise {m['depthwise']}" if m.get("depthwise") else ""
  return [f"Measured {r['date']} on {where} (`{m.get('hostname', '?')}`){load}{versions}; git {r.get('git')}"
          f"{depthwise}.",
          "", f"    {r['command']}", ""]


def _table(head: list[str], rows: list[list[Any]]) -> list[str]:
  out = ["| " + " | ".join(head) + " |", "|" + "|".join(" --- " for _ in head) + "|"]
  out += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
  return out + [""]


def _f(x: Any, fmt: str = ".2f") -> str:
  return "–" if x is None or x != x else format(x, fmt)


def train_step(r: dict[str, Any]) -> list[str]:
  peaks = r.get("peaks", {})
  lines = _header(r)
  for dtype, p in peaks.items():
    matmul = f"; measured {dtype} matmul peak {p['matmul'] / 1e9:.0f} GFLOP/s" if "matmul" in p else ""
    lines.append(f"- Peak {dtype}: theoretical {p['theoretical'] / 1e12:.3g} TFLOP/s "
                 f"({p['theoretical_basis']}){matmul}.")
  lines.append("")
  has_keras = any("keras" in x for x in r["results"])
  head = ["model", "px", "dtype", "batch", "LeukoJAX img/s"]
  head += ["Keras img/s", "**ratio**"] if has_keras else []
  head += ["LeukoJAX step ms", "compile s cold / warm", "model GFLOP/step", "TFLOP/s",
           "MFU (matmul peak / theoretical)", "peak memory MiB"]
  if has_keras:
    head += ["Keras compile s", "Keras XLA GFLOP/step", "Keras MFU (matmul / theor.)", "Keras peak MiB"]
  rows = []
  for x in r["results"]:
    lj = x["leukojax"]
    row = [x["model"], x["image_size"], x["dtype"], x["batch"], _f(lj["images_per_s"])]
    if has_keras:
      row += [_f(x["keras"]["images_per_s"]), f"**{_f(x['ratio'])}**"] if "keras" in x else ["–", "–"]
    row += [_f(lj["step_s"]["median"] * 1e3, ".0f"),
            f"{_f(lj['compile_s'], '.1f')} / {_f(lj.get('warm_compile_s'), '.1f')}",
            _f(x.get("model_flops_per_step", lj["flops_per_step"]) / 1e9, ".1f"), _f(lj["tflops_per_s"], ".3f"),
            f"{_f(lj.get('mfu_matmul', float('nan')) * 100, '.0f')}% / "
            f"{_f(lj.get('mfu_theoretical', float('nan')) * 100, '.0f')}%",
            _f(lj["memory"].get("peak", float("nan")) / MiB, ".0f")]
    if has_keras and "keras" in x:
      k = x["keras"]
      row += [_f(k["compile_s"], ".1f"), _f(k["flops_per_step"] / 1e9, ".1f"),
              f"{_f(k.get('mfu_matmul', float('nan')) * 100, '.0f')}% / "
              f"{_f(k.get('mfu_theoretical', float('nan')) * 100, '.0f')}%",
              _f(k["memory"].get("peak", float("nan")) / MiB, ".0f")]
    rows.append(row)
  return lines + _table(head, rows)


def depthwise(r: dict[str, Any]) -> list[str]:
  lines = _header(r)
  rows = [[x["model"], x["image_size"], x["dtype"], x["batch"], _f(x["xla"]["step_s"]["median"] * 1e3, ".0f"),
           _f(x["shifted_grads"]["step_s"]["median"] * 1e3, ".0f"), f"**{_f(x['speedup'])}x**",
           _f(x["shifted"]["step_s"]["median"] * 1e3, ".0f") if "shifted" in x else "–",
           f"{_f(x.get('speedup_shifted'))}x" if x.get("speedup_shifted") else "–",
           f"{_f(x['depthwise_share_of_xla_step'] * 100, '.0f')}%",
           f"{_f(x['xla']['flops_per_step'] / 1e9, '.1f')} / "
           f"{_f(x['shifted_grads']['flops_per_step'] / 1e9, '.1f')}",
           " / ".join(_f(x[impl]["memory"].get("peak", float("nan")) / MiB, ".0f")
                      for impl in ("xla", "shifted_grads", "shifted") if impl in x)]
          for x in r["steps"]]
  lines += _table(["model", "px", "dtype", "batch", "step ms: XLA grouped conv", "step ms: shifted grads",
                   "speed-up", "step ms: all shifted (CPU default since 2026-12-07)", "speed-up",
                   "XLA depthwise waste (share of its step)", "XLA GFLOP/step: XLA / shifted grads",
                   "peak MiB: XLA / shifted grads / all shifted"], rows)
  if r.get("xception_layers"):
    lines += ["Xception's depthwise layers alone (forward + input and kernel gradients), at the same size:", ""]
    rows = [[f"{x['spatial']}x{x['spatial']}x{x['channels']}", x["layers"], _f(x["xla_s"] * 1e3, ".1f"),
             _f(x["shifted_grads_s"] * 1e3, ".1f"), _f(x["shifted_s"] * 1e3, ".1f"), f"{_f(x['speedup'], '.1f')}x"]
            for x in r["xception_layers"]]
    lines += _table(["map", "layers", "XLA ms", "shifted grads ms", "all shifted ms", "speed-up (shifted grads)"], rows)
  return lines


def profile(r: dict[str, Any]) -> list[str]:
  lines = _header(r)
  kinds = ["conv", "depthwise conv", "matmul", "layout copy", "elementwise", "pooling", "reduction", "other"]
  rows = [[x["framework"], x["model"], x["image_size"], x["dtype"], _f(x["step_s"] * 1e3, ".0f")]
          + [f"{x['by_kind'][k]['seconds'] * 1e3:.0f} ({x['by_kind'][k]['share'] * 100:.0f}%)"
             if k in x["by_kind"] else "–" for k in kinds]
          for x in r["results"]]
  lines += ["Per kind of HLO op: ms per step summed over the executor's threads (CPU time on CPU), and its share.", ""]
  return lines + _table(["framework", "model", "px", "dtype", "step ms (wall)"] + kinds, rows)


def pipeline(r: dict[str, Any], results: pathlib.Path = common.RESULTS) -> list[str]:
  lines = _header(r)
  lines.append(f"{r['train_images']} training images (benign vs Pro-B, bundled real sample), batch {r['batch']}, "
               f"{r['image_size']} px; building the TFDS dataset once took {r['build_s']:.1f} s.")
  lines.append("")
  need, source = None, None
  for name in (f"train_step_gpu_{r['size']}", f"train_step_cpu_{r['size']}"):
    step = common.read_result(name, results)
    if step and step["results"]:
      need, source = max(x["leukojax"]["images_per_s"] for x in step["results"]), name
      break
  rows = []
  for x in r["rows"]:
    s = x["stage_seconds"]
    rows.append([x["augment"], x["workers"], f"**{_f(x['images_per_s'], '.0f')}**", _f(x["startup_s"], ".1f"),
                 _f(s["decode"] * 1e3), _f(s["resize"] * 1e3), _f(s["augment"] * 1e3), _f(s["normalize"] * 1e3),
                 _f(x["images_per_s"] / need, ".0f") + "x" if need else "–"])
  lines += _table(["augmentation", "workers", "images/s", "start-up s", "decode ms/img", "resize ms/img",
                   "augment ms/img", "normalise ms/img", "vs fastest train step at this size"], rows)
  if need:
    lines += [f"The fastest LeukoJAX train step at this size (`{source}`) consumes "
              f"{need:.1f} images/s.", ""]
  return lines


def scaling(r: dict[str, Any]) -> list[str]:
  lines = _header(r)
  lines += [f"{r['model']}, global batch {r['batch']}, {r['dtype']}, size {r['size']}.", ""]
  rows = [[x["devices"], x["processes"], r["batch"] // x["devices"],
           _f(x["step_s"]["median"] * 1e3, ".0f"), _f(r["batch"] / x["step_s"]["median"], ".1f"),
           "–" if x.get("overhead_vs_1_device") is None else f"{_f(x['overhead_vs_1_device'] * 100, '+.0f')}%",
           _f(x["compile_s"], ".1f")] for x in r["rows"]]
  return lines + _table(["devices", "processes", "batch per device", "step ms", "images/s", "overhead vs 1 device",
                         "compile s"], rows)


def goodput(r: dict[str, Any]) -> list[str]:
  lines = _header(r)
  lines += [f"Each run through `python -m leukojax.main` for {r['epochs']} epochs; the loop column times "
            "epochs 2.. (epoch 1 holds the compilation) with validation and checkpoints included.", ""]
  rows = [[f"`{x['config']}`", x["model"], x["image_size"], x["batch"], x["pipeline"]["train_images"],
           x["loop"]["steps_per_epoch"], _f(x["loop"]["images_per_s"]), _f(x["step"]["images_per_s"]),
           f"**{_f(x['goodput'] * 100, '.0f')}%**", _f(x["pipeline"]["images_per_s"], ".0f"),
           x["pipeline"]["workers"], _f(x["pipeline_vs_step"], ".1f") + "x", _f(x["loop"]["first_epoch_s"], ".0f")]
          for x in r["rows"]]
  header = ["config", "model", "px", "batch", "train images", "steps/epoch", "loop img/s", "bare step img/s",
            "goodput", "pipeline img/s", "grain workers", "pipeline / step", "epoch 1 s (compile)"]
  if all("validation_s" in x["loop"] for x in r["rows"]):  # recorded by the loop since 2026-12-07
    header += ["epoch s", "validation s"]
    for row, x in zip(rows, r["rows"]):
      row += [_f(x["loop"][k], ".2f") for k in ("epoch_s", "validation_s")]
  return lines + _table(header, rows)


SECTIONS: dict[str, tuple[Callable[[dict[str, Any]], list[str]], str]] = {
    "train_step_cpu_final": (train_step, "python -m benchmarks.run --suite quick"),
    "train_step_cpu_cpu": (train_step, "python -m benchmarks.train_step --size cpu"),
    "train_step_cpu_paper": (train_step, "python -m benchmarks.train_step --size paper --batch 4 --models hybrid"),
    "train_step_gpu_paper": (train_step, "python -m benchmarks.run --suite gpu"),
    "depthwise_cpu_cpu": (depthwise, "python -m benchmarks.depthwise --size cpu --models xception,mobilenet"),
    "depthwise_cpu_cpu_hybrid": (depthwise, "python -m benchmarks.depthwise --size cpu --models hybrid --impls "
                                            "xla,shifted_grads,shifted --layer_models '' --name depthwise_cpu_cpu_hybrid"),
    "depthwise_cpu_paper_xception": (depthwise, "python -m benchmarks.depthwise --size paper --batch 4 --models "
                                                "xception --layer_models '' --repeats 1 --steps 1 "
                                                "--name depthwise_cpu_paper_xception"),
    "depthwise_gpu_paper": (depthwise, "python -m benchmarks.run --suite gpu"),
    "profile_cpu_cpu": (profile, "python -m benchmarks.profile --size cpu --keras"),
    "profile_gpu_paper": (profile, "python -m benchmarks.run --suite gpu"),
    "pipeline_cpu": (pipeline, "python -m benchmarks.pipeline --size cpu"),
    "pipeline_paper": (pipeline, "python -m benchmarks.pipeline --size paper"),
    "scaling_cpu": (scaling, "python -m benchmarks.scaling --size cpu"),
    "goodput_cpu": (goodput, "python -m benchmarks.goodput"),
    "goodput_cnmc": (goodput, "python -m benchmarks.goodput --runs lite0_cnmc,hybrid_cnmc --epochs 3 "
                              "--name goodput_cnmc"),
    "goodput_cnmc_nostore": (goodput, "python -m benchmarks.goodput --runs lite0_cnmc,hybrid_cnmc --epochs 3 "
                                      "--cache_prepared_mb 0 --name goodput_cnmc_nostore"),
    "profile_cpu_keras": (profile, "python -m benchmarks.profile --models vgg16,inception_v3,resnet50 --size cpu "
                                   "--batch 8 --keras --steps 3 --name profile_cpu_keras"),
}


def render_section(name: str, results: pathlib.Path = common.RESULTS) -> str:
  fn, command = SECTIONS[name]
  result = common.read_result(name, results)
  if result is None:
    return f"Not measured yet. Produce it with:\n\n    {command}\n"
  return "\n".join(fn(result, results) if fn is pipeline else fn(result))


def render(doc: pathlib.Path = DOC, results: pathlib.Path = common.RESULTS) -> None:
  text = doc.read_text()
  for name in SECTIONS:
    pattern = re.compile(rf"(<!-- benchmarks:{name} -->\n).*?(<!-- /benchmarks:{name} -->)", re.S)
    text = pattern.sub(lambda m, name=name: m.group(1) + render_section(name, results) + "\n" + m.group(2),
                       text)
  doc.write_text(text)


def main(argv: list[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--doc", default=str(DOC))
  parser.add_argument("--results", default=str(common.RESULTS))
  args = parser.parse_args(argv)
  render(pathlib.Path(args.doc), pathlib.Path(args.results))
  print("rendered", args.doc)


if __name__ == "__main__":
  main()
