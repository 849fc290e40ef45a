#!/usr/bin/env bash
# k-fold cross-validation, then the k models as one ensemble: evaluation on
# held-out records and prediction average the k models' probabilities.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

usage() {
  cat <<'USAGE'
usage: RECORDS=/data/brats_records MODEL_ROOT=/runs/brats \
         [CONFIG=configs/brats/unet3d_nvidia.yaml] [NUM_FOLDS=5] \
         [TEST_PATTERN='/data/test_records/*.tfrecord'] \
         [PREDICT_INPUT='/data/new/*.nii.gz' PREDICT_OUTPUT=/runs/brats/seg] \
         [OVERRIDE='train_steps=1000'] [DRY_RUN=1] scripts/kfold_ensemble.sh
RECORDS is a converter's output folder written with --num_folds=NUM_FOLDS
(its splits.json lists the folds). Fold k trains on the train side of fold k
and evaluates its val side, in MODEL_ROOT/fold<k>. Then, with TEST_PATTERN,
the ensemble of all folds is evaluated on those records; with PREDICT_INPUT
and PREDICT_OUTPUT it segments those NIfTI files
(--model_dir=MODEL_ROOT/fold0,MODEL_ROOT/fold1,...).
USAGE
}
if help_requested "$@"; then usage; exit 0; fi
CONFIG="${CONFIG:-configs/brats/unet3d_nvidia.yaml}"
NUM_FOLDS="${NUM_FOLDS:-5}"
require RECORDS MODEL_ROOT
if [[ ! -f "$RECORDS/splits.json" && "${DRY_RUN:-0}" != 1 ]]; then
  echo "error: $RECORDS/splits.json: not found (convert with --num_folds=$NUM_FOLDS)" >&2
  exit 2
fi
if [[ -n "${PREDICT_INPUT:-}" && -z "${PREDICT_OUTPUT:-}" ]]; then
  echo "error: set PREDICT_OUTPUT with PREDICT_INPUT" >&2
  usage >&2
  exit 2
fi

cd "$REPO"
dirs=()
for ((k = 0; k < NUM_FOLDS; k++)); do
  override="data.split_file=$RECORDS/splits.json,data.fold=$k"
  if [[ -n "${OVERRIDE:-}" ]]; then override="$override,$OVERRIDE"; fi
  run "$PYTHON" -m unet3d.cli.main --mode=train_and_eval \
    --config_file="$CONFIG" --model_dir="$MODEL_ROOT/fold$k" \
    --training_file_pattern="$RECORDS/*.tfrecord" \
    --eval_file_pattern="$RECORDS/*.tfrecord" --params_override="$override"
  dirs+=("$MODEL_ROOT/fold$k")
done
ensemble=$(IFS=,; echo "${dirs[*]}")

if [[ -n "${TEST_PATTERN:-}" ]]; then
  # data.split_file= (empty): every test record, not one fold's val side.
  run "$PYTHON" -m unet3d.cli.main --mode=eval --model_dir="$ensemble" \
    --eval_file_pattern="$TEST_PATTERN" --params_override="data.split_file="
fi
if [[ -n "${PREDICT_INPUT:-}" ]]; then
  run "$PYTHON" -m unet3d.cli.main --mode=predict --model_dir="$ensemble" \
    --params_override="predict.input_pattern='$PREDICT_INPUT',predict.output_dir=$PREDICT_OUTPUT"
fi
