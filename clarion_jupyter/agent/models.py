"""The Agent: an LLM model plus a system prompt and settings, as Clarion users build them."""

from __future__ import annotations

from typing import Any, Literal

import regex
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ..core.ids import SLUG_PATTERN, slugify

ENV_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*$"
VARIABLE_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_-]*$"
"""Clarion v2 accepted names such as ``component-name``; templates reach those as
``variables['component-name']``."""
GlobSyntax = Literal["gitignore", "v2"]


def refuse_api_key(parameters: dict[str, Any], hint: str) -> dict[str, Any]:
    """Model parameters pass straight to litellm, so an ``api_key`` there would be stored and sent."""
    if "api_key" in parameters:
        raise ValueError(hint)
    return parameters


class CodebaseContext(BaseModel):
    """Which workspace files go with the prompt, as a "Codebase Context" section.

    ``glob_syntax`` says how the globs read: ``gitignore`` (v3's own: ``*.py`` matches at
    any depth, ``**`` crosses folders, ``!`` negates) or ``v2`` (imported Clarion v2 agents:
    Go's ``filepath.Match`` on the whole relative path, where ``*`` never crosses ``/``, and
    no globs at all means no files but the ones picked by hand), so that an imported agent
    selects exactly the files it selected in v2.
    """

    model_config = ConfigDict(extra="forbid")

    include_globs: list[str] = Field(default_factory=list)
    exclude_globs: list[str] = Field(default_factory=list)
    glob_syntax: GlobSyntax = "gitignore"
    content_regex: str | None = None
    max_files: int | None = Field(50, ge=0, le=10_000, description="null: no limit")
    max_bytes: int | None = Field(200_000, ge=0, description="null: no limit")
    max_tokens: int | None = Field(
        None,
        ge=1,
        description="Cap on the context's tokens (files chosen by hand included); over it the step fails "
        "before any call. null: half the model's input window, 100,000 when the model is unknown.",
    )
    default_excludes: bool = Field(
        True,
        description="Leave out build output, source maps, lock files, notebook checkpoints and binaries "
        "(files picked by hand are always sent).",
    )

    @field_validator("content_regex")
    @classmethod
    def _compiles(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                regex.compile(value)
            except regex.error as exc:
                raise ValueError(f"not a valid regular expression: {exc}") from None
        return value


class UserVariable(BaseModel):
    """A value the caller supplies for the agent's prompt template (v2's UserVariableDef)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=VARIABLE_NAME_PATTERN)
    description: str | None = None
    required: bool = False
    default: Any = None


class Agent(BaseModel):
    """``api_key_env`` names an environment variable; the key itself is never stored."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field("", pattern=r"^$|" + SLUG_PATTERN)
    name: str = Field(min_length=1, max_length=200)
    description: str | None = None
    model: str = Field(min_length=1)
    system_prompt: str = ""
    parameters: dict[str, Any] = Field(default_factory=dict)
    output_schema: dict[str, Any] | None = None
    context: CodebaseContext | None = None
    user_variables: list[UserVariable] = Field(default_factory=list)
    api_base: str | None = None
    api_key_env: str | None = Field(None, pattern=ENV_NAME_PATTERN)
    cache: bool | None = Field(
        None,
        description="Answer this agent's calls from the LLM cache when the same request was answered before "
        "(true) or never (false); a step's with.cache and a run's cache win over it, and it wins over the "
        "server's llm_cache. null: no preference.",
    )
    extra: dict[str, Any] = Field(
        default_factory=dict,
        description="Fields of imported Clarion v2 documents that this model does not use, kept verbatim.",
    )

    @model_validator(mode="after")
    def _derive_id(self) -> Agent:
        if not self.id:
            self.id = slugify(self.name)
        return self

    @field_validator("parameters")
    @classmethod
    def _no_secrets(cls, value: dict[str, Any]) -> dict[str, Any]:
        return refuse_api_key(
            value, "API keys are never stored: set api_key_env to the name of an environment variable"
        )
