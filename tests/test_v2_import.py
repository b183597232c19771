"""Import of what Clarion v2 really wrote: its clarion.db, its YAML store, its JSON documents
and agent list, and its run history; each built here the way v2's Go code wrote it."""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from clarion_jupyter.agent.context import gather_context
from clarion_jupyter.agent.v2runs import V2_RUN_WORKFLOW_ID
from clarion_jupyter.core.errors import Conflict
from clarion_jupyter.core.workspace import Workspace
from clarion_jupyter.task.builtin.llm_call import render_system_prompt
from clarion_jupyter.testing.clarion_v2 import (
    FILE_OPERATIONS_SCHEMA,
    go_json,
    v2_agent,
    v2_run,
    write_clarion_db,
    write_yaml_store,
)
from clarion_jupyter.workflow.engine import Engine

KEY = "sk-proj-v2-SECRET-never-imported-0123456789"
OPENAI_CONFIG = {"id": "cfg_openai", "name": "My OpenAI", "provider": "OpenAI", "apiKey": KEY}
ROUTER_CONFIG = {"id": "cfg_router", "name": "OpenRouter", "provider": "OpenRouter", "apiKey": KEY + "-router"}
PROJECT = {
    "id": "proj_1",
    "name": "Shop",
    "path": "/home/me/shop",
    "lastOpenedAt": "2025-05-01T10:00:00Z",
    "activeAgentId": "basic_editor",
}
EDITOR = v2_agent(
    "basic_editor",
    "Basic File Editor",
    description="A simple agent that can create or modify files based on a prompt.",
    system_prompt="You are an expert developer working on {{component-name}}. Reply with JSON only.",
    exclude_globs=["node_modules/**", ".git/**"],
    schema=FILE_OPERATIONS_SCHEMA,
    user_variables=[
        {"name": "component-name", "description": "The component to work on", "required": True},
        {"name": "", "description": "", "required": False},  # what v2's "Add Variable" leaves
    ],
    parameters={"temperature": 0.2, "top_p": 0.9, "max_output_tokens": 4096, "reasoning_effort": "low"},
    config_id="cfg_openai",
)
GO_REVIEWER = v2_agent(
    "go_reviewer",
    "Go Reviewer",
    system_prompt="Review the Go code.",
    include_globs=["*.go", "internal/**/*.go"],
    exclude_globs=["*_test.go"],
    content_regex_include="^package ",
    max_total_files=0,
    schema=None,
    provider="OpenRouter",
    model="anthropic/claude-3.5-sonnet",
    parameters={"temperature": 0.1, "max_tokens": 2000},
    config_id="cfg_router",
)
STARTED_MS = 1_714_557_600_123  # 2024-05-01T10:00:00.123Z
SUCCESS_RUN = v2_run(
    f"run-{STARTED_MS}",
    prompt="Create hello.txt saying hi",
    agent=EDITOR,
    summary="Created hello.txt",
    file_changes=[{"action": "create", "path": "hello.txt", "new_content": "hi\n"}],
    raw_output={
        "summary": "Created hello.txt",
        "file_changes": [{"action": "create", "path": "hello.txt", "new_content": "hi\n"}],
    },
    codebase_paths=["README.md"],
    token_usage={"prompt_tokens": 120, "completion_tokens": 30, "total_tokens": 150},
)
FAILED_RUN = v2_run(
    f"run-{STARTED_MS + 60_000}",
    prompt="Refactor everything",
    agent=EDITOR,
    status="error",
    summary="An error occurred.",
    raw_output={"error": "OpenAI API error (401 Unauthorized)"},
    error="OpenAI API error (401 Unauthorized)",
)


def clarion_db(tmp_path: Path, **rows: Any) -> Path:
    defaults: dict[str, Any] = {
        "agents": [EDITOR, GO_REVIEWER],
        "llm_configs": [OPENAI_CONFIG, ROUTER_CONFIG],
        "projects": [PROJECT],
        "runs": [("proj_1", SUCCESS_RUN, "2024-05-01 10:00:07"), ("proj_1", FAILED_RUN, "2024-05-01 10:01:02")],
    }
    return write_clarion_db(tmp_path / "clarion.db", **{**defaults, **rows})


@asynccontextmanager
async def v3(tmp_path: Path) -> AsyncIterator[Engine]:
    async with Engine(tmp_path / "v3.duckdb", workspace_root=tmp_path, run_workers=False) as engine:
        yield engine


async def stored_agent(engine: Engine, agent_id: str) -> dict[str, Any]:
    return (await engine.agents.get(agent_id)).model_dump(mode="json")


# --- agents from clarion.db -------------------------------------------------------------------


async def test_clarion_db_agents_import_with_their_model_settings(tmp_path):
    async with v3(tmp_path) as engine:
        report = await engine.import_v2(clarion_db(tmp_path))

        assert report.complete
        assert [(c.id, c.action) for c in report.changes] == [("basic_editor", "created"), ("go_reviewer", "created")]
        editor = await engine.agents.get("basic_editor")
        assert (editor.name, editor.model) == ("Basic File Editor", "openai/gpt-4o")
        assert editor.description == "A simple agent that can create or modify files based on a prompt."
        assert editor.parameters == {"temperature": 0.2, "top_p": 0.9, "max_tokens": 4096, "reasoning_effort": "low"}
        reviewer = await engine.agents.get("go_reviewer")
        assert reviewer.model == "openrouter/anthropic/claude-3.5-sonnet"
        assert reviewer.parameters == {"temperature": 0.1, "max_tokens": 2000}


async def test_clarion_db_is_read_without_being_changed(tmp_path):
    async with v3(tmp_path) as engine:
        path = clarion_db(tmp_path)
        before = hashlib.sha256(path.read_bytes()).hexdigest()
        path.chmod(0o444)

        await engine.import_v2(path)

        assert hashlib.sha256(path.read_bytes()).hexdigest() == before


async def test_api_keys_are_never_imported_stored_or_reported(tmp_path):
    async with v3(tmp_path) as engine:
        report = await engine.import_v2(clarion_db(tmp_path))

        assert KEY not in json.dumps(report.as_dict())
        dumped = json.dumps([await stored_agent(engine, i) for i in ("basic_editor", "go_reviewer")])
        assert KEY not in dumped
        assert "apiKey" not in dumped


async def test_each_agent_reads_its_key_from_the_providers_usual_variable(tmp_path, monkeypatch):
    async with v3(tmp_path) as engine:
        monkeypatch.delenv("OPENAI_API_KEY", raising=False)
        monkeypatch.setenv("OPENROUTER_API_KEY", "set-by-the-user")
        report = await engine.import_v2(clarion_db(tmp_path))

        assert (await engine.agents.get("basic_editor")).api_key_env == "OPENAI_API_KEY"
        assert (await engine.agents.get("go_reviewer")).api_key_env == "OPENROUTER_API_KEY"
        assert report.as_dict()["api_keys"] == [
            {"env": "OPENAI_API_KEY", "agents": ["basic_editor"], "set": False},
            {"env": "OPENROUTER_API_KEY", "agents": ["go_reviewer"], "set": True},
        ]


async def test_the_provider_comes_from_the_llm_config_when_the_agent_names_none(tmp_path):
    async with v3(tmp_path) as engine:
        agent = v2_agent("bare", "Bare", provider="", model="gpt-4o-mini", config_id="cfg_openai")
        await engine.import_v2(clarion_db(tmp_path, agents=[agent]))

        imported = await engine.agents.get("bare")
        assert (imported.model, imported.api_key_env) == ("openai/gpt-4o-mini", "OPENAI_API_KEY")
        assert imported.extra["llm_config"] == {"configId": "cfg_openai"}


# --- meanings kept ----------------------------------------------------------------------------


async def test_schema_null_means_no_schema(tmp_path):
    async with v3(tmp_path) as engine:
        await engine.import_v2(clarion_db(tmp_path))
        assert (await engine.agents.get("go_reviewer")).output_schema is None


async def test_replies_are_requested_as_strict_json_schema_as_v2_sent_them(tmp_path):
    async with v3(tmp_path) as engine:
        await engine.import_v2(clarion_db(tmp_path))
        schema = (await engine.agents.get("basic_editor")).output_schema

        assert schema["additionalProperties"] is False
        assert schema["required"] == ["summary", "file_changes"]
        item = schema["properties"]["file_changes"]["items"]
        assert item["additionalProperties"] is False
        assert item["required"] == ["action", "path", "new_content"]


async def test_blank_user_variable_rows_are_dropped_with_a_warning(tmp_path):
    async with v3(tmp_path) as engine:
        report = await engine.import_v2(clarion_db(tmp_path))

        editor = await engine.agents.get("basic_editor")
        assert [v.name for v in editor.user_variables] == ["component-name"]
        assert any("without a name" in w.message for w in report.warnings)
        assert report.complete


async def test_hyphenated_variable_names_are_kept_and_render_in_the_prompt(tmp_path):
    async with v3(tmp_path) as engine:
        await engine.import_v2(clarion_db(tmp_path))
        editor = await engine.agents.get("basic_editor")

        assert editor.user_variables[0].required is True
        prompt = render_system_prompt(editor, {"component-name": "checkout"})
        assert prompt == "You are an expert developer working on checkout. Reply with JSON only."


async def test_filters_keep_v2_meaning_regex_no_file_limit_and_no_byte_cap(tmp_path):
    async with v3(tmp_path) as engine:
        await engine.import_v2(clarion_db(tmp_path))
        context = (await engine.agents.get("go_reviewer")).context

        assert context.model_dump() == {
            "include_globs": ["*.go", "internal/**/*.go"],
            "exclude_globs": ["*_test.go"],
            "glob_syntax": "v2",
            "content_regex": "^package ",
            "max_files": None,
            "max_bytes": None,
            "max_tokens": None,  # bounded all the same: by the model's window (see test_llm_call)
            "default_excludes": True,
        }


async def test_a_nonzero_max_total_files_is_the_file_cap(tmp_path):
    async with v3(tmp_path) as engine:
        agent = v2_agent("capped", "Capped", include_globs=["*"], max_total_files=3)
        await engine.import_v2(clarion_db(tmp_path, agents=[agent]))
        assert (await engine.agents.get("capped")).context.max_files == 3


async def test_an_imported_agent_selects_the_files_v2_selected(tmp_path):
    async with v3(tmp_path) as engine:
        await engine.import_v2(clarion_db(tmp_path))
        workspace = tmp_path / "ws"
        for rel, content in {
            "main.go": "package main",
            "main_test.go": "package main",
            "cmd/tool.go": "package cmd",  # `*.go` never matched below the top level in v2
            "internal/api/server.go": "package api",
            "internal/api/deep/x.go": "package deep",  # `internal/**/*.go` is one level, as in v2
            "internal/notes.go": "// no package clause",
        }.items():
            (workspace / rel).parent.mkdir(parents=True, exist_ok=True)
            (workspace / rel).write_text(content)

        context = (await engine.agents.get("go_reviewer")).context
        selection = await gather_context(context, Workspace(workspace))

        assert [f.path for f in selection.files] == ["internal/api/server.go", "main.go"]


# --- every v2 store ---------------------------------------------------------------------------


async def test_yaml_store_folder_imports_agents_and_recognises_llm_configs(tmp_path):
    async with v3(tmp_path) as engine:
        store = write_yaml_store(tmp_path, [EDITOR, GO_REVIEWER], [OPENAI_CONFIG, ROUTER_CONFIG])
        assert (store / "agent" / "basic_editor.yml").read_text().startswith("id: basic_editor\ntype: Agent\n")

        report = await engine.import_v2(store)

        assert report.errors == []
        assert sorted(c.id for c in report.changes) == ["basic_editor", "go_reviewer"]
        editor = await engine.agents.get("basic_editor")
        assert (editor.model, editor.api_key_env) == ("openai/gpt-4o", "OPENAI_API_KEY")
        assert sorted(editor.output_schema["required"]) == ["file_changes", "summary"]
        assert [v.name for v in editor.user_variables] == ["component-name"]
        assert editor.context.exclude_globs == ["node_modules/**", ".git/**"]
        assert "children" not in editor.extra  # v2's empty `id: ""` bookkeeping carries nothing
        assert KEY not in json.dumps(report.as_dict())


async def test_yaml_schema_empty_mapping_means_no_schema(tmp_path):
    async with v3(tmp_path) as engine:
        store = write_yaml_store(tmp_path, [GO_REVIEWER], [])
        assert "schema: {}" in (store / "agent" / "go_reviewer.yml").read_text()

        await engine.import_v2(store)

        assert (await engine.agents.get("go_reviewer")).output_schema is None


async def test_a_json_document_with_capitalised_profile_keys(tmp_path):
    async with v3(tmp_path) as engine:
        path = tmp_path / "basic_editor.json"
        path.write_text(go_json(EDITOR))

        report = await engine.import_v2(path)

        assert [c.id for c in report.changes] == ["basic_editor"]
        editor = await engine.agents.get("basic_editor")
        assert editor.name == "Basic File Editor"
        assert editor.extra["Profile"] == {"Version": "1.0.0", "Icon": "Bot"}


async def test_the_v2_agent_list_array(tmp_path):
    async with v3(tmp_path) as engine:
        path = tmp_path / "agents-list.json"
        path.write_text(go_json([EDITOR, GO_REVIEWER]))  # what GET /api/v2/agents/list returned

        report = await engine.import_v2(path)

        assert [c.id for c in report.changes] == ["basic_editor", "go_reviewer"]


async def test_the_same_agent_found_twice_is_imported_once_and_reported(tmp_path):
    async with v3(tmp_path) as engine:
        folder = tmp_path / "export"
        write_yaml_store(folder, [EDITOR], [OPENAI_CONFIG])
        (folder / "basic_editor.json").write_text(go_json(EDITOR))
        clarion_db(folder)

        report = await engine.import_v2(folder)

        editors = [c for c in report.changes if c.id == "basic_editor"]
        assert len(editors) == 1
        assert editors[0].source == "clarion.db agents/basic_editor"
        assert sorted(editors[0].also_in) == ["basic_editor.json", "test_storage/agent/basic_editor.yml"]
        (warning,) = [w for w in report.warnings if "found 3 times" in w.message]
        assert "imported once, from clarion.db agents/basic_editor" in warning.message
        assert report.complete


# --- dry run and re-import --------------------------------------------------------------------


async def test_dry_run_shows_what_would_change_and_changes_nothing(tmp_path):
    async with v3(tmp_path) as engine:
        report = await engine.import_v2(clarion_db(tmp_path), dry_run=True)

        assert [(c.id, c.action) for c in report.changes] == [("basic_editor", "created"), ("go_reviewer", "created")]
        assert (report.runs.found, report.runs.imported) == (2, 0)
        assert await engine.agents.list() == []
        assert (await engine.list_runs())[0] == []


async def test_reimport_updates_in_place(tmp_path):
    async with v3(tmp_path) as engine:
        await engine.import_v2(clarion_db(tmp_path))
        changed = {**EDITOR, "system_prompt": "A new prompt."}
        (tmp_path / "clarion.db").unlink()

        report = await engine.import_v2(clarion_db(tmp_path, agents=[changed, GO_REVIEWER]))

        assert [(c.id, c.action) for c in report.changes] == [("basic_editor", "updated"), ("go_reviewer", "unchanged")]
        assert report.changes[0].fields == ["system_prompt"]
        assert report.summary_lines()[0] == 'updated basic_editor "Basic File Editor" (openai/gpt-4o): system_prompt'
        assert (await engine.agents.get("basic_editor")).system_prompt == "A new prompt."
        assert len(await engine.agents.list()) == 2


async def test_a_row_that_is_not_an_agent_is_an_error_and_the_rest_import(tmp_path):
    async with v3(tmp_path) as engine:
        path = clarion_db(tmp_path, agents=[EDITOR])
        with sqlite3.connect(path) as con:
            con.execute("INSERT INTO agents (id, agent_data) VALUES ('broken', '{\"Profile\": ')")
        report = await engine.import_v2(path)

        assert not report.complete
        assert [e.source for e in report.errors] == ["clarion.db agents/broken"]
        assert [c.id for c in report.changes] == ["basic_editor"]


# --- run history ------------------------------------------------------------------------------


async def test_v2_runs_become_finished_runs_with_their_original_time(tmp_path):
    async with v3(tmp_path) as engine:
        report = await engine.import_v2(clarion_db(tmp_path))

        assert (report.runs.found, report.runs.imported) == (2, 2)
        runs, _ = await engine.list_runs(workflow_id=V2_RUN_WORKFLOW_ID)
        failed, succeeded = runs  # newest first
        assert succeeded.status == "succeeded"
        assert succeeded.started_at == datetime.fromtimestamp(STARTED_MS / 1000, UTC)
        assert succeeded.finished_at == datetime(2024, 5, 1, 10, 0, 7, tzinfo=UTC)
        assert succeeded.inputs["prompt"] == "Create hello.txt saying hi"
        assert succeeded.inputs["agent"] == "basic_editor"
        assert succeeded.inputs["files"] == ["README.md"]
        assert succeeded.inputs["project"] == {"id": "proj_1", "name": "Shop", "path": "/home/me/shop"}
        assert succeeded.outputs == {
            "summary": "Created hello.txt",
            "file_changes": [{"action": "create", "path": "hello.txt", "new_content": "hi\n"}],
        }
        assert (succeeded.usage.prompt_tokens, succeeded.usage.completion_tokens) == (120, 30)
        assert failed.status == "failed"
        assert failed.error == {"code": "v2_run_failed", "message": "OpenAI API error (401 Unauthorized)"}


async def test_an_imported_run_shows_its_step_and_events_like_any_run(tmp_path):
    async with v3(tmp_path) as engine:
        await engine.import_v2(clarion_db(tmp_path))
        runs, _ = await engine.list_runs(workflow_id=V2_RUN_WORKFLOW_ID)
        run = await engine.get_run(runs[-1].run_id)

        (step,) = run.steps
        assert (step.step_id, step.status) == ("reply", "succeeded")
        assert step.output["json"]["file_changes"][0]["path"] == "hello.txt"
        assert step.output["model"] == "openai/gpt-4o"
        events = [e.type for e in await engine.events(run.run_id)]
        assert events == ["run_started", "step_completed", "workflow_succeeded"]


async def test_imported_runs_are_read_only(tmp_path):
    async with v3(tmp_path) as engine:
        await engine.import_v2(clarion_db(tmp_path))
        runs, _ = await engine.list_runs(workflow_id=V2_RUN_WORKFLOW_ID)

        with pytest.raises(Conflict):
            await engine.cancel(runs[0].run_id)


async def test_reimporting_the_history_adds_no_run_twice(tmp_path):
    async with v3(tmp_path) as engine:
        path = clarion_db(tmp_path)
        await engine.import_v2(path)

        again = await engine.import_v2(path)
        dry = await engine.import_v2(path, dry_run=True)

        assert (again.runs.imported, again.runs.already_imported) == (0, 2)
        assert dry.runs.already_imported == 2
        runs, _ = await engine.list_runs()
        assert len(runs) == 2


async def test_the_summary_names_each_agent_the_history_and_the_keys_to_set(tmp_path, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.setenv("OPENROUTER_API_KEY", "x")
    async with v3(tmp_path) as engine:
        dry = await engine.import_v2(clarion_db(tmp_path), dry_run=True)
        real = await engine.import_v2(tmp_path / "clarion.db")

    assert dry.summary_lines()[:3] == [
        "dry run: nothing was saved",
        'would be created basic_editor "Basic File Editor" (openai/gpt-4o)',
        'would be created go_reviewer "Go Reviewer" (openrouter/anthropic/claude-3.5-sonnet)',
    ]
    assert real.summary_lines() == [
        'created basic_editor "Basic File Editor" (openai/gpt-4o)',
        'created go_reviewer "Go Reviewer" (openrouter/anthropic/claude-3.5-sonnet)',
        "runs: 2 of 2 v2 runs imported as workflow clarion-v2-agent-run (0 already there)",
        'key: basic_editor "Basic File Editor" read the API key from $OPENAI_API_KEY (not set yet); keys are not imported',
        'key: go_reviewer "Go Reviewer" read the API key from $OPENROUTER_API_KEY (set); keys are not imported',
    ]


async def test_other_braces_in_a_v2_prompt_stay_literal_text_as_v2_sent_it(tmp_path):
    prompt = "Fill {{component-name}}; keep {{placeholder}}, {% raw %} and {#id} as they are."
    agent = v2_agent(
        "braces", "Braces", system_prompt=prompt, user_variables=[{"name": "component-name", "required": True}]
    )
    async with v3(tmp_path) as engine:
        await engine.import_v2(clarion_db(tmp_path, agents=[agent]))
        imported = await engine.agents.get("braces")

    rendered = render_system_prompt(imported, {"component-name": "Cart"})
    assert rendered == "Fill Cart; keep {{placeholder}}, {% raw %} and {#id} as they are."


async def test_empty_llm_settings_import_as_what_v2_ran_them_with(tmp_path):
    # v2's frontend ran an agent whose llm_config was empty as OpenAI gpt-4o at temperature 0.7
    agent = v2_agent("defaults", "Defaults", provider="", model="", parameters=None)
    async with v3(tmp_path) as engine:
        await engine.import_v2(clarion_db(tmp_path, agents=[agent]))
        imported = await engine.agents.get("defaults")

    assert (imported.model, imported.parameters, imported.api_key_env) == (
        "openai/gpt-4o",
        {"temperature": 0.7},
        "OPENAI_API_KEY",
    )


async def test_an_unreadable_run_row_is_a_warning_and_every_agent_still_counts(tmp_path):
    path = clarion_db(tmp_path)
    with sqlite3.connect(path) as con:
        con.execute("INSERT INTO runs (id, project_id, run_data) VALUES ('run-broken', 'proj_1', '{oops')")
    async with v3(tmp_path) as engine:
        report = await engine.import_v2(path)

    assert report.complete
    assert report.runs.imported == 2
    assert any(w.source == "clarion.db runs/run-broken" for w in report.warnings)
