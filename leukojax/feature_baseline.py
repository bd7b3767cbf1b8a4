r"""`python -m leukojax.feature_baseline --config CONFIG --workdir W`: the cell-feature baseline.

    python -m leukojax.feature_baseline --config configs/cnmc.py:hybrid,fold=0 \
        --config.data.manual_dir=../shared/data/cnmc2019 --workdir workdirs/cnmc/features_fold0

A logistic regression on the size, shape and colour of the segmented cell
(`leukojax.baselines.cell_features`), on exactly the split the config's deep model uses; the
workdir gets `report.json`, `report.md`, `predictions/` and `config.json` like a trained run, so
`leukojax.cv` pools its folds and `leukojax.compare` tabulates it beside the networks.
"""

from __future__ import annotations

from absl import app, flags
from ml_collections import config_flags

from leukojax.runtime import cli

_CONFIG = config_flags.DEFINE_config_file("config", None, "A C-NMC config, e.g. configs/cnmc.py:hybrid,fold=0.",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Output directory.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  from leukojax.baselines import cell_features  # pylint: disable=g-import-not-at-top

  final = cell_features.run(_CONFIG.value, _WORKDIR.value)
  print(f"Wrote {_WORKDIR.value}/report.md; test weighted F1 "
        f"{final['splits'].get('test', {}).get('isbi_weighted_f1', float('nan')):.4f}")


def run() -> None:
  """Console-script entry point (pyproject.toml [project.scripts])."""
  cli.run("leukojax.feature_baseline", main)


if __name__ == "__main__":
  run()
