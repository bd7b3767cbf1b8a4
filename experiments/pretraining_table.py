"""Prints the tables of docs/results.md "Does ImageNet pretraining help?" from experiments/pretraining.sh.

    .venv/bin/python -m experiments.pretraining_table [workdirs/pretraining]
"""

from __future__ import annotations

import json
import os
import sys

from experiments.cnmc2019_table import wall_and_commit

ARMS = ("scratch", "imagenet")
CNMC_SEEDS = (("0", ""), ("1", "_seed1"), ("2", "_seed2"))
CNMC_METRICS = ("isbi_weighted_f1", "accuracy", "sensitivity", "specificity", "AUC")
TALEQANI = {"taleqani_four_class": ("accuracy", "balanced_accuracy", "macro_f1", "AUC"),
            "taleqani_binary": ("accuracy", "sensitivity", "specificity", "AUC")}


def _load(path: str) -> dict | None:
  return json.load(open(path)) if os.path.exists(path) else None


def _value(metrics: dict, key: str) -> str:
  lo, hi = metrics["ci"][key]
  return f"{metrics[key]:.3f} [{lo:.3f}, {hi:.3f}]"


def _difference(paired: dict | None, key: str) -> str:
  if paired is None or key not in paired["metrics"]:
    return "-"
  m = paired["metrics"][key]
  return f"{m['difference']:+.3f} [{m['ci'][0]:+.3f}, {m['ci'][1]:+.3f}] ({100 * m['b_ahead']:.0f}%)"


def cnmc(out: str) -> None:
  print("| seed | arm | " + " | ".join(CNMC_METRICS) + " | H10 | H14 | minutes (fold 0 + 1) |")
  print("|---|---|" + "---|" * len(CNMC_METRICS) + "---:|---:|---|")
  for seed, tag in CNMC_SEEDS:
    for arm in ARMS:
      cv = _load(os.path.join(out, f"cnmc_{arm}{tag}_cv", "cv_report.json"))
      if cv is None:
        print(f"| {seed} | {arm} | not run |")
        continue
      healthy = {s["subject_id"]: s["accuracy"] for s in cv["subjects"] if s["class"] == cv["class_names"][0]}
      walls = [wall_and_commit(out, f"cnmc_{arm}{tag}_fold{k}")[0] for k in (0, 1)]
      cells = [_value(cv["pooled"], k) for k in CNMC_METRICS]
      print(f"| {seed} | {arm} | " + " | ".join(cells) + f" | {healthy.get('H10', 0):.3f} | {healthy.get('H14', 0):.3f} "
            f"| {' + '.join(walls)} |")
    paired = _load(os.path.join(out, f"paired_cnmc{tag}.json"))
    print(f"| {seed} | **ImageNet - scratch** | " + " | ".join(_difference(paired, k) for k in CNMC_METRICS)
          + " | | | |")


def taleqani(out: str) -> None:
  for name, metrics in TALEQANI.items():
    print(f"\n{name}\n")
    print("| arm | step | " + " | ".join(metrics) + " | minutes | commit |")
    print("|---|---:|" + "---|" * len(metrics) + "---:|---|")
    for arm in ARMS:
      report = _load(os.path.join(out, f"{name}_{arm}", "report.json"))
      if report is None:
        print(f"| {arm} | not run |")
        continue
      wall, commit = wall_and_commit(out, f"{name}_{arm}")
      test = report["splits"]["test"]
      print(f"| {arm} | {report['checkpoint_step']} | " + " | ".join(_value(test, k) for k in metrics)
            + f" | {wall} | {commit} |")
    paired = _load(os.path.join(out, f"paired_{name}.json"))
    print("| **ImageNet - scratch** | | " + " | ".join(_difference(paired, k) for k in metrics) + " | | |")


def main(out: str) -> None:
  cnmc(out)
  taleqani(out)


if __name__ == "__main__":
  main(sys.argv[1] if len(sys.argv) > 1 else "workdirs/pretraining")
