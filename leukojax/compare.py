"""`python -m leukojax.compare WORKDIR... [--split test] [--html OUT.html]`: one table over several runs.

The table and its columns: `leukojax.evaluation.comparison`; `--html` also writes it as a page with
each run's curves and a link to its report.html (`leukojax.evaluation.html_report`).

`python -m leukojax.compare --paired A B`: is B better than A on the same test images? The
difference of every metric with its paired-bootstrap interval (`leukojax.evaluation.paired`). An
arm may be the fold workdirs of one cross-validation, comma-separated: `A0,A1 B0,B1`.
"""

from __future__ import annotations

import sys

from absl import app, flags

from leukojax.evaluation import comparison
from leukojax.runtime import cli

_SPLIT = flags.DEFINE_string("split", "test", "Split whose metrics are tabulated.")
_HTML = flags.DEFINE_string("html", None, "Also write the comparison as this self-contained HTML page.")
_PAIRED = flags.DEFINE_bool("paired", False, "Two arms (each a workdir, or comma-separated fold workdirs): "
                            "B - A per metric with a paired-bootstrap interval.")
_JSON = flags.DEFINE_string("json", None, "With --paired: also write the result to this JSON file.")


def main(argv: list[str]) -> None:
  if len(argv) < 2:
    raise app.UsageError("Give one or more evaluated workdirs.")
  if _PAIRED.value:
    _paired(argv[1:])
    return
  try:
    print(comparison.table(argv[1:], _SPLIT.value))
    if _HTML.value:
      from leukojax.evaluation import html_report  # pylint: disable=g-import-not-at-top
      print(f"Wrote {html_report.write_comparison(argv[1:], _SPLIT.value, _HTML.value)}.")
  except (FileNotFoundError, KeyError) as error:
    sys.exit(f"leukojax.compare: {error}")


def _paired(arms: list[str]) -> None:
  import json  # pylint: disable=g-import-not-at-top

  from leukojax.evaluation import paired  # pylint: disable=g-import-not-at-top
  if len(arms) != 2:
    raise app.UsageError("--paired takes two arms: A B (each a workdir, or comma-separated fold workdirs).")
  a, b = (paired.read_arm(arm.split(","), _SPLIT.value) for arm in arms)
  result = paired.paired_difference(a, b)
  print(paired.format_markdown(result))
  if _JSON.value:
    with open(_JSON.value, "w") as f:
      json.dump(result, f, indent=2)


def run() -> None:
  """Console-script entry point (pyproject.toml [project.scripts])."""
  cli.run("leukojax.compare", main)


if __name__ == "__main__":
  run()
