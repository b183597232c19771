"""Running shell steps is code execution: it needs the Jupyter permission to open a terminal,
and a server with ``allow_shell=False`` does not offer the task at all."""

from __future__ import annotations

from typing import Any

import pytest
from conftest_server import ECHO_WORKFLOW, SLEEPY_WORKFLOW, create_workflow, start_run
from jupyter_server.auth.authorizer import Authorizer
from traitlets.config import Config


class NoTerminals(Authorizer):
    """Allows everything except terminals, like a deployment that gives users no shell."""

    def is_authorized(self, handler: Any, user: Any, action: str, resource: str) -> bool:
        return resource != "terminals"


@pytest.fixture
def no_terminals() -> None:
    """Requested by a test whose server's authorizer refuses terminals."""


@pytest.fixture
def jp_server_config(clarion_traits: dict[str, Any], request: pytest.FixtureRequest) -> Config:
    server: dict[str, Any] = {"jpserver_extensions": {"clarion_jupyter": True, "jupyter_server_terminals": False}}
    if "no_terminals" in request.fixturenames:
        server["authorizer_class"] = NoTerminals
    return Config({"ServerApp": server, "ClarionExtension": clarion_traits})


async def test_running_a_shell_workflow_needs_the_terminal_permission(no_terminals, api):
    await create_workflow(api, SLEEPY_WORKFLOW)
    reply = await api("POST", "workflows", "sleepy", "run", body={})
    assert reply.status == 403
    assert reply.body["error"]["code"] == "forbidden"
    assert "terminals" in reply.body["error"]["message"]
    assert (await api("GET", "runs")).body["runs"] == []


async def test_a_workflow_without_shell_steps_runs_without_the_terminal_permission(no_terminals, api):
    await create_workflow(api, ECHO_WORKFLOW)
    await start_run(api, "echo")


async def test_with_the_terminal_permission_a_shell_workflow_runs(api):
    await create_workflow(api, SLEEPY_WORKFLOW)
    await start_run(api, "sleepy")


@pytest.mark.clarion(allow_shell=False)
async def test_the_task_list_has_no_shell_when_shell_is_off(api):
    names = {task["name"] for task in (await api("GET", "tasks")).body["tasks"]}
    assert "shell" not in names and {"echo", "file_read"} <= names


async def test_the_task_list_has_shell_when_shell_is_on(api):
    names = {task["name"] for task in (await api("GET", "tasks")).body["tasks"]}
    assert "shell" in names


async def test_an_ad_hoc_shell_run_needs_the_terminal_permission_too(no_terminals, api):
    reply = await api("POST", "runs", body={"workflow": SLEEPY_WORKFLOW})
    assert reply.status == 403
    assert "terminals" in reply.body["error"]["message"]
    assert (await api("GET", "runs")).body["runs"] == []
