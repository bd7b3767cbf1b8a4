"""Prints the tables of docs/results.md's C-NMC section from experiments/cnmc2019.sh's outputs.

    .venv/bin/python experiments/cnmc2019_table.py [workdirs/cnmc]
"""

from __future__ import annotations

import json
import os
import re
import sys

MODELS = ("features", "hybrid", "xception", "vgg16", "inception_v3", "allnet", "xception_nohed")
METRICS = ("isbi_weighted_f1", "accuracy", "sensitivity", "specificity", "AUC")


def wall_and_commit(out: str, name: str) -> tuple[str, str]:
  try:
    text = open(os.path.join(out, "logs", f"{name}.log")).read()
  except FileNotFoundError:
    return "-", "-"
  wall = re.findall(r"^wall_s (\d+)", text, re.M)
  commit = re.findall(r"commit ([0-9a-f]{7})", text)
  return (f"{int(wall[-1]) / 60:.1f}" if wall else "-"), (commit[0] if commit else "-")


def cell(pooled: dict, key: str) -> str:
  lo, hi = pooled["ci"][key]
  return f"{pooled[key]:.3f} [{lo:.3f}, {hi:.3f}]"


def main(out: str) -> None:
  print("| model | weighted F1 | accuracy | sensitivity | specificity | AUC | H10 (fold 0) | H14 (fold 1) |"
        " min per fold (0 / 1) |")
  print("|---|---|---|---|---|---|---:|---:|---|")
  subjects = {}
  for model in MODELS:
    path = os.path.join(out, f"{model}_cv", "cv_report.json")
    if not os.path.exists(path):
      print(f"| {model} | not run | | | | | | | |")
      continue
    cv = json.load(open(path))
    healthy = {h: a for f in cv["folds"] for h, a in f["healthy_subjects"].items()}
    walls = [wall_and_commit(out, f"{model}_fold{k}") for k in (0, 1)]
    print(f"| {model} | " + " | ".join(cell(cv["pooled"], k) for k in METRICS)
          + f" | {healthy.get('H10', float('nan')):.3f} | {healthy.get('H14', float('nan')):.3f} | "
          f"{walls[0][0]} / {walls[1][0]} |")
    subjects[model] = {s["subject_id"]: s for s in cv["subjects"]}
  if not subjects:
    return
  ids = list(next(iter(subjects.values())))
  print("\n| subject | class | fold | cells | " + " | ".join(subjects) + " |")
  print("|---|---|---:|---:|" + "---:|" * len(subjects))
  for sid in ids:
    first = next(iter(subjects.values()))[sid]
    print(f"| {sid} | {first['class']} | {first['fold']} | {first['cells']} | "
          + " | ".join(f"{subjects[m][sid]['accuracy']:.3f}" for m in subjects) + " |")
  rows = []
  for model in MODELS:
    name = f"{model}_all"
    if os.path.exists(os.path.join(out, name, "report.json")):
      report = json.load(open(os.path.join(out, name, "report.json")))
      val = report["splits"]["val"]
      wall, commit = wall_and_commit(out, name)
      rows.append(f"| {name} | {report['splits']['train']['n_images']} | {val['n_images']} | "
                  f"{val['isbi_weighted_f1']:.3f} | {wall} | {commit} |")
  if rows:
    print("\n| run (all 11 subjects) | train cells | val cells | val weighted F1 (training subjects) | minutes | commit |")
    print("|---|---:|---:|---:|---:|---|")
    print("\n".join(rows))


if __name__ == "__main__":
  main(sys.argv[1] if len(sys.argv) > 1 else "workdirs/cnmc")
