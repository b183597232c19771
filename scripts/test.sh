#!/usr/bin/env bash
# The whole test suite on a fresh machine: installs the package with its test extras,
# then runs pytest (which starts its own Jupyter servers, kernels and local LLM stub).
# Extra arguments go to pytest.
source "$(dirname "$0")/env.sh"
pip_install -e "$ROOT[test]"
cd "$ROOT"
exec python -m pytest -q -p no:cacheprovider "$@"
