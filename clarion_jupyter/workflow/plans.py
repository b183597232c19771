"""Compiled plans by document digest: each distinct document is parsed and compiled once.

Ad-hoc runs (the magic, the CLI, ``Engine.submit`` with a dict or YAML text) send the same
document again and again; compiling it (pydantic, every template parsed by Jinja) costs more
than running a short chain. A :class:`Plan` is immutable once built and shared by every run
of its document, so it is cached under the digest of the source as given, bounded, least
recently used first out. What may change between two runs of one document is still judged at
each: whether it holds the value of a secret set since.
"""

from __future__ import annotations

import hashlib
import json
from collections import OrderedDict

from .compiler import Plan
from .models import Workflow
from .validation import WorkflowSource, WorkflowValidator

DEFAULT_MAX_PLANS = 256


class PlanCache:
    """The validator's plans, compiled once per distinct document (at most ``maxsize`` kept)."""

    def __init__(self, validator: WorkflowValidator, maxsize: int = DEFAULT_MAX_PLANS) -> None:
        self._validator = validator
        self._maxsize = maxsize
        self._plans: OrderedDict[str, Plan] = OrderedDict()
        self.compiled = 0
        """How many documents were compiled (not found here): what the cache saves is visible."""

    def __len__(self) -> int:
        return len(self._plans)

    def plan(self, source: WorkflowSource) -> Plan:
        """The plan of ``source``; a document rejected is never cached, so it is judged again."""
        key = _source_digest(source)
        if key is None:
            self.compiled += 1
            return self._validator.compile(source)
        plan = self._plans.get(key)
        if plan is None:
            self.compiled += 1
            plan = self._plans[key] = self._validator.compile(source)
            if len(self._plans) > self._maxsize:
                self._plans.popitem(last=False)
        else:
            self._plans.move_to_end(key)
            self._validator.refuse_secrets(plan.document)
        return plan


def _source_digest(source: WorkflowSource) -> str | None:
    """The content address of a source as given; None for what has none (a :class:`Workflow`
    object can change after it was compiled, and a dict that is not JSON is refused by the
    compiler with a message, not here)."""
    if isinstance(source, Workflow):
        return None
    if isinstance(source, str):
        data = b"t" + source.encode("utf-8", errors="surrogatepass")  # a key only: the compiler cleans the text
    elif isinstance(source, bytes):
        data = b"t" + source
    else:
        try:
            data = b"d" + json.dumps(source, sort_keys=True, separators=(",", ":")).encode()
        except (TypeError, ValueError, RecursionError):
            return None
    return hashlib.sha256(data).hexdigest()
