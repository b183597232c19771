#!/usr/bin/env bash
# The main job: JupyterLab with the Clarion extension (embedded DuckDB + in-process queue),
# opening the quickstart notebook. Extra arguments go to `jupyter lab`.
source "$(dirname "$0")/env.sh"
pip_install -e "$ROOT"
cd "$ROOT"
args=(--ServerApp.root_dir="$ROOT" --ip=127.0.0.1)
[ "$(id -u)" = 0 ] && args+=(--allow-root)
[ -n "${CI:-}" ] && args+=(--no-browser)
exec jupyter lab "${args[@]}" "$@" notebooks/quickstart.ipynb
