"""Evaluation reports, TTA and prediction on real (tiny) runs: `leukojax.evaluate`, `leukojax.predict`."""

import csv
import json
import os
import pathlib
import shutil
import subprocess
import sys
import zipfile

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image
from flax import nnx

from leukojax.evaluation import inference, isbi, prediction, restore, run_evaluation, tta
from leukojax.training import inputs, sharding, state as state_lib
from leukojax.configs import baselines
from leukojax.data.synthetic_cnmc import write_synthetic_cnmc
from tests.conftest import REPO, SAMPLE_MANUAL_DIR


def run_cli(module: str, *args: str) -> subprocess.CompletedProcess:
  return subprocess.run([sys.executable, "-m", module, *map(str, args)], cwd=REPO, capture_output=True,
                        text=True, timeout=600, env={**os.environ, "JAX_PLATFORMS": "cpu"})


# --- TTA -------------------------------------------------------------------------------------------

class _Toy(nnx.Module):
  """A linear read-out of the mean colour (rotation invariant) or of the top-left corner (not)."""

  def __init__(self, outputs: int, invariant: bool):
    self.invariant = invariant
    self.dense = nnx.Linear(3, outputs, rngs=nnx.Rngs(0))

  def __call__(self, x):
    return self.dense(x.mean((1, 2)) if self.invariant else x[:, :2, :3].mean((1, 2)))


def _toy_state(outputs: int, invariant: bool):
  graphdef, params, rest = nnx.split(_Toy(outputs, invariant), nnx.Param, ...)
  graphs = state_lib.ModelGraphs(train=graphdef, frozen=graphdef, eval=graphdef)
  return graphs, state_lib.ModelVariables(params=params, model_state=rest)


def _batch(n=4, size=6):
  images = np.random.default_rng(0).normal(size=(n, size, size, 3)).astype(np.float32) * 4
  return {"image": images, "label": np.arange(n) % 2, "mask": np.ones(n, bool), "index": np.arange(n)}


def test_dihedral_views_are_the_eight_rotations_and_mirror_images():
  image = np.arange(4 * 4 * 1, dtype=np.float32).reshape(1, 4, 4, 1)
  views = np.asarray(tta.dihedral_views(jnp.asarray(image)))[:, 0, :, :, 0]
  expected = [np.rot90(image[0, :, :, 0], k) for k in range(4)]
  expected += [np.fliplr(e) for e in expected]
  assert {v.tobytes() for v in views} == {e.tobytes() for e in expected} and len({v.tobytes() for v in views}) == 8


@pytest.mark.parametrize("outputs", [1, 3])
def test_tta_of_a_rotation_invariant_model_equals_no_tta(outputs):
  graphs, state = _toy_state(outputs, invariant=True)
  batch = _batch()
  plain = inference.make_eval_fn(graphs)(state, batch)
  averaged = tta.make_tta_eval_fn(graphs)(state, batch)
  np.testing.assert_allclose(averaged["probs"], plain["probs"], rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(averaged["loss_sum"], plain["loss_sum"], rtol=1e-5)


def test_tta_averages_the_probabilities_of_the_eight_views_of_any_model():
  graphs, state = _toy_state(1, invariant=False)
  batch = _batch()
  eval_fn = inference.make_eval_fn(graphs)
  views = [np.rot90(batch["image"], k, axes=(1, 2)) for k in range(4)]
  views += [v[:, :, ::-1] for v in views]
  manual = np.mean([eval_fn(state, {**batch, "image": np.ascontiguousarray(v)})["probs"] for v in views], axis=0)
  averaged = tta.make_tta_eval_fn(graphs)(state, batch)["probs"]
  np.testing.assert_allclose(averaged, manual, rtol=1e-5, atol=1e-6)
  assert not np.allclose(averaged, eval_fn(state, batch)["probs"], atol=1e-4)  # the views do differ


# --- the Taleqani sample run (image-level, no subjects) --------------------------------------------

@pytest.mark.xdist_group("sample_run")  # the fixture is built once per worker
def test_training_writes_the_full_report_and_plots(sample_run):
  final = json.loads((sample_run / "report.json").read_text())
  assert final["bootstrap"]["unit"] == "image" and final["bootstrap"]["n_resamples"] == 1000
  assert final["threshold"]["chosen_on"] == "val" and final["tta"] == "none"
  for split in ("train", "val", "test"):
    s = final["splits"][split]
    assert s["TP"] + s["TN"] + s["FP"] + s["FN"] == s["n"] == s["n_images"]
    assert "at_chosen_threshold" in s and "patient_level" not in s
  md = (sample_run / "report.md").read_text()
  assert md.count("no patient ids exist in this dataset") >= 3  # header and every table heading
  assert final["data_build"]["skipped_corrupt"] == [] and "**Data build:** taleqani_all/original/1.0.0, complete" in md
  assert "complete (corrupt images stop the build)" in (sample_run / "splits.txt").read_text()
  assert "| Sensitivity (recall) |" in md and "| Weighted F1 (ISBI 2019 score) |" in md
  for name in ("learning_curves", "confusion_train", "confusion_test", "roc", "precision_recall"):
    assert (sample_run / "plots" / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
  rows = list(csv.DictReader((sample_run / "predictions" / "test.csv").open()))
  assert len(rows) == final["splits"]["test"]["n"]


@pytest.mark.xdist_group("sample_run")  # the fixture is built once per worker
def test_evaluate_cli_with_tta_writes_beside_the_training_report(sample_run):
  before = (sample_run / "report.json").read_text()
  result = run_cli("leukojax.evaluate", f"--workdir={sample_run}", "--split=test", "--tta", "--n_resamples=100")
  assert result.returncode == 0, result.stderr[-3000:]
  out = sample_run / "evaluations" / "best_tta_test"
  final = json.loads((out / "report.json").read_text())
  assert set(final["splits"]) == {"val", "test"} and final["tta"].startswith("8 dihedral")
  assert final["bootstrap"]["n_resamples"] == 100 and (out / "report.md").exists()
  assert (out / "plots" / "confusion_test.png").exists() and (out / "plots" / "roc.png").exists()
  assert (sample_run / "report.json").read_text() == before  # the training report is left alone


def test_checkpoint_choices_and_splits_are_checked():
  assert [restore.parse_checkpoint(v) for v in ("best", "latest", "120")] == ["best", "latest", 120]
  with pytest.raises(ValueError, match="'best', 'latest' or a step number"):
    restore.parse_checkpoint("newest")
  assert run_evaluation.splits_to_run(["test", "train", "test"], ["val", "test", "train"]) == ["val", "test", "train"]
  with pytest.raises(ValueError, match=r"Unknown split\(s\) \['tset'\]"):
    run_evaluation.splits_to_run(["tset"], ["val", "test", "train"])


@pytest.mark.xdist_group("sample_run")  # the fixture is built once per worker
def test_predict_cli_reports_unreadable_files_and_predicts_the_rest(sample_run, tmp_path):
  folder = tmp_path / "images"
  folder.mkdir()
  for name in ("WBC-Benign-001.jpg", "WBC-Benign-002.jpg"):
    shutil.copy(SAMPLE_MANUAL_DIR / "Original" / "Benign" / name, folder / name)
  (folder / "broken.png").write_bytes(b"not an image")
  Image.new("RGB", (1, 1), (200, 150, 170)).save(folder / "dot.png")  # scored, but flagged
  single = SAMPLE_MANUAL_DIR / "Original" / "Pro" / "WBC-Malignant-Pro-001.jpg"
  out = tmp_path / "predictions.csv"
  result = run_cli("leukojax.predict", f"--workdir={sample_run}", f"--out={out}", "--threshold=0.5",
                   folder, single, tmp_path / "missing.jpg")
  assert result.returncode == 1, result.stderr[-3000:]  # as leukojax.explain: not all it was asked
  assert "broken.png" in result.stderr and "missing.jpg" in result.stderr
  assert "2 of 6 inputs could not be read" in result.stderr and "Traceback" not in result.stderr
  assert "Flagged 1 input(s) far from the training images" in result.stderr
  rows = list(csv.DictReader(out.open()))  # the readable ones are all written
  assert [pathlib.Path(r["file"]).name for r in rows] == ["dot.png", "WBC-Benign-001.jpg", "WBC-Benign-002.jpg",
                                                            single.name]
  assert [bool(r["geometry"]) for r in rows] == [True, False, False, False]
  assert "far from the training images 224-224 px high, 224-224 px wide" in rows[0]["geometry"]
  for row in rows:
    assert 0.0 <= float(row["probability"]) <= 1.0
    assert int(row["label"]) == int(float(row["probability"]) >= 0.5) and row["class"] in ("benign", "pro_b")


# --- a C-NMC run (subject ids): subject bootstrap, patient level, ISBI file -------------------------

@pytest.fixture(scope="module")
def cnmc_run(tmp_path_factory):
  """The MobileNet C-NMC smoke model with random weights on a synthetic stand-in C-NMC download.

  Untrained on purpose: the evaluation machinery does not care, and skipping training keeps the
  test cheap; random weights give every cell a different probability.
  """
  base = tmp_path_factory.mktemp("cnmc_eval")
  written = write_synthetic_cnmc(base / "manual", subjects_per_class=3, cells_per_subject=2,
                                 final_subjects=2, final_cells_per_subject=3, seed=1)
  config = baselines.get_config("mobilenet,cnmc,smoke")
  config.data.manual_dir = str(base / "manual" / "C-NMC_Leukemia")
  config.data.data_dir = str(base / "tfds")
  config.data.builder_config = "unverified"  # a stand-in, not the official files
  config.data.split.protocol = "subject"  # the stand-in has 3 subjects per class and fold
  workdir = base / "work"
  workdir.mkdir()
  mesh = sharding.create_mesh(config.mesh.fsdp)
  pipeline = inputs.pipeline_for(config, str(workdir))
  graphs, state, _, _, _ = state_lib.create_train_state(config, pipeline, mesh, load_weights=False)
  # The head starts at zero (every probability 0.5): perturb every weight, as training would.
  leaves, treedef = jax.tree.flatten(state.params)
  keys = jax.random.split(jax.random.key(0), len(leaves))
  noisy = [p + 0.2 * jax.random.normal(k, p.shape, p.dtype) for p, k in zip(leaves, keys)]
  state = state.replace(params=jax.tree.unflatten(treedef, noisy))
  variables = state_lib.ModelVariables(params=state.params, model_state=state.model_state)
  run = restore.TrainedRun(workdir=str(workdir), config=config, pipeline=pipeline, mesh=mesh, graphs=graphs,
                           variables=variables, step=0, checkpoint="latest", eval_fn=inference.make_eval_fn(graphs))
  return run, written


def test_cnmc_report_bootstraps_subjects_and_reports_patients(cnmc_run):
  run, _ = cnmc_run
  options = run_evaluation.options_from_config(run.config, n_resamples=200)
  final = run_evaluation.evaluate_run(run, options=options)
  assert final["bootstrap"]["unit"] == "subject" and final["protocol"] == "subject"
  test = final["splits"]["test"]
  subjects = {s.decode() for s in run.pipeline.eval_splits["test"].metadata["subject_id"]}
  assert test["ci_unit"] == "subject" and test["ci_units"] == test["n_subjects"] == len(subjects)
  level = test["patient_level"]["at_0.5"]
  assert {s["subject_id"] for s in level["subjects"]} == subjects
  rows = list(csv.DictReader((pathlib.Path(run.workdir) / "predictions" / "test.csv").open()))
  for s in level["subjects"]:  # the subject's score is the mean of its cells' probabilities
    cells = [float(r["p_all"]) for r in rows if r["subject_id"] == s["subject_id"]]
    assert s["cells"] == len(cells) and s["mean_prob"] == pytest.approx(np.mean(cells), abs=1e-5)
  correct = sum(s["predicted"] == s["label"] for s in level["subjects"])
  assert level["accuracy"] == pytest.approx(correct / len(subjects))
  md = (pathlib.Path(run.workdir) / "report.md").read_text()
  assert "## Patient level" in md and "subject-disjoint" in md and "resamples of subjects" in md


def test_isbi_file_lists_final_test_images_in_numeric_order(cnmc_run, tmp_path):
  run, written = cnmc_run
  first = prediction.predict(run, split="final_test", threshold="0.5")
  assert sorted(first.file_names, key=lambda n: int(n.split(".")[0])) == first.file_names
  assert np.ptp(first.probs) > 0  # distinct scores, so the order check below can fail
  median = str(float(np.median(first.probs)))  # both labels occur at this threshold
  from_split = prediction.predict(run, split="final_test", threshold=median)
  path, zip_path = isbi.write_isbi(from_split, str(tmp_path / isbi.ISBI_FILE))
  lines = pathlib.Path(path).read_text().splitlines()
  assert len(lines) == len(written["final_test_truth"]) and set(lines) == {"0", "1"}
  with zipfile.ZipFile(zip_path) as z:
    assert z.namelist() == [isbi.ISBI_FILE] and z.read(isbi.ISBI_FILE).decode().splitlines() == lines
  # The same images predicted as files from the folder: line k is the prediction for k.bmp.
  folder = pathlib.Path(run.config.data.manual_dir) / "testing_data" / "C-NMC_test_final_phase_data"
  from_files = prediction.predict(run, paths=[str(folder)], threshold=median)
  by_name = {pathlib.Path(f).name: int(label) for f, label in zip(from_files.file_names, from_files.labels)}
  assert lines == [str(by_name[f"{k}.bmp"]) for k in range(1, len(lines) + 1)]
  np.testing.assert_allclose(np.sort(from_files.probs), np.sort(from_split.probs), atol=1e-6)


def _prediction(names, labels, classes=("hem", "all"), skipped=()):
  return prediction.Prediction(file_names=list(names), probs=np.asarray(labels, float), labels=np.asarray(labels),
                               threshold=0.5, threshold_source="given", class_names=classes,
                               skipped=list(skipped), result=None)


def test_isbi_and_csv_formats_and_their_errors(tmp_path):
  path, _ = isbi.write_isbi(_prediction(["dir/3.bmp", "1.bmp", "2.bmp"], [1, 0, 1]), str(tmp_path / "a"))
  assert pathlib.Path(path).read_text() == "0\n1\n1\n"
  with pytest.raises(ValueError, match=r"missing \[2\]"):
    isbi.write_isbi(_prediction(["1.bmp", "3.bmp"], [1, 0]), str(tmp_path / "b"))
  with pytest.raises(ValueError, match="UID_1_1_1_all.bmp: ISBI final-test images are named"):
    isbi.write_isbi(_prediction(["UID_1_1_1_all.bmp"], [1]), str(tmp_path / "c"))
  with pytest.raises(ValueError, match="C-NMC task"):
    isbi.write_isbi(_prediction(["1.bmp"], [1], classes=("benign", "pro_b")), str(tmp_path / "d"))
  with pytest.raises(ValueError, match="unreadable: 2.bmp"):
    isbi.write_isbi(_prediction(["1.bmp"], [1], skipped=[("2.bmp", "truncated")]), str(tmp_path / "e"))
  four = prediction.Prediction(file_names=["a.jpg"], probs=np.array([[0.1, 0.2, 0.6, 0.1]]), labels=np.array([2]),
                               threshold=None, threshold_source="arg-max",
                               class_names=("benign", "early_pre_b", "pre_b", "pro_b"), skipped=[], result=None)
  prediction.write_csv(four, str(tmp_path / "four.csv"))
  (row,) = list(csv.DictReader((tmp_path / "four.csv").open()))
  assert row["file"] == "a.jpg" and row["label"] == "2" and row["class"] == "pre_b"
  assert float(row["probability"]) == pytest.approx(0.6) and float(row["p_early_pre_b"]) == pytest.approx(0.2)
