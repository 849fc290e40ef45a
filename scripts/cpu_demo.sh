#!/usr/bin/env bash
# The CPU demo: synthetic volumes -> Decathlon folder -> TFRecords -> train
# -> per-class dice, in about 2 minutes on 2 cores (docs/getting_started.md: Run the demo).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

usage() {
  cat <<'USAGE'
usage: [WORK_DIR=demo_output] [DRY_RUN=1] scripts/cpu_demo.sh
Runs unet3d-demo on the CPU; the report is
$WORK_DIR/model/eval_results.json.
USAGE
}
if help_requested "$@"; then usage; exit 0; fi
WORK_DIR="${WORK_DIR:-demo_output}"

cd "$REPO"
run "$PYTHON" -m unet3d.cli.demo --work_dir="$WORK_DIR"
