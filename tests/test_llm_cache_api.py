"""The LLM cache through a real Jupyter server's v3 API: the run requests' ``cache``, the
``llm_cache`` trait, and ``GET`` / ``DELETE /api/v3/cache``. The LLM is the local
OpenAI-compatible server, which counts its requests."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from conftest_server import Api, create_workflow, start_run, wait_run

from clarion_jupyter.testing import OpenAIStubServer

pytestmark = pytest.mark.timeout(90)

ASK = {
    "id": "ask",
    "name": "Ask",
    "steps": [{"id": "ask", "task": "llm_call", "with": {"agent": "asker", "prompt": "What is the answer?"}}],
}


@pytest.fixture
def stub() -> Iterator[OpenAIStubServer]:
    with OpenAIStubServer(reply="The answer is 42.") as server:
        yield server


async def add_agent(api: Api, stub: OpenAIStubServer, agent_id: str = "asker", **fields: Any) -> None:
    doc = {"id": agent_id, "name": agent_id, "model": "openai/fake", "api_base": stub.url, **fields}
    reply = await api("POST", "agents", body=doc)
    assert reply.status == 201, reply.body


async def ad_hoc(api: Api, **body: Any) -> dict[str, Any]:
    reply = await api("POST", "runs", body={"workflow": ASK, **body})
    assert reply.status == 202, reply.body
    run = await wait_run(api, reply.body["run_id"])
    assert run["status"] == "succeeded", run["error"]
    return run


def output(run: dict[str, Any]) -> dict[str, Any]:
    return run["steps"][0]["output"]


async def test_every_run_request_may_ask_for_the_cache(api: Api, stub: OpenAIStubServer) -> None:
    await add_agent(api, stub)
    first = await ad_hoc(api, cache=True)
    await create_workflow(api, ASK)
    saved = await wait_run(api, await start_run(api, "ask", cache=True))
    rerun = await api("POST", "runs", first["run_id"], "rerun", body={"from_step": "ask", "cache": True})
    assert rerun.status == 202, rerun.body
    rerun_run = await wait_run(api, rerun.body["run_id"])
    fresh = await ad_hoc(api, cache=False)
    assert stub.request_count == 2  # the first call, and the one that said cache: false
    assert (first["cache"], output(first)["cached"]) == (True, False)
    assert (saved["cache"], output(saved)["cached"]) == (True, True)
    assert (rerun_run["cache"], output(rerun_run)["cached"]) == (True, True)
    assert fresh["cache"] is False and "cached" not in output(fresh)


async def test_a_run_request_with_a_cache_that_is_not_a_boolean_is_a_422_naming_it(api: Api) -> None:
    reply = await api("POST", "runs", body={"workflow": ASK, "cache": "sometimes"})
    assert reply.status == 422
    (problem,) = reply.body["error"]["details"]
    assert problem["field"] == "cache" and "boolean" in problem["message"]


@pytest.mark.clarion(llm_cache=True)
async def test_the_server_trait_caches_what_nothing_else_decides(api: Api, stub: OpenAIStubServer) -> None:
    await add_agent(api, stub)
    await ad_hoc(api)
    second = await ad_hoc(api)
    stats = await api("GET", "cache")
    assert stub.request_count == 1
    assert output(second)["cached"] is True and second["cache"] is None
    assert stats.status == 200
    assert stats.body["server_default"] is True
    assert (stats.body["entries"], stats.body["agents"]) == (1, {"asker": 1})


async def test_delete_clears_by_agent_and_by_age(api: Api, stub: OpenAIStubServer) -> None:
    for agent_id in ("one", "two"):
        await add_agent(api, stub, agent_id, cache=True)
        doc = {**ASK, "steps": [{**ASK["steps"][0], "with": {"agent": agent_id, "prompt": agent_id}}]}
        assert (await api("POST", "runs", body={"workflow": doc})).status == 202
    runs = (await api("GET", "runs")).body["runs"]
    for run in runs:
        await wait_run(api, run["run_id"])
    assert (await api("GET", "cache")).body["agents"] == {"one": 1, "two": 1}
    assert (await api("DELETE", "cache", params={"older_than": "1d"})).body == {"deleted": 0}
    assert (await api("DELETE", "cache", params={"agent": "one"})).body == {"deleted": 1}
    assert (await api("GET", "cache")).body["agents"] == {"two": 1}
    assert (await api("DELETE", "cache")).body == {"deleted": 1}
    refused = await api("DELETE", "cache", params={"older_than": "yesterday"})
    assert refused.status == 400
    assert refused.body["error"]["details"] == {"field": "older_than", "value": "yesterday"}
