# Shared by start.sh and test.sh: a project venv with the package installed editable.
# Sourced, not run. Re-running is cheap: pip only installs what is missing.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${CLARION_VENV:-$ROOT/.venv}"
PYTHON="${PYTHON:-python3}"
if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv "$VENV"
fi
export PATH="$VENV/bin:$PATH"
export LITELLM_LOCAL_MODEL_COST_MAP=True
pip_install() {
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "$@" 2>&1 | grep -v "is ignored: it is neither" || true
  test "${PIPESTATUS[0]}" -eq 0
}
