"""One markdown table over several evaluated runs (`python -m leukojax.compare`).

Each row is one workdir (its `report.json`, written at the end of training or by
`leukojax.evaluate`): accuracy, balanced accuracy, macro and weighted F1 and AUC on the split, each
with its bootstrap interval, at the papers' operating point (threshold 0.5 or arg-max). Binary and
four-class runs report the same columns (for a binary run, weighted F1 is the ISBI score), so one
table compares them; docs/results.md is made of these tables.

A last column gives the number correct and the exact (Clopper-Pearson) binomial interval of the
accuracy: near 100% the percentile bootstrap collapses to [1, 1], the exact interval does not.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from typing import Any

from scipy import stats

COLUMNS = (("accuracy", "accuracy"), ("balanced accuracy", "balanced_accuracy"),
           ("macro F1", "macro_f1"), ("weighted F1", "weighted_f1"), ("AUC", "AUC"))
_BINARY_NAMES = {"weighted_f1": "isbi_weighted_f1"}


def read_report(workdir: str) -> dict[str, Any]:
  path = os.path.join(workdir, "report.json")
  if not os.path.exists(path):
    raise FileNotFoundError(f"{path} does not exist: train the run to the end, or run "
                            f"`python -m leukojax.evaluate --workdir {workdir}`.")
  with open(path) as f:
    return json.load(f)


def _cell(split: dict[str, Any], key: str) -> str:
  name = _BINARY_NAMES.get(key, key) if "TP" in split else key
  value = split.get(name)
  if value is None or (isinstance(value, float) and math.isnan(value)):
    return "n/a"
  low, high = (split.get("ci") or {}).get(name, (None, None))
  interval = "" if low is None else f" [{low:.3f}, {high:.3f}]"
  return f"{value:.3f}{interval}"


def exact_interval(correct: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
  """Clopper-Pearson interval of a proportion `correct / n`."""
  alpha = 1 - confidence
  low = stats.beta.ppf(alpha / 2, correct, n - correct + 1) if correct > 0 else 0.0
  high = stats.beta.ppf(1 - alpha / 2, correct + 1, n - correct) if correct < n else 1.0
  return float(low), float(high)


def _exact_cell(split: dict[str, Any]) -> str:
  n, accuracy = split.get("n"), split.get("accuracy")
  if not n or accuracy is None:
    return "n/a"
  correct = round(accuracy * n)
  low, high = exact_interval(correct, int(n))
  return f"{correct}/{int(n)} [{low:.3f}, {high:.3f}]"


def rows(workdirs: Sequence[str], split: str = "test") -> tuple[list[str], list[list[str]], list[str]]:
  """(header, one row per workdir, protocol notes): the comparison as data, for markdown and HTML."""
  header = ["run", "model", "step", "n", *(title for title, _ in COLUMNS), "correct (exact 95%)"]
  body, notes = [], set()
  for workdir in workdirs:
    report = read_report(workdir)
    if split not in report["splits"]:
      raise KeyError(f"{workdir}/report.json has no {split!r} split; it has {sorted(report['splits'])}.")
    values = report["splits"][split]
    body.append([os.path.basename(os.path.normpath(workdir)), report["model"], str(report["checkpoint_step"]),
                 str(values.get("n", ""))] + [_cell(values, key) for _, key in COLUMNS] + [_exact_cell(values)])
    boot = report.get("bootstrap") or {}
    notes.add(f"{report['protocol_note']}; {int(100 * boot.get('confidence', 0.95))}% intervals: "
              f"bootstrap over {boot.get('unit', 'image')}s ({boot.get('n_resamples', '?')} resamples)")
  return header, body, [f"Protocol: {note}." for note in sorted(notes)]


def table(workdirs: Sequence[str], split: str = "test") -> str:
  """The markdown table: one row per workdir, the metric columns with their intervals."""
  header, body, notes = rows(workdirs, split)
  lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
  lines += ["| " + " | ".join(row) + " |" for row in body]
  return "\n".join(lines + [""] + notes)
