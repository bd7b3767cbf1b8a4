"""The benchmark suite's smallest configuration runs and writes JSON that renders (timings never asserted)."""

import json

from benchmarks import render, train_step


def test_smallest_train_step_benchmark_writes_and_renders(tmp_path):
  train_step.main(["--models", "vgg16", "--size", "32", "--batch", "2", "--dtypes", "float32",
                   "--repeats", "1", "--steps", "1", "--no-compile-cache", "--peak_size", "128",
                   "--name", "train_step_cpu_cpu", "--out_dir", str(tmp_path)])
  record = json.loads((tmp_path / "train_step_cpu_cpu.json").read_text())
  assert {"date", "command", "machine", "versions"} <= set(record)
  assert record["command"].startswith("python -m benchmarks.train_step") or "train_step" in record["command"]
  (row,) = record["results"]
  assert row["model"] == "vgg16" and row["image_size"] == 32 and row["batch"] == 2
  for framework in ("leukojax", "keras"):
    entry = row[framework]
    assert entry["images_per_s"] > 0 and entry["compile_s"] > 0 and entry["flops_per_step"] > 0
    assert entry["memory"]["peak"] > 0
  # Both frameworks run the same model (VGG16: no depthwise layers, whose Keras gradients XLA inflates),
  # so XLA counts nearly the same FLOPs for the two steps.
  assert abs(row["leukojax"]["flops_per_step"] / row["keras"]["flops_per_step"] - 1) < 0.1
  assert row["ratio"] > 0 and record["peaks"]["float32"]["theoretical"] > 0

  doc = tmp_path / "benchmarks.md"
  doc.write_text("<!-- benchmarks:train_step_cpu_cpu -->\nSTALE\n<!-- /benchmarks:train_step_cpu_cpu -->\n")
  render.render(doc, tmp_path)
  text = doc.read_text()
  assert "| vgg16 | 32 | float32 | 2 |" in text and "STALE" not in text and "python -m benchmarks" in text
