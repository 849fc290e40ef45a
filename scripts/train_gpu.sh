#!/usr/bin/env bash
# One machine, N GPUs (MirroredStrategy): train and evaluate.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

usage() {
  cat <<'USAGE'
usage: NUM_GPUS=2 MODEL_DIR=/runs/lits TRAIN_PATTERN='/data/records/train-*' \
         EVAL_PATTERN='/data/records/val-*' \
         [CONFIG=configs/gpu/t4_16gb.yaml] [OVERRIDE='train_steps=1000'] \
         [DRY_RUN=1] scripts/train_gpu.sh
Runs unet3d --mode=train_and_eval over NUM_GPUS GPUs. The config's
train_batch_size is the global batch: it must divide by NUM_GPUS.
USAGE
}
if help_requested "$@"; then usage; exit 0; fi
CONFIG="${CONFIG:-configs/gpu/t4_16gb.yaml}"
require NUM_GPUS MODEL_DIR TRAIN_PATTERN EVAL_PATTERN

cd "$REPO"
run "$PYTHON" -m unet3d.cli.main --mode=train_and_eval --config_file="$CONFIG" \
  --distribution_strategy=mirrored --num_gpus="$NUM_GPUS" \
  --model_dir="$MODEL_DIR" --training_file_pattern="$TRAIN_PATTERN" \
  --eval_file_pattern="$EVAL_PATTERN" --params_override="${OVERRIDE:-}"
