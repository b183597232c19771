"""``clarion agents edit`` and ``clarion agents set``: change a saved agent (its model, api_base,
key variable, prompt) through the interface's ``get_agent`` / ``replace_agent``, so the same
edit works on the embedded engine and through a server, and the engine judges it."""

from __future__ import annotations

import argparse
import asyncio
import os
import shlex
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml

from ..api import Clarion
from ..core.documents import DocumentError, load_yaml
from ..core.errors import ClarionError
from .commands import EXIT_FAILED, _clarion

AGENT_HEADER = "# Edit the agent and save; close the editor to apply. An invalid agent is shown again.\n"


def set_dotted(doc: dict[str, Any], dotted: str, value: Any) -> None:
    """``parameters.temperature`` sets ``doc["parameters"]["temperature"]``, creating mappings on the way."""
    *parents, leaf = dotted.split(".")
    node = doc
    for depth, key in enumerate(parents):
        child = node.get(key)
        if child is None:
            child = node[key] = {}
        if not isinstance(child, dict):
            raise ClarionError(f"{'.'.join(parents[: depth + 1])} is not a mapping: cannot set {dotted}")
        node = child
    node[leaf] = value


def scalar(text: str) -> Any:
    """A value as YAML reads a scalar (``0.2``, ``true``, ``null``, an empty value as null); any
    other text as it is, JSON included (a ``mock_response`` is a string): lists and mappings
    are for ``agents edit``."""
    if not text:
        return None
    try:
        value = load_yaml(text)
    except DocumentError:
        return text
    return text if isinstance(value, dict | list) else value


async def cmd_agents_set(args: argparse.Namespace) -> int:
    """Set fields of an agent: ``key=value`` pairs, dotted keys for nested ones."""
    async with _clarion(args) as clarion:
        agent = await clarion.get_agent(args.agent_id)
        doc = agent.model_dump(mode="json")
        for pair in args.pairs:
            key, sep, value = pair.partition("=")
            if not sep or not key:
                raise ClarionError(f"expected key=value (e.g. model=openai/gpt-4o), got {pair!r}")
            set_dotted(doc, key, scalar(value))
        saved = await clarion.replace_agent(agent.id, doc)
    print(f'saved {saved.id} "{saved.name}" ({saved.model})')
    return 0


async def cmd_agents_edit(args: argparse.Namespace) -> int:
    """Open ``$VISUAL`` / ``$EDITOR`` on the agent as YAML; save it when the editor exits with a
    valid agent. An invalid one: its problems, then the editor again on a terminal, exit 1 otherwise."""
    async with _clarion(args) as clarion:
        agent = await clarion.get_agent(args.agent_id)
        text = AGENT_HEADER + yaml.safe_dump(agent.model_dump(mode="json"), sort_keys=False, allow_unicode=True)
        while True:
            edited = await _edit(text)
            if edited == text:
                print(f"no changes to {agent.id}")
                return 0
            problems = await _save(clarion, agent.id, edited)
            if not problems:
                return 0
            for problem in problems:
                print(f"  - {problem}", file=sys.stderr)
            if not sys.stdin.isatty():
                print(f"error: agent {agent.id} not saved", file=sys.stderr)
                return EXIT_FAILED
            await asyncio.to_thread(input, "press Enter to edit again (Ctrl-C to give up) ")
            text = edited


async def _save(clarion: Clarion, agent_id: str, text: str) -> list[str]:
    """Save the edited YAML; the problems with it, if any (nothing saved then)."""
    try:
        doc = load_yaml(text)
    except DocumentError as exc:
        return [f"not valid YAML: {exc}"]
    if not isinstance(doc, dict):
        return ["expected the agent as a mapping of its fields"]
    try:
        saved = await clarion.replace_agent(agent_id, doc)
    except ClarionError as exc:  # the engine's judgement, the same in process and from a server
        problems = exc.details if isinstance(exc.details, list) else []
        return [f"{p.get('loc', '')}: {p.get('message', '')}" for p in problems if isinstance(p, dict)] or [exc.message]
    print(f'saved {saved.id} "{saved.name}" ({saved.model})')
    return []


async def _edit(text: str) -> str:
    """The text after the user's editor has run on it (a temporary file, removed afterwards)."""
    editor = os.environ.get("VISUAL") or os.environ.get("EDITOR") or "vi"
    handle, name = tempfile.mkstemp(prefix="clarion-agent-", suffix=".yaml")
    path = Path(name)
    try:
        await asyncio.to_thread(_write, handle, text)
        process = await asyncio.create_subprocess_exec(*shlex.split(editor), str(path))
        if await process.wait() != 0:
            raise ClarionError(f"the editor ({editor}) exited with {process.returncode}: nothing saved")
        return await asyncio.to_thread(path.read_text, encoding="utf-8")
    finally:
        await asyncio.to_thread(path.unlink, missing_ok=True)


def _write(handle: int, text: str) -> None:
    with os.fdopen(handle, "w", encoding="utf-8") as file:
        file.write(text)
