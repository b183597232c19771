"""The LLM provider runs litellm in a child process: the caller's process never imports it,
and a child that dies or a call that is cancelled costs only that call."""

from __future__ import annotations

import asyncio
import io
import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator

import pytest

from clarion_jupyter.llm.host import ProcessProvider, _Replies
from clarion_jupyter.llm.provider import LLMRequest, ProviderError
from clarion_jupyter.testing import OpenAIStubServer

KEY_ENV = "CLARION_HOST_TEST_API_KEY"


def ask(stub: OpenAIStubServer, **fields: object) -> LLMRequest:
    return LLMRequest(
        model="openai/fake",
        messages=[{"role": "user", "content": "hi"}],
        api_base=stub.url,
        api_key_env=KEY_ENV,
        **fields,  # type: ignore[arg-type]
    )


async def until(condition: Callable[[], bool], timeout: float = 60.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.005)


@pytest.fixture
def provider() -> Iterator[ProcessProvider]:
    hosted = ProcessProvider()
    yield hosted
    hosted.close()


@pytest.fixture
def stub(monkeypatch: pytest.MonkeyPatch) -> Iterator[OpenAIStubServer]:
    monkeypatch.setenv(KEY_ENV, "sk-first-key-1111")
    with OpenAIStubServer(reply="Hello from the stub, in several pieces.", chunk_chars=5) as server:
        yield server


def test_the_calling_process_never_imports_litellm(tmp_path) -> None:
    script = (
        "import asyncio, sys\n"
        "from clarion_jupyter.llm.host import ProcessProvider\n"
        "from clarion_jupyter.llm.provider import LLMRequest\n"
        "request = LLMRequest(model='openai/gpt-4o', messages=[{'role': 'user', 'content': 'hi'}],\n"
        "                     parameters={'mock_response': 'pong'})\n"
        "print(asyncio.run(ProcessProvider().complete(request)).text, 'litellm' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert done.stdout.split() == ["pong", "False"], done.stderr


async def test_streamed_deltas_arrive_in_order_before_the_result(provider, stub) -> None:
    deltas: list[str] = []
    result = await provider.complete(ask(stub, stream=True), on_token=deltas.append)
    assert deltas, "the deltas reach the caller before the call returns"
    assert "".join(deltas) == result.text == "Hello from the stub, in several pieces."
    assert result.usage["completion_tokens"] > 0


async def test_the_key_is_read_from_the_callers_environment_at_each_call(provider, stub, monkeypatch) -> None:
    stub.api_key = "sk-first-key-1111"
    await provider.complete(ask(stub))
    monkeypatch.setenv(KEY_ENV, "sk-second-key-2222")
    stub.api_key = "sk-second-key-2222"
    assert (await provider.complete(ask(stub))).text.startswith("Hello")


async def test_a_missing_key_fails_in_the_caller_naming_the_variable(provider, stub, monkeypatch) -> None:
    monkeypatch.delenv(KEY_ENV)
    with pytest.raises(ProviderError, match=KEY_ENV) as failure:
        await provider.complete(ask(stub))
    assert failure.value.retryable is False
    assert provider.pids == [], "a call that cannot be made starts no child"


async def test_provider_errors_keep_their_status_and_retryability(provider, stub) -> None:
    stub.fail_first, stub.fail_status = 1, 429
    with pytest.raises(ProviderError) as failure:
        await provider.complete(ask(stub))
    assert (failure.value.status_code, failure.value.retryable) == (429, True)


async def test_a_child_that_dies_fails_its_calls_as_retryable_and_the_next_call_starts_another(provider, stub) -> None:
    await provider.warm()
    (first,) = provider.pids
    stub.delay_s = 30
    call = asyncio.ensure_future(provider.complete(ask(stub)))
    while stub.request_count == 0:
        await asyncio.sleep(0.02)
    os.kill(first, signal.SIGKILL)
    with pytest.raises(ProviderError, match="ended") as failure:
        await asyncio.wait_for(call, 10)
    assert failure.value.retryable is True
    stub.delay_s = 0
    assert (await provider.complete(ask(stub))).text.startswith("Hello")
    assert provider.pids and first not in provider.pids


async def test_a_cancelled_call_leaves_the_child_serving_others(provider, stub) -> None:
    stub.delay_s = 30
    slow = asyncio.ensure_future(provider.complete(ask(stub)))
    while stub.request_count == 0:
        await asyncio.sleep(0.02)
    slow.cancel()
    with pytest.raises(asyncio.CancelledError):
        await slow
    stub.delay_s = 0
    assert (await asyncio.wait_for(provider.complete(ask(stub)), 10)).text.startswith("Hello")


def test_one_child_serves_every_event_loop_of_the_process(provider, stub) -> None:
    async def call() -> list[int]:
        await provider.complete(ask(stub))
        return provider.pids

    first = asyncio.run(call())
    assert asyncio.run(call()) == first and len(first) == 1


async def test_prompt_tokens_are_counted_by_the_child(provider) -> None:
    messages = [{"role": "user", "content": "one two three four five six seven"}]
    assert await provider.count_tokens(LLMRequest(model="gpt-4o", messages=messages)) > 5


async def test_another_child_starts_only_when_every_child_is_busy(stub) -> None:
    provider = ProcessProvider(max_processes=2)
    try:
        await provider.complete(ask(stub))
        assert len(provider.pids) == 1, "light use needs one child"
        stub.delay_s = 1.0
        replies = await asyncio.wait_for(asyncio.gather(*(provider.complete(ask(stub)) for _ in range(10))), 60)
        assert all(reply.text.startswith("Hello") for reply in replies)
        assert len(provider.pids) == 2
    finally:
        provider.close()


async def test_calls_go_to_a_ready_child_while_another_imports_litellm(stub) -> None:
    """A child just started spends seconds importing litellm: a call sent to it would wait for
    that while the ready child has room for it."""
    provider = ProcessProvider(max_processes=2)
    try:
        await provider.complete(ask(stub))
        stub.delay_s = 0.5
        calls = [asyncio.ensure_future(provider.complete(ask(stub))) for _ in range(12)]
        await until(lambda: len(provider.pids) == 2 and sum(len(c.calls) for c in provider._children) == 12)
        first, second = provider._children
        assert first.ready and not second.ready, "the second child was to be importing litellm still"
        assert len(first.calls) == 12 and not second.calls
        replies = await asyncio.wait_for(asyncio.gather(*calls), 60)
        assert all(reply.text.startswith("Hello") for reply in replies)
        await until(lambda: second.ready)
        calls = [asyncio.ensure_future(provider.complete(ask(stub))) for _ in range(12)]
        await until(lambda: len(first.calls) + len(second.calls) == 12)
        assert len(first.calls) == len(second.calls) == 6, "ready children share the calls"
        await asyncio.wait_for(asyncio.gather(*calls), 60)
    finally:
        provider.close()


async def test_file_tokens_and_the_models_window_come_from_the_child(provider) -> None:
    counts = await provider.count_text_tokens("gpt-4o", ["hello world " * 50, "", "x"])
    assert counts[0] > 50 and counts[1] == 0 and counts[2] == 1
    assert await provider.max_input_tokens("openai/gpt-4o-mini") == 128_000
    assert await provider.max_input_tokens("openai/no-such-model") is None


async def test_a_calls_deltas_of_one_loop_turn_leave_the_child_as_one_message_in_one_write() -> None:
    pipe = io.BytesIO()
    replies = _Replies(pipe)
    for message in (
        {"id": 1, "token": "Hel"},
        {"id": 1, "token": "lo"},
        {"id": 2, "token": "x"},
        {"id": 1, "token": "!"},
    ):
        replies.send(message)
    replies.send({"id": 1, "result": {"text": "Hello!"}})
    assert pipe.getvalue() == b"", "nothing is written before the loop's turn ends"
    await asyncio.sleep(0)
    assert [json.loads(line) for line in pipe.getvalue().splitlines()] == [
        {"id": 1, "token": "Hello"},
        {"id": 2, "token": "x"},
        {"id": 1, "token": "!"},
        {"id": 1, "result": {"text": "Hello!"}},
    ]


async def test_deltas_of_later_loop_turns_are_not_held_back() -> None:
    pipe = io.BytesIO()
    replies = _Replies(pipe)
    replies.send({"id": 1, "token": "Hel"})
    await asyncio.sleep(0)
    replies.send({"id": 1, "token": "lo"})
    await asyncio.sleep(0)
    assert [json.loads(line) for line in pipe.getvalue().splitlines()] == [
        {"id": 1, "token": "Hel"},
        {"id": 1, "token": "lo"},
    ]
