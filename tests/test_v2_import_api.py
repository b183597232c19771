"""POST /api/v3/agents/import with what Clarion v2 wrote, against a real Jupyter server."""

from __future__ import annotations

import json
from pathlib import Path

import yaml
from test_v2_import import EDITOR, GO_REVIEWER, KEY, clarion_db

from clarion_jupyter.agent.v2runs import V2_RUN_WORKFLOW_ID
from clarion_jupyter.testing.clarion_v2 import go_json, v2_yaml_agent


def octet() -> dict[str, str]:
    """A fresh dict each time: jp_fetch adds its token header to the dict it is given."""
    return {"Content-Type": "application/octet-stream"}


async def test_a_clarion_db_upload_imports_agents_and_run_history(api, tmp_path: Path) -> None:
    reply = await api("POST", "agents", "import", body=clarion_db(tmp_path).read_bytes(), headers=octet())

    assert reply.status == 201
    assert [c["id"] for c in reply.body["changes"]] == ["basic_editor", "go_reviewer"]
    assert reply.body["runs"] == {"workflow_id": V2_RUN_WORKFLOW_ID, "found": 2, "imported": 2, "already_imported": 0}
    assert KEY not in json.dumps(reply.body)
    assert (await api("GET", "agents", "basic_editor")).body["api_key_env"] == "OPENAI_API_KEY"


async def test_imported_runs_list_show_and_refuse_cancel_like_finished_runs(api, tmp_path: Path) -> None:
    await api("POST", "agents", "import", body=clarion_db(tmp_path).read_bytes(), headers=octet())

    listed = (await api("GET", "runs", params={"workflow_id": V2_RUN_WORKFLOW_ID})).body["runs"]
    assert [r["status"] for r in listed] == ["failed", "succeeded"]
    shown = await api("GET", "runs", listed[1]["run_id"])
    assert shown.status == 200
    assert shown.body["outputs"]["file_changes"][0]["path"] == "hello.txt"
    assert shown.body["steps"][0]["step_id"] == "reply"
    events = (await api("GET", "runs", listed[1]["run_id"], "events")).body["events"]
    assert [e["type"] for e in events] == ["run_started", "step_completed", "workflow_succeeded"]
    cancel = await api("POST", "runs", listed[1]["run_id"], "cancel")
    assert cancel.status == 409


async def test_json_yaml_and_the_agent_list_are_accepted(api) -> None:
    as_json = await api("POST", "agents", "import", body=go_json(EDITOR))
    as_yaml = await api(
        "POST", "agents", "import", body=v2_yaml_agent(GO_REVIEWER), headers={"Content-Type": "application/yaml"}
    )
    as_list = await api("POST", "agents", "import", body=go_json([EDITOR, GO_REVIEWER]))

    assert [r.status for r in (as_json, as_yaml, as_list)] == [201, 201, 201]
    assert [c["action"] for c in as_json.body["changes"] + as_yaml.body["changes"]] == ["created", "created"]
    assert [c["id"] for c in as_list.body["changes"]] == ["basic_editor", "go_reviewer"]
    assert as_list.body["changes"][0]["action"] == "unchanged"  # the very same document again
    assert yaml.safe_load(v2_yaml_agent(GO_REVIEWER))["children"][1]["properties"] == {"schema": {}}
    assert (await api("GET", "agents", "go_reviewer")).body["output_schema"] is None


async def test_dry_run_answers_200_and_saves_nothing(api, tmp_path: Path) -> None:
    reply = await api(
        "POST", "agents", "import", body=clarion_db(tmp_path).read_bytes(), headers=octet(), params={"dry_run": "true"}
    )

    assert reply.status == 200
    assert reply.body["dry_run"] is True
    assert [c["action"] for c in reply.body["changes"]] == ["created", "created"]
    assert (await api("GET", "agents")).body["agents"] == []
    assert (await api("GET", "runs")).body["runs"] == []


async def test_bytes_that_are_neither_a_database_nor_text_are_422(api) -> None:
    reply = await api("POST", "agents", "import", body=b"\xff\xfe\x00garbage", headers=octet())
    assert reply.status == 422
    assert "neither a v2 clarion.db nor UTF-8 text" in json.dumps(reply.body)
