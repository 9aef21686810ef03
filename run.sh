#!/usr/bin/env bash
# The project's single entry point. Each command sets up its environment on first use (a local
# virtual environment in .venv, reinstalled only when pyproject.toml changes) and is idempotent.
#
#   ./run.sh main [PROFILE]   build the synthetic benchmark and execute the notebook suite into outputs/PROFILE/
#   ./run.sh test             lint + the test suite (what CI runs)
#   ./run.sh lab [ARGS]       register the project's Jupyter kernel and open JupyterLab (ARGS go to it)
#   ./run.sh setup            only create / update the environment
set -euo pipefail
cd "$(dirname "$0")"
ROOT=$(pwd)
VENV="${MTL_CORE_VENV:-$ROOT/.venv}"
PY="$VENV/bin/python"
# idle OpenMP threads sleep instead of spinning: with several processes on few cores (pytest -n 2,
# parallel notebooks) spinning threads starve the busy ones (a tiny op then takes 100x longer)
export OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-PASSIVE}"

say() { if [ -t 1 ]; then printf '\033[1m[mtl_core]\033[0m %s\n' "$*"; else printf '[mtl_core] %s\n' "$*"; fi; }

find_python() {  # pyproject.toml: requires-python >= 3.11 (3.11 first: the pinned torch wheels' Python)
  for candidate in python3.11 python3.12 python3.13 python3 python; do
    if command -v "$candidate" >/dev/null 2>&1 &&
       "$candidate" -c 'import sys; raise SystemExit(sys.version_info[:2] < (3, 11))' 2>/dev/null; then
      command -v "$candidate"; return 0
    fi
  done
  return 1
}

setup() {
  local stamp="$VENV/.installed" want
  want=$(sha256sum pyproject.toml | cut -c1-16)
  if [ -x "$PY" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
    say "environment $VENV is up to date"
    register_kernel
    return 0
  fi
  if [ ! -x "$PY" ]; then
    local base
    base=$(find_python) || { echo "error: Python >= 3.11 is required (none found on PATH)" >&2; exit 1; }
    say "creating virtual environment $VENV with $base"
    "$base" -m venv "$VENV"
  fi
  say "installing mtl_core and its pinned dependencies (first time: several minutes; log: $VENV/install.log)"
  if ! "$PY" -m pip install --disable-pip-version-check -e ".[dev]" >"$VENV/install.log" 2>&1; then
    tail -n 30 "$VENV/install.log" >&2
    echo "error: installation failed, see $VENV/install.log" >&2
    exit 1
  fi
  echo "$want" >"$stamp"
  register_kernel
  say "environment ready"
}

# the kernel every notebook names, inside the environment (--sys-prefix), not per user: two checkouts
# never overwrite each other's, and papermill / JupyterLab started from .venv find it
register_kernel() {
  [ -f "$VENV/share/jupyter/kernels/mtl_core/kernel.json" ] && return 0
  say "registering the Jupyter kernel 'mtl_core' in $VENV"
  "$PY" -m ipykernel install --sys-prefix --name mtl_core --display-name "Python (mtl_core)" >/dev/null
}

main_job() {
  local profile="${1:-quick}"; shift || true
  setup
  say "building the synthetic benchmark (profile $profile)"
  "$PY" -m mtl_core data --profile "$profile"
  say "executing the notebook suite (profile $profile) -> outputs/$profile/ (stored runs are reused)"
  "$PY" -m mtl_core suite --profile "$profile" "$@"
  say "done: open outputs/$profile/report.md"
}

run_tests() {
  setup
  say "ruff check"
  "$VENV/bin/ruff" check mtl_core tests
  say "pytest"
  "$PY" -m pytest -n 2 --dist loadfile "$@"
}

lab() {
  setup
  local extra=()
  if [ "$(id -u)" = 0 ]; then extra+=(--allow-root); fi  # containers and CI boxes run as root
  exec "$VENV/bin/jupyter" lab --notebook-dir "$ROOT/notebooks" "${extra[@]}" "$@"
}

case "${1:-}" in
  main) shift; main_job "$@" ;;
  test) shift; run_tests "$@" ;;
  lab) shift; lab "$@" ;;
  setup) setup ;;
  *) sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
