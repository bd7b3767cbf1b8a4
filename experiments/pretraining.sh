#!/usr/bin/env bash
# docs/results.md "Does ImageNet pretraining help?": EfficientNet-Lite0 from scratch against the same
# config with its real ImageNet weights (`imagenet`: same resolution, epochs, optimiser, schedule and
# augmentation; the backbone frozen for the first epoch). Resumable: rerun it after an interruption
# and every finished run is skipped, every interrupted one resumes from its last checkpoint.
#
#   experiments/pretraining.sh [CNMC_DIR] [TALEQANI_DIR]
#   (defaults ../shared/data/cnmc2019 and ../shared/data/taleqani_all; needs leukojax[efficientnet])
#
# Per run: workdirs/pretraining/<name>/ and workdirs/pretraining/logs/<name>.log with its wall time;
# the C-NMC folds pooled in workdirs/pretraining/cnmc_<arm>_cv/cv_report.md.
set -euo pipefail
cd "$(dirname "$0")/.."
CNMC=${1:-../shared/data/cnmc2019}
TALEQANI=${2:-../shared/data/taleqani_all}
OUT=workdirs/pretraining
PY=.venv/bin/python
mkdir -p "$OUT/logs"

timed() {  # timed NAME COMMAND...: runs once (skipped when its report exists), logs the wall time
  local name=$1; shift
  if [[ -f "$OUT/$name/report.json" ]]; then echo "skip $name (done)"; return; fi
  echo "run  $name (commit $(git rev-parse --short HEAD)): $*" | tee -a "$OUT/logs/$name.log"
  local start=$SECONDS
  "$@" >> "$OUT/logs/$name.log" 2>&1
  echo "wall_s $((SECONDS - start))" | tee -a "$OUT/logs/$name.log"
}

train() {  # train CONFIG_FILE CONFIG_ARG MANUAL_DIR NAME
  timed "$4" "$PY" -m leukojax.main --config "configs/$1:$2" --config.data.manual_dir="$3" \
    --config.data.data_dir=workdirs/tfds --workdir "$OUT/$4"
}

for arm in scratch imagenet; do
  option=$([[ $arm == imagenet ]] && echo ",imagenet" || true)
  for fold in 0 1; do
    train cnmc.py "efficientnet_lite0,fold=$fold$option" "$CNMC" "cnmc_${arm}_fold$fold"
  done
  if [[ -f "$OUT/cnmc_${arm}_fold0/report.json" && -f "$OUT/cnmc_${arm}_fold1/report.json" ]]; then
    "$PY" -m leukojax.cv "$OUT/cnmc_${arm}_fold0" "$OUT/cnmc_${arm}_fold1" --out "$OUT/cnmc_${arm}_cv" > /dev/null
  fi
done
for arm in scratch imagenet; do
  option=$([[ $arm == imagenet ]] && echo ",imagenet" || true)
  train taleqani.py "efficientnet_lite0,four_class$option" "$TALEQANI" "taleqani_four_class_$arm"
done
for arm in scratch imagenet; do  # benign vs Pro-B: 10 epochs (saturated from scratch at 30: docs/results.md)
  option=$([[ $arm == imagenet ]] && echo ",imagenet" || true)
  train taleqani.py "efficientnet_lite0,epochs=10$option" "$TALEQANI" "taleqani_binary_$arm"
done
