"""Import of Clarion v2 agents: both document formats, provider mapping, secrets, leftovers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from clarion_jupyter.agent.importer import (
    ImportProblem,
    import_agents,
    import_text,
    litellm_model,
    parse_agent_documents,
)
from clarion_jupyter.agent.models import Agent
from clarion_jupyter.core.errors import ValidationFailed

FIXTURES = Path(__file__).parent / "fixtures" / "agents"


def imported(name: str) -> list[Agent]:
    report = import_agents(FIXTURES / name)
    assert report.errors == []
    return report.agents


def test_yaml_block_agent_maps_every_modelled_field() -> None:
    (agent,) = imported("code_reviewer.yaml")
    assert agent.id == "code-reviewer"
    assert agent.name == "Code Reviewer"
    assert agent.description == "Reviews a change and lists concrete problems."
    assert agent.model == "openai/gpt-4o"
    assert agent.system_prompt.startswith("You are a meticulous reviewer of {{ language }} code.")
    assert agent.parameters == {"temperature": 0.2, "max_tokens": 2000}


def test_yaml_children_become_context_schema_and_user_variables() -> None:
    (agent,) = imported("code_reviewer.yaml")
    assert agent.context is not None
    assert agent.context.include_globs == ["src/**/*.py", "*.toml"]
    assert agent.context.exclude_globs == ["**/tests/**"]
    assert agent.context.content_regex == "def |class "
    assert agent.context.max_files == 20
    assert agent.output_schema == {  # made strict, as v2 sent it
        "type": "object",
        "required": ["issues"],
        "properties": {"issues": {"type": "array", "items": {"type": "string"}}},
        "additionalProperties": False,
    }
    assert [(v.name, v.required, v.default) for v in agent.user_variables] == [
        ("language", True, None),
        ("focus", False, "correctness"),
    ]
    assert agent.user_variables[0].description == "Programming language of the change"


def test_several_yaml_documents_in_one_file_each_become_an_agent() -> None:
    architect, summarizer = imported("team.yaml")
    assert (architect.id, architect.model, architect.api_key_env) == (
        "architect",
        "anthropic/claude-3-5-sonnet-latest",
        "ANTHROPIC_API_KEY",
    )
    assert architect.system_prompt == "You are a senior software architect."  # `systemPrompt` spelling
    assert architect.parameters == {"temperature": 0.4}  # a parameter written directly in llm_config
    assert summarizer.model == "gemini/gemini-1.5-flash"
    assert summarizer.context is not None
    assert summarizer.context.include_globs == ["docs/**/*.md", "README.md"]


def test_json_profile_agent_maps_every_modelled_field() -> None:
    (agent,) = imported("json/doc_writer.json")
    assert (agent.id, agent.name, agent.description) == (
        "doc-writer",
        "Doc Writer",
        "Writes reference documentation for a module.",
    )
    assert agent.model == "openrouter/anthropic/claude-3.5-sonnet"
    assert agent.parameters == {"temperature": 0.3, "reasoning_effort": "medium"}
    assert agent.api_key_env == "OPENROUTER_API_KEY"
    assert agent.context is not None
    assert (agent.context.include_globs, agent.context.exclude_globs) == (["**/*.py"], ["**/test_*.py"])
    assert (agent.context.content_regex, agent.context.max_files, agent.context.max_bytes) == ("^def ", 10, 50000)
    assert agent.output_schema == {
        "type": "object",
        "properties": {"markdown": {"type": "string"}},
        "required": ["markdown"],
        "additionalProperties": False,
    }
    assert [(v.name, v.required, v.default) for v in agent.user_variables] == [
        ("module", True, None),
        ("style", False, "google"),
    ]


def test_json_list_of_profiles_imports_each() -> None:
    llama, gpt = imported("json/local_models.json")
    assert (llama.model, llama.api_base) == ("ollama/llama3", "http://localhost:11434")
    assert gpt.model == "openai/gpt-4o-mini"


@pytest.mark.parametrize(
    ("provider", "model", "expected"),
    [
        ("OpenAI", "gpt-4o", "openai/gpt-4o"),
        ("openai", "openai/gpt-4o", "openai/gpt-4o"),
        ("OpenRouter", "meta-llama/llama-3.1-70b-instruct", "openrouter/meta-llama/llama-3.1-70b-instruct"),
        ("openrouter", "openrouter/auto", "openrouter/auto"),
        ("Anthropic", "claude-3-5-sonnet-latest", "anthropic/claude-3-5-sonnet-latest"),
        ("Gemini", "gemini-1.5-pro", "gemini/gemini-1.5-pro"),
        ("google", "gemini-2.0-flash", "gemini/gemini-2.0-flash"),
        ("Google Gemini", "models/gemini-1.5-flash", "gemini/gemini-1.5-flash"),
        ("GOOGLE", "gemini/gemini-1.5-pro", "gemini/gemini-1.5-pro"),
        ("Ollama", "llama3", "ollama/llama3"),
        ("Mistral", "mistral-large-latest", "mistral/mistral-large-latest"),
        ("mistral", "mistral/mistral-small", "mistral/mistral-small"),
        (None, "openai/gpt-4o-mini", "openai/gpt-4o-mini"),
    ],
)
def test_provider_and_model_map_to_a_litellm_model_string(provider: str | None, model: str, expected: str) -> None:
    assert litellm_model(provider, model) == expected


def test_api_key_in_a_document_is_dropped_with_a_warning_that_does_not_show_it() -> None:
    report = import_agents(FIXTURES / "code_reviewer.yaml")
    (agent,) = report.agents
    dumped = json.dumps(report.as_dict())
    assert "sk-proj-DO-NOT-IMPORT" not in dumped
    assert "sk-proj-DO-NOT-IMPORT" not in agent.model_dump_json()
    assert [w.message.split(":")[0] for w in report.warnings] == ["dropped properties.llm_config.api_key"]


def test_api_key_inside_parameters_is_dropped_too() -> None:
    text = json.dumps(
        {
            "Profile": {"name": "P"},
            "llm_config": {"provider": "openai", "model": "gpt-4o", "parameters": {"api_key": "sk-x", "seed": 1}},
        }
    )
    report = import_text(text, "p.json")
    assert report.agents[0].parameters == {"seed": 1}
    assert "sk-x" not in json.dumps(report.as_dict())


def test_api_key_env_name_is_kept_in_any_common_spelling() -> None:
    text = """
type: Agent
metadata: {name: E}
properties:
  llm_config: {provider: openai, model: gpt-4o, apiKeyEnv: '${MY_KEY}'}
"""
    assert parse_agent_documents(text, "e.yaml")[0].api_key_env == "MY_KEY"


def test_fields_the_agent_does_not_model_are_kept_verbatim_in_extra() -> None:
    (reviewer,) = imported("code_reviewer.yaml")
    assert reviewer.extra["metadata"] == {
        "version": 7,
        "tags": ["review", "python"],
        "created_at": "2024-11-02T09:14:00Z",
    }
    assert reviewer.extra["properties"] == {"ui_color": "#3366ff", "llm_config": {"timeout_s": 120}}
    assert {"type": "Note", "properties": {"text": "Tuned for the payments team."}} in reviewer.extra["children"]
    assert {"type": "FilterSet", "metadata": {"name": "Python sources"}, "properties": {"follow_imports": True}} in (
        reviewer.extra["children"]
    )
    (writer,) = imported("json/doc_writer.json")
    assert writer.extra == {
        "schema_version": 3,
        "Profile": {"author": "platform-team", "icon": "book"},
        "user_variables": [{"name": "style", "choices": ["numpy", "google"]}],
    }


def test_folder_import_reports_the_broken_file_and_imports_the_others() -> None:
    report = import_agents(FIXTURES)
    assert sorted(a.id for a in report.agents) == [
        "architect",
        "code-reviewer",
        "doc-writer",
        "local-llama",
        "quick-gpt",
        "summarizer",
    ]
    assert [e.source for e in report.errors] == ["broken.yaml"]
    assert "not valid YAML" in report.errors[0].message


def test_a_bad_document_fails_alone_and_names_its_position() -> None:
    text = "type: Agent\nmetadata: {name: Good}\nproperties: {llm_config: {provider: openai, model: gpt-4o}}\n---\n"
    text += "type: Agent\nmetadata: {name: No Model}\n"
    report = import_text(text, "mixed.yaml")
    assert [a.id for a in report.agents] == ["good"]
    assert [(e.source, e.message) for e in report.errors] == [
        ("mixed.yaml (document 2)", "no model: set llm_config.model (and llm_config.provider)")
    ]


def test_a_document_that_is_not_an_agent_is_an_error() -> None:
    report = import_text("type: FilterSet\nproperties: {include: ['*.py']}\n", "f.yaml")
    assert report.agents == []
    assert "not an agent" in report.errors[0].message


def test_parse_agent_documents_raises_validation_failed_listing_the_problems() -> None:
    with pytest.raises(ValidationFailed) as info:
        parse_agent_documents('{"Profile": {"name": "x"}, "llm_config": {"model": "m"', "upload.json")
    assert info.value.problems[0].loc == "upload.json"
    assert info.value.problems[0].message.startswith("not valid JSON")


def test_missing_path_is_reported_not_raised(tmp_path: Path) -> None:
    report = import_agents(tmp_path / "nope")
    assert [e.message for e in report.errors] == ["no such file or folder"]


def test_a_provider_that_is_not_text_is_reported_not_raised() -> None:
    report = import_text('{"Profile": {"name": "x"}, "llm_config": {"provider": 3, "model": "m"}}', "bad.json")

    assert report.agents == []
    assert "provider must be text" in report.errors[0].message


@pytest.mark.parametrize("text", ["[" * 100_000 + "]" * 100_000, "a: " + "[" * 100_000])
def test_a_document_nested_absurdly_deep_is_an_error_not_a_crash(text: str) -> None:
    report = import_text(text, "deep.json")

    assert report.agents == []
    assert report.errors == [ImportProblem("deep.json", "the document is nested too deeply to be an agent")]


def test_an_llm_config_document_is_recognised_not_reported_as_a_broken_agent() -> None:
    text = "id: cfg_openai\nname: My OpenAI\nprovider: OpenAI\napiKey: sk-not-imported\n"
    report = import_text(text, "llm_configs/cfg_openai.yml")

    assert (report.agents, report.errors) == ([], [])
    assert [(c.id, c.provider) for c in report.provider_configs] == [("cfg_openai", "OpenAI")]
    assert "sk-not-imported" not in repr(report)
