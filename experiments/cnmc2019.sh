#!/usr/bin/env bash
# The C-NMC 2019 section of docs/results.md, end to end, resumable: rerun it after an interruption
# and every finished run is skipped, every interrupted one resumes from its last checkpoint.
#
#   experiments/cnmc2019.sh [MANUAL_DIR]   (default ../shared/data/cnmc2019: the 11-subject archive)
#
# Per run: workdirs/cnmc/<name>/ (report.md, predictions/, checkpoints/) and logs/<name>.log with
# its wall time; per model the pooled cross-validation in workdirs/cnmc/<model>_cv/cv_report.md.
set -euo pipefail
cd "$(dirname "$0")/.."
MANUAL=${1:-../shared/data/cnmc2019}
OUT=workdirs/cnmc
PY=.venv/bin/python
DATA=(--config.data.manual_dir="$MANUAL" --config.data.data_dir=workdirs/tfds_cnmc)
mkdir -p "$OUT/logs"

source experiments/timed.sh

train() {  # train CONFIG_ARG NAME
  timed "$2" "$PY" -m leukojax.main --config "configs/cnmc.py:$1" "${DATA[@]}" --workdir "$OUT/$2"
}

for fold in 0 1; do
  timed "features_fold$fold" "$PY" -m leukojax.feature_baseline --config "configs/cnmc.py:hybrid,fold=$fold" \
    "${DATA[@]}" --workdir "$OUT/features_fold$fold"
done
for model in hybrid xception vgg16 inception_v3 allnet; do
  for fold in 0 1; do train "$model,fold=$fold" "${model}_fold$fold"; done
done
for fold in 0 1; do train "xception,fold=$fold,hed=0" "xception_nohed_fold$fold"; done
for model in hybrid xception vgg16 inception_v3 allnet; do train "$model,all_subjects" "${model}_all"; done

for model in features hybrid xception vgg16 inception_v3 allnet xception_nohed; do
  if [[ -f "$OUT/${model}_fold0/report.json" && -f "$OUT/${model}_fold1/report.json" ]]; then
    "$PY" -m leukojax.cv "$OUT/${model}_fold0" "$OUT/${model}_fold1" --out "$OUT/${model}_cv" > /dev/null
  fi
done
