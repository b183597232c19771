"""The LLM cache with a broker (a real Redis and NATS) and a ``clarion worker`` process that
has no database: the engine looks each call up before it sends the job and stores the reply
that comes back, so the worker answers a hit from what its job carries. The LLM is the local
OpenAI-compatible server, which counts its requests."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from broker_support import RUN_TIMEOUT_S, broker, engine_on, queue_secret, step

from clarion_jupyter.testing import OpenAIStubServer
from clarion_jupyter.testing.brokers import BrokerProcess, WorkerProcess

__all__ = ["broker", "queue_secret"]  # fixtures, used by name

pytestmark = pytest.mark.timeout(120)

REPLY = "A remote answer, streamed: " + " ".join(f"w{i}" for i in range(40))
ASK = {
    "name": "Ask",
    "steps": [{"id": "ask", "task": "llm_call", "with": {"agent": "asker", "prompt": "Why?", "stream": True}}],
}


async def test_a_worker_without_the_database_answers_a_hit_without_calling_the_provider(
    broker: BrokerProcess, tmp_path: Path
) -> None:
    elsewhere = tmp_path / "worker-workspace"
    elsewhere.mkdir()
    with OpenAIStubServer(reply=REPLY, chunk_chars=6) as stub:
        async with engine_on(broker, tmp_path) as engine:
            await engine.create_agent({"id": "asker", "name": "Asker", "model": "openai/fake", "api_base": stub.url})
            async with WorkerProcess(broker.url, tmp_path, workspace=elsewhere) as worker:
                await worker.wait_ready()
                runs = []
                for _ in range(2):
                    run_id = await engine.submit(ASK, cache=True)
                    runs.append(await asyncio.wait_for(engine.wait(run_id), RUN_TIMEOUT_S))
                replayed = await engine.events(runs[1].run_id)
            stats = await engine.cache_stats()
        assert stub.request_count == 1
    first, second = runs
    assert first.status == second.status == "succeeded", (first.error, second.error)
    assert step(first, "ask").output["cached"] is False
    assert step(second, "ask").output["cached"] is True
    assert step(second, "ask").output["text"] == REPLY
    assert "".join(e.data["text"] for e in replayed if e.type == "llm_token") == REPLY
    assert stats.entries == 1
