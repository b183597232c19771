#!/usr/bin/env bash
# The whole test suite on a fresh machine: installs what the tests need (Debian's Chromium for
# the browser tests and redis-server for the broker tests, when missing; the package with its
# test extras, which builds the labextension), runs the labextension's jest tests (only for a
# whole run: not when pytest arguments pick tests), then pytest, which starts its own Jupyter
# servers, kernels, brokers, local LLM stub and, for tests/ui, JupyterLab in headless Chromium.
# Extra arguments go to pytest.
source "$(dirname "$0")/env.sh"
system_install chromium:/usr/bin/chromium redis-server:/usr/bin/redis-server
pip_install -e "$ROOT[test]"
cd "$ROOT"
if [ $# -eq 0 ]; then
  (cd labextension && jlpm install --immutable >/dev/null && jlpm test --ci)
fi
exec python -m pytest -q -p no:cacheprovider "$@"
