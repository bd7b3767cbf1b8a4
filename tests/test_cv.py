"""Subject cross-validation end to end on REAL cells: the cell-feature baseline on both folds of the
bundled C-NMC sample, pooled by `leukojax.cv` (every subject tested once, by the fold that never
trained on it)."""

import json
import subprocess
import sys

import numpy as np
import pytest

from leukojax.evaluation import cross_validation as cv
from leukojax.baselines import cell_features
from leukojax.configs import hybrid
from tests.conftest import REPO

SUBJECTS = {"2", "16", "30", "34", "44", "51", "H10", "H14"}


@pytest.fixture(scope="module")
def folds(tmp_path_factory):
  base = tmp_path_factory.mktemp("cv")
  out = []
  for fold in (0, 1):
    config = hybrid.get_config("sample")
    config.data.data_dir = str(base / "tfds")
    config.data.split.fold = fold
    cell_features.run(config, str(base / f"features_fold{fold}"))
    out.append(str(base / f"features_fold{fold}"))
  return out


def test_baseline_writes_a_run_like_report(folds):
  with open(f"{folds[0]}/report.json") as f:
    report = json.load(f)
  assert report["model"] == cell_features.MODEL_NAME and report["protocol"] == "subject_cv"
  test = report["splits"]["test"]
  assert test["n_subjects"] == 4 and test["ci_unit"] == "subject"
  assert 0.0 <= test["isbi_weighted_f1"] <= 1.0 and len(report["coefficients"]) == 18
  assert "area" in report["coefficients"]


def test_pooled_folds_test_every_subject_once(folds, tmp_path):
  result = subprocess.run([sys.executable, "-m", "leukojax.cv", *folds, f"--out={tmp_path}"],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  with open(tmp_path / "cv_report.json") as f:
    pooled = json.load(f)
  assert {s["subject_id"] for s in pooled["subjects"]} == SUBJECTS
  assert pooled["pooled"]["n_subjects"] == 8
  assert pooled["pooled"]["n_images"] == 87  # 88 cells, one real duplicate removed
  assert sum(s["cells"] for s in pooled["subjects"]) == 87
  by_fold = {f["fold"]: f for f in pooled["folds"]}
  for fold in (0, 1):
    (healthy, accuracy), = by_fold[fold]["healthy_subjects"].items()
    with open(f"{folds[fold]}/report.json") as f:
      assert accuracy == pytest.approx(json.load(f)["splits"]["test"]["specificity"])  # one healthy subject
  cells = np.array([s["cells"] for s in pooled["subjects"]])
  accuracy = np.array([s["accuracy"] for s in pooled["subjects"]])
  assert pooled["pooled"]["accuracy"] == pytest.approx((cells * accuracy).sum() / cells.sum())
  text = (tmp_path / "cv_report.md").read_text()
  for heading in ("## Pooled, threshold 0.5", "## Per fold", "## Per subject", "Subjects behind the pooled figures:** 8"):
    assert heading in text


def test_folds_that_overlap_are_refused(folds):
  with pytest.raises(cv.CrossValidationError, match="Fold numbers repeat"):
    cv.cross_validate([folds[0], folds[0]])
  with pytest.raises(cv.CrossValidationError, match=r"config\.json is missing"):
    cv.cross_validate([folds[0], folds[0] + "_nothing"])
