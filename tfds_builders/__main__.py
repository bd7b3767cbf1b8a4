"""`python -m tfds_builders build ...`: TFDS's own `tfds build` command, without TensorFlow.

    python -m tfds_builders build tfds_builders/cnmc2019 --manual_dir=DIR --data_dir=DATA_DIR \
        --file_format=array_record

The `tfds` console script of tensorflow-datasets 4.9.10 imports all of its commands at start-up,
and two of them need packages this stack leaves out (`convert_format` needs TensorFlow,
`build_croissant` needs mlcroissant), so `tfds build` stops with "No module named 'tensorflow'"
before it builds anything. This entry point parses the same flags into the same
`tensorflow_datasets.scripts.cli.build.Args` and runs it; with TensorFlow installed, `tfds build`
with the same arguments does the same.
"""

from __future__ import annotations

import sys

from absl import app
from absl import logging


def _run(args) -> None:
  logging.set_verbosity(logging.INFO)
  args.execute()


def main(argv: list[str] | None = None) -> None:
  argv = list(sys.argv if argv is None else argv)
  if len(argv) < 2 or argv[1] != "build":
    sys.exit("usage: python -m tfds_builders build <dataset folder or name> [tfds build flags]\n"
             "       (python -m tfds_builders build --help lists the flags)")
  from tensorflow_datasets.scripts.cli import build  # pylint: disable=g-import-not-at-top
  from tensorflow_datasets.scripts.cli import cli_utils  # pylint: disable=g-import-not-at-top

  parser = cli_utils.make_flags_parser(build.Args, description="tfds build, without TensorFlow")
  app.run(_run, argv=[f"{argv[0]} build"] + argv[2:], flags_parser=parser)


if __name__ == "__main__":
  main()
