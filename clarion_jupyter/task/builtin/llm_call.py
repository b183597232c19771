"""The ``llm_call`` task: one chat completion by an agent, optionally streamed or schema-checked.

The engine resolves ``with.agent`` and hands the agent document over in
``ctx.resources["agent"]`` (workers have no agent store). The agent supplies the model,
the system prompt (a template over the caller's user variables), the parameters, the
codebase context and the output schema; the step may override the model, parameters and
schema for one call.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Callable
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

from ...agent.context import ContextFile, ContextSelection, gather_context, render_context
from ...agent.models import Agent, refuse_api_key
from ...core.protocol import EventType
from ...core.sandbox import environment
from ...core.secrets import SecretMasker
from ...core.workspace import Workspace, WorkspacePathError
from ...llm.host import ProcessProvider
from ...llm.provider import LLMProvider, LLMRequest, ProviderError
from ..base import Task, TaskConfig, TaskContext, TaskFailed

if TYPE_CHECKING:
    from jsonschema.protocols import Validator

DEFAULT_PROVIDER: LLMProvider = ProcessProvider()

_JSON_FENCE = re.compile(r"^\s*```[A-Za-z0-9_-]*[ \t]*\n(?P<body>.*?)\n?```\s*$", re.DOTALL)


class Message(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: Literal["system", "user", "assistant"]
    content: str


class LLMCallConfig(TaskConfig):
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

    @model_validator(mode="after")
    def _has_input(self) -> LLMCallConfig:
        if self.prompt is None and not self.messages:
            raise ValueError("give a prompt or messages")
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
        if agent.api_key_env is not None and (problem := ctx.settings.secrets.key_problem(agent.api_key_env)):
            raise TaskFailed(problem, retryable=False)
        schema = config.response_format or agent.output_schema
        validator = _schema_validator(schema) if schema is not None else None
        request, context = await prepare_call(agent, config, ctx.workspace)
        tokens = None
        if config.stream:
            masker = SecretMasker(ctx.settings.secrets)
            tokens = TokenCoalescer(
                lambda text: ctx.emit(EventType.llm_token, {"text": text}),
                mask=masker.text,
                holdback=max(masker.longest - 1, 0),
            )
        try:
            result = await self.provider.complete(request, on_token=tokens)
        except ProviderError as exc:
            raise TaskFailed(exc.message, details={"status_code": exc.status_code}, retryable=exc.retryable) from None
        finally:
            if tokens is not None:
                tokens.flush(final=True)
        output: dict[str, Any] = {
            "text": result.text,
            "usage": result.usage,
            "cost_usd": result.cost_usd,
            "model": result.model,
        }
        if agent.context is not None:
            output["context"] = context.summary()
        if validator is not None:
            output["json"] = _parse_reply(result.text, validator)
        return output


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


def _agent(ctx: TaskContext) -> Agent:
    document = ctx.resources.get("agent")
    if document is None:
        raise TaskFailed("no agent was resolved for this step", retryable=False)
    try:
        return Agent.model_validate(document)
    except ValidationError as exc:
        raise TaskFailed(f"invalid agent document: {exc}", retryable=False) from None


async def prepare_request(agent: Agent, config: LLMCallConfig, workspace: Workspace) -> LLMRequest:
    """The exact request the step sends: also what ``POST /api/v3/agents/{id}/prompt`` shows."""
    return (await prepare_call(agent, config, workspace))[0]


async def prepare_call(
    agent: Agent, config: LLMCallConfig, workspace: Workspace
) -> tuple[LLMRequest, ContextSelection]:
    """The request, and the codebase context it carries (files sent, entries skipped and why)."""
    schema = config.response_format or agent.output_schema
    context = await gather_context(agent.context, workspace) if agent.context is not None else ContextSelection()
    request = LLMRequest(
        model=config.model or agent.model,
        messages=await _messages(agent, config, workspace, context),
        parameters=agent.parameters | config.parameters,
        api_base=agent.api_base,
        api_key_env=agent.api_key_env,
        response_format=_json_schema_format(schema) if schema is not None else None,
        stream=config.stream,
    )
    return request, context


async def _messages(
    agent: Agent, config: LLMCallConfig, workspace: Workspace, context: ContextSelection
) -> list[dict[str, Any]]:
    """System prompt (+ codebase context), then the given conversation, then the prompt."""
    system = render_system_prompt(agent, config.variables)
    files = context.files
    if config.files:
        chosen = await asyncio.to_thread(_read_chosen, workspace, config.files)
        selected = {f.path for f in files}
        files = [*files, *(f for f in chosen if f.path not in selected)]
    section = render_context(files)
    system = "\n\n".join(part for part in (system, section) if part)
    messages = [{"role": "system", "content": system}] if system else []
    messages += [m.model_dump() for m in config.messages]
    if config.prompt is not None:
        messages.append({"role": "user", "content": config.prompt})
    return messages


def _read_chosen(workspace: Workspace, paths: list[str]) -> list[ContextFile]:
    """Files a person chose for this call: each must exist in the workspace and be text."""
    chosen = []
    for path in paths:
        try:
            target = workspace.resolve(path)
            if workspace.internal(path, target) is not None:  # apply intents and their backups
                raise TaskFailed(
                    f"'{path}' is inside Clarion's own folder, which is never sent to a model",
                    details={"path": path},
                    retryable=False,
                )
            data = target.read_bytes()
        except WorkspacePathError as exc:
            raise TaskFailed(str(exc), details={"path": path}, retryable=False) from None
        except OSError as exc:
            raise TaskFailed(f"cannot read '{path}': {exc.strerror}", details={"path": path}, retryable=False) from None
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


def _parse_reply(text: str, validator: Validator) -> Any:
    """The reply as JSON (a ```json fence is tolerated), validated against the schema."""
    from jsonschema.exceptions import best_match

    fenced = _JSON_FENCE.match(text)
    try:
        value = json.loads(fenced.group("body") if fenced else text)
    except json.JSONDecodeError as exc:
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
