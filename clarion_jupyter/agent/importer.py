"""Import of Clarion v2 agents (YAML blocks and JSON profiles) into v3 :class:`Agent` models.

Users bring agents they built in v2, in two shapes:

* YAML blocks, possibly several ``---`` documents per file: ``type: Agent`` with
  ``metadata``, ``properties`` {``system_prompt``, ``llm_config``} and ``children`` blocks of
  type ``FilterSet``, ``OutputSchema`` and ``UserVariableDef``;
* JSON documents (or lists of them): ``Profile``, ``system_prompt``, ``codebase_filters``,
  ``output_schema``, ``user_variables``, ``llm_config``.

Both went through several versions and hand edits, so keys are read liberally (case,
``-``/``_`` and common synonyms do not matter). Nothing is silently lost: whatever the
Agent model does not use is kept verbatim under ``Agent.extra``. The one exception is
secrets: an API key in a document is dropped (with a warning that never shows it), because
v3 stores only the *name* of the environment variable that holds a key; the agent's
``api_key_env`` names the provider's usual variable instead.

What v2 meant is kept: its globs (Go's ``filepath.Match``, recorded as ``glob_syntax: v2``),
``max_total_files: 0`` as "no limit" and no byte cap, ``{"schema": null}`` / ``schema: {}``
as "no schema", replies requested as strict JSON schema, OpenAI's ``max_output_tokens`` as
litellm's ``max_tokens``, and user variables such as ``component-name`` (blank rows that v2's
"Add Variable" leaves behind are dropped with a warning). Provider configs (``llm_configs``:
``id, name, provider, apiKey``) are recognised and used to name the key variable, never
reported as broken agents.

One bad file or document is reported with its name and reason; the rest still import.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from ..core.errors import Problem, ValidationFailed
from ..core.ids import SLUG_PATTERN, slugify
from .models import ENV_NAME_PATTERN, VARIABLE_NAME_PATTERN, Agent

log = logging.getLogger(__name__)

AGENT_FILE_SUFFIXES = frozenset({".yaml", ".yml", ".json"})
TOO_DEEP = "the document is nested too deeply to be an agent"

PROVIDER_PREFIXES = {
    "openai": "openai",
    "openrouter": "openrouter",
    "anthropic": "anthropic",
    "gemini": "gemini",
    "google": "gemini",
    "googlegemini": "gemini",
    "googleai": "gemini",
    "googleaistudio": "gemini",
    "ollama": "ollama",
    "azure": "azure",
    "azureopenai": "azure",
}
"""Clarion v2 provider names (normalised: lower case, letters and digits only) → litellm prefixes."""

PROVIDER_KEY_ENV = {
    "openai": "OPENAI_API_KEY",
    "openrouter": "OPENROUTER_API_KEY",
    "anthropic": "ANTHROPIC_API_KEY",
    "gemini": "GEMINI_API_KEY",
    "azure": "AZURE_API_KEY",
}
"""The variable each provider's key usually lives in (litellm reads the same names)."""

LLM_CONFIG_KEYS = ("llm_config", "llm", "llm_settings", "model_settings")
PARAMETER_RENAMES = {"max_output_tokens": "max_tokens"}
"""v2's OpenAI settings (Responses API names) → the names litellm expects."""

LOOSE_PARAMETERS = (
    "temperature",
    "top_p",
    "top_k",
    "max_tokens",
    "max_completion_tokens",
    "reasoning_effort",
    "frequency_penalty",
    "presence_penalty",
    "stop",
    "seed",
)
"""Model parameters that v2 documents sometimes put directly in ``llm_config``."""

SECRET_KEYS = frozenset(
    {"apikey", "secret", "secretkey", "clientsecret", "token", "accesstoken", "authtoken", "bearertoken", "password"}
)
"""Normalised key names whose values are never imported, wherever they appear."""


@dataclass(frozen=True, slots=True)
class ImportProblem:
    """One thing an import could not use, named by where it was found, so a bad file costs only itself."""

    source: str
    """The file (relative to the imported folder) and, for multi-document files, the document."""
    message: str


@dataclass(frozen=True, slots=True)
class ProviderConfig:
    """A v2 ``llm_configs`` entry without its key: what an agent's ``configId`` points at."""

    id: str
    name: str
    provider: str


@dataclass(slots=True)
class ImportReport:
    """What reading v2 documents gave: the agents converted, and what was refused or doubtful, per source."""

    agents: list[Agent] = field(default_factory=list)
    errors: list[ImportProblem] = field(default_factory=list)
    warnings: list[ImportProblem] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)
    """Where each of ``agents`` came from (same order)."""
    provider_configs: list[ProviderConfig] = field(default_factory=list)

    def extend(self, other: ImportReport) -> None:
        self.agents += other.agents
        self.errors += other.errors
        self.warnings += other.warnings
        self.sources += other.sources
        self.provider_configs += other.provider_configs

    def as_dict(self) -> dict[str, Any]:
        """The JSON shape the REST API and ``clarion agents import --json`` return."""
        return {
            "agents": [agent.model_dump(mode="json") for agent in self.agents],
            "errors": [asdict(p) for p in self.errors],
            "warnings": [asdict(p) for p in self.warnings],
        }


def import_agents(path: str | os.PathLike[str]) -> ImportReport:
    """Import a file, or every ``*.yaml``/``*.yml``/``*.json`` under a folder (recursively).

    A folder may be v2's YAML store (``agent/<id>.yml`` beside ``llm_configs/<id>.yml``):
    provider configs are read first, so every agent's ``configId`` finds its provider.
    """
    report = ImportReport()
    sources = source_files(Path(path), AGENT_FILE_SUFFIXES)
    if sources is None:
        report.errors.append(ImportProblem(str(path), "no such file or folder"))
        return report
    texts: list[tuple[str, str]] = []
    for file, name in sources:
        try:
            texts.append((file.read_text(encoding="utf-8"), name))
        except (OSError, UnicodeDecodeError) as exc:
            report.errors.append(ImportProblem(name, f"cannot read the file: {exc}"))
    report.extend(import_texts(texts))
    return report


def source_files(root: Path, suffixes: frozenset[str]) -> list[tuple[Path, str]] | None:
    """The file itself, or every file with one of ``suffixes`` under the folder (recursively,
    sorted), with the names reports use (relative to the folder); None when nothing is there."""
    if root.is_dir():
        files = sorted(p for p in root.rglob("*") if p.suffix.lower() in suffixes and p.is_file())
        return [(p, p.relative_to(root).as_posix()) for p in files]
    if root.is_file():
        return [(root, root.name)]
    return None


def import_texts(texts: Iterable[tuple[str, str]], configs: Iterable[ProviderConfig] = ()) -> ImportReport:
    """Every agent in several documents' texts (``(text, source name)``), each converting (or
    failing) on its own; provider configs among them (or given) resolve agents' ``configId``."""
    report = ImportReport(provider_configs=list(configs))
    agent_documents: list[tuple[Any, str]] = []
    for text, source_name in texts:
        try:
            documents = _load_documents(text)
        except ValueError as exc:
            report.errors.append(ImportProblem(source_name, str(exc)))
            continue
        if not documents:
            report.errors.append(ImportProblem(source_name, "no agent documents found"))
        for index, document in enumerate(documents, start=1):
            where = source_name if len(documents) == 1 else f"{source_name} (document {index})"
            config = provider_config(document)
            record = v2_record_kind(document)
            if config is not None:
                report.provider_configs.append(config)
            elif record is not None:
                report.warnings.append(ImportProblem(where, SKIPPED_RECORDS[record]))
            else:
                agent_documents.append((document, where))
    providers = {c.id: c.provider for c in report.provider_configs}
    for document, where in agent_documents:
        warnings: list[str] = []
        try:
            report.agents.append(_convert(document, warnings, providers))
            report.sources.append(where)
        except ValueError as exc:
            report.errors.append(ImportProblem(where, str(exc)))
        except RecursionError:
            report.errors.append(ImportProblem(where, TOO_DEEP))
        report.warnings += [ImportProblem(where, w) for w in warnings]
    return report


def import_text(text: str, source_name: str, configs: Iterable[ProviderConfig] = ()) -> ImportReport:
    """Every agent in one file's text; each document converts (or fails) on its own."""
    return import_texts([(text, source_name)], configs)


def provider_config(document: Any) -> ProviderConfig | None:
    """A v2 ``llm_configs`` document (``id, name, provider, apiKey``), read without its key."""
    if not isinstance(document, dict) or {_norm(k) for k in document} - {"id", "name", "provider", "apikey"}:
        return None
    if not {"provider", "id"} <= {_norm(k) for k in document}:
        return None
    fields = {_norm(k): v for k, v in document.items()}
    return ProviderConfig(id=str(fields["id"]), name=str(fields.get("name") or ""), provider=str(fields["provider"]))


SKIPPED_RECORDS = {
    "project": "a Clarion v2 project, not an agent: skipped (import clarion.db to bring projects' runs)",
    "run": "a Clarion v2 run, not an agent: skipped (import clarion.db to bring the run history)",
}
_PROJECT_KEYS = frozenset({"id", "name", "path", "lastopenedat", "activeagentid"})
_RUN_KEYS = frozenset({"id", "prompt", "agentname", "status", "output", "rawrequest"})


def v2_record_kind(document: Any) -> str | None:
    """``project`` or ``run`` for the JSON v2 keeps of a project (``models.Project``) or an agent
    run (``AgentRun``), which a folder of v2 files holds beside its agents; None otherwise.
    Told apart by the keys only those records have, so an agent is never mistaken for one."""
    if not isinstance(document, dict):
        return None
    keys = {_norm(k) for k in document}
    if {"path", "lastopenedat"} <= keys and keys <= _PROJECT_KEYS:
        return "project"
    if {"prompt", "agentname", "output"} <= keys and keys <= _RUN_KEYS:
        return "run"
    return None


def parse_agent_documents(text: str, source_name: str) -> list[Agent]:
    """The agents in one document text, or :class:`ValidationFailed` listing every problem.

    Warnings (such as a dropped API key) are logged; use :func:`import_text` to get them.
    """
    report = import_text(text, source_name)
    for warning in report.warnings:
        log.warning("%s: %s", warning.source, warning.message)
    if report.errors:
        raise ValidationFailed([Problem(loc=e.source, message=e.message) for e in report.errors], "agent document")
    return report.agents


@lru_cache(maxsize=1024)
def litellm_model(provider: str | None, model: str) -> str:
    """The litellm model string for a v2 provider + model (never prefixed twice)."""
    if not provider or not provider.strip():
        return model
    prefix = PROVIDER_PREFIXES.get(_norm(provider), provider.strip().lower())
    if prefix == "gemini":
        model = model.removeprefix("models/")  # Google's own API spells models "models/gemini-..."
    return model if model.startswith(f"{prefix}/") else f"{prefix}/{model}"


# --- reading documents ---------------------------------------------------------------------


def _load_documents(text: str) -> list[Any]:
    """JSON first (its errors are clearer for JSON files), then multi-document YAML."""
    json_error: json.JSONDecodeError | None = None
    if text.lstrip().startswith(("{", "[")):
        try:
            return _flatten([json.loads(text)])
        except json.JSONDecodeError as exc:
            json_error = exc
        except RecursionError:
            raise ValueError(TOO_DEEP) from None
    try:
        return _flatten(yaml.safe_load_all(text))
    except RecursionError:
        raise ValueError(TOO_DEEP) from None
    except yaml.YAMLError as exc:
        if json_error is not None:
            raise ValueError(f"not valid JSON: {json_error}") from None
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ValueError(f"not valid YAML{where}: {getattr(exc, 'problem', None) or exc}") from None


def _flatten(documents: Iterable[Any]) -> list[Any]:
    """Documents with top-level lists expanded and empty documents (a stray ``---``) dropped."""
    out: list[Any] = []
    for document in documents:
        if isinstance(document, list):
            out += [d for d in document if d is not None]
        elif document is not None:
            out.append(document)
    return out


def _norm(key: Any) -> str:
    """``System-Prompt``, ``systemPrompt`` and ``system_prompt`` are the same key."""
    return _norm_text(str(key))


@lru_cache(maxsize=4096)
def _norm_text(key: str) -> str:
    """Keys repeat across thousands of documents: each spelling is normalised once."""
    return re.sub(r"[^a-z0-9]", "", key.lower())


@dataclass(slots=True)
class _Section:
    path: tuple[str, ...]
    data: dict[str, Any]


class _Fields:
    """A document read by liberal key names, searching several of its sections in order.

    Taking a key removes it, so after reading, :meth:`leftovers` is exactly the document
    minus what was modelled, in its original nesting: that becomes ``Agent.extra``.
    """

    def __init__(self, search: list[_Section], registry: list[_Section]) -> None:
        self._search = search
        self._registry = registry

    @classmethod
    def of(cls, document: dict[str, Any]) -> _Fields:
        top = _Section((), dict(document))
        return cls([top], [top])

    def take(self, *names: str) -> Any:
        found = self._pop(names)
        return found[2] if found else None

    def has(self, *names: str) -> bool:
        wanted = {_norm(n) for n in names}
        return any(_norm(key) in wanted for section in self._search for key in section.data)

    def keep(self, key: str, value: Any) -> None:
        """Put a value read with :meth:`take` back, so that it ends up in ``extra``."""
        self._search[0].data[key] = value

    def section(self, *names: str) -> _Fields:
        """Fields that search the named sub-mapping first, then wherever this searches."""
        found = self._pop(names)
        if found is None:
            return self
        parent, key, value = found
        path = (*parent.path, key)
        if not isinstance(value, dict):
            raise ValueError(f"{'.'.join(path)} must be a mapping")
        sub = _Section(path, dict(value))
        self._registry.append(sub)
        return _Fields([sub, *self._search], self._registry)

    def leftovers(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for section in self._registry:
            if section.data:
                node = out
                for key in section.path:
                    node = node.setdefault(key, {})
                node.update(section.data)
        return out

    def _pop(self, names: tuple[str, ...]) -> tuple[_Section, str, Any] | None:
        wanted = {_norm(n) for n in names}
        for section in self._search:
            for key in list(section.data):
                if _norm(key) in wanted:
                    return section, str(key), section.data.pop(key)
        return None


# --- converting one document ----------------------------------------------------------------


def _convert(document: Any, warnings: list[str], providers: dict[str, str]) -> Agent:
    """One v2 document → an Agent; raises ValueError with the reason when it cannot."""
    if not isinstance(document, dict):
        raise ValueError(f"expected an agent document (a mapping), got {type(document).__name__}")
    fields = _Fields.of(document)
    kind = next((value for key, value in document.items() if _norm(key) == "type"), None)
    if _norm(kind) == "agent":
        fields.take("type")
    elif {_norm(k) for k in document}.isdisjoint({"profile", "llmconfig", "systemprompt"}):
        what = f"a block of type {kind!r} is not an agent" if kind else "not a Clarion agent"
        raise ValueError(f"{what}: expected `type: Agent` blocks or a JSON `Profile` with `llm_config`")
    fields = fields.section("metadata", "meta", "profile").section("properties", "props", "spec")
    children = fields.take("children", "blocks") or []
    data, extra = _agent_data(fields, providers)
    for child in children:
        _apply_child(child, data, extra, warnings)
    data["user_variables"] = _named_variables(data["user_variables"], warnings)
    data["system_prompt"] = _template_names(data.get("system_prompt"), data["user_variables"])
    data["output_schema"] = _strict(data["output_schema"])
    data["parameters"] = _drop_secrets(data["parameters"], "llm_config.parameters", warnings)
    data["extra"] = _drop_secrets(_without_bookkeeping(extra), "", warnings)
    return _validated(data)


def _agent_data(fields: _Fields, providers: dict[str, str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The Agent fields both formats share, and the leftovers (``extra``) so far."""
    variables, variable_extras = _variables(fields.take("user_variables", "variables", "user_variable_defs"))
    has_config = fields.has(*LLM_CONFIG_KEYS)
    data: dict[str, Any] = {
        "name": fields.take("name", "title", "display_name"),
        "description": fields.take("description", "summary") or None,
        "id": fields.take("id", "slug", "agent_id"),
        "system_prompt": fields.take("system_prompt", "system_message", "instructions", "prompt"),
        "output_schema": _schema(fields.take("output_schema", "response_schema", "json_schema")),
        "user_variables": variables,
        **_llm_fields(fields.section(*LLM_CONFIG_KEYS), providers, has_config=has_config),
    }
    context = _context(fields.section("codebase_filters", "codebase_context", "filters", "filter_set", "context"))
    if context:
        data["context"] = context
    extra = fields.leftovers()
    if variable_extras:
        extra["user_variables"] = variable_extras
    return data, extra


def _llm_fields(llm: _Fields, providers: dict[str, str], *, has_config: bool) -> dict[str, Any]:
    provider, model = llm.take("provider", "llm_provider", "vendor"), llm.take("model", "model_name", "model_id")
    given = llm.take("parameters", "params", "model_parameters", "options")
    parameters = given or {}
    if not isinstance(parameters, dict):
        raise ValueError("llm_config.parameters must be a mapping")
    if provider is not None and not isinstance(provider, str):
        raise ValueError(f"llm_config.provider must be text, got {type(provider).__name__}")
    config_id = llm.take("config_id")
    if config_id:
        llm.keep("configId", config_id)
    provider = provider or providers.get(str(config_id or ""))
    for name in LOOSE_PARAMETERS:
        value = llm.take(name)
        if value is not None:
            parameters.setdefault(name, value)
    if has_config:
        # what v2's frontend ran an agent with when its llm_config left these empty (fetchAgents)
        model = model or "gpt-4o"
        if not provider and "/" not in str(model):  # a litellm model string names its provider
            provider = "OpenAI"
        if given is None and not parameters:
            parameters = {"temperature": 0.7}
    parameters = {PARAMETER_RENAMES.get(k, k): v for k, v in parameters.items()}
    model_string = litellm_model(provider, str(model)) if model else None
    env = _env_name(llm.take("api_key_env", "api_key_env_var", "api_key_variable", "api_key_env_name"))
    return {
        "model": model_string,
        "parameters": parameters,
        "api_base": llm.take("api_base", "base_url", "api_url", "endpoint"),
        "api_key_env": env or (key_env_for(model_string) if model_string else None),
    }


def key_env_for(model: str) -> str | None:
    """The variable a litellm model string's provider usually reads its key from."""
    return PROVIDER_KEY_ENV.get(model.split("/", 1)[0]) if "/" in model else None


def _env_name(value: Any) -> str | None:
    """``OPENAI_API_KEY``, also written ``$OPENAI_API_KEY`` or ``${OPENAI_API_KEY}``."""
    if value is None:
        return None
    name = str(value).strip().removeprefix("$").strip("{}")
    if not re.match(ENV_NAME_PATTERN, name):
        # the value may be a pasted key, so the message never shows it
        raise ValueError("llm_config.api_key_env must name an environment variable (letters, digits, _)")
    return name


def _context(fields: _Fields) -> dict[str, Any]:
    """A v2 FilterSet as a context with v2's meaning: Go globs, 0 files = no limit, no byte cap."""
    context = {
        "include_globs": _globs(fields.take("include_globs", "include", "includes", "include_patterns", "globs")),
        "exclude_globs": _globs(fields.take("exclude_globs", "exclude", "excludes", "exclude_patterns", "ignore")),
        "content_regex": fields.take(
            "content_regex_include", "content_regex", "regex", "content_pattern", "content_filter"
        ),
        "max_files": fields.take("max_total_files", "max_files", "file_limit", "max_file_count"),
        "max_bytes": fields.take("max_bytes", "max_total_bytes", "max_size"),
    }
    context = {key: value for key, value in context.items() if value not in (None, [], "", 0)}
    if not context:
        return {}
    return {"glob_syntax": "v2", "max_files": None, "max_bytes": None, **context}


def _globs(value: Any) -> list[str] | None:
    """A list of globs, also from one string with commas or newlines between globs."""
    if value is None:
        return None
    items = re.split(r"[,\n]", value) if isinstance(value, str) else value
    if not isinstance(items, list):
        raise ValueError("globs must be a list of strings")
    return [str(item).strip() for item in items if str(item).strip()]


def _schema(value: Any) -> dict[str, Any] | None:
    """A JSON schema, also given as JSON text or wrapped as ``{name, schema}``."""
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as exc:
            raise ValueError(f"output schema is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise ValueError("output schema must be a JSON schema object")
    if value.keys().isdisjoint({"type", "properties", "$schema", "$ref", "anyOf", "oneOf", "allOf", "enum"}):
        # v2 wraps every schema: {"schema": {...}}, and {"schema": null} / schema: {} mean none
        inner = value.get("schema", value.get("json_schema"))
        return _schema(inner) if inner else None
    return value


def _strict(schema: dict[str, Any] | None) -> dict[str, Any] | None:
    """The schema as v2 sent it (its ``enforceSchemaCompliance``): strict mode needs every
    object closed (``additionalProperties: false``) with all its properties required."""
    if schema is None:
        return None
    out = dict(schema)
    properties = out.get("properties")
    if out.get("type") == "object":
        out["additionalProperties"] = False
        if isinstance(properties, dict):
            out["required"] = list(properties)
    if isinstance(properties, dict):
        out["properties"] = {k: _strict(v) if isinstance(v, dict) else v for k, v in properties.items()}
    if isinstance(out.get("items"), dict):
        out["items"] = _strict(out["items"])
    return out


def _variables(value: Any) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """User variables (from a list of mappings or names, or a mapping of name → spec) and their leftovers."""
    if isinstance(value, dict):
        value = [{"name": k, **(v if isinstance(v, dict) else {"description": v})} for k, v in value.items()]
    variables, extras = [], []
    for item in value or []:
        fields = _block_fields(item if isinstance(item, dict) else {"name": item})
        variable = _variable(fields)
        variables.append(variable)
        rest = fields.leftovers()
        if rest:
            extras.append({"name": variable.get("name"), **rest})
    return variables, extras


def _variable(fields: _Fields) -> dict[str, Any]:
    variable = {
        "name": fields.take("name", "variable", "key"),
        "description": fields.take("description", "help", "label"),
        "required": fields.take("required", "is_required", "mandatory"),
        "default": fields.take("default", "default_value"),
    }
    return {k: v for k, v in variable.items() if v is not None}


def _named_variables(variables: list[dict[str, Any]], warnings: list[str]) -> list[dict[str, Any]]:
    """Drop the blank rows v2's "Add Variable" leaves; make other names usable as v2 allowed them."""
    kept = []
    for variable in variables:
        name = str(variable.get("name") or "").strip()
        if not name:
            warnings.append("dropped a user variable without a name (a blank row left by v2's Add Variable)")
            continue
        if not re.match(VARIABLE_NAME_PATTERN, name):
            fixed = re.sub(r"[^A-Za-z0-9_-]+", "_", name).strip("_-") or "variable"
            fixed = fixed if re.match(r"^[A-Za-z_]", fixed) else f"_{fixed}"
            warnings.append(f"user variable {name!r} is named {fixed!r}: use letters, digits, '_' and '-'")
            name = fixed
        kept.append({**variable, "name": name})
    return kept


_V2_PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_-]*)\s*\}\}|\{\{|\{%|\{#")


def _template_names(prompt: Any, variables: list[dict[str, Any]]) -> Any:
    """A v2 prompt as a v3 template that renders the same text: ``{{name}}`` of a declared
    variable stays a placeholder (``{{component-name}}``, a subtraction to Jinja, becomes
    ``{{ variables['component-name'] }}``), and any other ``{{``, ``{%`` or ``{#`` is kept as
    literal text, as v2 sent it, instead of failing as an undefined name at run time."""
    if not isinstance(prompt, str):
        return prompt
    declared = {v["name"] for v in variables}

    def rewrite(match: re.Match[str]) -> str:
        name = match.group(1)
        if name in declared:
            return f"{{{{ variables['{name}'] }}}}" if "-" in name else match.group(0)
        opening = match.group(0)[:2]
        return "{{ '" + opening + "' }}" + match.group(0)[2:]

    return _V2_PLACEHOLDER.sub(rewrite, prompt)


def _without_bookkeeping(extra: dict[str, Any]) -> dict[str, Any]:
    """v2's always-written empty fields (a child block's ``id: ""``, ``configId: ""``, an unset
    ``Author: ""``) carry nothing."""
    if not isinstance(extra, dict):
        return extra
    cleaned = {}
    for key, value in extra.items():
        if value == "" or (_norm(key) in {"id", "configid", "version"} and value is None):
            continue
        if isinstance(value, dict):
            value = _without_bookkeeping(value)
            if not value:
                continue
        elif isinstance(value, list):
            value = [_without_bookkeeping(v) for v in value]
            value = [v for v in value if v != {}]
        cleaned[key] = value
    return cleaned


def _block_fields(block: dict[str, Any]) -> _Fields:
    """A block's fields, searched in ``properties``, then ``metadata``, then the block itself."""
    return _Fields.of(block).section("metadata", "meta").section("properties", "props", "spec")


# --- children blocks of the YAML format -------------------------------------------------------


def _filter_set(fields: _Fields, data: dict[str, Any]) -> bool:
    if "context" in data:
        return False
    context = _context(fields)
    if context:
        data["context"] = context
    return True


def _output_schema(fields: _Fields, data: dict[str, Any]) -> bool:
    if data["output_schema"] is not None:
        return False
    data["output_schema"] = _schema(fields.take("schema", "json_schema", "output_schema", "definition"))
    return True


def _user_variable(fields: _Fields, data: dict[str, Any]) -> bool:
    data["user_variables"].append(_variable(fields))
    return True


_CHILD_BLOCKS: dict[str, Callable[[_Fields, dict[str, Any]], bool]] = {
    "filterset": _filter_set,
    "outputschema": _output_schema,
    "uservariabledef": _user_variable,
    "uservariable": _user_variable,
}
"""Child block types (normalised) → handlers that fold them into the agent data; a handler
returns False when the agent already has what the block provides (a second FilterSet)."""


def _apply_child(block: Any, data: dict[str, Any], extra: dict[str, Any], warnings: list[str]) -> None:
    """Fold one ``children`` block into the agent; what is not modelled goes to ``extra``."""
    handler = _CHILD_BLOCKS.get(_norm(block.get("type", ""))) if isinstance(block, dict) else None
    if handler is not None:
        fields = _block_fields(block)
        if handler(fields, data):
            rest = _without_bookkeeping(fields.leftovers())
            if rest.keys() - {"type"}:
                extra.setdefault("children", []).append(rest)
            return
        warnings.append(f"only the first {block['type']} block is used; the others are kept under extra.children")
    extra.setdefault("children", []).append(block)


# --- final checks -----------------------------------------------------------------------------


def _drop_secrets(value: Any, path: str, warnings: list[str]) -> Any:
    """``value`` without API keys and other secrets, at any depth (warned about, never shown)."""
    if isinstance(value, dict):
        kept: dict[str, Any] = {}
        for key, item in value.items():
            where = f"{path}.{key}" if path else str(key)
            if _norm(key) in SECRET_KEYS:
                if item:
                    warnings.append(
                        f"dropped {where}: API keys are never imported; set llm_config.api_key_env "
                        "to the name of the environment variable that holds it"
                    )
            else:
                cleaned = _drop_secrets(item, where, warnings)
                if cleaned or not item:  # a section that held only secrets goes with them
                    kept[key] = cleaned
        return kept
    if isinstance(value, list):
        return [_drop_secrets(item, f"{path}[{i}]", warnings) for i, item in enumerate(value)]
    return value


def _validated(data: dict[str, Any]) -> Agent:
    if data.get("model") is None:
        raise ValueError("no model: set llm_config.model (and llm_config.provider)")
    if data.get("id") and not re.match(SLUG_PATTERN, str(data["id"])):
        data["id"] = slugify(str(data["id"]))
    try:
        return Agent.model_validate({k: v for k, v in data.items() if v is not None})
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'agent'}: {e['msg']}" for e in exc.errors())
        raise ValueError(problems) from None
