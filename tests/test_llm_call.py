"""The llm_call task through real litellm: mock_response offline, and a real local HTTP server."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from clarion_jupyter.agent.models import Agent, CodebaseContext, UserVariable
from clarion_jupyter.core.workspace import Workspace
from clarion_jupyter.llm.provider import NO_KEY
from clarion_jupyter.task.base import TaskContext, TaskFailed, TaskSettings
from clarion_jupyter.task.builtin.llm_call import (
    DEFAULT_PROVIDER,
    LLMCallConfig,
    LLMCallTask,
)
from clarion_jupyter.testing import OpenAIStubServer

KEY_ENV = "CLARION_TEST_LLM_KEY"
SECRET = "sk-test-SECRET-value-4242"


class Events:
    """Collects what the task emits, as ``ctx.emit`` would hand it to the engine."""

    def __init__(self) -> None:
        self.items: list[tuple[str, dict[str, Any]]] = []

    def __call__(self, kind: str, data: dict[str, Any]) -> None:
        self.items.append((kind, data))

    def tokens(self) -> list[str]:
        return [data["text"] for kind, data in self.items if kind == "llm_token"]


@pytest.fixture(autouse=True)
def provider_closed(jp_asyncio_loop: asyncio.AbstractEventLoop) -> Iterator[None]:
    """Each test has its own event loop: let litellm's call logging settle before it closes."""
    yield
    jp_asyncio_loop.run_until_complete(DEFAULT_PROVIDER.aclose())


@pytest.fixture
def stub() -> Iterator[OpenAIStubServer]:
    with OpenAIStubServer(reply="The stub says hello.") as server:
        yield server


@pytest.fixture
def key(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv(KEY_ENV, SECRET)
    return KEY_ENV


def mock_agent(reply: str, model: str = "openai/gpt-4o-mini", **fields: Any) -> Agent:
    return Agent(name="Mock", model=model, parameters={"mock_response": reply}, **fields)


def stub_agent(server: OpenAIStubServer, key_env: str, **fields: Any) -> Agent:
    return Agent(name="Stub", model="openai/fake", api_base=server.url, api_key_env=key_env, **fields)


async def call(
    agent: Agent, tmp_path: Path, events: Events | None = None, settings: TaskSettings | None = None, **config: Any
) -> dict[str, Any]:
    ctx = TaskContext(
        run_id="r",
        step_id="s",
        key="s",
        attempt=1,
        workspace=Workspace(tmp_path),
        settings=settings or TaskSettings(),
        resources={"agent": agent.model_dump()},
        emit=events or Events(),
    )
    return await LLMCallTask().run(LLMCallConfig(agent=agent.id, **config), ctx)


async def test_plain_call_returns_text_usage_and_model(tmp_path: Path) -> None:
    out = await call(mock_agent("Paris."), tmp_path, prompt="Capital of France?")
    assert out["text"] == "Paris."
    assert out["model"] == "openai/gpt-4o-mini"
    assert out["usage"]["prompt_tokens"] > 0 and out["usage"]["completion_tokens"] > 0
    assert "json" not in out


async def test_cost_is_a_number_for_a_priced_model(tmp_path: Path) -> None:
    out = await call(mock_agent("ok"), tmp_path, prompt="hi")
    assert isinstance(out["cost_usd"], float) and out["cost_usd"] > 0


async def test_cost_is_none_for_a_model_litellm_cannot_price(tmp_path: Path) -> None:
    out = await call(mock_agent("ok", model="openai/fake"), tmp_path, prompt="hi")
    assert out["cost_usd"] is None


async def test_call_through_a_real_server_returns_its_reply_and_usage(
    stub: OpenAIStubServer, key: str, tmp_path: Path
) -> None:
    out = await call(stub_agent(stub, key), tmp_path, prompt="hi")
    assert out["text"] == "The stub says hello."
    assert out["usage"]["completion_tokens"] == 5
    assert out["cost_usd"] is None
    assert stub.request_count == 1


async def test_streaming_emits_llm_token_events_that_join_to_the_reply(key: str, tmp_path: Path) -> None:
    reply = "Streaming works: " + " ".join(f"word{i}" for i in range(60))
    events = Events()
    with OpenAIStubServer(reply=reply, chunk_chars=4) as server:
        out = await call(stub_agent(server, key), tmp_path, events, prompt="hi", stream=True)
        assert server.last_request is not None and server.last_request["stream"] is True
    assert out["text"] == reply
    assert "".join(events.tokens()) == reply
    assert 1 < len(events.tokens()) < len(reply) / 4  # coalesced, not one event per chunk


async def test_streamed_usage_comes_from_the_final_chunk(stub: OpenAIStubServer, key: str, tmp_path: Path) -> None:
    out = await call(stub_agent(stub, key), tmp_path, prompt="hi", stream=True)
    assert out["usage"]["completion_tokens"] == 5
    assert stub.last_request is not None and stub.last_request["stream_options"] == {"include_usage": True}


async def test_streaming_with_mock_response_prices_a_known_model(tmp_path: Path) -> None:
    events = Events()
    out = await call(mock_agent("a streamed mock reply"), tmp_path, events, prompt="hi", stream=True)
    assert "".join(events.tokens()) == out["text"] == "a streamed mock reply"
    assert isinstance(out["cost_usd"], float) and out["cost_usd"] > 0


SCHEMA = {"type": "object", "properties": {"label": {"enum": ["bug", "feature"]}}, "required": ["label"]}


async def test_response_format_is_sent_and_the_reply_is_parsed_into_json(key: str, tmp_path: Path) -> None:
    with OpenAIStubServer(reply='{"label": "bug"}') as server:
        out = await call(stub_agent(server, key), tmp_path, prompt="classify", response_format=SCHEMA)
        assert server.last_request is not None
        assert server.last_request["response_format"] == {
            "type": "json_schema",
            "json_schema": {"name": "output", "schema": SCHEMA},
        }
    assert out["json"] == {"label": "bug"}
    assert out["text"] == '{"label": "bug"}'


async def test_json_reply_in_a_fenced_block_is_accepted(tmp_path: Path) -> None:
    out = await call(mock_agent('```json\n{"label": "feature"}\n```'), tmp_path, prompt="x", response_format=SCHEMA)
    assert out["json"] == {"label": "feature"}


async def test_agent_output_schema_applies_when_the_step_gives_none(tmp_path: Path) -> None:
    agent = mock_agent('{"label": "bug"}', output_schema=SCHEMA)
    assert (await call(agent, tmp_path, prompt="x"))["json"] == {"label": "bug"}


async def test_step_response_format_overrides_the_agent_schema(tmp_path: Path) -> None:
    agent = mock_agent('{"n": 3}', output_schema=SCHEMA)
    out = await call(agent, tmp_path, prompt="x", response_format={"type": "object", "required": ["n"]})
    assert out["json"] == {"n": 3}


async def test_reply_that_is_not_json_fails_permanently(tmp_path: Path) -> None:
    with pytest.raises(TaskFailed) as info:
        await call(mock_agent("I think it is a bug."), tmp_path, prompt="x", response_format=SCHEMA)
    assert info.value.message.startswith("reply is not valid JSON")
    assert info.value.retryable is False


async def test_reply_that_does_not_match_the_schema_fails_with_the_validation_error(tmp_path: Path) -> None:
    with pytest.raises(TaskFailed) as info:
        await call(mock_agent('{"label": "question"}'), tmp_path, prompt="x", response_format=SCHEMA)
    assert (
        info.value.message
        == "reply does not match the output schema at label: 'question' is not one of ['bug', 'feature']"
    )
    assert info.value.retryable is False


async def test_invalid_schema_fails_before_any_call(stub: OpenAIStubServer, key: str, tmp_path: Path) -> None:
    with pytest.raises(TaskFailed, match="not a valid JSON schema"):
        await call(stub_agent(stub, key), tmp_path, prompt="x", response_format={"type": "no-such-type"})
    assert stub.request_count == 0


async def test_system_prompt_codebase_context_messages_and_prompt_reach_the_server(
    stub: OpenAIStubServer, key: str, tmp_path: Path
) -> None:
    (tmp_path / "app.py").write_text("def main():\n    return 42\n")
    (tmp_path / "notes.txt").write_text("not included")
    agent = stub_agent(stub, key, system_prompt="You review code.", context=CodebaseContext(include_globs=["*.py"]))
    history = [{"role": "user", "content": "earlier"}, {"role": "assistant", "content": "noted"}]
    await call(agent, tmp_path, prompt="Review app.py", messages=history)
    assert stub.last_request is not None
    assert stub.last_request["messages"] == [
        {
            "role": "system",
            "content": "You review code.\n\n## Codebase Context\n\n```app.py\ndef main():\n    return 42\n```",
        },
        *history,
        {"role": "user", "content": "Review app.py"},
    ]


async def test_user_variables_render_into_the_system_prompt_with_defaults(
    stub: OpenAIStubServer, key: str, tmp_path: Path
) -> None:
    agent = stub_agent(
        stub,
        key,
        system_prompt="Review {{ language }} code for {{ focus }}.",
        user_variables=[UserVariable(name="language", required=True), UserVariable(name="focus", default="bugs")],
    )
    await call(agent, tmp_path, prompt="go", variables={"language": "Rust"})
    assert stub.last_request is not None
    assert stub.last_request["messages"][0] == {"role": "system", "content": "Review Rust code for bugs."}


async def test_missing_required_user_variable_fails_naming_it(tmp_path: Path) -> None:
    agent = mock_agent(
        "x",
        system_prompt="Review {{ language }} code.",
        user_variables=[UserVariable(name="language", description="the language", required=True)],
    )
    with pytest.raises(TaskFailed, match="user variable 'language'") as info:
        await call(agent, tmp_path, prompt="go")
    assert info.value.retryable is False


async def test_undeclared_name_in_the_system_prompt_fails(tmp_path: Path) -> None:
    with pytest.raises(TaskFailed, match="'typo' is undefined"):
        await call(mock_agent("x", system_prompt="Hello {{ typo }}"), tmp_path, prompt="go")


async def test_api_key_from_the_named_env_variable_authenticates(key: str, tmp_path: Path) -> None:
    with OpenAIStubServer(reply="authorized", api_key=SECRET) as server:
        out = await call(stub_agent(server, key), tmp_path, prompt="hi")
    assert out["text"] == "authorized"


async def test_api_key_never_appears_in_the_error_when_the_server_rejects_it(key: str, tmp_path: Path) -> None:
    with OpenAIStubServer(api_key="sk-the-right-one") as server, pytest.raises(TaskFailed) as info:
        await call(stub_agent(server, key), tmp_path, prompt="hi")
    error = info.value
    assert error.retryable is False
    assert error.message.startswith("AuthenticationError: ")
    assert SECRET not in json.dumps(error.details)
    chained: BaseException | None = error
    while chained is not None:  # the whole chain, as a logged traceback would show it
        assert SECRET not in f"{chained!s} {chained!r} {chained.args!r}"
        chained = chained.__cause__ or chained.__context__


async def test_api_key_never_appears_in_a_streamed_error(key: str, tmp_path: Path) -> None:
    with OpenAIStubServer(api_key="sk-the-right-one") as server, pytest.raises(TaskFailed) as info:
        await call(stub_agent(server, key), tmp_path, prompt="hi", stream=True)
    assert SECRET not in str(info.value)


async def test_missing_api_key_variable_fails_naming_the_variable(
    stub: OpenAIStubServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("CLARION_UNSET_KEY", raising=False)
    with pytest.raises(TaskFailed, match="CLARION_UNSET_KEY") as info:
        await call(stub_agent(stub, "CLARION_UNSET_KEY"), tmp_path, prompt="hi")
    assert info.value.retryable is False
    assert stub.request_count == 0


async def test_server_error_is_a_retryable_failure_after_a_single_request(key: str, tmp_path: Path) -> None:
    with OpenAIStubServer(fail_first=1, fail_status=500) as server:
        with pytest.raises(TaskFailed) as info:
            await call(stub_agent(server, key), tmp_path, prompt="hi")
        assert server.request_count == 1  # retries are the engine's (with backoff), not the SDK's
        assert (await call(stub_agent(server, key), tmp_path, prompt="hi"))["text"] == "Hello from the stub."
    assert info.value.retryable is True
    assert info.value.details == {"status_code": 500}


async def test_rate_limit_is_a_retryable_failure(key: str, tmp_path: Path) -> None:
    with OpenAIStubServer(fail_first=1, fail_status=429) as server, pytest.raises(TaskFailed) as info:
        await call(stub_agent(server, key), tmp_path, prompt="hi")
    assert info.value.retryable is True


async def test_unreachable_server_is_a_retryable_failure(key: str, tmp_path: Path) -> None:
    server = OpenAIStubServer()
    agent = stub_agent(server, key)  # its port is bound but never served, then closed
    server.stop()
    with pytest.raises(TaskFailed) as info:
        await call(agent, tmp_path, prompt="hi")
    assert info.value.retryable is True


async def test_step_model_and_parameters_override_the_agent(stub: OpenAIStubServer, key: str, tmp_path: Path) -> None:
    agent = stub_agent(stub, key, parameters={"temperature": 0.9, "top_p": 0.5})
    await call(agent, tmp_path, prompt="hi", model="openai/other", parameters={"temperature": 0.1})
    assert stub.last_request is not None
    assert (stub.last_request["model"], stub.last_request["temperature"], stub.last_request["top_p"]) == (
        "other",
        0.1,
        0.5,
    )


def test_config_needs_a_prompt_or_messages() -> None:
    with pytest.raises(ValidationError, match="give a prompt or messages"):
        LLMCallConfig(agent="a")


def test_config_refuses_an_api_key_in_parameters() -> None:
    with pytest.raises(ValidationError, match="API keys are never passed"):
        LLMCallConfig(agent="a", prompt="x", parameters={"api_key": "sk-1"})


async def test_a_symlink_loop_in_the_context_is_skipped_and_named_in_the_steps_context_summary(
    tmp_path: Path,
) -> None:
    (tmp_path / "app.py").write_text("print('hi')\n")
    (tmp_path / "loop.py").symlink_to(tmp_path / "loop.py")
    agent = mock_agent("ok", context=CodebaseContext(include_globs=["*.py"]))

    out = await call(agent, tmp_path, prompt="Review")

    assert out["text"] == "ok"
    assert out["context"]["files"] == ["app.py"]
    assert [s["path"] for s in out["context"]["skipped"]] == ["loop.py"]


async def test_a_schema_written_for_strict_mode_is_requested_as_strict(key: str, tmp_path: Path) -> None:
    strict = {
        "type": "object",
        "additionalProperties": False,
        "required": ["label", "tags"],
        "properties": {"label": {"type": "string"}, "tags": {"type": "array", "items": {"type": "string"}}},
    }
    with OpenAIStubServer(reply='{"label": "bug", "tags": []}') as server:
        await call(stub_agent(server, key), tmp_path, prompt="classify", response_format=strict)
        assert server.last_request["response_format"]["json_schema"] == {
            "name": "output",
            "schema": strict,
            "strict": True,
        }


# --- what reaches the model, and where the key goes -------------------------------------------


async def test_a_streamed_reply_is_stopped_once_it_passes_max_output_bytes(key: str, tmp_path: Path) -> None:
    events = Events()
    with OpenAIStubServer(reply="x" * 200_000, chunk_chars=100) as server, pytest.raises(TaskFailed) as info:
        await call(
            stub_agent(server, key), tmp_path, events, TaskSettings(max_output_bytes=5_000), prompt="hi", stream=True
        )
    assert info.value.message == "the reply passed max_output_bytes (5000 bytes) while streaming: the call was stopped"
    assert info.value.retryable is False
    assert len("".join(events.tokens())) <= 5_000


async def test_a_whole_reply_larger_than_max_output_bytes_is_refused(key: str, tmp_path: Path) -> None:
    with OpenAIStubServer(reply="y" * 20_000) as server, pytest.raises(TaskFailed) as info:
        await call(stub_agent(server, key), tmp_path, settings=TaskSettings(max_output_bytes=5_000), prompt="hi")
    assert info.value.message == "the reply passed max_output_bytes (5000 bytes) in one piece: it was refused"


async def test_an_agent_naming_no_key_sends_none_of_the_environments_keys(
    stub: OpenAIStubServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)  # litellm's own fallback for openai/ models
    agent = Agent(name="Local", model="openai/local", api_base=stub.url)

    out = await call(agent, tmp_path, prompt="hi")

    assert out["text"] == "The stub says hello."  # a local server that needs no key still answers
    assert SECRET not in json.dumps(stub.last_headers)
    assert stub.last_headers["authorization"] == f"Bearer {NO_KEY}"


async def test_a_provider_refusing_the_missing_key_is_told_to_set_api_key_env(tmp_path: Path) -> None:
    with OpenAIStubServer(api_key="sk-needed") as server, pytest.raises(TaskFailed) as info:
        await call(Agent(name="Keyless", model="openai/x", api_base=server.url), tmp_path, prompt="hi")
    assert info.value.message.startswith("AuthenticationError")
    assert "the agent names no api_key_env" in info.value.message


def test_a_step_may_not_send_the_agents_key_to_another_host() -> None:
    with pytest.raises(ValidationError, match=r"parameters\.api_base would send the agent's API key to another host"):
        LLMCallConfig(agent="a", prompt="x", parameters={"api_base": "https://elsewhere.example/v1"})
    with pytest.raises(ValidationError, match=r"parameters\.base_url"):
        LLMCallConfig(agent="a", prompt="x", parameters={"base_url": "https://elsewhere.example/v1"})


async def test_a_step_naming_its_own_key_may_call_another_host(
    stub: OpenAIStubServer, key: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("CLARION_OTHER_HOST_KEY", "sk-other-host-7777")
    agent = Agent(name="Remote", model="openai/x", api_base="http://127.0.0.1:9/v1", api_key_env=key)

    await call(agent, tmp_path, prompt="hi", parameters={"api_base": stub.url}, api_key_env="CLARION_OTHER_HOST_KEY")

    assert stub.last_headers["authorization"] == "Bearer sk-other-host-7777"


async def test_a_context_over_its_token_cap_fails_before_any_call_naming_the_largest_files(
    stub: OpenAIStubServer, key: str, tmp_path: Path
) -> None:
    (tmp_path / "big.py").write_text("value = 1\n" * 2_000)
    (tmp_path / "small.py").write_text("x = 1\n")
    agent = stub_agent(stub, key, context=CodebaseContext(include_globs=["*.py"], max_tokens=1_000))

    with pytest.raises(TaskFailed) as info:
        await call(agent, tmp_path, prompt="Review")

    message = info.value.message
    assert message.startswith("the codebase context is ") and "tokens in 2 files, over its cap of 1,000" in message
    assert message.index("big.py") < message.index("small.py")
    assert "include_globs" in message
    assert info.value.retryable is False and info.value.details["tokens"] > 1_000
    assert stub.request_count == 0


async def test_files_chosen_by_hand_count_against_the_context_cap(
    stub: OpenAIStubServer, key: str, tmp_path: Path
) -> None:
    (tmp_path / "chosen.md").write_text("word " * 3_000)
    agent = stub_agent(stub, key, context=CodebaseContext(include_globs=["*.py"], max_tokens=500))

    with pytest.raises(TaskFailed, match=r"in 1 files, over its cap of 500.*chosen\.md"):
        await call(agent, tmp_path, prompt="Review", files=["chosen.md"])
    assert stub.request_count == 0


async def test_the_default_context_cap_is_half_the_models_input_window(tmp_path: Path) -> None:
    (tmp_path / "huge.txt").write_text("token " * 70_000)  # gpt-4o-mini: 128k window, so a 64k cap
    agent = mock_agent("ok", context=CodebaseContext(max_bytes=None))

    with pytest.raises(TaskFailed, match="over its cap of 64,000"):
        await call(agent, tmp_path, prompt="Review")


async def test_a_hand_picked_credential_file_fails_the_step_and_is_not_sent(
    stub: OpenAIStubServer, key: str, tmp_path: Path
) -> None:
    (tmp_path / ".env").write_text("OPENAI_API_KEY=sk-live\n")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "notes.txt").symlink_to("../.env")
    for picked in (".env", "sub/notes.txt"):
        with pytest.raises(TaskFailed, match=r"holds credentials \(\.env\): it is never sent to a model"):
            await call(stub_agent(stub, key), tmp_path, prompt="Review", files=[picked])
    assert stub.request_count == 0


async def test_an_offered_schema_keeps_a_prose_reply_as_text(stub: OpenAIStubServer, key: str, tmp_path: Path) -> None:
    out = await call(stub_agent(stub, key), tmp_path, prompt="hi", default_response_format=SCHEMA)
    assert stub.last_request is not None and stub.last_request["response_format"]["json_schema"]["schema"] == SCHEMA
    assert out["text"] == "The stub says hello." and out["json"] is None


async def test_an_offered_schema_fails_a_json_reply_that_does_not_match_saying_where(tmp_path: Path) -> None:
    with pytest.raises(TaskFailed, match="reply does not match the output schema at label"):
        await call(mock_agent('{"label": "question"}'), tmp_path, prompt="x", default_response_format=SCHEMA)


async def test_a_step_model_of_another_provider_may_not_take_the_agents_key(
    stub: OpenAIStubServer, key: str, tmp_path: Path
) -> None:
    with pytest.raises(TaskFailed, match=r"goes to another provider than agent 'stub'.*CLARION_TEST_LLM_KEY"):
        await call(stub_agent(stub, key), tmp_path, prompt="hi", model="openrouter/some-model")
    assert stub.request_count == 0


async def test_a_file_of_clarions_own_folder_is_never_sent_even_when_chosen_by_hand(tmp_path: Path) -> None:
    (tmp_path / ".clarion" / "intents").mkdir(parents=True)
    (tmp_path / ".clarion" / "intents" / "lock").write_text("")
    with pytest.raises(TaskFailed, match="inside Clarion's own folder, which is never sent to a model"):
        await call(mock_agent("ok"), tmp_path, prompt="Review", files=[".clarion/intents/lock"])
