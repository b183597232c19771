"""``Client.delete_runs`` over a real server answers as ``Engine.delete_runs`` does: how many
finished runs went, one by a prefix of its id, or those of a workflow, or all of them."""

from __future__ import annotations

from typing import Any

import pytest

from clarion_jupyter.api import Client
from clarion_jupyter.core.errors import Conflict, NotFound

ECHO = {"id": "echo", "name": "Echo", "steps": [{"id": "say", "task": "echo", "with": {"value": 1}}]}
GATED = {
    "id": "gated",
    "name": "Gated",
    "steps": [{"id": "ask", "task": "echo", "approval": True, "with": {"value": 1}}],
}


@pytest.fixture
def client(jp_serverapp: Any, http_server: Any, jp_http_port: int, jp_base_url: str) -> Client:
    return Client(f"http://127.0.0.1:{jp_http_port}{jp_base_url}", jp_serverapp.identity_provider.token)


async def finished(client: Client, workflow: dict[str, Any], count: int) -> list[str]:
    return [(await client.wait(await client.submit(workflow))).run_id for _ in range(count)]


async def test_one_run_named_by_a_prefix_is_deleted(client: Client) -> None:
    async with client:
        kept, gone = await finished(client, ECHO, 2)
        assert await client.delete_runs(run_id=gone[:-6]) == 1
        assert [r.run_id for r in (await client.list_runs()).runs] == [kept]
        with pytest.raises(NotFound):
            await client.get_run(gone)


async def test_the_runs_of_a_workflow_or_all_finished_ones_are_deleted_and_counted(client: Client) -> None:
    async with client:
        await finished(client, ECHO, 2)
        await finished(client, ECHO | {"id": "other"}, 1)
        assert await client.delete_runs(workflow_id="echo") == 2
        assert await client.delete_runs() == 1
        assert (await client.list_runs()).runs == []


async def test_a_run_that_has_not_finished_is_a_conflict(client: Client) -> None:
    async with client:
        run_id = await client.submit(GATED)
        async for event in client.subscribe(run_id):
            if event.type == "approval_requested":
                break
        with pytest.raises(Conflict, match="cancel it first"):
            await client.delete_runs(run_id=run_id)
        await client.cancel(run_id)
