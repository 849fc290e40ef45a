# Shared by the shell recipes in scripts/: variable checks and command echo.
# Source it; do not run it.

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-python}"

# require VAR...: exits 2 with the usage text when any VAR is empty.
require() {
  local missing=()
  for name in "$@"; do
    if [[ -z "${!name:-}" ]]; then missing+=("$name"); fi
  done
  if (( ${#missing[@]} )); then
    echo "error: set ${missing[*]}" >&2
    usage >&2
    exit 2
  fi
}

# run CMD...: prints the command, then runs it unless DRY_RUN=1.
run() {
  printf '+'; printf ' %q' "$@"; printf '\n'
  if [[ "${DRY_RUN:-0}" != 1 ]]; then "$@"; fi
}

# help_requested ARGS...: true for -h or --help.
help_requested() {
  for arg in "$@"; do
    if [[ "$arg" == -h || "$arg" == --help ]]; then return 0; fi
  done
  return 1
}
