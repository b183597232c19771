"""Shared fixtures. Async tests run on pytest-jupyter's event loop (no pytest-asyncio)."""

from __future__ import annotations

import os

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

pytest_plugins = ("pytest_jupyter.jupyter_server", "conftest_server", "notebook_support")
