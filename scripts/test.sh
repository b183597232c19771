#!/usr/bin/env bash
# The whole test suite on a fresh machine: installs what the tests need (Debian's Chromium for
# the browser tests and redis-server for the broker tests, when missing; the package with its
# test extras, which builds the labextension), then runs pytest, which starts its own Jupyter
# servers, kernels, brokers and local LLM stub. Extra arguments go to pytest.
source "$(dirname "$0")/env.sh"
system_install chromium:/usr/bin/chromium redis-server:/usr/bin/redis-server
pip_install -e "$ROOT[test]"
cd "$ROOT"
exec python -m pytest -q -p no:cacheprovider "$@"
