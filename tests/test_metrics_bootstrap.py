"""Metrics, bootstrap intervals, the validation-chosen threshold and patient aggregation, on arrays."""

import numpy as np
import pytest

from leukojax.evaluation import analysis, bootstrap, metrics, patients, report, thresholds
from leukojax.evaluation.inference import SplitResult

# Ten images: TP=3 (0.9, 0.8, 0.6), FN=2 (0.3, 0.2), FP=1 (0.7), TN=4 (0.4, 0.1, 0.05, 0.45).
LABELS = np.array([1, 1, 1, 1, 1, 0, 0, 0, 0, 0])
PROBS = np.array([0.9, 0.8, 0.6, 0.3, 0.2, 0.7, 0.4, 0.1, 0.05, 0.45])


def test_binary_metrics_match_the_hand_computed_confusion_matrix():
  m = metrics.binary_metrics(LABELS, PROBS, threshold=0.5)
  assert (m["TP"], m["TN"], m["FP"], m["FN"], m["n"]) == (3, 4, 1, 2, 10)
  expected = {
      "accuracy": 7 / 10, "prevalence": 5 / 10, "sensitivity": 3 / 5, "specificity": 4 / 5,
      "PPV": 3 / 4, "NPV": 4 / 6, "F1": 2 * 3 / (2 * 3 + 1 + 2), "balanced_accuracy": (3 / 5 + 4 / 5) / 2,
      # ISBI: F1 of each class weighted by its support (5 and 5); HEM's F1 = 2*4 / (2*4 + 2 + 1).
      "isbi_weighted_f1": (5 * 6 / 9 + 5 * 8 / 11) / 10,
      "macro_f1": (6 / 9 + 8 / 11) / 2,  # the two classes' F1, unweighted
      # Positive-negative pairs ranked correctly: 5 + 5 + 4 + 2 + 2 of 25.
      "AUC": 18 / 25, "threshold": 0.5,
  }
  for key, value in expected.items():
    assert m[key] == pytest.approx(value), key
  m = metrics.binary_metrics(LABELS, PROBS, threshold=0.65)  # 0.6 becomes an FN
  assert (m["TP"], m["TN"], m["FP"], m["FN"]) == (2, 4, 1, 3)


def test_multiclass_metrics_match_the_hand_computed_confusion_matrix():
  labels = np.array([0, 0, 0, 0, 1, 1, 1, 2, 2, 2])
  preds = np.array([0, 0, 0, 1, 1, 1, 2, 2, 2, 0])  # rows: [3 1 0], [0 2 1], [1 0 2]
  probs = np.full((10, 3), 0.2)
  probs[np.arange(10), preds] = 0.6
  m = metrics.multiclass_metrics(labels, probs, ("a", "b", "c"))
  assert m["confusion_matrix"] == [[3, 1, 0], [0, 2, 1], [1, 0, 2]]
  assert m["accuracy"] == pytest.approx(0.7)
  assert m["balanced_accuracy"] == pytest.approx((3 / 4 + 2 / 3 + 2 / 3) / 3)
  assert m["macro_f1"] == pytest.approx((6 / 8 + 4 / 6 + 4 / 6) / 3)
  assert m["weighted_f1"] == pytest.approx((4 * 6 / 8 + 3 * 4 / 6 + 3 * 4 / 6) / 10)
  assert m["per_class"]["a"] == pytest.approx({"precision": 3 / 4, "recall": 3 / 4, "f1": 6 / 8, "support": 4})
  assert m["per_class"]["c"]["precision"] == pytest.approx(2 / 3)


def _random_binary(n=400, seed=0, ties=True):
  rng = np.random.default_rng(seed)
  labels = rng.integers(0, 2, n)
  probs = np.clip(0.35 * labels + 0.65 * rng.random(n), 0, 1)
  return labels, (np.round(probs, 2) if ties else probs)


def test_vectorised_statistics_equal_sklearn_with_unit_weights():
  """The bootstrap resamples the very quantities the table reports (ties in scores included)."""
  labels, probs = _random_binary()
  ones = np.ones((1, len(labels)), np.float32)
  for threshold in (0.5, 0.37):
    stats = bootstrap.binary_statistics(labels, probs, threshold, ones)
    reference = metrics.binary_metrics(labels, probs, threshold)
    for key, values in stats.items():
      assert values[0] == pytest.approx(reference[key], abs=1e-12), key
  rng = np.random.default_rng(1)
  labels4 = rng.integers(0, 4, 300)
  probs4 = rng.dirichlet(np.ones(4), 300)
  probs4[np.arange(300), labels4] += 0.3
  probs4 /= probs4.sum(1, keepdims=True)
  names = ("benign", "early_pre_b", "pre_b", "pro_b")
  stats = bootstrap.multiclass_statistics(labels4, probs4, names, np.ones((1, 300)))
  reference = metrics.multiclass_metrics(labels4, probs4, names)
  for key, values in stats.items():
    if "/" in key:
      cls, what = key.split("/")
      assert values[0] == pytest.approx(reference["per_class"][cls][what]), key
    else:
      assert values[0] == pytest.approx(reference[key]), key


def _subjects(num_subjects: int, cells: int = 12, seed: int = 0):
  """Cells whose scores share a per-subject offset (correlated within subjects, as real smears)."""
  rng = np.random.default_rng(seed)
  subject_label = np.arange(num_subjects) % 2
  offset = rng.normal(0, 1.2, num_subjects)
  labels = np.repeat(subject_label, cells)
  groups = np.repeat([f"S{i}".encode() for i in range(num_subjects)], cells).astype(object)
  logits = 1.5 * (2 * labels - 1) + np.repeat(offset, cells) + rng.normal(0, 1, len(labels))
  return labels, 1 / (1 + np.exp(-logits)), groups


def test_subject_bootstrap_contains_the_point_estimate_and_shrinks_with_more_subjects():
  widths = {}
  for n in (16, 96):
    labels, probs, groups = _subjects(n)
    boot = bootstrap.bootstrap_cis(labels, probs, groups=groups, n_resamples=500, seed=0)
    assert boot["unit"] == "subject" and boot["n_units"] == n
    point = metrics.binary_metrics(labels, probs)
    for key, (low, high) in boot["ci"].items():
      assert low <= point[key] + 1e-12 and point[key] <= high + 1e-12, (n, key, low, point[key], high)
    widths[n] = {k: hi - lo for k, (lo, hi) in boot["ci"].items()}
  for key in ("accuracy", "sensitivity", "specificity", "AUC", "isbi_weighted_f1"):
    assert widths[96][key] < 0.7 * widths[16][key], (key, widths)


def test_subject_bootstrap_is_wider_than_an_image_bootstrap_of_correlated_cells():
  labels, probs, groups = _subjects(24)
  by_subject = bootstrap.bootstrap_cis(labels, probs, groups=groups, n_resamples=500)["ci"]
  by_image = bootstrap.bootstrap_cis(labels, probs, groups=None, n_resamples=500)["ci"]
  for key in ("accuracy", "AUC"):
    assert by_subject[key][1] - by_subject[key][0] > 1.3 * (by_image[key][1] - by_image[key][0]), key


def test_bootstrap_is_deterministic_and_keeps_the_class_mix():
  labels, probs, groups = _subjects(10)
  a = bootstrap.bootstrap_cis(labels, probs, groups=groups, n_resamples=200, seed=3)
  b = bootstrap.bootstrap_cis(labels, probs, groups=groups, n_resamples=200, seed=3)
  c = bootstrap.bootstrap_cis(labels, probs, groups=groups, n_resamples=200, seed=4)
  assert a == b and a["ci"] != c["ci"]
  clusters = bootstrap.make_clusters(labels, groups)
  for weights in bootstrap.resample_weights(clusters, 50, seed=0, chunk=20):
    assert weights.shape[1] == len(labels)
    # Every resample draws 5 subjects of each class, 12 cells each.
    np.testing.assert_array_equal(weights @ (labels == 1), np.full(len(weights), 60.0))
    np.testing.assert_array_equal(weights @ (labels == 0), np.full(len(weights), 60.0))
  with pytest.raises(ValueError, match="n_resamples"):
    bootstrap.bootstrap_cis(labels, probs, n_resamples=0)


def test_images_without_subject_ids_are_resampled_one_by_one():
  labels, probs = _random_binary(100)
  boot = bootstrap.bootstrap_cis(labels, probs, groups=np.full(100, b"", object), n_resamples=50)
  assert boot["unit"] == "image" and boot["n_units"] == 100


def test_threshold_maximises_youden_on_validation_and_sits_between_scores():
  labels = np.array([0, 0, 0, 1, 0, 1, 1, 1])
  probs = np.array([0.05, 0.1, 0.2, 0.25, 0.3, 0.35, 0.6, 0.9])
  # At 0.5: sens 2/4, spec 1 -> J 0.5. Calling >= 0.35 positive: sens 3/4, spec 1 -> J 0.75;
  # >= 0.25: sens 1, spec 3/4 -> J 0.75 as well; the tie goes to the one nearer 0.5.
  choice = thresholds.choose_threshold(labels, probs, "youden")
  assert choice.threshold == pytest.approx((0.35 + 0.3) / 2)
  assert choice.score == pytest.approx(0.75) and choice.chosen_on == "val"
  f1 = thresholds.choose_threshold(labels, probs, "f1")  # >= 0.25: 2*4 / (8 + 1) beats 6/7
  assert f1.threshold == pytest.approx((0.25 + 0.2) / 2) and f1.score == pytest.approx(8 / 9)


def test_threshold_keeps_0_5_when_it_is_already_optimal_and_refuses_the_test_split():
  labels = np.array([0, 0, 1, 1])
  assert thresholds.choose_threshold(labels, np.array([0.1, 0.2, 0.7, 0.8])).threshold == 0.5
  constant = thresholds.choose_threshold(labels, np.full(4, 0.4999))
  assert constant.threshold == 0.5 and "already optimal" in constant.note
  single = thresholds.choose_threshold(np.ones(4), np.array([0.1, 0.2, 0.7, 0.8]))
  assert single.threshold == 0.5 and "one class" in single.note
  with pytest.raises(ValueError, match="never be chosen on the test split"):
    thresholds.choose_threshold(labels, np.array([0.1, 0.2, 0.7, 0.8]), split_name="test")


def _result(labels, probs, subjects=None):
  n = len(labels)
  subjects = np.full(n, b"", object) if subjects is None else np.asarray(subjects, object)
  return SplitResult(name="x", probs=np.asarray(probs), labels=np.asarray(labels),
                     metadata={"file_name": np.array([f"{i}.bmp".encode() for i in range(n)], object),
                               "subject_id": subjects, "label": np.asarray(labels)},
                     loss=0.0, metrics={})


def test_the_threshold_comes_from_validation_predictions_only():
  val_labels, val_probs = _random_binary(200, seed=5, ties=False)
  test_labels, test_probs = _random_binary(200, seed=6, ties=False)
  options = analysis.AnalysisOptions(n_resamples=20)
  chosen, _ = analysis.analyse({"val": _result(val_labels, val_probs), "test": _result(test_labels, test_probs)},
                               class_names=("hem", "all"), options=options)
  expected = thresholds.choose_threshold(val_labels, val_probs)
  assert chosen.threshold == expected.threshold != 0.5
  flipped, _ = analysis.analyse({"val": _result(val_labels, val_probs),
                                 "test": _result(1 - test_labels, 1 - test_probs)},
                                class_names=("hem", "all"), options=options)
  assert flipped.threshold == chosen.threshold  # whatever the test split holds
  with pytest.raises(ValueError, match="validation split is needed"):
    analysis.analyse({"test": _result(test_labels, test_probs)}, class_names=("hem", "all"), options=options)


def test_patient_level_aggregates_mean_probability_per_subject():
  subjects = np.array([b"7", b"7", b"7", b"H2", b"H2", b"9", b"9"], object)
  labels = np.array([1, 1, 1, 0, 0, 1, 1])
  probs = np.array([0.9, 0.2, 0.7, 0.6, 0.3, 0.4, 0.3])
  agg = patients.aggregate(subjects, labels, probs, threshold=0.5)
  assert agg.subject_id.tolist() == ["7", "9", "H2"]
  np.testing.assert_allclose(agg.prob, [0.6, 0.35, 0.45])
  assert agg.label.tolist() == [1, 1, 0] and agg.cells.tolist() == [3, 2, 2] and agg.mixed_labels == 0
  np.testing.assert_allclose(agg.cell_positive_fraction, [2 / 3, 0, 0.5])
  level = analysis.patient_level(labels, probs, subjects, threshold=0.5, class_names=("hem", "all"),
                                 options=analysis.AnalysisOptions(n_resamples=20))
  assert (level["TP"], level["FN"], level["TN"], level["FP"], level["n_subjects"]) == (1, 1, 1, 0, 3)
  assert level["accuracy"] == pytest.approx(2 / 3) and level["ci_unit"] == "subject"


def _multiclass_report(tmp_path):
  rng = np.random.default_rng(0)
  names = ("benign", "early_pre_b", "pre_b", "pro_b")
  results = {}
  for split in ("val", "test", "train"):
    labels = rng.integers(0, 4, 60)
    probs = rng.dirichlet(np.ones(4), 60)
    probs[np.arange(60), labels] += 0.4
    results[split] = _result(labels, probs / probs.sum(1, keepdims=True))
  chosen, per_split = analysis.analyse(results, class_names=names, options=analysis.AnalysisOptions(n_resamples=50))
  assert chosen is None  # arg-max, no threshold
  import ml_collections
  config = ml_collections.ConfigDict({"model": {"name": "vgg16"}, "train": {"best_metric": "accuracy"},
                                      "data": {"dataset": "taleqani_all", "task": "four_class"}})
  return results, report.build_report(per_split, step=5, checkpoint="best", protocol="paper_random", class_names=names,
                             config=config, threshold=None, bootstrap={"unit": "image", "n_resamples": 50,
                                                                       "confidence": 0.95, "seed": 0},
                             tta=False, data_build={"name": "taleqani_all/original_skip_corrupt/1.0.0",
                                                    "on_corrupt": "skip", "skipped_corrupt": ["Original/Pro/x.jpg"]})


def test_multiclass_report_has_per_class_precision_recall_with_intervals(tmp_path):
  results, final = _multiclass_report(tmp_path)
  test = final["splits"]["test"]
  for name in final["class_names"]:
    low, high = test["ci"][f"{name}/recall"]
    assert low <= test["per_class"][name]["recall"] <= high
  paths = report.write_report(final, str(tmp_path))
  md = open(paths["md"]).read()
  assert "no patient ids exist in this dataset" in md and "arg-max" in md
  assert ("**Data build:** taleqani_all/original_skip_corrupt/1.0.0, built with on_corrupt=skip: 1 corrupt "
          "image(s) left out (`Original/Pro/x.jpg`)") in md
  assert "| early_pre_b |" in md and "AUC (one-vs-rest, macro)" in md and "Macro F1" in md
  assert "Threshold" not in md.split("## Image level")[1]
  from leukojax.evaluation import run_evaluation  # the figures: 4x4 confusion matrices, one-vs-rest ROC and PR
  plots = run_evaluation.write_plots(results, final, workdir=str(tmp_path), out_dir=str(tmp_path))
  assert sorted(plots.values()) == sorted(f"plots/{n}.png" for n in (
      "confusion_train", "confusion_val", "confusion_test", "roc", "precision_recall"))
  assert all((tmp_path / p).read_bytes()[:4] == b"\x89PNG" for p in plots.values())
