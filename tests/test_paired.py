"""The paired comparison of two runs on the same test images (`leukojax.compare --paired`)."""

from __future__ import annotations

import csv
import json
import subprocess
import sys

import numpy as np
import pytest

from leukojax.evaluation import bootstrap, paired


def _write_run(workdir, rows, classes=("all",)):
  (workdir / "predictions").mkdir(parents=True)
  with open(workdir / "predictions" / "test.csv", "w", newline="") as f:
    writer = csv.writer(f)
    writer.writerow(["file_name", "subject_id", "label", *(f"p_{c}" for c in classes)])
    for row in rows:
      writer.writerow(row)
  return str(workdir)


def _cells(seed: int, better: bool):
  """8 subjects (4 ALL, 4 healthy), 30 cells each; `better` scores ALL cells more confidently."""
  rng = np.random.default_rng(seed)
  rows = []
  for s in range(8):
    label = int(s < 4)
    for c in range(30):
      p = np.clip(rng.normal(0.6 if label else 0.4, 0.2) + (0.15 if better and label else 0.0), 0, 1)
      rows.append((f"UID_{s}_{c}.bmp", f"S{s}", label, f"{p:.6f}"))
  return rows


def test_a_run_against_itself_differs_by_exactly_nothing(tmp_path):
  rows = _cells(0, better=False)
  a = paired.read_arm([_write_run(tmp_path / "a", rows)])
  b = paired.read_arm([_write_run(tmp_path / "b", list(reversed(rows)))])  # order does not matter
  result = paired.paired_difference(a, b, n_resamples=200)
  assert result["unit"] == "subject" and result["n_units"] == 8 and result["n_images"] == 240
  for m in result["metrics"].values():
    assert m["difference"] == 0 and m["ci"] == [0, 0] and m["b_ahead"] == 0 and m["tied"] == 1


def test_a_better_run_is_ahead_and_the_point_values_are_each_runs_own_metrics(tmp_path):
  scratch, better = _cells(0, better=False), _cells(0, better=True)
  a = paired.read_arm([_write_run(tmp_path / "a", scratch)])
  b = paired.read_arm([_write_run(tmp_path / "b", better)])
  result = paired.paired_difference(a, b, n_resamples=300)
  sens = result["metrics"]["sensitivity"]
  assert sens["difference"] > 0.1 and sens["ci"][0] > 0 and sens["b_ahead"] == 1.0
  assert result["metrics"]["specificity"]["difference"] == 0  # healthy cells unchanged
  ones = np.ones((1, 240), np.float32)
  own = bootstrap.statistics(b.labels, b.probs, ones, threshold=0.5, class_names=b.class_names)
  assert result["metrics"]["isbi_weighted_f1"]["b"] == pytest.approx(float(own["isbi_weighted_f1"][0]))


def test_folds_pool_into_one_arm_and_other_images_are_refused(tmp_path):
  rows = _cells(1, better=False)
  fold0, fold1 = [r for r in rows if r[1] in ("S0", "S1", "S4", "S5")], [r for r in rows if r[1] in ("S2", "S3", "S6", "S7")]
  a = paired.read_arm([_write_run(tmp_path / "f0", fold0), _write_run(tmp_path / "f1", fold1)])
  whole = paired.read_arm([_write_run(tmp_path / "whole", rows)])
  assert paired.paired_difference(a, whole, n_resamples=50)["metrics"]["AUC"]["difference"] == 0
  with pytest.raises(paired.PairedComparisonError, match="not scored on the same images: 0 only in .*f0, 120 only"):
    paired.paired_difference(paired.read_arm([str(tmp_path / "f0")]), whole)
  with pytest.raises(paired.PairedComparisonError, match="appears twice"):
    paired.read_arm([str(tmp_path / "f0"), str(tmp_path / "f0")])
  with pytest.raises(paired.PairedComparisonError, match="predictions/test.csv is missing"):
    paired.read_arm([str(tmp_path / "nowhere")])


def test_four_classes_without_subjects_resample_images(tmp_path):
  rng = np.random.default_rng(0)
  classes = ("benign", "early", "pre", "pro")
  labels = rng.integers(0, 4, 200)
  noisy = rng.dirichlet(np.ones(4), 200)
  sharp = 0.5 * noisy + 0.5 * np.eye(4)[labels]
  rows_a = [(f"{i}.jpg", "", int(y), *(f"{p:.6f}" for p in q)) for i, (y, q) in enumerate(zip(labels, noisy))]
  rows_b = [(f"{i}.jpg", "", int(y), *(f"{p:.6f}" for p in q)) for i, (y, q) in enumerate(zip(labels, sharp))]
  a = paired.read_arm([_write_run(tmp_path / "a", rows_a, classes)])
  b = paired.read_arm([_write_run(tmp_path / "b", rows_b, classes)])
  assert a.class_names == classes and a.probs.shape == (200, 4)
  result = paired.paired_difference(a, b, n_resamples=200)
  assert result["unit"] == "image" and "isbi_weighted_f1" not in result["metrics"] and result["threshold"] is None
  assert "stratified by class), arg-max" in paired.format_markdown(result)
  assert result["metrics"]["accuracy"]["ci"][0] > 0.2  # from chance to well above it


def test_the_command_prints_the_table_and_writes_json(tmp_path):
  a = _write_run(tmp_path / "a", _cells(2, better=False))
  b = _write_run(tmp_path / "b", _cells(2, better=True))
  out = tmp_path / "paired.json"
  result = subprocess.run([sys.executable, "-m", "leukojax.compare", "--paired", a, b, f"--json={out}"],
                          capture_output=True, text=True, check=False)
  assert result.returncode == 0, result.stderr[-2000:]
  assert "| sensitivity |" in result.stdout and "paired bootstrap over 8 subjects" in result.stdout
  assert json.loads(out.read_text())["metrics"]["sensitivity"]["b_ahead"] == 1.0
  wrong = subprocess.run([sys.executable, "-m", "leukojax.compare", "--paired", a, str(tmp_path / "none")],
                         capture_output=True, text=True, check=False)
  assert wrong.returncode == 1 and "predictions/test.csv is missing" in wrong.stderr
