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
# system_install PKG:BINARY ...: Debian packages whose binary is missing (needs root and apt).
system_install() {
  local missing=()
  for pair in "$@"; do
    [ -x "${pair#*:}" ] || missing+=("${pair%%:*}")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
    echo "missing system packages: ${missing[*]} (install them with your package manager)" >&2
    return 1
  fi
  apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
}
