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
# the C-NMC folds pooled in workdirs/pretraining/cnmc_<arm>[_seedS]_cv/cv_report.md; each A/B's
# paired comparison (ImageNet - scratch) in workdirs/pretraining/paired_<name>.md.
set -euo pipefail
cd "$(dirname "$0")/.."
CNMC=${1:-../shared/data/cnmc2019}
TALEQANI=${2:-../shared/data/taleqani_all}
OUT=workdirs/pretraining
PY=.venv/bin/python
mkdir -p "$OUT/logs"

source experiments/timed.sh

train() {  # train CONFIG_FILE CONFIG_ARG MANUAL_DIR NAME
  timed "$4" "$PY" -m leukojax.main --config "configs/$1:$2" --config.data.manual_dir="$3" \
    --config.data.data_dir=workdirs/tfds --workdir "$OUT/$4"
}

cnmc() {  # cnmc SEED: both arms, both folds, pooled, then the paired comparison
  local seed=$1 tag=$([[ $1 == 0 ]] && true || echo "_seed$1")
  for arm in scratch imagenet; do
    option=$([[ $arm == imagenet ]] && echo ",imagenet" || true)
    for fold in 0 1; do
      timed "cnmc_${arm}${tag}_fold$fold" "$PY" -m leukojax.main --config "configs/cnmc.py:efficientnet_lite0,fold=$fold$option" \
        --config.data.manual_dir="$CNMC" --config.data.data_dir=workdirs/tfds --config.seed="$seed" \
        --workdir "$OUT/cnmc_${arm}${tag}_fold$fold"
    done
    "$PY" -m leukojax.cv "$OUT/cnmc_${arm}${tag}_fold0" "$OUT/cnmc_${arm}${tag}_fold1" --out "$OUT/cnmc_${arm}${tag}_cv" > /dev/null
  done
  paired "cnmc${tag}" "$OUT/cnmc_scratch${tag}_fold0,$OUT/cnmc_scratch${tag}_fold1" \
    "$OUT/cnmc_imagenet${tag}_fold0,$OUT/cnmc_imagenet${tag}_fold1"
}

paired() {  # paired NAME A B: B - A with paired-bootstrap intervals, into $OUT/paired_NAME.{md,json}
  "$PY" -m leukojax.compare --paired "$2" "$3" --json "$OUT/paired_$1.json" > "$OUT/paired_$1.md"
}

cnmc 0
for arm in scratch imagenet; do
  option=$([[ $arm == imagenet ]] && echo ",imagenet" || true)
  train taleqani.py "efficientnet_lite0,four_class$option" "$TALEQANI" "taleqani_four_class_$arm"
done
paired taleqani_four_class "$OUT/taleqani_four_class_scratch" "$OUT/taleqani_four_class_imagenet"
for arm in scratch imagenet; do  # benign vs Pro-B: 10 epochs (saturated from scratch at 30: docs/results.md)
  option=$([[ $arm == imagenet ]] && echo ",imagenet" || true)
  train taleqani.py "efficientnet_lite0,epochs=10$option" "$TALEQANI" "taleqani_binary_$arm"
done
paired taleqani_binary "$OUT/taleqani_binary_scratch" "$OUT/taleqani_binary_imagenet"
cnmc 1  # two more training seeds on C-NMC: the bootstrap covers subjects, not training randomness
cnmc 2
for arm in scratch imagenet; do  # trained on all 11 subjects: to score subjects nobody here has seen
  option=$([[ $arm == imagenet ]] && echo ",imagenet" || true)
  train cnmc.py "efficientnet_lite0,all_subjects$option" "$CNMC" "cnmc_${arm}_all"
done
