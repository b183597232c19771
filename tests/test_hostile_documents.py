"""Hostile documents against a real server: alias bombs, self-references, YAML tags, deep
nesting and huge numbers are each a 4xx JSON error, answered in milliseconds, never a 500
and never a stall of the event loop."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from clarion_jupyter.testing.loop import LoopProbe
from clarion_jupyter.testing.server import JupyterServerProcess

YAML = {"Content-Type": "application/yaml"}
"""Passed as a copy: the fetch fixture adds its token to the headers it is given."""
ALIAS_BOMB = (
    "name: bomb\nsteps:\n  - id: s\n    task: echo\n    with:\n      value: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n"
    + "".join(f"      v{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]\n" for i in range(1, 9))
)


def yaml_workflow(value: str) -> str:
    return f"name: w\nsteps:\n  - id: s\n    task: echo\n    with:\n      value: {value}\n"


def json_workflow(value: str) -> str:
    return '{"name": "w", "steps": [{"id": "s", "task": "echo", "with": {"value": ' + value + "}}]}"


HOSTILE = [
    pytest.param("workflows", ALIAS_BOMB, YAML, id="yaml-alias-bomb"),
    pytest.param("workflows", yaml_workflow("&x [*x]"), YAML, id="yaml-self-alias"),
    pytest.param("workflows", yaml_workflow("!!set {a: null}"), YAML, id="yaml-set"),
    pytest.param("workflows", yaml_workflow("!!binary aGVsbG8="), YAML, id="yaml-binary"),
    pytest.param("workflows", yaml_workflow("9" * 5000), YAML, id="yaml-5000-digits"),
    pytest.param("workflows", yaml_workflow("[" * 100_000), YAML, id="yaml-100k-deep"),
    pytest.param("workflows", json_workflow("9" * 5000), None, id="json-5000-digits"),
    pytest.param("workflows", json_workflow("1e999"), None, id="json-overflowing-float"),
    pytest.param("workflows", json_workflow("NaN"), None, id="json-nan"),
    pytest.param("workflows", json_workflow("[" * 500 + "]" * 500), None, id="json-500-deep"),
    pytest.param("workflows", json_workflow("[" * 900 + "]" * 900), None, id="json-900-deep"),
    pytest.param(
        "agents", "name: a\nmodel: openai/x\nparameters: &p {nested: *p}\n", YAML, id="agent-recursive-parameters"
    ),
    pytest.param("agents/import", "[" * 100_000 + "]" * 100_000, None, id="import-100k-deep-json"),
    pytest.param("agents/import", ALIAS_BOMB, YAML, id="import-alias-bomb"),
    pytest.param("agents/import", "8\x99\x1eC", {"Content-Type": "text/plain"}, id="import-control-characters"),
    pytest.param("workflows", "name: \x99", YAML, id="yaml-control-characters"),
]


@pytest.mark.parametrize(("path", "body", "headers"), HOSTILE)
async def test_a_hostile_document_is_a_4xx_in_milliseconds_without_holding_the_loop(api, path, body, headers):
    async with LoopProbe() as probe:
        reply = await api("POST", *path.split("/"), body=body, headers=dict(headers) if headers else None)
    assert 400 <= reply.status < 500, reply.body
    assert reply.body["error"]["message"]
    assert probe.max_busy_s < 0.1, str(probe)


async def test_a_workflow_run_with_deeply_nested_inputs_is_a_400(api):
    reply = await api("POST", "workflows", "x", "run", body='{"inputs": {"a": ' + "[" * 600 + "]" * 600 + "}}")
    assert reply.status == 400
    assert "nested deeper" in reply.body["error"]["message"]


async def test_an_unquoted_yaml_date_stays_text(api):
    body = "name: dated\ninputs:\n  day: {type: string, default: 2026-01-01}\nsteps:\n  - {id: s, task: echo, with: {value: '{{ inputs.day }}'}}\n"
    reply = await api("POST", "workflows", body=body, headers=dict(YAML))
    assert reply.status == 201, reply.body
    assert reply.body["inputs"]["day"]["default"] == "2026-01-01"


async def test_a_key_written_twice_is_refused_at_its_second_line_not_dropped(api):
    """An editor's ``description: Notes`` above the ``description: null`` it came with: PyYAML
    alone keeps the last one, and the edit would be lost without a word."""
    agent = "name: Writer\ndescription: Notes\nmodel: openai/gpt-4o\ndescription: null\n"
    reply = await api("POST", "agents", body=agent, headers=dict(YAML))
    assert reply.status == 400, reply.body
    assert "the key 'description' is written twice" in reply.body["error"]["message"]
    assert reply.body["error"]["details"]["where"] == "line 4, column 1"
    assert (await api("GET", "agents", "writer")).status == 404

    workflow = "name: w\nsteps:\n  - id: s\n    task: echo\n    with: {value: 1}\n    task: shell\n"
    reply = await api("POST", "workflows", body=workflow, headers=dict(YAML))
    assert 400 <= reply.status < 500 and "'task' is written twice" in json.dumps(reply.body), reply.body

    merged = "name: m\ndefaults: &d {task: echo, with: {value: 1}}\nsteps:\n  - <<: *d\n    id: s\n    task: echo\n"
    reply = await api("POST", "workflows", body=merged.replace("defaults: &d", "x-defaults: &d"), headers=dict(YAML))
    assert "written twice" not in json.dumps(reply.body), reply.body  # a merge's key may be overridden


# --------------------------------------------------------------------------- generated


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[JupyterServerProcess]:
    import asyncio

    with JupyterServerProcess(Path(tmp_path_factory.mktemp("fuzz"))) as process:
        asyncio.run(process.wait_ready())
        yield process


def post(server: JupyterServerProcess, path: str, body: str, content_type: str) -> tuple[int, dict]:
    request = urllib.request.Request(
        f"{server.url}api/v3/{path}",
        data=body.encode(),
        method="POST",
        headers={**server.headers, "Content-Type": content_type},
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def nested(depth: int, leaf: str, kind: str) -> str:
    opening, closing = ("[", "]") if kind == "list" else ('{"k": ', "}")
    return opening * depth + leaf + closing * depth


YAML_TAGGED = st.sampled_from(
    [
        "!!set {a: null}",
        "!!binary aGVsbG8=",
        "!!omap [a: 1]",
        "!!pairs [a: 1]",
        "!!timestamp 2001-12-14",
        "!!python/object/apply:os.system [echo hi]",
        "!!float .nan",
        ".inf",
        "-.inf",
        "&x [*x]",
        "&y {k: *y}",
        "!custom value",
        "!!int 0x1F",
        "!!str 12",
        "!!null ''",
        "{? [a, b]: c}",
    ]
)
NUMBERS = st.one_of(
    st.integers(min_value=1, max_value=6000).map(lambda n: "9" * n),
    st.integers(min_value=1, max_value=6000).map(lambda n: "-" + "1" * n),
    st.integers(min_value=300, max_value=99999).map(lambda e: f"1e{e}"),
    st.sampled_from(["1e-99999", "0.1e400", "123456789012345678901234567890.5"]),
)
NESTING = st.builds(
    nested,
    st.integers(min_value=0, max_value=3000),
    st.sampled_from(["1", '"x"', "null", "[]"]),
    st.sampled_from(["list", "map"]),
)
ENDPOINTS = st.sampled_from(["workflows", "agents", "agents/import", "workflows/w/run"])


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@given(
    endpoint=ENDPOINTS,
    value=st.one_of(NUMBERS, NESTING, YAML_TAGGED),
    as_yaml=st.booleans(),
)
def test_generated_nesting_huge_numbers_and_yaml_tags_never_get_a_5xx(server, endpoint, value, as_yaml):
    body = (yaml_workflow if as_yaml else json_workflow)(value)
    if endpoint == "workflows/w/run":
        body = '{"inputs": {"v": ' + value + "}}"
        as_yaml = False
    status, doc = post(server, endpoint, body, "application/yaml" if as_yaml else "application/json")
    assert status < 500, doc
    if status >= 400:
        assert doc["error"]["code"] and doc["error"]["message"]


def large_yaml_workflow(chars: int) -> str:
    """A valid workflow of ``chars`` characters: many steps with long descriptions."""
    step = "  - id: s{i}\n    task: echo\n    description: {text}\n    with: {{value: {i}}}\n"
    count = 400
    text = "lorem ipsum " * (chars // count // 12)
    return "name: big\nsteps:\n" + "".join(step.format(i=i, text=text) for i in range(count))


@pytest.mark.parametrize("as_yaml", [True, False], ids=["yaml", "json"])
async def test_a_multi_megabyte_workflow_is_saved_without_holding_the_loop(api, as_yaml):
    import yaml

    text = large_yaml_workflow(2_000_000)
    body = text if as_yaml else json.dumps(yaml.safe_load(text))
    async with LoopProbe() as probe:
        reply = await api("POST", "workflows", body=body, headers=dict(YAML) if as_yaml else None)
    assert reply.status == 201, reply.body
    assert len(reply.body["steps"]) == 400
    assert probe.max_busy_s < 0.1, str(probe)
