#!/usr/bin/env bash
# Several machines (MultiWorkerMirroredStrategy): run this on every host,
# each with its own TASK_INDEX; TF_CONFIG is built from WORKER_HOSTS.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

usage() {
  cat <<'USAGE'
usage: WORKER_HOSTS=host0:12345,host1:12345 TASK_INDEX=0 \
         MODEL_DIR=gs://bucket/run TRAIN_PATTERN='gs://bucket/records/train-*' \
         [CONFIG=configs/gpu/a100_80gb_x8.yaml] [OVERRIDE=...] [DRY_RUN=1] \
         scripts/train_multi_host.sh
Run on every host with the same WORKER_HOSTS and that host's TASK_INDEX
(0 = chief: it writes checkpoints and summaries). MODEL_DIR and the records
must be reachable from every host (gs:// or a shared file system).
USAGE
}
if help_requested "$@"; then usage; exit 0; fi
CONFIG="${CONFIG:-configs/gpu/a100_80gb_x8.yaml}"
require WORKER_HOSTS TASK_INDEX MODEL_DIR TRAIN_PATTERN

workers=$(printf '"%s",' ${WORKER_HOSTS//,/ })
export TF_CONFIG="{\"cluster\": {\"worker\": [${workers%,}]}, \"task\": {\"type\": \"worker\", \"index\": ${TASK_INDEX}}}"
echo "TF_CONFIG=$TF_CONFIG"

cd "$REPO"
run "$PYTHON" -m unet3d.cli.main --mode=train --config_file="$CONFIG" \
  --distribution_strategy=multi_worker --model_dir="$MODEL_DIR" \
  --training_file_pattern="$TRAIN_PATTERN" --params_override="${OVERRIDE:-}"
