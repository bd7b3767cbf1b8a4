"""`leukojax.compare`: one table over binary and multi-class runs, intervals beside each value."""

import json

import pytest

from leukojax.evaluation import comparison as compare


def _write(path, model, split_values, unit="image"):
  path.mkdir(parents=True)
  report = {"model": model, "checkpoint_step": 12, "protocol_note": "image-level split",
            "bootstrap": {"confidence": 0.95, "unit": unit, "n_resamples": 1000},
            "splits": {"test": split_values}}
  (path / "report.json").write_text(json.dumps(report))
  return str(path)


def test_binary_and_multiclass_runs_share_the_columns(tmp_path):
  binary = _write(tmp_path / "vgg16_binary", "vgg16", {
      "TP": 5, "n": 10, "accuracy": 0.9, "balanced_accuracy": 0.875, "macro_f1": 0.88,
      "isbi_weighted_f1": 0.89, "AUC": 0.95,
      "ci": {"accuracy": [0.8, 1.0], "isbi_weighted_f1": [0.7, 0.99], "AUC": [0.9, 1.0]}})
  multi = _write(tmp_path / "vgg16_four", "vgg16", {
      "n": 20, "accuracy": 0.75, "balanced_accuracy": 0.7, "macro_f1": 0.71, "weighted_f1": 0.74,
      "AUC": float("nan"), "ci": {"weighted_f1": [0.6, 0.85]}})
  lines = compare.table([binary, multi]).splitlines()
  assert lines[0] == ("| run | model | step | n | accuracy | balanced accuracy | macro F1 | weighted F1 | AUC | "
                      "correct (exact 95%) |")
  assert lines[2] == ("| vgg16_binary | vgg16 | 12 | 10 | 0.900 [0.800, 1.000] | 0.875 | 0.880 | "
                      "0.890 [0.700, 0.990] | 0.950 [0.900, 1.000] | 9/10 [0.555, 0.997] |")  # weighted F1: ISBI
  assert lines[3] == ("| vgg16_four | vgg16 | 12 | 20 | 0.750 | 0.700 | 0.710 | 0.740 [0.600, 0.850] | n/a | "
                      "15/20 [0.509, 0.913] |")
  assert lines[-1] == "Protocol: image-level split; 95% intervals: bootstrap over images (1000 resamples)."


def test_missing_report_or_split_names_the_fix(tmp_path):
  with pytest.raises(FileNotFoundError, match="leukojax.evaluate --workdir"):
    compare.table([str(tmp_path / "nothing")])
  run = _write(tmp_path / "run", "mobilenet", {"n": 1, "accuracy": 1.0})
  with pytest.raises(KeyError, match="no 'val' split"):
    compare.table([run], split="val")


def test_exact_interval_matches_the_closed_forms():
  # all correct: the lower bound solves p**n = alpha/2; none correct mirrors it
  low, high = compare.exact_interval(167, 167)
  assert high == 1.0 and low == pytest.approx(0.025 ** (1 / 167))
  low, high = compare.exact_interval(0, 17)
  assert low == 0.0 and high == pytest.approx(1 - 0.025 ** (1 / 17))
