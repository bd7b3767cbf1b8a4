"""`leukojax.predict` on a user's own C-NMC cells: subjects and truth from names or the label CSV, scores.

Real cells throughout: a tiny run trained on the bundled C-NMC sample through the real entry point
(tests/conftest.py `cnmc_mobilenet_run`), then predicted as a user would, on the sample's all/hem
folders, a flat folder of UID_ names and a test-phase folder with the official CSV format.
"""

import csv
import json
import os
import pathlib
import shutil
import subprocess
import sys

import numpy as np
import pytest

from leukojax.evaluation import cnmc_scores, prediction
from leukojax.data import cnmc_names, errors
from tests.conftest import CNMC_RUN, REPO

CNMC_SAMPLE = REPO / "tfds_builders" / "cnmc2019" / "sample"
FOLD_1 = CNMC_SAMPLE / "C-NMC_Leukemia" / "training_data" / "fold_1"
PRELIM_CSV = cnmc_names.PRELIM_CSV
# Test-phase cells: k.bmp is a copy of this real cell (classes shuffled, so order says nothing).
TEST_PHASE = ["hem/UID_H10_93_4_hem.bmp", "all/UID_2_5_3_all.bmp", "hem/UID_H14_14_2_hem.bmp",
              "all/UID_16_1_3_all.bmp"]


def predict_cli(workdir: pathlib.Path, *args) -> subprocess.CompletedProcess:
  return subprocess.run([sys.executable, "-m", "leukojax.predict", f"--workdir={workdir}", *map(str, args)],
                        cwd=REPO, capture_output=True, text=True, timeout=300,
                        env={**os.environ, "JAX_PLATFORMS": "cpu"})


def read_rows(path: pathlib.Path) -> list[dict[str, str]]:
  with path.open(newline="") as f:
    return list(csv.DictReader(f))


def write_test_phase(folder: pathlib.Path, csv_path: pathlib.Path | None, extra: int = 0) -> None:
  """Copies `TEST_PHASE` as 1.bmp, 2.bmp, ... (+ `extra` unlisted ones) and writes the official CSV."""
  folder.mkdir(parents=True)
  for k, rel in enumerate(TEST_PHASE + TEST_PHASE[:extra], start=1):
    shutil.copy(FOLD_1 / rel, folder / f"{k}.bmp")
  if csv_path is not None:
    rows = [f"{pathlib.Path(rel).name},{k}.bmp,{int(rel.startswith('all/'))}" for k, rel in
            enumerate(TEST_PHASE, start=1)]
    csv_path.write_bytes(("\r\n".join(["Patient_ID,new_names,labels", *rows]) + "\r\n").encode())


@CNMC_RUN
def test_all_hem_folders_give_subjects_truth_and_scores(cnmc_mobilenet_run, tmp_path):
  out = tmp_path / "cells.csv"
  result = predict_cli(cnmc_mobilenet_run, f"--out={out}", FOLD_1)
  assert result.returncode == 0, result.stderr[-3000:]
  rows = read_rows(out)
  assert list(rows[0])[:4] == ["file", "probability", "label", "class"]  # old readers keep working
  assert list(rows[0])[4:] == ["subject_id", "true_label", "geometry"] and len(rows) == 88
  assert not any(row["geometry"] for row in rows)  # real C-NMC cells, as in training
  for row in rows:
    name = pathlib.Path(row["file"]).name
    assert row["subject_id"] == name.split("_")[1].upper()
    assert row["true_label"] == ("1" if pathlib.Path(row["file"]).parent.name == "all" else "0")
  scores = json.loads((tmp_path / "cells_scores.json").read_text())
  assert (tmp_path / "cells_scores.md").read_text().startswith("# C-NMC scores")
  correct = [row["label"] == row["true_label"] for row in rows]
  pooled = scores["pooled"]
  assert pooled["accuracy"] == pytest.approx(np.mean(correct)) and pooled["cells"] == 88 and pooled["subjects"] == 8
  assert pooled["support"]["sensitivity"] == {"cells": 42, "subjects": 6}
  assert pooled["support"]["specificity"] == {"cells": 46, "subjects": 2}
  counts = {s["subject_id"]: s["cells"] for s in scores["subjects"]}
  assert counts == {**{sid: 7 for sid in ("2", "16", "30", "34", "44", "51")}, "H10": 23, "H14": 23}
  assert {s["accuracy_is"] for s in scores["subjects"]} == {"sensitivity", "specificity"}
  assert scores["threshold_source"] and "Weighted F1 (ISBI 2019 score)" in result.stdout
  assert "Not held out" in result.stdout  # the run trained on some of these subjects


@CNMC_RUN
def test_flat_uid_folder_and_test_phase_folder_with_its_csv(cnmc_mobilenet_run, tmp_path):
  flat = tmp_path / "flat"
  flat.mkdir()
  for rel in ("all/UID_30_14_6_all.bmp", "hem/UID_H14_14_2_hem.bmp"):
    shutil.copy(FOLD_1 / rel, flat / pathlib.Path(rel).name.lower())  # lower case: uid_h14_... -> H14
  kaggle = tmp_path / "validation_data"  # Kaggle layout: the CSV in the folder above the images
  write_test_phase(kaggle / "C-NMC_test_prelim_phase_data", kaggle / PRELIM_CSV)
  out = tmp_path / "p.csv"
  result = predict_cli(cnmc_mobilenet_run, f"--out={out}", flat, kaggle / "C-NMC_test_prelim_phase_data")
  assert result.returncode == 0, result.stderr[-3000:]
  got = {pathlib.Path(r["file"]).name: (r["subject_id"], r["true_label"]) for r in read_rows(out)}
  assert got == {"uid_30_14_6_all.bmp": ("30", "1"), "uid_h14_14_2_hem.bmp": ("H14", "0"),
                 "1.bmp": ("H10", "0"), "2.bmp": ("2", "1"), "3.bmp": ("H14", "0"), "4.bmp": ("16", "1")}
  scores = json.loads((tmp_path / "p_scores.json").read_text())
  assert scores["label_sources"] == {"file name": 2, str(kaggle / PRELIM_CSV): 4}


@CNMC_RUN
def test_labels_flag_and_a_test_phase_image_it_does_not_list(cnmc_mobilenet_run, tmp_path):
  images = tmp_path / "images"
  write_test_phase(images, tmp_path / "my_labels.csv", extra=1)  # 5.bmp has no row
  out = tmp_path / "p.csv"
  result = predict_cli(cnmc_mobilenet_run, f"--out={out}", f"--labels={tmp_path / 'my_labels.csv'}", images)
  assert result.returncode == 0, result.stderr[-3000:]
  got = [(pathlib.Path(r["file"]).name, r["subject_id"], r["true_label"]) for r in read_rows(out)]
  assert got == [("1.bmp", "H10", "0"), ("2.bmp", "2", "1"), ("3.bmp", "H14", "0"), ("4.bmp", "16", "1"),
                 ("5.bmp", "", "-1")]
  assert "no row in" in result.stderr and str(images / "5.bmp") in result.stderr
  scores = json.loads((tmp_path / "p_scores.json").read_text())
  assert scores["cells_labelled"] == 4 and scores["cells_unlabelled"] == 1


@CNMC_RUN
def test_uid_file_in_the_wrong_class_folder_fails_naming_it(cnmc_mobilenet_run, tmp_path):
  wrong = tmp_path / "mine" / "all" / "UID_H10_93_4_hem.bmp"
  wrong.parent.mkdir(parents=True)
  shutil.copy(FOLD_1 / "hem" / wrong.name, wrong)
  shutil.copy(FOLD_1 / "all" / "UID_2_5_3_all.bmp", wrong.parent)
  result = predict_cli(cnmc_mobilenet_run, f"--out={tmp_path / 'p.csv'}", tmp_path / "mine")
  assert result.returncode != 0 and str(wrong) in result.stderr and "move it to hem/" in result.stderr
  assert not (tmp_path / "p.csv").exists()


# --- without a model -------------------------------------------------------------------------------

def test_names_that_say_nothing_stay_unknown_and_bad_csvs_are_named(tmp_path):
  truth, warnings = cnmc_names.read_truth([str(tmp_path / "UID_7.bmp"), str(tmp_path / "3.bmp"),
                                           str(tmp_path / "cell.png"), str(tmp_path / "UID_h3_1_2_ALL.png")])
  assert truth[:3] == [cnmc_names.CellTruth()] * 3 and truth[3] == cnmc_names.CellTruth("H3", 1, "file name")
  assert any("UID_7.bmp" in w for w in warnings) and any("3.bmp" in w and "--labels" in w for w in warnings)
  with pytest.raises(errors.CsvMismatchError, match="missing.csv does not exist"):
    cnmc_names.read_truth([str(tmp_path / "1.bmp")], str(tmp_path / "missing.csv"))
  (tmp_path / "bad.csv").write_text("Patient_ID,new_names,labels\nUID_2_5_3_all.bmp,1.bmp,0\n")
  with pytest.raises(errors.CsvMismatchError, match="bad.csv line 2"):
    cnmc_names.read_truth([str(tmp_path / "1.bmp")], str(tmp_path / "bad.csv"))


def test_other_tasks_keep_the_four_column_csv_and_get_no_scores(tmp_path):
  taleqani = prediction.Prediction(file_names=["a.jpg"], probs=np.array([0.7]), labels=np.array([1]),
                                   threshold=0.5, threshold_source="given", class_names=("benign", "pro_b"),
                                   skipped=[], result=None)
  prediction.write_csv(taleqani, str(tmp_path / "t.csv"))
  assert (tmp_path / "t.csv").read_text().splitlines()[0] == "file,probability,label,class"
  assert cnmc_scores.cnmc_scores(taleqani) is None
