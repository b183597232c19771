"""The LLM cache's key: a hash of what determines a reply, and nothing that does not.

Two requests with the same model, host, messages, parameters, response format and tools
get the same reply from a deterministic provider, so they share a key; anything else in a
request (whether it streams, the cap on the reply's bytes, which variable holds the key)
leaves the key as it is, and the key itself, or its variable's value, is never part of it:
an :class:`~.provider.LLMRequest` carries only the variable's name, and the hash leaves
even that out (a new key for the same account asks the same question).
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from .provider import LLMRequest, LLMResult

CACHE_RESOURCE = "llm_cache"
"""Where a job carries the engine's lookup to its worker (``job.resources``): ``{"key"}`` on a
miss, ``{"key", "reply"}`` on a hit. Its presence is what turns the cache on for the job."""

KEY_VERSION = 1
"""Part of every key: a change to what goes into keys makes the old entries miss, not answer wrongly."""


def request_key(request: LLMRequest) -> str:
    """sha256 (hex) of the canonical JSON of the request's model, api_base, messages,
    parameters (``tools`` apart), response_format and tools."""
    parameters = dict(request.parameters)
    tools = parameters.pop("tools", None)
    material: dict[str, Any] = {
        "version": KEY_VERSION,
        "model": request.model,
        "api_base": request.api_base,
        "messages": request.messages,
        "parameters": parameters,
        "response_format": request.response_format,
        "tools": tools,
    }
    canonical = json.dumps(material, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


def cached_result(reply: dict[str, Any]) -> LLMResult:
    """A stored reply as the provider's result, priced at nothing: a hit pays no provider."""
    return LLMResult(text=reply["text"], model=reply["model"], usage=dict(reply["usage"]), cost_usd=0.0)


def is_cached(output: Any) -> bool:
    """Whether a step's output was answered from the cache (how the CLI and the widget mark it)."""
    return isinstance(output, dict) and output.get("cached") is True
