"""Clarion v2's stores, written the way v2's Go code wrote them, for tests and benchmarks.

* ``clarion.db``: v2's four migrations verbatim, rows of ``json.Marshal`` output (compact,
  ``<``, ``>`` and ``&`` escaped, nil slices as ``null``, ``Profile`` keys capitalised, the
  output schema wrapped as ``{"schema": ...}``);
* the YAML store ``test_storage/``: ``agent/<id>.yml`` as ``dehydrateAgent`` + ``yaml.v3``
  wrote it (4-space indent, struct fields in order, map keys sorted, child blocks with
  ``id: ""``, ``configId: ""`` always present, a missing schema as ``schema: {}``) and
  ``llm_configs/<id>.yml`` (``id, name, provider, apiKey``).
"""

from __future__ import annotations

import json
import re
import sqlite3
from collections.abc import Iterable
from contextlib import closing
from pathlib import Path
from typing import Any

V2_MIGRATIONS = (
    """CREATE TABLE IF NOT EXISTS agents (
    id TEXT PRIMARY KEY,
    agent_data TEXT NOT NULL,
    created_at DATETIME DEFAULT CURRENT_TIMESTAMP,
    updated_at DATETIME DEFAULT CURRENT_TIMESTAMP
);""",
    """CREATE TABLE IF NOT EXISTS llm_configs (
    id TEXT PRIMARY KEY,
    config_data TEXT NOT NULL,
    created_at DATETIME DEFAULT CURRENT_TIMESTAMP,
    updated_at DATETIME DEFAULT CURRENT_TIMESTAMP
);""",
    """CREATE TABLE IF NOT EXISTS projects (
    id TEXT PRIMARY KEY,
    project_data TEXT NOT NULL,
    created_at DATETIME DEFAULT CURRENT_TIMESTAMP,
    updated_at DATETIME DEFAULT CURRENT_TIMESTAMP
);""",
    """CREATE TABLE IF NOT EXISTS runs (
    id TEXT PRIMARY KEY,
    project_id TEXT NOT NULL,
    run_data TEXT NOT NULL,
    created_at DATETIME DEFAULT CURRENT_TIMESTAMP,
    FOREIGN KEY (project_id) REFERENCES projects(id) ON DELETE CASCADE
);""",
)

FILE_OPERATIONS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "summary": {"type": "string", "description": "A summary of the file changes to be performed."},
        "file_changes": {
            "type": "array",
            "description": "A list of file modifications.",
            "items": {
                "type": "object",
                "properties": {
                    "action": {"type": "string", "enum": ["create", "modify", "delete"]},
                    "path": {"type": "string", "description": "The relative path to the file."},
                    "new_content": {
                        "type": "string",
                        "description": "The new content for 'create' or 'modify' actions.",
                    },
                },
                "required": ["action", "path"],
            },
        },
    },
    "required": ["summary", "file_changes"],
}
"""v2's preset "File Operations" schema (its seed agent's)."""


def go_json(value: Any) -> str:
    """``json.Marshal``: compact, with Go's HTML-safe escapes."""
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    return text.replace("&", "\\u0026").replace("<", "\\u003c").replace(">", "\\u003e")


def v2_agent(
    agent_id: str,
    name: str,
    *,
    description: str = "",
    system_prompt: str = "",
    include_globs: list[str] | None = None,
    exclude_globs: list[str] | None = None,
    content_regex_include: str = "",
    max_total_files: int = 0,
    schema: dict[str, Any] | None = None,
    user_variables: list[dict[str, Any]] | None = None,
    provider: str = "OpenAI",
    model: str = "gpt-4o",
    parameters: dict[str, Any] | None = None,
    config_id: str = "",
    version: str = "1.0.0",
    author: str = "",
    icon: str = "Bot",
) -> dict[str, Any]:
    """A ``models.Agent`` as ``json.Marshal`` shapes it (field order and nil values included)."""
    llm_config: dict[str, Any] = {"provider": provider, "model": model, "parameters": parameters}
    if config_id:
        llm_config["configId"] = config_id  # `json:"configId,omitempty"`
    return {
        "Profile": {
            "ID": agent_id, "Name": name, "Description": description,
            "Version": version, "Author": author, "Icon": icon,
        },
        "system_prompt": system_prompt,
        "codebase_filters": {
            "include_globs": include_globs, "exclude_globs": exclude_globs,
            "content_regex_include": content_regex_include, "max_total_files": max_total_files,
        },
        "output_schema": {"schema": schema},
        "user_variables": user_variables,
        "llm_config": llm_config,
    }  # fmt: skip


def v2_run(
    run_id: str,
    *,
    prompt: str,
    agent: dict[str, Any],
    status: str = "success",
    summary: str = "",
    file_changes: list[dict[str, Any]] | None = None,
    raw_output: dict[str, Any] | None = None,
    error: str | None = None,
    codebase_paths: list[str] | None = None,
    project_root: str = "/home/me/project",
    token_usage: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """An ``AgentRun`` as v2's frontend saved it when the run ended (``saveRun``)."""
    changes = [{**c, "id": f"{run_id}-change-{i}"} for i, c in enumerate(file_changes or [])]
    output: dict[str, Any] = {"summary": summary, "fileChanges": changes, "rawOutput": raw_output or {}}
    if error is not None:
        output["error"] = error
    if token_usage is not None:
        output["tokenUsage"] = token_usage
    return {
        "id": run_id,
        "prompt": prompt,
        "agentName": agent["Profile"]["Name"],
        "status": status,
        "output": output,
        "rawRequest": {
            "system_instruction": agent["system_prompt"],
            "prompt": prompt,
            "output_schema": agent["output_schema"],
            "codebase_paths": codebase_paths or [],
            "project_root": project_root,
            "llm_config": {**agent["llm_config"], "configId": agent["llm_config"].get("configId", "")},
        },
    }


def write_clarion_db(
    path: Path,
    *,
    agents: Iterable[dict[str, Any]] = (),
    llm_configs: Iterable[dict[str, Any]] = (),
    projects: Iterable[dict[str, Any]] = (),
    runs: Iterable[tuple[str, dict[str, Any], str]] = (),
) -> Path:
    """A ``clarion.db`` holding these rows; ``runs`` are ``(project_id, run, created_at)``."""
    with closing(sqlite3.connect(path)) as con, con:
        for statement in V2_MIGRATIONS:
            con.execute(statement)
        con.executemany(
            "INSERT INTO agents (id, agent_data) VALUES (?, ?)", [(a["Profile"]["ID"], go_json(a)) for a in agents]
        )
        con.executemany(
            "INSERT INTO llm_configs (id, config_data) VALUES (?, ?)", [(c["id"], go_json(c)) for c in llm_configs]
        )
        con.executemany(
            "INSERT INTO projects (id, project_data) VALUES (?, ?)", [(p["id"], go_json(p)) for p in projects]
        )
        con.executemany(
            "INSERT INTO runs (id, project_id, run_data, created_at) VALUES (?, ?, ?, ?)",
            [(run["id"], project_id, go_json(run), created) for project_id, run, created in runs],
        )
    return path


def v2_yaml_agent(agent: dict[str, Any]) -> str:
    """``agent/<id>.yml``: the block ``dehydrateAgent`` builds, as ``yaml.v3`` marshals it."""
    filters, llm = agent["codebase_filters"], agent["llm_config"]
    children: list[dict[str, Any]] = [
        {"id": "", "type": "FilterSet", "properties": _sorted({
            "include_globs": filters["include_globs"] or [], "exclude_globs": filters["exclude_globs"] or [],
            "content_regex_include": filters["content_regex_include"],
            "max_total_files": filters["max_total_files"],
        })},
        {"id": "", "type": "OutputSchema", "properties": {"schema": _sorted(agent["output_schema"]["schema"] or {})}},
    ]  # fmt: skip
    for variable in agent["user_variables"] or []:
        children.append({
            "id": "", "type": "UserVariableDef",
            "metadata": _sorted({"name": variable["name"], "description": variable.get("description", "")}),
            "properties": {"required": variable.get("required", False)},
        })  # fmt: skip
    profile = agent["Profile"]
    block: dict[str, Any] = {"id": profile["ID"], "type": "Agent"}
    if profile["Version"]:
        block["version"] = profile["Version"]
    block["metadata"] = _sorted({k.lower(): profile[k] for k in ("Name", "Description", "Author", "Icon")})
    block["properties"] = _sorted({
        "system_prompt": agent["system_prompt"],
        "llm_config": _sorted({
            "provider": llm["provider"], "model": llm["model"], "parameters": llm["parameters"] or {},
            "configId": llm.get("configId", ""),
        }),
    })  # fmt: skip
    block["children"] = children
    return _yaml(block, 0) + "\n"


def v2_yaml_llm_config(config: dict[str, Any]) -> str:
    """``llm_configs/<id>.yml``: a ``LLMProviderConfig`` struct (fields in order)."""
    return _yaml({k: config[k] for k in ("id", "name", "provider", "apiKey")}, 0) + "\n"


def write_yaml_store(root: Path, agents: Iterable[dict[str, Any]], llm_configs: Iterable[dict[str, Any]]) -> Path:
    """v2's ``test_storage/`` folder with ``agent/`` and ``llm_configs/``."""
    store = root / "test_storage"
    (store / "agent").mkdir(parents=True, exist_ok=True)
    (store / "llm_configs").mkdir(parents=True, exist_ok=True)
    for agent in agents:
        (store / "agent" / f"{agent['Profile']['ID']}.yml").write_text(v2_yaml_agent(agent))
    for config in llm_configs:
        (store / "llm_configs" / f"{config['id']}.yml").write_text(v2_yaml_llm_config(config))
    return store


def _sorted(mapping: dict[str, Any]) -> dict[str, Any]:
    """Go maps marshal with sorted keys."""
    return {k: _sorted(v) if isinstance(v, dict) else v for k, v in sorted(mapping.items())}


_PLAIN = re.compile(r"^[A-Za-z0-9_/.][A-Za-z0-9_ ./,()'-]*$")
_RESERVED = re.compile(r"^(true|false|yes|no|on|off|null|~|[-+]?[0-9][0-9_.eE+-]*)$", re.IGNORECASE)


def _scalar(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return json.dumps(value)
    text = str(value)
    if text == "":
        return '""'
    if _PLAIN.match(text) and not _RESERVED.match(text) and not text.endswith(" "):
        return text
    if "'" not in text and "\n" not in text:
        return f"'{text}'"
    return json.dumps(text)


def _yaml(value: Any, indent: int) -> str:
    """yaml.v3's layout at indent 4, including its sequence quirk: a mapping in a list item
    continues at the item's column, and a mapping below that is indented by only 2."""
    pad = " " * indent
    lines = []
    for key, item in value.items():
        lines.append(pad + _entry(key, item, indent))
    return "\n".join(lines)


def _entry(key: str, item: Any, indent: int, nested_step: int = 4) -> str:
    pad = " " * indent
    if isinstance(item, dict):
        if not item:
            return f"{key}: {{}}"
        return f"{key}:\n" + _yaml(item, indent + nested_step)
    if isinstance(item, list):
        if not item:
            return f"{key}: []"
        return f"{key}:\n" + "\n".join(_list_item(v, indent + 4) for v in item)
    if isinstance(item, str) and "\n" in item:
        chomp = "" if item.endswith("\n") else "-"
        body = "\n".join((pad + "    " + line) if line else "" for line in item.rstrip("\n").split("\n"))
        return f"{key}: |{chomp}\n{body}"
    return f"{key}: {_scalar(item)}"


def _list_item(value: Any, indent: int) -> str:
    pad = " " * indent
    if not isinstance(value, dict):
        return f"{pad}- {_scalar(value)}"
    lines = []
    for i, (key, item) in enumerate(value.items()):
        prefix = f"{pad}- " if i == 0 else f"{pad}  "
        lines.append(prefix + _entry(key, item, indent + 2, nested_step=2))
    return "\n".join(lines)
