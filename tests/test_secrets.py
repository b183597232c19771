"""Secrets against a real server: an agent's key may only come from a variable named as a
secret, and the values of such variables never appear in what Clarion stores, streams or logs."""

from __future__ import annotations

import base64
import json
import logging
from urllib.parse import quote

import pytest
from conftest_server import create_workflow, start_run, wait_event, wait_run

from clarion_jupyter.testing.openai_server import OpenAIStubServer

SECRET = "sk-clarion-test-0123456789abcdef"


@pytest.fixture
def secret_env(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("CLARION_TEST_API_KEY", SECRET)
    monkeypatch.setenv("CLARION_TEST_TOKEN", SECRET + "-token")
    return SECRET


def agent(**fields: object) -> dict[str, object]:
    return {"id": "leaky", "name": "Leaky", "model": "openai/fake", **fields}


async def test_an_agent_may_not_use_a_variable_not_named_as_a_secret_for_its_key(api):
    reply = await api("POST", "agents", body=agent(api_key_env="HOME", api_base="http://127.0.0.1:9/v1"))
    assert reply.status == 422
    assert reply.body["error"]["details"][0]["field"] == "api_key_env"
    assert "HOME" in reply.body["error"]["message"] and "secret_env_pattern" in reply.body["error"]["message"]
    assert (await api("POST", "agents", body=agent(api_key_env="OPENAI_API_KEY"))).status == 201
    assert (await api("PUT", "agents", "leaky", body=agent(api_key_env="DATABASE_URL"))).status == 422


@pytest.mark.clarion(secret_env_pattern=r"CORP_[A-Z_]+")
async def test_the_secret_name_pattern_is_configurable(api):
    assert (await api("POST", "agents", body=agent(api_key_env="CORP_LLM_SECRET"))).status == 201
    assert (await api("POST", "agents", body=agent(id="other", api_key_env="OPENAI_API_KEY"))).status == 422


V2_AGENT = json.dumps(
    {
        "Profile": {"ID": "v2", "Name": "V2"},
        "llm_config": {"provider": "OpenAI", "model": "gpt-4o", "api_key_env": "OPENAI_API_KEY"},
    }
)


async def test_an_imported_agent_may_name_a_secret_variable_for_its_key(api):
    reply = await api("POST", "agents", "import", body=V2_AGENT)
    assert reply.status == 201, reply.body
    assert (await api("GET", "agents", "v2")).body["api_key_env"] == "OPENAI_API_KEY"


@pytest.mark.clarion(secret_env_pattern=r"CORP_[A-Z_]+")
async def test_an_imported_agent_whose_key_variable_is_refused_is_an_import_error(api):
    reply = await api("POST", "agents", "import", body=V2_AGENT)
    assert reply.status == 422
    assert "OPENAI_API_KEY" in reply.body["error"]["message"]
    assert (await api("GET", "agents", "v2")).status == 404


async def test_a_key_echoed_by_the_model_is_masked_in_outputs_events_and_streamed_tokens(api, secret_env):
    with OpenAIStubServer(reply=f"your key is {SECRET}, keep it safe", api_key=SECRET, chunk_chars=5) as stub:
        created = await api("POST", "agents", body=agent(api_base=stub.url, api_key_env="CLARION_TEST_API_KEY"))
        assert created.status == 201
        workflow = {
            "id": "echo-key",
            "name": "Echo key",
            "steps": [
                {"id": "plain", "task": "llm_call", "with": {"agent": "leaky", "prompt": "key?"}},
                {"id": "streamed", "task": "llm_call", "with": {"agent": "leaky", "prompt": "key?", "stream": True}},
            ],
        }
        await create_workflow(api, workflow)
        run = await wait_run(api, await start_run(api, "echo-key"))
    assert run["status"] == "succeeded", run
    outputs = {s["step_id"]: s["output"]["text"] for s in run["steps"]}
    assert outputs == {"plain": "your key is ***, keep it safe", "streamed": "your key is ***, keep it safe"}
    events = (await api("GET", "runs", run["run_id"], "events")).body["events"]
    streamed = "".join(e["data"]["text"] for e in events if e["type"] == "llm_token")
    assert streamed == "your key is ***, keep it safe"
    stored = json.dumps([run, events, (await api("GET", "runs")).body])
    assert SECRET not in stored


async def test_shell_output_and_errors_are_masked(api, secret_env):
    workflow = {
        "id": "printenv",
        "name": "Print env",
        "steps": [
            {
                "id": "out",
                "task": "shell",
                "with": {"command": "echo key=$CLARION_TEST_API_KEY; echo tok=$CLARION_TEST_TOKEN >&2"},
            },
            {"id": "fail", "task": "shell", "with": {"command": "echo $CLARION_TEST_API_KEY; exit 3"}},
        ],
    }
    await create_workflow(api, workflow)
    run = await wait_run(api, await start_run(api, "printenv"))
    steps = {s["step_id"]: s for s in run["steps"]}
    assert steps["out"]["output"]["stdout"] == "key=***\n"
    assert steps["out"]["output"]["stderr"] == "tok=***\n"
    assert steps["fail"]["error"]["details"]["stdout"] == "***\n"
    assert SECRET not in json.dumps(run)


@pytest.mark.clarion(log_format="json")
async def test_log_records_are_masked(api, secret_env, capsys):
    assert (await api("GET", "health")).status == 200
    logging.getLogger("clarion_jupyter.test").error("the key is %s", SECRET)
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert json.loads(line)["message"] == "the key is ***"


async def test_a_secret_given_as_a_run_input_is_masked_in_the_stored_run_and_its_events(api, secret_env):
    workflow = {
        "id": "pass-key",
        "name": "Pass key",
        "inputs": {"key": {"type": "string"}},
        "steps": [{"id": "use", "task": "echo", "with": {"value": "{{ inputs.key | length }}"}}],
        "outputs": {"key": "{{ inputs.key }}"},
    }
    await create_workflow(api, workflow)
    run = await wait_run(api, await start_run(api, "pass-key", inputs={"key": SECRET}))
    assert run["status"] == "succeeded", run
    assert run["steps"][0]["output"] == {"value": len(SECRET)}, "the step itself saw the real value"
    assert run["inputs"] == {"key": "***"} and run["outputs"] == {"key": "***"}
    events = (await api("GET", "runs", run["run_id"], "events")).body["events"]
    assert events[0]["type"] == "run_queued" and events[0]["data"]["inputs"] == {"key": "***"}
    assert SECRET not in json.dumps([run, events, (await api("GET", "runs")).body])


async def test_an_approval_preview_masks_a_secret_the_file_would_hold(api, secret_env):
    workflow = {
        "id": "write-key",
        "name": "Write key",
        "inputs": {"key": {"type": "string"}},
        "steps": [
            {
                "id": "save",
                "task": "file_write",
                "approval": True,
                "with": {"path": "settings.env", "content": "API_KEY={{ inputs.key }}\n"},
            }
        ],
    }
    await create_workflow(api, workflow)
    run_id = await start_run(api, "write-key", inputs={"key": SECRET})
    await wait_event(api, run_id, "approval_requested")
    waiting = (await api("GET", "runs", run_id)).body
    events = (await api("GET", "runs", run_id, "events")).body["events"]
    requested = next(e for e in events if e["type"] == "approval_requested")
    assert "API_KEY=***" in json.dumps(requested["data"]["preview"])
    assert SECRET not in json.dumps([waiting, events])


async def test_a_secret_printed_base64_or_url_encoded_is_masked(api, secret_env):
    encoded = {
        "base64": base64.b64encode(f"user:{SECRET}".encode()).decode(),
        "url": "https://example.test/?key=" + quote(SECRET + "/x", safe=""),
    }
    workflow = {
        "id": "encoded",
        "name": "Encoded",
        "inputs": {"forms": {"type": "object"}},
        "steps": [{"id": "show", "task": "echo", "with": {"value": "{{ inputs.forms }}"}}],
    }
    await create_workflow(api, workflow)
    run = await wait_run(api, await start_run(api, "encoded", inputs={"forms": encoded}))
    stored = json.dumps(run)
    shown = run["steps"][0]["output"]["value"]
    assert "***" in shown["base64"] and "***" in shown["url"]
    for form in encoded.values():
        assert form not in stored


async def test_a_key_too_short_to_be_masked_is_refused_at_the_call(api, monkeypatch):
    monkeypatch.setenv("SHORT_API_KEY", "abc")
    with OpenAIStubServer(reply="hi") as stub:
        assert (await api("POST", "agents", body=agent(api_base=stub.url, api_key_env="SHORT_API_KEY"))).status == 201
        await create_workflow(
            api,
            {
                "id": "short",
                "name": "Short",
                "steps": [{"id": "ask", "task": "llm_call", "with": {"agent": "leaky", "prompt": "hi"}}],
            },
        )
        run = await wait_run(api, await start_run(api, "short"))
        assert stub.request_count == 0
    assert run["status"] == "failed"
    assert "SHORT_API_KEY holds 3 characters" in run["steps"][0]["error"]["message"]


# --- a secret pasted into a document is refused ------------------------------------------------


async def test_a_workflow_holding_a_secrets_value_is_refused_naming_the_step_and_field(api, secret_env):
    doc = {
        "id": "pasted",
        "name": "Pasted",
        "steps": [{"id": "say", "task": "echo", "with": {"value": f"Authorization: Bearer {SECRET}"}}],
    }

    reply = await api("POST", "workflows", body=doc)

    assert reply.status == 422
    (problem,) = reply.body["error"]["details"]
    assert (problem["step"], problem["field"]) == ("say", "with.value")
    assert "CLARION_TEST_API_KEY" in problem["message"] and SECRET not in json.dumps(reply.body)
    assert (await api("GET", "workflows", "pasted")).status == 404


async def test_a_workflow_holding_a_secret_base64_encoded_is_refused_too(api, secret_env):
    encoded = base64.b64encode(f"user:{SECRET}".encode()).decode()
    doc = {"id": "b64", "name": "B64", "steps": [{"id": "say", "task": "echo", "with": {"value": encoded}}]}
    assert (await api("POST", "workflows", body=doc)).status == 422


async def test_an_agent_holding_a_secrets_value_is_refused_naming_the_field(api, secret_env):
    reply = await api("POST", "agents", body=agent(system_prompt=f"Use the key {SECRET} when asked."))

    assert reply.status == 422
    assert [p["field"] for p in reply.body["error"]["details"]] == ["system_prompt"]
    assert SECRET not in json.dumps(reply.body)
    assert (await api("GET", "agents", "leaky")).status == 404


async def test_a_document_is_accepted_once_the_secret_is_gone(api, secret_env):
    assert (await api("POST", "agents", body=agent(system_prompt="Use the key in CLARION_TEST_API_KEY."))).status == 201
