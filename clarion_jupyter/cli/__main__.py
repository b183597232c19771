"""``python -m clarion_jupyter.cli``: the ``clarion`` command (how tests run it in a subprocess)."""

import sys

from . import main

sys.exit(main())
