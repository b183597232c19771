"""The task registry: built-ins and third-party tasks come from the `clarion_jupyter.tasks`
entry points; a task is a class with a name, a TaskConfig `Config` and `run`."""

from __future__ import annotations

import logging
import textwrap
from pathlib import Path
from typing import Any

import pytest

from clarion_jupyter.task.base import Task, TaskConfig, TaskContext
from clarion_jupyter.task.builtin.echo import EchoTask
from clarion_jupyter.task.builtin.files import FileReadTask, FileWriteTask
from clarion_jupyter.task.builtin.llm_call import LLMCallTask
from clarion_jupyter.task.builtin.shell import ShellTask
from clarion_jupyter.task.registry import ENTRY_POINT_GROUP, TaskRegistry
from clarion_jupyter.workflow.compiler import compile_workflow
from clarion_jupyter.workflow.models import parse_workflow

BUILTINS: dict[str, type[Task]] = {
    "echo": EchoTask,
    "file_read": FileReadTask,
    "file_write": FileWriteTask,
    "shell": ShellTask,
    "llm_call": LLMCallTask,
}


class GreetConfig(TaskConfig):
    who: str


class GreetTask(Task):
    name = "greet"
    Config = GreetConfig
    description = "Say hello."

    async def run(self, config: GreetConfig, ctx: TaskContext) -> dict[str, Any]:
        return {"text": f"hello {config.who}"}


# --------------------------------------------------------------------------- entry points


def test_entry_points_load_the_builtin_tasks() -> None:
    registry = TaskRegistry.from_entry_points()
    for name, cls in BUILTINS.items():
        assert registry.get(name) is cls, name
    assert set(BUILTINS) <= set(registry.names())


def test_llm_call_is_registered_and_needs_an_agent() -> None:
    task = TaskRegistry.from_entry_points().get("llm_call")
    assert task is not None and task.needs_agent
    assert "agent" in task.Config.model_fields and "prompt" in task.Config.model_fields


def test_every_builtin_is_named_as_its_entry_point() -> None:
    for name, cls in BUILTINS.items():
        assert cls.name == name
        assert issubclass(cls.Config, TaskConfig)


def _install_plugin(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A real (if tiny) third-party distribution on sys.path, with entry points."""
    (root / "greet_plugin.py").write_text(
        textwrap.dedent(
            """
            from clarion_jupyter.task.base import Task, TaskConfig

            class ShoutConfig(TaskConfig):
                text: str

            class ShoutTask(Task):
                name = "shout"
                Config = ShoutConfig

                async def run(self, config, ctx):
                    return {"text": config.text.upper()}

            class NotATask:
                pass
            """
        )
    )
    dist = root / "greet_plugin-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: greet-plugin\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(
        f"[{ENTRY_POINT_GROUP}]\n"
        "shout = greet_plugin:ShoutTask\n"
        "missing = no_such_module_anywhere:Task\n"
        "wrong = greet_plugin:NotATask\n"
    )
    monkeypatch.syspath_prepend(str(root))


def test_a_third_party_task_registers_through_the_entry_point_group(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _install_plugin(tmp_path, monkeypatch)
    registry = TaskRegistry.from_entry_points()
    shout = registry.get("shout")
    assert shout is not None and shout.__name__ == "ShoutTask"
    # and workflows can use it, with its config checked like a built-in's
    wf = parse_workflow({"name": "p", "steps": [{"id": "s", "task": "shout", "with": {"text": "hi"}}]})
    assert compile_workflow(wf, registry).nodes["s"].task is shout


def test_a_broken_plugin_is_logged_and_left_out(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    _install_plugin(tmp_path, monkeypatch)
    with caplog.at_level(logging.WARNING, logger="clarion_jupyter.task.registry"):
        registry = TaskRegistry.from_entry_points()
    assert registry.get("missing") is None and registry.get("wrong") is None
    assert set(BUILTINS) | {"shout"} <= set(registry.names())
    logged = caplog.text
    assert "'missing'" in logged and "no_such_module_anywhere" in logged
    assert "'wrong'" in logged


# --------------------------------------------------------------------------- register


def test_register_adds_a_task_under_its_name() -> None:
    registry = TaskRegistry()
    registry.register(GreetTask)
    assert registry.get("greet") is GreetTask
    assert registry.names() == ["greet"]


def test_register_can_give_another_name() -> None:
    registry = TaskRegistry()
    registry.register(GreetTask, name="hello")
    assert registry.get("hello") is GreetTask and registry.get("greet") is None


def test_register_rejects_a_class_without_a_task_config() -> None:
    class PlainConfig:  # not a TaskConfig (not even pydantic)
        who: str

    class NoConfig(Task):
        name = "bad"
        Config = PlainConfig  # type: ignore[assignment]

        async def run(self, config: Any, ctx: TaskContext) -> dict[str, Any]:
            return {}

    registry = TaskRegistry()
    with pytest.raises(TypeError, match="TaskConfig"):
        registry.register(NoConfig)
    assert registry.get("bad") is None


def test_register_rejects_a_class_whose_config_is_missing() -> None:
    class Bare:
        name = "bare"

        async def run(self, config: Any, ctx: Any) -> dict[str, Any]:
            return {}

    with pytest.raises(TypeError):
        TaskRegistry().register(Bare)  # type: ignore[arg-type]


def test_register_rejects_instances_and_nameless_tasks() -> None:
    with pytest.raises(TypeError):
        TaskRegistry().register(GreetTask())  # type: ignore[arg-type]

    class Nameless(Task):
        Config = GreetConfig

    with pytest.raises(TypeError, match="name"):
        TaskRegistry().register(Nameless)


def test_register_rejects_a_class_without_run() -> None:
    class NoRun:
        name = "norun"
        Config = GreetConfig

    with pytest.raises(TypeError, match="run"):
        TaskRegistry().register(NoRun)  # type: ignore[arg-type]


def test_an_unknown_name_is_none() -> None:
    assert TaskRegistry.from_entry_points().get("does_not_exist") is None


# --------------------------------------------------------------------------- describe


def test_describe_lists_tasks_by_name_with_json_schemas() -> None:
    described = TaskRegistry.from_entry_points().describe()
    names = [d["name"] for d in described]
    assert names == sorted(names)
    by_name = {d["name"]: d for d in described}
    for name in BUILTINS:
        entry = by_name[name]
        assert set(entry) == {"name", "description", "config_schema"}
        assert isinstance(entry["description"], str) and entry["description"]
        schema = entry["config_schema"]
        assert schema["type"] == "object" and "properties" in schema
        assert schema.get("additionalProperties") is False  # unknown `with` keys are errors


def test_describe_shows_required_fields_and_types() -> None:
    by_name = {d["name"]: d["config_schema"] for d in TaskRegistry.from_entry_points().describe()}
    assert by_name["file_read"]["required"] == ["path"]
    assert by_name["file_read"]["properties"]["path"]["type"] == "string"
    assert "value" in by_name["echo"]["properties"] and "required" not in by_name["echo"]
    assert "command" in by_name["shell"]["required"]


def test_describe_is_valid_json_schema() -> None:
    import json

    import jsonschema

    for entry in TaskRegistry.from_entry_points().describe():
        json.dumps(entry)  # JSON-able, as GET /api/v3/tasks serves it
        jsonschema.Draft202012Validator.check_schema(entry["config_schema"])


def test_describe_of_a_custom_task() -> None:
    registry = TaskRegistry()
    registry.register(GreetTask)
    (entry,) = registry.describe()
    assert entry["name"] == "greet" and entry["description"] == "Say hello."
    assert entry["config_schema"]["required"] == ["who"]
    assert entry["config_schema"]["properties"]["who"]["type"] == "string"
