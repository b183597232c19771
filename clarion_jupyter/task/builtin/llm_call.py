"""The ``llm_call`` task: one chat completion by an agent, optionally streamed or schema-checked.

The engine resolves ``with.agent`` and hands the agent document over in
``ctx.resources["agent"]`` (workers have no agent store). The agent supplies the model,
the system prompt (a template over the caller's user variables), the parameters, the
codebase context and the output schema; the step may override the model, parameters and
schema for one call.

What reaches the model is bounded before the call: the codebase context (files chosen by
hand included) is counted with the model's tokenizer and the step fails, naming the largest
files, when it passes the agent's ``context.max_tokens`` (by default half the model's input
window). Credential files never go, also when chosen by hand. The key goes only where the
agent says: a step may point the call at another host (``parameters.api_base``) only when it
also names the key for it (``api_key_env``).

With the LLM cache on for the step (``with.cache``, the run, the agent or the server), the
engine hands over what it found for the request's key in ``ctx.resources["llm_cache"]``; the
task checks that its own request has that key and then answers from it without calling the
provider (a streamed step replays the text as ``llm_token`` events). The output then says
``cached`` and ``cache_key``: a hit costs nothing and keeps the first call's usage.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from jinja2 import Template
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from ...agent.context import ContextFile, ContextSelection, fenced, gather_context, render_context
from ...agent.models import ENV_NAME_PATTERN, Agent, refuse_api_key
from ...core.protocol import EventType
from ...core.sandbox import environment
from ...core.secrets import SecretMasker
from ...core.workspace import Workspace, WorkspacePathError
from ...llm.cache import CACHE_RESOURCE, cached_result, request_key
from ...llm.host import ProcessProvider
from ...llm.provider import LLMProvider, LLMRequest, LLMResult, ProviderError, TokenCallback
from ..base import Task, TaskConfig, TaskContext, TaskFailed

if TYPE_CHECKING:
    from jsonschema.protocols import Validator

DEFAULT_PROVIDER: LLMProvider = ProcessProvider()

DEFAULT_MAX_CONTEXT_TOKENS = 100_000
"""The context's cap when the agent sets none and litellm does not know the model's window."""
CONTEXT_WINDOW_SHARE = 0.5
"""Of a known input window, the share the codebase context may fill by default: the rest is
the system prompt, the conversation, the task and the reply."""
LARGEST_SHOWN = 5

REPLAY_CHARS = 64
"""A cached reply is streamed again in pieces of this size (the coalescer's own batch)."""

KEY_DESTINATIONS = ("api_base", "base_url")
"""The litellm parameters that choose the host a call (and so its key) goes to."""

_PLAIN_TEXT = re.compile(r"[^{\r]*")
"""Text that Jinja renders unchanged: every delimiter starts with a brace, and a carriage return
is the only line break it rewrites."""
_JSON_FENCE = re.compile(r"^\s*```[A-Za-z0-9_-]*[ \t]*\n(?P<body>.*?)\n?```\s*$", re.DOTALL)


class Message(BaseModel):
    """One chat message of an ``llm_call``'s own conversation."""

    model_config = ConfigDict(extra="forbid")

    role: Literal["system", "user", "assistant"]
    content: str


class LLMCallConfig(TaskConfig):
    """An ``llm_call`` step: which agent, the prompt, and the settings a step may change for this call only."""

    agent: str = Field(min_length=1, description="Id of the agent that answers.")
    prompt: str | None = Field(None, description="The user message, sent after `messages`.")
    messages: list[Message] = Field(default_factory=list, description="Conversation before the prompt.")
    response_format: dict[str, Any] | None = Field(
        None, description="JSON schema the reply must satisfy; overrides the agent's output_schema."
    )
    stream: bool = Field(False, description="Stream the reply as llm_token events.")
    variables: dict[str, Any] = Field(default_factory=dict, description="Values of the agent's user variables.")
    files: list[str] = Field(
        default_factory=list,
        description="Workspace files sent along, added to the agent's codebase context (chosen by hand).",
    )
    model: str | None = Field(None, min_length=1, description="litellm model string overriding the agent's.")
    parameters: dict[str, Any] = Field(default_factory=dict, description="Merged over the agent's parameters.")
    api_key_env: str | None = Field(
        None,
        pattern=ENV_NAME_PATTERN,
        description="The variable holding the key for this call instead of the agent's: needed to send "
        "the call elsewhere with parameters.api_base.",
    )
    default_response_format: dict[str, Any] | None = Field(
        None,
        description="JSON schema asked for when neither response_format nor the agent's output_schema "
        "gives one; a reply in prose is kept as text, a JSON reply must match.",
    )
    cache: bool | None = Field(
        None,
        description="Answer from the LLM cache when the same request was answered before (true), or always "
        "call the model (false); unset: the run's, the agent's or the server's choice, in that order.",
    )

    @model_validator(mode="after")
    def _has_input(self) -> LLMCallConfig:
        if self.prompt is None and not self.messages:
            raise ValueError("give a prompt or messages")
        return self

    @model_validator(mode="after")
    def _key_follows_host(self) -> LLMCallConfig:
        """Another host than the agent's would get the agent's key, unless the step names its own."""
        redirected = [name for name in KEY_DESTINATIONS if name in self.parameters]
        if redirected and self.api_key_env is None:
            raise ValueError(
                f"parameters.{redirected[0]} would send the agent's API key to another host: "
                "name the key for that host in this step's api_key_env, or set api_base on the agent"
            )
        return self

    @field_validator("parameters")
    @classmethod
    def _no_secrets(cls, value: dict[str, Any]) -> dict[str, Any]:
        return refuse_api_key(value, "API keys are never passed in steps: set the agent's api_key_env instead")


class LLMCallTask(Task):
    """Ask an agent; with a schema, the reply must be JSON that validates (else a permanent failure)."""

    name = "llm_call"
    Config = LLMCallConfig
    description = "Call an agent's LLM with a prompt; optional streaming and JSON-schema output."
    needs_agent = True
    provider: ClassVar[LLMProvider] = DEFAULT_PROVIDER

    async def run(self, config: LLMCallConfig, ctx: TaskContext) -> dict[str, Any]:
        agent = _agent(ctx)
        key_env = config.api_key_env or agent.api_key_env
        if key_env is not None and (problem := ctx.settings.secrets.key_problem(key_env)):
            raise TaskFailed(problem, retryable=False)
        if (problem := _model_leaves_the_agents_provider(agent, config)) is not None:
            raise TaskFailed(problem, retryable=False)
        demanded = config.response_format or agent.output_schema
        schema = demanded or config.default_response_format
        validator = _schema_validator(schema) if schema is not None else None
        try:
            prepared = await prepare_call(agent, config, ctx.workspace, self.provider)
        except ProviderError as exc:  # counting tokens goes to the provider's process too
            raise _failed(exc) from None
        if (problem := prepared.over_budget()) is not None:
            raise TaskFailed(problem, details=prepared.context_report(), retryable=False)
        request = prepared.request
        if (reserved := ctx.resources.get("budget")) is not None and prepared.files:
            await hold_to_reservation(request, reserved, self.provider)
        request.max_output_bytes = ctx.settings.max_output_bytes
        tokens = None
        if config.stream:
            masker = SecretMasker(ctx.settings.secrets)
            tokens = TokenCoalescer(
                lambda text: ctx.emit(EventType.llm_token, {"text": text}),
                mask=masker.text,
                holdback=max(masker.longest - 1, 0),
            )
        cache = ctx.resources.get(CACHE_RESOURCE)
        key = request_key(request) if cache is not None else None
        hit = cache.get("reply") if cache is not None and cache.get("key") == key else None
        try:
            result = _replayed(hit, tokens) if hit is not None else await self.provider.complete(request, tokens)
        except ProviderError as exc:
            raise _failed(exc) from None
        finally:
            if tokens is not None:
                tokens.flush(final=True)
        output: dict[str, Any] = {
            "text": result.text,
            "usage": result.usage,
            "cost_usd": result.cost_usd,
            "model": result.model,
        }
        if key is not None:
            output |= {"cached": hit is not None, "cache_key": key}
        if agent.context is not None:
            output["context"] = prepared.selection.summary() | {"tokens": prepared.context_tokens}
        if validator is not None:
            try:
                output["json"] = _parse_reply(result.text, validator, required=demanded is not None)
            except TaskFailed as exc:  # the call was made: what it spent counts against a budget
                exc.details = {**exc.details, "usage": result.usage, "cost_usd": result.cost_usd}
                raise
        return output

    async def cache_key(self, config: LLMCallConfig, ctx: TaskContext) -> str | None:
        """The key of the request :meth:`run` would send (its messages built from the workspace
        as it is now); raises what :meth:`run` would fail with."""
        request, _, _ = await build_request(_agent(ctx), config, ctx.workspace)
        return request_key(request)


def _replayed(reply: dict[str, Any], on_token: TokenCallback | None) -> LLMResult:
    """A cached reply as a call's result, its text streamed again in pieces when the step streams."""
    result = cached_result(reply)
    if on_token is not None:
        for start in range(0, len(result.text), REPLAY_CHARS):
            on_token(result.text[start : start + REPLAY_CHARS])
    return result


class TokenCoalescer:
    """Batches streamed deltas: at most one emit per ``interval_s`` unless ``max_chars`` pile up.

    Each emit becomes a stored event and a WebSocket message, so emitting per token would
    flood both; a timer flushes text that would otherwise wait for the next delta.

    With ``mask``, what is emitted has secrets masked; the last ``holdback`` characters wait
    for the next flush, so a secret split across deltas is masked whole (the final flush
    sends everything).
    """

    def __init__(
        self,
        emit: Callable[[str], None],
        interval_s: float = 0.05,
        max_chars: int = 64,
        mask: Callable[[str], str] | None = None,
        holdback: int = 0,
    ) -> None:
        self._emit = emit
        self._mask = mask
        self._holdback = holdback
        self._interval_s = interval_s
        self._max_chars = max_chars
        self._parts: list[str] = []
        self._size = 0
        self._last_emit = float("-inf")
        self._timer: asyncio.TimerHandle | None = None

    def __call__(self, delta: str) -> None:
        self._parts.append(delta)
        self._size += len(delta)
        wait = self._last_emit + self._interval_s - time.monotonic()
        if self._size >= self._max_chars or wait <= 0:
            self.flush()
        elif self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(wait, self.flush)

    def flush(self, final: bool = False) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self._parts:
            return
        text = "".join(self._parts)
        if self._mask is not None:
            text = self._mask(text)
        keep = min(self._holdback, len(text)) if not final else 0
        text, held = (text[: len(text) - keep], text[len(text) - keep :]) if keep else (text, "")
        self._parts[:] = [held] if held else []
        self._size = len(held)
        if text:
            self._last_emit = time.monotonic()
            self._emit(text)


async def hold_to_reservation(request: LLMRequest, reserved: dict[str, Any], provider: LLMProvider) -> None:
    """The engine reserved this call's worst case for its run's budget before sending the job;
    a prompt that grew since (a workspace file it sends changed) would spend more than was
    reserved. Only a prompt with files can: the rest is the job's agent and config."""
    tokens = await provider.count_tokens(request)
    if tokens > reserved["prompt_tokens"]:
        raise TaskFailed(
            f"the prompt is {tokens:,} tokens, more than the {reserved['prompt_tokens']:,} the run's budget "
            "reserved for it (its files changed since): the call was not made",
            details={"prompt_tokens": tokens, "reserved_prompt_tokens": reserved["prompt_tokens"]},
            code="budget_exceeded",
        )


def _failed(error: ProviderError) -> TaskFailed:
    return TaskFailed(error.message, details={"status_code": error.status_code}, retryable=error.retryable)


def _agent(ctx: TaskContext) -> Agent:
    document = ctx.resources.get("agent")
    if document is None:
        raise TaskFailed("no agent was resolved for this step", retryable=False)
    try:
        return Agent.model_validate(document)
    except ValidationError as exc:
        raise TaskFailed(f"invalid agent document: {exc}", retryable=False) from None


@dataclass(slots=True)
class PreparedCall:
    """The exact request a step sends, and what its codebase context holds and costs: also
    what ``POST /api/v3/agents/{id}/prompt`` shows."""

    request: LLMRequest
    selection: ContextSelection
    """The files the agent's context selected, and the entries it left out, with why."""
    files: list[ContextFile]
    """Every file in the Codebase Context section: the selection's, then those chosen by hand."""
    file_tokens: list[int]
    max_tokens: int

    @property
    def context_tokens(self) -> int:
        return sum(self.file_tokens)

    def over_budget(self) -> str | None:
        """Why the context may not be sent (None: it fits its cap), with how to narrow it."""
        if self.context_tokens <= self.max_tokens:
            return None
        largest = sorted(zip(self.file_tokens, self.files, strict=True), key=lambda each: -each[0])[:LARGEST_SHOWN]
        shown = ", ".join(f"{file.path} ({tokens:,} tokens)" for tokens, file in largest)
        return (
            f"the codebase context is {self.context_tokens:,} tokens in {len(self.files)} files, over its cap of "
            f"{self.max_tokens:,} (context.max_tokens); largest: {shown}. Narrow it with the agent's "
            "context.include_globs, exclude_globs, content_regex or max_files, or choose fewer files"
        )

    def context_report(self) -> dict[str, Any]:
        """The files sent with their size and tokens, the entries left out, the total and the cap."""
        return {
            "files": [
                {"path": file.path, "bytes": file.size, "tokens": tokens}
                for file, tokens in zip(self.files, self.file_tokens, strict=True)
            ],
            "skipped": self.selection.summary()["skipped"],
            "tokens": self.context_tokens,
            "max_tokens": self.max_tokens,
            "problem": self.over_budget(),
        }


async def prepare_call(
    agent: Agent, config: LLMCallConfig, workspace: Workspace, provider: LLMProvider
) -> PreparedCall:
    """The request, and its codebase context counted with the model's tokenizer (by ``provider``)."""
    request, selection, files = await build_request(agent, config, workspace)
    model = request.model
    file_tokens = await provider.count_text_tokens(model, [fenced(f) for f in files]) if files else []
    cap = agent.context.max_tokens if agent.context is not None else None
    return PreparedCall(request, selection, files, file_tokens, cap or await _default_context_cap(provider, model))


async def build_request(
    agent: Agent, config: LLMCallConfig, workspace: Workspace
) -> tuple[LLMRequest, ContextSelection, list[ContextFile]]:
    """The exact request a step sends, the codebase context's selection, and every file the
    request carries (the selection's, then those chosen by hand)."""
    schema = config.response_format or agent.output_schema or config.default_response_format
    selection = await gather_context(agent.context, workspace) if agent.context is not None else ContextSelection()
    files = selection.files
    if config.files:
        chosen = await asyncio.to_thread(_read_chosen, workspace, config.files)
        selected = {f.path for f in files}
        files = [*files, *(f for f in chosen if f.path not in selected)]
    parameters = agent.parameters | config.parameters
    request = LLMRequest(
        model=config.model or agent.model,
        messages=_messages(agent, config, files),
        parameters=parameters,
        api_base=_host(agent, config, parameters),
        api_key_env=config.api_key_env or agent.api_key_env,
        response_format=_json_schema_format(schema) if schema is not None else None,
        stream=config.stream,
    )
    return request, selection, files


def _model_leaves_the_agents_provider(agent: Agent, config: LLMCallConfig) -> str | None:
    """A step's model with another provider prefix than the agent's would take the agent's key
    to that provider: allowed only when the step names its own key (None: no such problem)."""
    if config.model is None or agent.api_key_env is None or config.api_key_env is not None:
        return None
    if _provider_prefix(config.model) == _provider_prefix(agent.model):
        return None
    return (
        f"model '{config.model}' goes to another provider than agent '{agent.id}' ({agent.model}), "
        f"which would get the agent's key ({agent.api_key_env}): name the key for it in this step's api_key_env"
    )


def _provider_prefix(model: str) -> str | None:
    """litellm's provider prefix (``openrouter`` of ``openrouter/x``); None for a bare name."""
    return model.split("/", 1)[0] if "/" in model else None


def _host(agent: Agent, config: LLMCallConfig, parameters: dict[str, Any]) -> str | None:
    """Where the call goes, taken out of ``parameters``: the step's host (allowed only with a
    key of its own, see :meth:`LLMCallConfig._key_follows_host`), else the agent's."""
    hosts = {name: parameters.pop(name) for name in KEY_DESTINATIONS if name in parameters}
    chosen = next((config.parameters[name] for name in KEY_DESTINATIONS if name in config.parameters), None)
    return chosen or agent.api_base or next(iter(hosts.values()), None)


async def _default_context_cap(provider: LLMProvider, model: str) -> int:
    """Half the model's input window, or :data:`DEFAULT_MAX_CONTEXT_TOKENS` when it is unknown."""
    window = await provider.max_input_tokens(model)
    return int(window * CONTEXT_WINDOW_SHARE) if window else DEFAULT_MAX_CONTEXT_TOKENS


def _messages(agent: Agent, config: LLMCallConfig, files: list[ContextFile]) -> list[dict[str, Any]]:
    """System prompt (+ codebase context), then the given conversation, then the prompt."""
    system = render_system_prompt(agent, config.variables)
    section = render_context(files)
    system = "\n\n".join(part for part in (system, section) if part)
    messages = [{"role": "system", "content": system}] if system else []
    messages += [m.model_dump() for m in config.messages]
    if config.prompt is not None:
        messages.append({"role": "user", "content": config.prompt})
    return messages


def chosen_file_problem(workspace: Workspace, path: str) -> str | None:
    """Why a file chosen by hand cannot go to a model (None: it can): outside the workspace,
    unresolvable, missing, or holding credentials (as named or through a link)."""
    try:
        target = workspace.resolve(path)
        if workspace.internal(path, target) is not None:  # apply intents and their backups
            return f"'{path}' is inside Clarion's own folder, which is never sent to a model"
        protected = workspace.protected(path, target)
        if protected is not None:
            return f"'{path}' holds credentials ({protected}): it is never sent to a model"
        return None if target.is_file() else f"no file '{path}' in the workspace"
    except WorkspacePathError as exc:  # outside the workspace, a loop, ~nosuchuser, a NUL byte
        return str(exc)
    except OSError as exc:
        return f"'{path}' is not a usable path: {workspace.scrub(exc.strerror or str(exc))}"


def _read_chosen(workspace: Workspace, paths: list[str]) -> list[ContextFile]:
    """Files a person chose for this call: each must be a readable text file that may be sent."""
    chosen = []
    for path in paths:
        if (problem := chosen_file_problem(workspace, path)) is not None:
            raise TaskFailed(problem, details={"path": path}, retryable=False)
        try:
            target = workspace.resolve(path)
            data = target.read_bytes()
        except (WorkspacePathError, OSError) as exc:  # changed since the check
            reason = str(exc) if isinstance(exc, WorkspacePathError) else exc.strerror
            raise TaskFailed(f"cannot read '{path}': {reason}", details={"path": path}, retryable=False) from None
        if b"\0" in data:
            raise TaskFailed(f"'{path}' is a binary file", details={"path": path}, retryable=False)
        chosen.append(ContextFile(path=workspace.relative(target), content=data.decode("utf-8", errors="replace")))
    return chosen


def render_system_prompt(agent: Agent, values: dict[str, Any]) -> str:
    """The agent's system prompt with its user variables filled in (defaults apply).

    Optional variables nobody supplied render as empty text; a required one that is missing,
    or a name the agent never declared, is an error the caller must fix (not retryable).
    """
    variables: dict[str, Any] = {}
    for var in agent.user_variables:
        if var.name in values:
            variables[var.name] = values[var.name]
        elif var.required:
            about = f" ({var.description})" if var.description else ""
            raise TaskFailed(
                f"agent '{agent.id}' needs user variable '{var.name}'{about}: pass it in `variables`",
                retryable=False,
            )
        else:
            variables[var.name] = var.default if var.default is not None else ""
    if _PLAIN_TEXT.fullmatch(agent.system_prompt):
        return agent.system_prompt  # no delimiter nor line break to normalise: it renders as itself
    try:
        # `variables` also reaches names that are not identifiers: {{ variables['component-name'] }}
        return _system_template(agent.system_prompt).render({**values, **variables, "variables": variables})
    except Exception as exc:  # any failure inside the template is the agent author's to fix
        raise TaskFailed(f"agent '{agent.id}' system prompt: {type(exc).__name__}: {exc}", retryable=False) from None


@lru_cache(maxsize=256)
def _system_template(text: str) -> Template:
    """Compiled once per prompt text: compiling costs far more than rendering."""
    return environment.from_string(text)


def _json_schema_format(schema: dict[str, Any]) -> dict[str, Any]:
    """A schema written for strict mode (as Clarion v2 sent every reply schema) is sent as
    strict, so providers that support it enforce it; any other is sent as a plain schema."""
    json_schema: dict[str, Any] = {"name": "output", "schema": schema}
    if _strict_shaped(schema):
        json_schema["strict"] = True
    return {"type": "json_schema", "json_schema": json_schema}


def _strict_shaped(schema: Any) -> bool:
    """Every object closed (``additionalProperties: false``) with every property required."""
    if not isinstance(schema, dict):
        return True
    properties = schema.get("properties")
    if schema.get("type") == "object" or properties is not None:
        if schema.get("additionalProperties") is not False:
            return False
        if set(schema.get("required") or []) != set(properties or {}):
            return False
    children = [*(properties or {}).values(), schema.get("items")]
    return all(_strict_shaped(child) for child in children if child is not None)


def _schema_validator(schema: dict[str, Any]) -> Validator:
    """Checked before the call, so a broken schema costs no tokens."""
    from jsonschema import (  # imported on use: it costs a second at start-up
        SchemaError,
        validators,
    )

    cls = validators.validator_for(schema)
    try:
        cls.check_schema(schema)
    except SchemaError as exc:
        raise TaskFailed(f"response_format is not a valid JSON schema: {exc.message}", retryable=False) from None
    return cls(schema)


def _parse_reply(text: str, validator: Validator, required: bool = True) -> Any:
    """The reply as JSON (a ```json fence is tolerated), validated against the schema.

    When the schema was only offered (``required=False``: the step's default, not the
    agent's own), a reply in prose is kept as text (None); a reply that is JSON, or tries to
    be, must still match, so changes that cannot be used are never dropped without a word."""
    from jsonschema.exceptions import best_match

    block = _JSON_FENCE.match(text)
    try:
        value = json.loads(block.group("body") if block else text)
    except json.JSONDecodeError as exc:
        if not required and block is None and not text.lstrip().startswith(("{", "[")):
            return None
        raise TaskFailed(f"reply is not valid JSON: {exc}", details={"text": text}, retryable=False) from None
    error = best_match(validator.iter_errors(value))
    if error is not None:
        where = "/".join(str(p) for p in error.absolute_path) or "(root)"
        raise TaskFailed(
            f"reply does not match the output schema at {where}: {error.message}",
            details={"text": text},
            retryable=False,
        )
    return value
