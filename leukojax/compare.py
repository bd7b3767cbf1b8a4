"""`python -m leukojax.compare WORKDIR... [--split test] [--html OUT.html]`: one table over several runs.

The table and its columns: `leukojax.evaluation.comparison`; `--html` also writes it as a page with
each run's curves and a link to its report.html (`leukojax.evaluation.html_report`).
"""

from __future__ import annotations

import sys

from absl import app, flags

from leukojax.evaluation import comparison
from leukojax.runtime import cli

_SPLIT = flags.DEFINE_string("split", "test", "Split whose metrics are tabulated.")
_HTML = flags.DEFINE_string("html", None, "Also write the comparison as this self-contained HTML page.")


def main(argv: list[str]) -> None:
  if len(argv) < 2:
    raise app.UsageError("Give one or more evaluated workdirs.")
  try:
    print(comparison.table(argv[1:], _SPLIT.value))
    if _HTML.value:
      from leukojax.evaluation import html_report  # pylint: disable=g-import-not-at-top
      print(f"Wrote {html_report.write_comparison(argv[1:], _SPLIT.value, _HTML.value)}.")
  except (FileNotFoundError, KeyError) as error:
    sys.exit(f"leukojax.compare: {error}")


def run() -> None:
  """Console-script entry point (pyproject.toml [project.scripts])."""
  cli.run("leukojax.compare", main)


if __name__ == "__main__":
  run()
