#!/usr/bin/env bash
# The margin of the suite's learning threshold (tests/test_learning.py, docs/testing.md): trains the
# two tiny runs the tests train, over several seeds, and prints each one's test AUC.
#
#   experiments/learning_margin.sh [SEEDS...]   (default 0 1 2 3 4)
#
# Taleqani: MobileNet 64 px, 3 epochs, benign vs Pro-B on the bundled real sample (the `sample_run`
# fixture). C-NMC: MobileNet 32 px, 4 epochs, subject_cv fold 0 of the bundled real C-NMC sample (the
# `cnmc_mobilenet_run` fixture): 4 test subjects never seen in training.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
OUT=${OUT:-workdirs/learning_margin}
SEEDS=("${@:-0 1 2 3 4}")
mkdir -p "$OUT"
for seed in ${SEEDS[@]}; do
  if [[ ! -f "$OUT/taleqani_s$seed/report.json" ]]; then
    "$PY" -m leukojax.main --config "configs/baselines.py:mobilenet,smoke,res=64,epochs=3" \
      --workdir "$OUT/taleqani_s$seed" --config.seed="$seed" --config.train.global_batch_size=8 \
      --config.train.learning_rate=1e-3 --config.data.manual_dir=tfds_builders/taleqani_all/sample \
      --config.data.data_dir="$OUT/tfds" > "$OUT/taleqani_s$seed.log" 2>&1
  fi
  if [[ ! -f "$OUT/cnmc_s$seed/report.json" ]]; then
    "$PY" -m leukojax.main --config "configs/baselines.py:mobilenet,cnmc,smoke" \
      --workdir "$OUT/cnmc_s$seed" --config.seed="$seed" --config.train.epochs=4 \
      --config.train.checkpoint_every_steps=3 --config.data.data_dir="$OUT/tfds" > "$OUT/cnmc_s$seed.log" 2>&1
  fi
done
"$PY" - "$OUT" <<'PY'
import json, pathlib, sys
out = pathlib.Path(sys.argv[1])
for kind in ("taleqani", "cnmc"):
  rows = []
  for report in sorted(out.glob(f"{kind}_s*/report.json")):
    r = json.loads(report.read_text())
    t = r["splits"]["test"]
    rows.append((report.parent.name, t["AUC"], t["accuracy"], r["checkpoint_step"]))
    print(f"{report.parent.name:<14} test AUC {t['AUC']:.4f}  accuracy {t['accuracy']:.4f}  step {r['checkpoint_step']}")
  if rows:
    print(f"{kind}: min test AUC {min(a for _, a, _, _ in rows):.4f} over {len(rows)} seeds")
PY
