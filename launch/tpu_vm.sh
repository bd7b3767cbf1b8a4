#!/usr/bin/env bash
# Cloud TPU VM pod slice: run the same command on every worker; jax.distributed.initialize() finds
# the other workers through the TPU metadata. The workdir must be shared (a gs:// bucket).
#
#   launch/tpu_vm.sh TPU_NAME ZONE configs/hybrid.py gs://bucket/workdirs/hybrid [--config.x=y ...]
set -euo pipefail
tpu="${1:?TPU name}"; zone="${2:?zone}"; config="${3:?config}"; workdir="${4:?workdir (gs://...)}"
shift 4
repo="${REPO_DIR:-~/leukojax}"
# Once per pod: copy the repository to every worker and install with the TPU extra.
if [ "${SETUP:-0}" = 1 ]; then
  gcloud compute tpus tpu-vm scp --recurse --worker=all --zone="$zone" . "$tpu:$repo"
  gcloud compute tpus tpu-vm ssh "$tpu" --zone="$zone" --worker=all \
    --command="cd $repo && make setup && .venv/bin/uv pip install --python .venv/bin/python -e '.[tpu]'"
fi
gcloud compute tpus tpu-vm ssh "$tpu" --zone="$zone" --worker=all \
  --command="cd $repo && .venv/bin/python -m leukojax.main --config $config --workdir $workdir $*"
