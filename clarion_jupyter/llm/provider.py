"""The LLM provider: one chat completion through litellm, with streaming, usage and cost.

The engine only knows the small :class:`LLMProvider` protocol, so tests and other backends
can stand in for litellm. :class:`LiteLLMProvider` imports litellm lazily, in a thread
(:func:`load_litellm`): the import takes seconds of CPU and, unless the bundled cost map is
selected first, goes to the network, so it may neither happen when the server or the CLI
starts nor run on the event loop, where it would freeze the server for its whole duration.
Even in a thread, parts of the import hold the GIL for a tenth of a second at a time, so a
server runs it in a child process instead (:mod:`.host`).

API keys come from environment variables named by the agent, are read at call time and go
to litellm only, always as an explicit ``api_key``: an agent that names no key sends none,
although litellm would otherwise read the provider's usual variable (``OPENAI_API_KEY``)
from the environment itself (see :data:`NO_KEY`). Error messages are scrubbed of the key
because some providers quote the key they rejected.

A reply is capped at ``max_output_bytes``: a stream is stopped as soon as its text passes
the cap (each delta would otherwise be stored as an event), a whole reply is refused.
"""

from __future__ import annotations

import asyncio
import os
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any, Protocol

from ..core.secrets import reread_environment
from .pricing import Quote, quote

TokenCallback = Callable[[str], None]

RETRYABLE_STATUS = frozenset({408, 409, 425, 429})
"""Besides every 5xx: timeouts, conflicts, too early and rate limits are worth another try."""

NO_KEY = "no-key-configured"
"""The ``api_key`` of a call whose agent names no key. litellm treats an empty or missing key
as "read the provider's usual variable" (``OPENAI_API_KEY``, ``OLLAMA_API_KEY``, ...) from the
environment, so a key would reach a host its agent never chose; this placeholder is sent
instead. Local servers that need no key (Ollama, an OpenAI-compatible server) ignore it; a
provider that needs one answers 401, and the error says to set ``api_key_env``."""

_LITELLM_PREFIX = re.compile(r"^litellm\.\w+:\s*")
_REDACTED = "[REDACTED]"


@dataclass(slots=True)
class LLMRequest:
    """What to ask: ``parameters`` pass through to litellm (temperature, mock_response, ...)."""

    model: str
    messages: list[dict[str, Any]]
    parameters: dict[str, Any] = field(default_factory=dict)
    api_base: str | None = None
    api_key_env: str | None = None
    response_format: dict[str, Any] | None = None
    stream: bool = False
    max_output_bytes: int | None = None
    """The reply's text may not pass this many bytes (UTF-8): the call stops, a ProviderError."""


@dataclass(slots=True)
class LLMResult:
    """The reply; ``cost_usd`` is None when litellm has no price for the model."""

    text: str
    model: str
    usage: dict[str, int]
    cost_usd: float | None


class ProviderError(Exception):
    """A call failed; ``retryable`` says whether the same request may succeed later."""

    def __init__(self, message: str, retryable: bool, status_code: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.retryable = retryable
        self.status_code = status_code


class LLMProvider(Protocol):
    """What the engine needs of an LLM backend: calls, streaming, token counts; litellm in child processes is the one in use."""

    async def complete(self, request: LLMRequest, on_token: TokenCallback | None = None) -> LLMResult:
        """Run one chat completion; with ``request.stream``, ``on_token`` gets every text delta."""
        ...

    async def warm(self) -> None:
        """Get ready for calls that are coming (load the SDK), without holding up the caller's loop."""
        ...

    async def aclose(self) -> None:
        """Release what the provider holds on the running event loop, before the loop closes."""
        ...

    async def count_tokens(self, request: LLMRequest) -> int:
        """Prompt tokens of ``request``'s messages for its model (the model's tokenizer, when known)."""
        ...

    async def count_text_tokens(self, model: str, texts: list[str]) -> list[int]:
        """Tokens of each text for ``model``'s tokenizer (one call for many files)."""
        ...

    async def max_input_tokens(self, model: str) -> int | None:
        """The model's input window from litellm's model info; None when litellm does not know it."""
        ...

    async def quote(self, request: LLMRequest) -> Quote:
        """The most ``request`` may cost: its prompt tokens, its output limit and their price."""
        ...


class LiteLLMProvider:
    """The default provider: every model litellm supports, through ``litellm.acompletion``."""

    async def complete(self, request: LLMRequest, on_token: TokenCallback | None = None) -> LLMResult:
        return await self.call(request, read_api_key(request.api_key_env), on_token)

    async def call(self, request: LLMRequest, api_key: str | None, on_token: TokenCallback | None = None) -> LLMResult:
        """:meth:`complete` with the key already read (by the process that owns the environment)."""
        litellm = await load_litellm()
        kwargs = _completion_kwargs(request, api_key)
        try:
            if request.stream:
                return await _stream(litellm, request, kwargs, on_token)
            return await _single(litellm, request, kwargs)
        except Exception as exc:
            error = provider_error(exc, secret=api_key)
            if api_key is None and error.status_code == 401:
                error.message += (
                    " (the agent names no api_key_env, so no key was sent: set it to the variable that holds the key)"
                )
        # raised outside the handler so the original, whose text may quote the key, is not chained
        raise error

    async def warm(self) -> None:
        await load_litellm()

    async def aclose(self) -> None:
        """Let litellm's background logging of finished calls settle, on the loop that is ending.

        litellm logs every call on a worker task bound to the running event loop; a host that
        closes its loop (the engine at shutdown, a kernel's background loop, each test) calls
        this first, or the pending tasks are destroyed with warnings.
        """
        if _loaded is None:  # never imported (or still importing: nothing of it ran on this loop)
            return
        try:
            from litellm.litellm_core_utils.logging_worker import GLOBAL_LOGGING_WORKER
        except ImportError:  # an internal of litellm: newer versions may move it
            return
        await GLOBAL_LOGGING_WORKER.flush()
        await GLOBAL_LOGGING_WORKER.stop()

    async def count_tokens(self, request: LLMRequest) -> int:
        """Counted in a thread: the first count imports litellm (seconds) and loads a tokenizer."""

        def count() -> int:
            return int(_import_litellm().token_counter(model=request.model, messages=request.messages))

        return await asyncio.to_thread(count)

    async def count_text_tokens(self, model: str, texts: list[str]) -> list[int]:
        def count() -> list[int]:
            counter = _import_litellm().token_counter
            return [int(counter(model=model, text=text)) if text else 0 for text in texts]

        return await asyncio.to_thread(count)

    async def max_input_tokens(self, model: str) -> int | None:
        def window() -> int | None:
            try:
                info = _import_litellm().get_model_info(model)
            except Exception:  # litellm raises for every model missing from its map
                return None
            value = info.get("max_input_tokens") or info.get("max_tokens")
            return int(value) if value else None

        return await asyncio.to_thread(window)

    async def quote(self, request: LLMRequest) -> Quote:
        """Counted and priced in a thread, as :meth:`count_tokens` is."""
        return await asyncio.to_thread(
            lambda: quote(_import_litellm(), request.model, request.messages, request.parameters)
        )


class OutputTooLarge(Exception):
    """The reply passed ``max_output_bytes``; raised inside the call, so the stream is closed."""

    def __init__(self, limit: int, streamed: bool) -> None:
        what = "while streaming: the call was stopped" if streamed else "in one piece: it was refused"
        super().__init__(f"the reply passed max_output_bytes ({limit} bytes) {what}")


def read_api_key(env_name: str | None) -> str | None:
    """The key from the named environment variable; the error names the variable, never a value."""
    if env_name is None:
        return None
    reread_environment(env_name)  # the key's value is masked in whatever the call returns
    value = os.environ.get(env_name)
    if not value:
        raise ProviderError(f"environment variable {env_name} (the agent's api_key_env) is not set", retryable=False)
    return value


def provider_error(exc: Exception, secret: str | None = None) -> ProviderError:
    """``type: message`` without litellm's prefixes or the API key; 5xx, 429 and network errors retry."""
    if isinstance(exc, OutputTooLarge):  # the same request would give the same reply
        return ProviderError(str(exc), retryable=False)
    status = getattr(exc, "status_code", None)
    status = status if isinstance(status, int) else None
    message = _LITELLM_PREFIX.sub("", str(getattr(exc, "message", None) or exc)).strip()
    if not message.startswith(type(exc).__name__):
        message = f"{type(exc).__name__}: {message}"
    if secret:
        message = message.replace(secret, _REDACTED)
    return ProviderError(message, retryable=_is_retryable(exc, status), status_code=status)


def _is_retryable(exc: Exception, status: int | None) -> bool:
    if status is not None:
        return status >= 500 or status in RETRYABLE_STATUS
    return isinstance(exc, (TimeoutError, ConnectionError))


_loaded: ModuleType | None = None
_import_lock = threading.Lock()


def _import_litellm() -> ModuleType:
    """Import litellm offline (bundled cost map) and without its banners; once per process."""
    global _loaded
    with _import_lock:
        if _loaded is None:
            os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
            import litellm

            litellm.suppress_debug_info = True
            _loaded = litellm
    return _loaded


async def load_litellm() -> ModuleType:
    """litellm, imported in a worker thread the first time, so the event loop keeps serving.

    Concurrent first calls wait for the same import (the lock is taken in their threads).
    """
    if _loaded is not None:
        return _loaded
    return await asyncio.to_thread(_import_litellm)


def _completion_kwargs(request: LLMRequest, api_key: str | None) -> dict[str, Any]:
    """litellm kwargs; the SDK's own retries are off because the engine retries with backoff.

    ``api_key`` is always given: the agent's key, or :data:`NO_KEY`, so that litellm never
    falls back to a key of its own choosing from the environment."""
    kwargs: dict[str, Any] = {"max_retries": 0, **request.parameters}
    kwargs |= {"model": request.model, "messages": request.messages, "api_key": api_key or NO_KEY}
    optional = {"api_base": request.api_base, "response_format": request.response_format}
    kwargs |= {name: value for name, value in optional.items() if value is not None}
    if request.stream:
        kwargs |= {"stream": True, "stream_options": {"include_usage": True}}
    return kwargs


async def _single(litellm: ModuleType, request: LLMRequest, kwargs: dict[str, Any]) -> LLMResult:
    response = await litellm.acompletion(**kwargs)
    text = response.choices[0].message.content or ""
    if request.max_output_bytes is not None and len(text.encode()) > request.max_output_bytes:
        raise OutputTooLarge(request.max_output_bytes, streamed=False)
    return LLMResult(
        text=text,
        model=request.model,
        usage=_usage(getattr(response, "usage", None)),
        cost_usd=_response_cost(litellm, response),
    )


def _response_cost(litellm: ModuleType, response: Any) -> float | None:
    """The cost litellm already priced into the response (None: it could not price the
    model), else a fresh, slower calculation."""
    hidden = getattr(response, "_hidden_params", None) or {}
    if "response_cost" in hidden:
        cost = hidden["response_cost"]
        return float(cost) if cost is not None else None
    return _guarded_cost(lambda: litellm.completion_cost(completion_response=response))


async def _stream(
    litellm: ModuleType, request: LLMRequest, kwargs: dict[str, Any], on_token: TokenCallback | None
) -> LLMResult:
    """Assemble the streamed text, passing each delta on; usage comes from the last chunk.

    The text is measured as it comes: a delta that takes it past ``max_output_bytes`` is
    not passed on, and leaving the loop closes the stream (the HTTP response with it)."""
    parts: list[str] = []
    usage: Any = None
    size, limit = 0, request.max_output_bytes
    stream = await litellm.acompletion(**kwargs)
    try:
        async for chunk in stream:
            usage = getattr(chunk, "usage", None) or usage
            delta = chunk.choices[0].delta.content if chunk.choices else None
            if delta:
                size += len(delta.encode())
                if limit is not None and size > limit:
                    raise OutputTooLarge(limit, streamed=True)
                parts.append(delta)
                if on_token is not None:
                    on_token(delta)
    finally:
        if (close := getattr(stream, "aclose", None)) is not None:
            await close()
    tokens = _usage(usage)
    return LLMResult(
        text="".join(parts),
        model=request.model,
        usage=tokens,
        cost_usd=_guarded_cost(lambda: sum(litellm.cost_per_token(model=request.model, **tokens))),
    )


def _usage(usage: Any) -> dict[str, int]:
    """Token counts; 0 when the provider reported none."""
    return {
        "prompt_tokens": int(getattr(usage, "prompt_tokens", 0) or 0),
        "completion_tokens": int(getattr(usage, "completion_tokens", 0) or 0),
    }


def _guarded_cost(compute: Callable[[], float]) -> float | None:
    """litellm raises for models missing from its price map: that is an unknown cost, not a failure."""
    try:
        cost = compute()
    except Exception:
        return None
    return float(cost) if cost is not None else None
