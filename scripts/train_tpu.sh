#!/usr/bin/env bash
# Cloud TPU: train, then evaluate, with spatial partitioning
# (input_partition_dims of the config; e.g. v3-32 splits each 256^3 input
# over 16 cores along its first axis).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

usage() {
  cat <<'USAGE'
usage: TPU_NAME=my-tpu MODEL_DIR=gs://bucket/run \
         TRAIN_PATTERN='gs://bucket/records/train-*' \
         EVAL_PATTERN='gs://bucket/records/val-*' \
         [CONFIG=configs/cloud/v3-32_256x256x256_dice.yaml] [DRY_RUN=1] \
         scripts/train_tpu.sh
Runs unet3d --mode=train then --mode=eval on the TPU (bfloat16).
MODEL_DIR and the records must be on gs:// for a Cloud TPU.
USAGE
}
if help_requested "$@"; then usage; exit 0; fi
CONFIG="${CONFIG:-configs/cloud/v3-32_256x256x256_dice.yaml}"
require TPU_NAME MODEL_DIR TRAIN_PATTERN EVAL_PATTERN

cd "$REPO"
run "$PYTHON" -m unet3d.cli.main --mode=train --config_file="$CONFIG" \
  --tpu="$TPU_NAME" --distribution_strategy=tpu --model_dir="$MODEL_DIR" \
  --training_file_pattern="$TRAIN_PATTERN" --eval_file_pattern="$EVAL_PATTERN"
run "$PYTHON" -m unet3d.cli.main --mode=eval --tpu="$TPU_NAME" \
  --distribution_strategy=tpu --model_dir="$MODEL_DIR" \
  --eval_file_pattern="$EVAL_PATTERN"
