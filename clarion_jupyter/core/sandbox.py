"""The one Jinja2 environment for user templates: step configs and agents' system prompts.

Sandboxed (templates come from documents, not from code) with strict undefined variables,
so a typo is an error rather than an empty string.
"""

from __future__ import annotations

import json
from typing import Any

from jinja2 import StrictUndefined
from jinja2.sandbox import SandboxedEnvironment


class _Environment(SandboxedEnvironment):
    """Dotted access reads mapping keys before attributes, so an input or output named
    ``items``, ``keys`` or ``values`` is that value, not the dict method of that name."""

    def getattr(self, obj: Any, attribute: str) -> Any:
        if isinstance(obj, dict) and attribute in obj:
            return obj[attribute]
        return super().getattr(obj, attribute)


environment = _Environment(undefined=StrictUndefined, autoescape=False, keep_trailing_newline=True)
environment.filters["fromjson"] = json.loads
