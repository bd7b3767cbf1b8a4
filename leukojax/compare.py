"""`python -m leukojax.compare WORKDIR... [--split test]`: one markdown table over several runs.

The table and its columns: `leukojax.evaluation.comparison`.
"""

from __future__ import annotations

import sys

from absl import app, flags

from leukojax.evaluation import comparison
from leukojax.runtime import cli

_SPLIT = flags.DEFINE_string("split", "test", "Split whose metrics are tabulated.")


def main(argv: list[str]) -> None:
  if len(argv) < 2:
    raise app.UsageError("Give one or more evaluated workdirs.")
  try:
    print(comparison.table(argv[1:], _SPLIT.value))
  except (FileNotFoundError, KeyError) as error:
    sys.exit(f"leukojax.compare: {error}")


def run() -> None:
  """Console-script entry point (pyproject.toml [project.scripts])."""
  cli.run("leukojax.compare", main)


if __name__ == "__main__":
  run()
