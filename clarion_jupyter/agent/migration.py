"""Moving a Clarion v2 user over: every agent from every v2 store, and the run history.

One import takes whatever v2 left behind: its SQLite file ``clarion.db`` (agents,
provider configs, projects, runs), the older YAML store (``test_storage/`` with ``agent/``
and ``llm_configs/``), exported ``.yml`` / ``.json`` files, the ``GET /api/v2/agents/list``
array, a folder holding any of these, or an uploaded body. It reports what it would change
(``dry_run``) or changed: each agent created, updated in place or unchanged; an agent found
in several places imported once; which environment variable to set for each provider's key
(keys themselves are never read into v3); how many v2 runs joined the history.
"""

from __future__ import annotations

import asyncio
import os
from collections import defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from ..storage.protocols import RunStore
from ..storage.records import Event
from .importer import AGENT_FILE_SUFFIXES, ImportProblem, ImportReport, import_texts, source_files
from .models import Agent
from .service import AgentService
from .v2db import IMPORT_THREAD, V2Database, is_sqlite, is_sqlite_file, read_v2_database
from .v2runs import V2_RUN_WORKFLOW_ID, ImportedRuns, convert_runs

Action = Literal["created", "updated", "unchanged"]
DATABASE_SUFFIXES = frozenset({".db", ".sqlite", ".sqlite3"})
_SOURCE_RANK = {"db": 2, ".json": 1}
"""When one agent is found twice, the newest v2 store wins: the database, then JSON, then YAML."""


@dataclass(slots=True)
class AgentChange:
    """What an import does to one agent (created, updated with which fields, unchanged), shown before and after a dry run."""

    id: str
    name: str
    model: str
    action: Action
    source: str
    also_in: list[str] = field(default_factory=list)
    fields: list[str] = field(default_factory=list)
    """For an update: the agent fields that change."""


@dataclass(slots=True)
class RunHistory:
    """How much of v2's run history an import found, and how much of it was new."""

    workflow_id: str = V2_RUN_WORKFLOW_ID
    found: int = 0
    imported: int = 0
    already_imported: int = 0


@dataclass(slots=True)
class V2ImportReport:
    """Everything one import did or would do, the same for a path, an upload and a dry run, so the CLI, the API and the sidebar report alike."""

    dry_run: bool
    agents: list[Agent] = field(default_factory=list)
    changes: list[AgentChange] = field(default_factory=list)
    api_keys: dict[str, list[str]] = field(default_factory=dict)
    """Environment variable → the agents that read their key from it."""
    runs: RunHistory = field(default_factory=RunHistory)
    errors: list[ImportProblem] = field(default_factory=list)
    warnings: list[ImportProblem] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        """Every agent found was imported (nothing failed to convert or read)."""
        return not self.errors

    def summary_lines(self) -> list[str]:
        return summary_lines(self.as_dict())

    def as_dict(self) -> dict[str, Any]:
        """The JSON shape ``POST /api/v3/agents/import`` and ``clarion agents import --json`` return."""
        return {
            "dry_run": self.dry_run,
            "agents": [agent.model_dump(mode="json") for agent in self.agents],
            "changes": [asdict(c) for c in self.changes],
            "api_keys": [{"env": env, "agents": ids, "set": env in os.environ} for env, ids in self.api_keys.items()],
            "runs": asdict(self.runs),
            "errors": [asdict(p) for p in self.errors],
            "warnings": [asdict(p) for p in self.warnings],
        }


def summary_lines(report: dict[str, Any], *, server: bool = False) -> list[str]:
    """A report (its JSON form, as the API answers it) for a terminal: one line per agent (its
    id and v2 name), the run history, the keys to set. ``server``: the engine that imported is
    a server's, so ``api_keys[].set`` speaks of its environment, not this one."""
    dry_run = report["dry_run"]
    lines = ["dry run: nothing was saved"] if dry_run else []
    for change in report["changes"]:
        action = change["action"]
        action = action if not dry_run or action == "unchanged" else f"would be {action}"
        fields = f": {', '.join(change['fields'])}" if change["fields"] else ""
        lines.append(f'{action} {change["id"]} "{change["name"]}" ({change["model"]}){fields}')
    runs = report["runs"]
    if runs["found"]:
        new = runs["found"] - runs["already_imported"]
        verb = "would be imported" if dry_run else "imported"
        lines.append(
            f"runs: {new} of {runs['found']} v2 runs {verb} as workflow {runs['workflow_id']}"
            f" ({runs['already_imported']} already there)"
        )
    names = {change["id"]: change["name"] for change in report["changes"]}
    for key in report["api_keys"]:
        agents = ", ".join(
            f'{agent_id} "{names[agent_id]}"' if agent_id in names else agent_id for agent_id in key["agents"]
        )
        lines.append(
            f"key: {agents} read the API key from ${key['env']} ({_key_state(key, server)}); keys are not imported"
        )
    return lines


def _key_state(key: dict[str, Any], server: bool) -> str:
    """Whether the engine that runs the agents can read the key: through a server, that is the
    server's environment, which the terminal running ``clarion`` may not share."""
    if not server:
        return "set" if key["set"] else "not set yet"
    if key["set"]:
        return "set in the server's environment"
    if key["env"] in os.environ:
        return "not set in the server's environment: it is set here, but the server needs it too"
    return "not set in the server's environment"


Upload = tuple[str, bytes]
"""A file sent to the server: its name (relative to the folder it came from) and content."""
ImportSource = str | os.PathLike[str] | bytes | list[Upload]


@dataclass(slots=True)
class _Found:
    """What a source held, before anything is stored."""

    texts: list[tuple[str, str]] = field(default_factory=list)
    databases: list[V2Database] = field(default_factory=list)
    errors: list[ImportProblem] = field(default_factory=list)


class V2Migration:
    """Imports v2 data through the engine's agent service and into its run store."""

    def __init__(
        self, agents: AgentService, runs: RunStore, publish: Callable[[list[Event]], Awaitable[None]] | None = None
    ) -> None:
        """``publish``: where the events of newly imported runs go once stored (to the engine,
        which saves their workflow first and then announces them on its bus), so live lists (the
        sidebar's) show them at once, as they show new runs, and can list their workflow."""
        self._agents = agents
        self._runs = runs
        self._publish = publish

    async def run(self, source: ImportSource, *, dry_run: bool = False) -> V2ImportReport:
        """Import ``source``: a path (file or folder), an uploaded body (a ``clarion.db``'s
        bytes, or the text of agent documents), or uploaded files (a folder sent as a form).
        Reading and converting happen off the loop, on the import thread."""
        found, documents, history = await asyncio.get_running_loop().run_in_executor(IMPORT_THREAD, _read_all, source)
        report = V2ImportReport(dry_run=dry_run, errors=found.errors + documents.errors, warnings=documents.warnings)
        report.warnings += history.warnings
        stored = {agent.id: agent for agent in await self._agents.list()}
        changed = []
        from_databases = {source for db in found.databases for _, source in db.agent_texts}
        for agent, source_name, also_in in _unique(documents, from_databases, report):
            before = stored.get(agent.id)
            agent = _keeping_stored_extra(before, agent)
            action: Action = "created" if before is None else "unchanged" if before == agent else "updated"
            fields = _changed_fields(before, agent) if action == "updated" else []
            report.changes.append(AgentChange(agent.id, agent.name, agent.model, action, source_name, also_in, fields))
            report.agents.append(agent)
            if action != "unchanged":
                changed.append(agent)
            if agent.api_key_env:
                report.api_keys.setdefault(agent.api_key_env, []).append(agent.id)
        if not dry_run:
            await self._agents.upsert_many(changed)
        await self._import_runs(history, report.runs, dry_run)
        return report

    async def _import_runs(self, history: ImportedRuns, counts: RunHistory, dry_run: bool) -> None:
        counts.found = len(history.runs)
        if not history.runs:
            return
        if dry_run:
            counts.already_imported = len(await self._runs.existing_runs([r.run_id for r in history.runs]))
        else:
            there = await self._runs.existing_runs([r.run_id for r in history.runs])
            counts.imported = await self._runs.import_finished(history.runs, history.steps, history.events)
            counts.already_imported = counts.found - counts.imported
            if self._publish is not None and counts.imported:
                await self._publish([event for event in history.events if event.run_id not in there])


def _read_all(source: ImportSource) -> tuple[_Found, ImportReport, ImportedRuns]:
    """Blocking: read every v2 store in ``source``, convert its agents and runs."""
    found = _find(source)
    db_texts = [text for db in found.databases for text in db.agent_texts]
    configs = [config for db in found.databases for config in db.provider_configs]
    documents = import_texts([*found.texts, *db_texts], configs)
    for db in found.databases:
        found.errors += db.errors
    names = {agent.name: agent.id for agent in documents.agents}
    history = ImportedRuns()
    for db in found.databases:
        history.warnings += db.warnings
        converted = convert_runs(db, names)
        history.runs += converted.runs
        history.steps += converted.steps
        history.events += converted.events
        history.warnings += converted.warnings
    return found, documents, history


def _find(source: ImportSource) -> _Found:
    found = _Found()
    if isinstance(source, bytes):
        _add_upload(found, "upload" if is_sqlite(source) else "request body", source)
        return found
    if isinstance(source, list):
        for name, content in source:
            _add_upload(found, name, content)
        return found
    candidates = source_files(Path(source).expanduser(), AGENT_FILE_SUFFIXES | DATABASE_SUFFIXES)
    if candidates is None:
        found.errors.append(ImportProblem(str(source), "no such file or folder"))
        return found
    for path, name in candidates:
        if is_sqlite_file(path):
            found.databases.append(read_v2_database(path, name))
            continue
        try:
            found.texts.append((path.read_text(encoding="utf-8"), name))
        except (OSError, UnicodeDecodeError) as exc:
            found.errors.append(ImportProblem(name, f"cannot read the file: {exc}"))
    return found


def _add_upload(found: _Found, name: str, content: bytes) -> None:
    if is_sqlite(content):
        found.databases.append(read_v2_database(content, name))
        return
    try:
        found.texts.append((content.decode("utf-8"), name))
    except UnicodeDecodeError:
        found.errors.append(ImportProblem(name, "neither a v2 clarion.db nor UTF-8 text"))


def _keeping_stored_extra(before: Agent | None, agent: Agent) -> Agent:
    """The agent to store: when it does what the stored one does, the stored one's ``extra``
    wins and only keys it lacks are added. v2 keeps different bookkeeping for one agent in each
    store (``clarion.db``, ``test_storage/``), so importing both in turn must not swap it back
    and forth and call every agent updated each time."""
    if before is None or before.model_dump(exclude={"extra"}) != agent.model_dump(exclude={"extra"}):
        return agent
    return agent.model_copy(update={"extra": {**agent.extra, **before.extra}})


def _changed_fields(before: Agent | None, after: Agent) -> list[str]:
    old, new = (before.model_dump(mode="json") if before else {}), after.model_dump(mode="json")
    return [name for name in new if old.get(name) != new[name]]


def _unique(
    documents: ImportReport, from_databases: set[str], report: V2ImportReport
) -> list[tuple[Agent, str, list[str]]]:
    """One agent per id: the copy from the newest v2 store, the others named in the report."""
    by_id: dict[str, list[tuple[Agent, str]]] = defaultdict(list)
    for agent, source in zip(documents.agents, documents.sources, strict=True):
        by_id[agent.id].append((agent, source))
    unique = []
    for agent_id, copies in by_id.items():
        ranked = sorted(copies, key=lambda c: _rank(c[1], from_databases))  # stable: the last of equals wins
        (agent, source), others = ranked[-1], [s for _, s in ranked[:-1]]
        if others:
            same = all(a.model_dump(exclude={"extra"}) == agent.model_dump(exclude={"extra"}) for a, _ in ranked[:-1])
            what = "the same agent" if same else "agents with this id (they differ)"
            message = f"{what} '{agent_id}' found {len(copies)} times: imported once, from {source}"
            report.warnings.append(ImportProblem(", ".join([*others, source]), message))
        unique.append((agent, source, others))
    return unique


def _rank(source: str, from_databases: set[str]) -> int:
    if source in from_databases:
        return _SOURCE_RANK["db"]
    return _SOURCE_RANK.get(Path(source.split(" (document")[0]).suffix.lower(), 0)
