"""The OpenAPI document is valid, complete, and describes what the real models produce.

Schemathesis tests the live server against this spec; these tests make sure the spec itself
is right first: a schema that rejects a real document (a missed nullable field) would fail
every fuzzed request, and one that accepts anything would catch nothing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import schemathesis
import yaml
from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from clarion_jupyter import Agent, Engine, __version__
from clarion_jupyter.core.errors import NotFound, Problem, ValidationFailed
from clarion_jupyter.server.app import EngineUnavailable
from clarion_jupyter.server.handlers import WorkflowDocuments
from clarion_jupyter.task.registry import TaskRegistry

SPEC_PATH = Path(__file__).parents[1] / "clarion_jupyter" / "server" / "openapi.yaml"
SPEC: dict[str, Any] = yaml.safe_load(SPEC_PATH.read_text())
SPEC_URI = "urn:clarion:openapi"
REGISTRY = Registry().with_resource(SPEC_URI, Resource.from_contents(SPEC, default_specification=DRAFT202012))

# The API table of ARCHITECTURE.md ("v3 REST API"): the contract the spec must cover.
CONTRACT = [
    ("get", "/api/v3/health"),
    ("get", "/api/v3/agents"),
    ("post", "/api/v3/agents"),
    ("get", "/api/v3/agents/{agent_id}"),
    ("put", "/api/v3/agents/{agent_id}"),
    ("delete", "/api/v3/agents/{agent_id}"),
    ("post", "/api/v3/agents/import"),
    ("get", "/api/v3/workflows"),
    ("post", "/api/v3/workflows"),
    ("get", "/api/v3/workflows/{workflow_id}"),
    ("put", "/api/v3/workflows/{workflow_id}"),
    ("delete", "/api/v3/workflows/{workflow_id}"),
    ("post", "/api/v3/workflows/{workflow_id}/run"),
    ("post", "/api/v3/runs"),
    ("post", "/api/v3/runs/{run_id}/approvals/{step_key}"),
    ("get", "/api/v3/runs/{run_id}"),
    ("get", "/api/v3/runs"),
    ("post", "/api/v3/runs/{run_id}/cancel"),
    ("get", "/api/v3/runs/{run_id}/events"),
    ("get", "/api/v3/tasks"),
    ("get", "/api/v3/openapi.yaml"),
    ("post", "/api/v3/query"),
]
ERROR_STATUSES = {"400", "401", "403", "404", "409", "413", "415", "422", "503"}

TINY_WORKFLOW = {
    "name": "Spec sample",
    "inputs": {"n": {"type": "integer", "default": 2}, "letters": {"type": "array", "default": ["a", "b"]}},
    "steps": [
        {"id": "first", "task": "echo", "with": {"value": "{{ inputs.n }}"}},
        {"parallel": [
            {"id": "ok", "task": "echo", "with": {"value": {"nested": [1, None]}}},
            {"id": "broken", "task": "shell", "with": {"command": "exit 3"}, "continue_on_error": True},
        ]},
        {"id": "each", "task": "echo", "for_each": "{{ inputs.letters }}", "with": {"value": "{{ item }}"}},
        {"id": "never", "task": "echo", "if": False, "with": {"value": 0}},
    ],
    "outputs": {"n": "{{ steps.first.output.value }}"},
}  # fmt: skip


def validator(name: str) -> Draft202012Validator:
    """A validator for one component schema, resolving its ``$ref``s inside the spec."""
    schema = {"$ref": f"{SPEC_URI}#/components/schemas/{name}"}
    return Draft202012Validator(schema, registry=REGISTRY, format_checker=Draft202012Validator.FORMAT_CHECKER)


def assert_valid(name: str, instance: Any) -> None:
    errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator(name).iter_errors(instance)]
    assert not errors, f"{name} rejects a real document: {errors}"


def assert_invalid(name: str, instance: Any) -> None:
    assert not validator(name).is_valid(instance), f"{name} accepts a wrong document: {instance}"


# -- the document ------------------------------------------------------------------


def test_spec_is_valid_openapi() -> None:
    schema = schemathesis.openapi.from_path(SPEC_PATH)
    schema.validate()  # the official OpenAPI 3.1 meta-schema
    assert SPEC["openapi"].startswith("3.1")
    assert [server["url"] for server in SPEC["servers"]] == ["/"]


def test_component_schemas_are_valid_json_schemas() -> None:
    for schema in SPEC["components"]["schemas"].values():
        Draft202012Validator.check_schema(schema)


@pytest.mark.parametrize(("method", "path"), CONTRACT)
def test_every_contract_operation_is_described(method: str, path: str) -> None:
    assert method in SPEC["paths"].get(path, {}), f"{method.upper()} {path} is missing"


def response_schema(response: dict[str, Any]) -> str:
    """The component schema name of a JSON response, following a ``$ref`` to a shared response."""
    if "$ref" in response:
        response = SPEC["components"]["responses"][response["$ref"].rsplit("/", 1)[-1]]
    return response["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[-1]


def test_every_error_answer_has_the_error_schema() -> None:
    for path, item in SPEC["paths"].items():
        for method, operation in item.items():
            if method == "parameters":
                continue
            responses = operation["responses"]
            for status in ERROR_STATUSES & responses.keys():
                expected = {"Health"} if (path, status) == ("/api/v3/health", "503") else {"Error", "ValidationError"}
                assert response_schema(responses[status]) in expected, (method, path, status)
            assert any(s.startswith("2") for s in responses), (method, path)
            assert {"401", "403"} <= responses.keys(), (method, path)
            if "requestBody" in operation:
                assert {"400", "413", "415", "422"} <= responses.keys(), (method, path)


def test_run_start_is_202_with_location() -> None:
    response = SPEC["paths"]["/api/v3/workflows/{workflow_id}/run"]["post"]["responses"]["202"]
    assert "Location" in response["headers"]
    assert_valid("RunAccepted", {"run_id": "01a2146953c07306669687beb2", "status": "queued"})
    assert_invalid("RunAccepted", {"run_id": "01a2146953c07306669687beb2", "status": "running"})


def test_workflow_bodies_are_json_and_yaml() -> None:
    body = SPEC["components"]["requestBodies"]["WorkflowBody"]["content"]
    assert {"application/json", "application/yaml"} <= body.keys()
    imports = SPEC["paths"]["/api/v3/agents/import"]["post"]["requestBody"]["content"]
    assert {"text/plain", "application/yaml", "application/json", "application/octet-stream"} <= imports.keys()


def test_security_is_the_jupyter_token() -> None:
    schemes = SPEC["components"]["securitySchemes"]
    assert schemes["tokenHeader"].items() >= {"type": "apiKey", "in": "header", "name": "Authorization"}.items()
    assert schemes["tokenQuery"].items() >= {"type": "apiKey", "in": "query", "name": "token"}.items()
    assert SPEC["security"] == [{"tokenHeader": []}, {"tokenQuery": []}]


def test_websockets_are_described_with_their_close_codes() -> None:
    sockets = SPEC["x-websockets"]
    assert {"1000", "4008", "4404"} <= sockets["/ws/runs/{run_id}/subscribe"]["close_codes"].keys()
    assert "/ws/runs" in sockets
    for code in ("1000", "4008", "4404"):
        assert code in SPEC["info"]["description"]


def test_query_parameters_are_bounded() -> None:
    params = {p["name"]: p["schema"] for p in SPEC["paths"]["/api/v3/runs"]["get"]["parameters"]}
    assert (params["limit"]["minimum"], params["limit"]["maximum"]) == (1, 500)
    assert {"workflow_id", "status", "cursor"} <= params.keys()
    since = SPEC["components"]["parameters"]["Since"]["schema"]
    assert since["type"] == "integer" and since["minimum"] == 0


# -- real documents validate ---------------------------------------------------------


async def test_real_run_documents_and_events_validate(tmp_path: Path) -> None:
    async with Engine(db_path=tmp_path / "runs.duckdb", workspace_root=tmp_path, workers=2) as engine:
        run_id = await engine.submit(TINY_WORKFLOW, idempotency_key="spec")
        run = (await engine.wait(run_id)).model_dump(mode="json")
        events = [event.as_dict() for event in await engine.events(run_id)]
        runs, next_cursor = await engine.list_runs(limit=1)

    statuses = {step["key"]: step["status"] for step in run["steps"]}
    assert statuses == {"first": "succeeded", "ok": "succeeded", "broken": "failed", "each": "succeeded",
                        "each[0]": "succeeded", "each[1]": "succeeded", "never": "skipped"}  # fmt: skip
    assert_valid("WorkflowRun", run)
    assert_valid("EventList", {"events": events})
    assert {e["type"] for e in events} >= {"run_queued", "step_failed", "step_skipped", "workflow_succeeded"}
    assert_valid("RunList", {"runs": [r.model_dump(mode="json") for r in runs], "next_cursor": next_cursor})
    assert_valid("RunList", {"runs": [], "next_cursor": None})


async def test_queued_run_validates(tmp_path: Path) -> None:
    """A run straight after submit has no start, end, outputs or steps yet: all nullable."""
    async with Engine(db_path=tmp_path / "runs.duckdb", workspace_root=tmp_path, run_workers=False) as engine:
        run = (await engine.get_run(await engine.submit(TINY_WORKFLOW))).model_dump(mode="json")
    assert run["status"] in ("queued", "running")
    assert_valid("WorkflowRun", run)


async def test_the_schemas_reject_wrong_documents(tmp_path: Path) -> None:
    async with Engine(db_path=tmp_path / "runs.duckdb", workspace_root=tmp_path) as engine:
        run_id = await engine.submit(TINY_WORKFLOW)
        run = (await engine.wait(run_id)).model_dump(mode="json")
        event = (await engine.events(run_id))[-1].as_dict()
    assert_invalid("WorkflowRun", run | {"status": "done"})
    assert_invalid("WorkflowRun", run | {"created_at": None})
    assert_invalid("WorkflowRun", run | {"surprise": 1})
    assert_invalid("WorkflowRun", {k: v for k, v in run.items() if k != "steps"})
    assert_invalid("WorkflowRun", run | {"steps": [run["steps"][0] | {"status": "exploded"}]})
    assert_invalid("WorkflowRun", run | {"usage": {"prompt_tokens": -1, "completion_tokens": 0, "cost_usd": None}})
    assert_invalid("Event", event | {"seq": 0})
    assert_invalid("Event", event | {"type": "workflow_exploded"})
    assert_invalid("Event", {k: v for k, v in event.items() if k != "step_id"})
    assert_invalid("RunList", {"runs": []})


def test_real_agents_validate() -> None:
    minimal = Agent(name="Triager", model="openai/gpt-4o").model_dump(mode="json")
    full = Agent.model_validate({
        "id": "coder", "name": "Coder", "description": "Writes code", "model": "anthropic/claude-3-5-sonnet-latest",
        "system_prompt": "You write code.", "parameters": {"temperature": 0.2, "max_tokens": 1000},
        "output_schema": {"type": "object"}, "context": {"include_globs": ["**/*.py"], "content_regex": "def "},
        "user_variables": [{"name": "goal", "required": True}], "api_base": "http://127.0.0.1:1/v1",
        "api_key_env": "ANTHROPIC_API_KEY", "extra": {"v2": {"kept": True}},
    }).model_dump(mode="json")  # fmt: skip
    for agent in (minimal, full):
        assert_valid("Agent", agent)
        assert_valid("AgentInput", agent)
    assert_valid("AgentList", {"agents": [minimal, full]})
    assert_valid("AgentInput", {"name": "Triager", "model": "openai/gpt-4o"})
    assert_invalid("Agent", {"name": "Triager", "model": "openai/gpt-4o"})
    assert_invalid("AgentInput", {"name": "Triager", "model": "openai/gpt-4o", "api_key": "sk-..."})
    assert_invalid("AgentInput", {"name": "Triager", "model": "x", "parameters": {"api_key": "sk-..."}})
    assert_invalid("Agent", minimal | {"id": "Not A Slug"})


async def test_real_import_report_validates(tmp_path: Path) -> None:
    text = """
type: Agent
metadata: {name: Reviewer, description: Reviews diffs}
properties:
  system_prompt: Review this.
  llm_config: {provider: OpenAI, model: gpt-4o, parameters: {temperature: 0, api_key: sk-secret}}
---
type: FilterSet
"""
    async with Engine(db_path=tmp_path / "runs.duckdb", workspace_root=tmp_path) as engine:
        report = (await engine.import_v2(text.encode())).as_dict()
    assert report["agents"] and report["changes"] and report["errors"] and report["warnings"]
    assert_valid("ImportReport", report)


async def test_real_workflows_validate(tmp_path: Path) -> None:
    async with Engine(db_path=tmp_path / "runs.duckdb", workspace_root=tmp_path) as engine:
        from_json = await engine.workflows.create(TINY_WORKFLOW)
        from_yaml = await engine.workflows.create("# saved as YAML\nname: From YAML\nsteps: [{id: a, task: echo}]\n")
    # The handler's own serialisation (it uses no request state), so the sample is what the API sends.
    serialise = WorkflowDocuments.serialise.__get__(WorkflowDocuments.__new__(WorkflowDocuments))
    documents = [serialise(from_json), serialise(from_yaml)]
    assert "source" in documents[1]
    for document in documents:
        assert_valid("WorkflowDocument", document)
    assert_valid("WorkflowList", {"workflows": documents})
    assert_invalid("WorkflowDocument", documents[0] | {"surprise": 1})
    assert_invalid("WorkflowDocument", {k: v for k, v in documents[0].items() if k != "created_at"})
    assert_valid("Workflow", TINY_WORKFLOW)
    assert_valid("Workflow", {"name": "x", "steps": [{"id": "s", "task": "echo", "retry": {"max_attempts": 3, "backoff_s": 1.0},
                                                      "timeout_s": 600, "needs": [], "if": "{{ true }}"}]})  # fmt: skip
    assert_invalid("Workflow", TINY_WORKFLOW | {"created_at": "2026-01-01T00:00:00Z"})
    assert_invalid("Workflow", {"name": "x", "steps": []})
    assert_invalid("Workflow", {"name": "x", "steps": [{"id": "s", "task": "echo", "bogus": 1}]})
    assert_invalid("Workflow", {"name": "x", "steps": [{"parallel": []}]})
    assert_invalid("WorkflowDocument", {"name": "x", "steps": [{"id": "s", "task": "echo"}]})


async def test_real_health_validates(tmp_path: Path) -> None:
    async with Engine(db_path=tmp_path / "runs.duckdb", workspace_root=tmp_path) as engine:
        health = {"status": "ok", "version": __version__, **engine.health()}
    assert_valid("Health", health)
    assert_valid("Health", {"status": "stopped", "version": __version__, "storage": {"kind": "duckdb", "path": "x"},
                            "queue": {"url": "local"}, **EngineUnavailable("database locked").as_dict()})  # fmt: skip
    assert_invalid("Health", health | {"status": "fine"})


def test_real_task_list_validates() -> None:
    assert_valid("TaskList", {"tasks": TaskRegistry.from_entry_points().describe()})


def test_real_errors_validate() -> None:
    invalid = ValidationFailed([Problem(loc="step 'fix' field 'with.command'", message="bad", step="fix", field="with.command"),
                                Problem(loc="inputs.report", message="missing")]).as_dict()  # fmt: skip
    assert_valid("ValidationError", invalid)
    assert_valid("Error", invalid)
    assert_valid("Error", NotFound("run 'x' not found", details={"run_id": "x"}).as_dict())
    assert_valid("Error", NotFound("nothing").as_dict())
    assert_invalid("ValidationError", NotFound("nothing").as_dict())
    assert_invalid("Error", {"message": "Traceback (most recent call last): ..."})
