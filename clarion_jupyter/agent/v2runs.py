"""Clarion v2 run history as finished v3 runs of the workflow ``clarion-v2-agent-run``.

v2's frontend saved each agent run once it ended, as the JSON of its ``AgentRun``:
``{id, prompt, agentName, status: success|error, output: {summary, fileChanges, rawOutput,
error?, tokenUsage?}, rawRequest: {system_instruction, prompt, codebase_paths,
output_schema, project_root, llm_config}}``, with ids ``run-<epoch ms>`` (the start). Each
becomes a finished run with one ``reply`` step and its three events, at its original time,
so it lists and shows like any run; it is read-only (nothing of it is active, so cancel
answers 409). Run ids derive from the v2 id and time: importing again adds nothing twice.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

from ..core.ids import run_id_floor
from ..core.protocol import EventType, RunStatus, StepStatus
from ..storage.records import Event, RunRecord, StepRecord, digest
from .importer import ImportProblem, litellm_model
from .v2db import V2Database, V2Run

V2_RUN_WORKFLOW_ID = "clarion-v2-agent-run"
V2_RUN_WORKFLOW: dict[str, Any] = {
    "id": V2_RUN_WORKFLOW_ID,
    "name": "Clarion v2 agent run (imported)",
    "description": (
        "A run made in Clarion v2 and imported read-only: the agent's reply, its summary and the file "
        "changes it proposed. New agent runs use the built-in agent-run workflow."
    ),
    "inputs": {
        "agent": {"type": "string"},
        "prompt": {"type": "string"},
        "files": {"type": "array", "default": []},
    },
    "steps": [
        {"id": "reply", "task": "llm_call", "with": {"agent": "{{ inputs.agent }}", "prompt": "{{ inputs.prompt }}"}}
    ],
}
V2_RUN_DIGEST = digest(V2_RUN_WORKFLOW)
_STARTED_IN_ID = re.compile(r"^run-(?:sim-)?(\d{12,14})$")
_STATUSES = {"success": RunStatus.succeeded, "error": RunStatus.failed}


@dataclass(slots=True)
class ImportedRuns:
    """v2 runs converted to v3's records, ready to be stored in one transaction with their steps and events."""

    runs: list[RunRecord] = field(default_factory=list)
    steps: list[StepRecord] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    warnings: list[ImportProblem] = field(default_factory=list)


def convert_runs(db: V2Database, agent_ids: dict[str, str]) -> ImportedRuns:
    """Every v2 run of ``db``; ``agent_ids`` maps v2 agent names to imported agent ids."""
    out = ImportedRuns()
    for v2 in db.runs:
        where = f"{db.name} runs/{v2.id}"
        started, finished = _times(v2)
        if started is None:
            out.warnings.append(ImportProblem(where, "no time recorded: listed as the oldest run"))
            started = finished = datetime.fromtimestamp(0, UTC)
        record, step = _run(v2, started, finished, db.projects.get(v2.project_id), agent_ids)
        out.runs.append(record)
        out.steps.append(step)
        out.events += _events(record, step)
    return out


def _run(
    v2: V2Run, started: datetime, finished: datetime, project: dict[str, Any] | None, agent_ids: dict[str, str]
) -> tuple[RunRecord, StepRecord]:
    data, output = v2.data, _dict(v2.data.get("output"))
    request = _dict(data.get("rawRequest"))
    status = _STATUSES.get(str(data.get("status")), RunStatus.failed)
    agent_name = str(data.get("agentName") or "")
    inputs = {
        "agent": agent_ids.get(agent_name, agent_name),
        "agent_name": agent_name,
        "prompt": str(data.get("prompt") or request.get("prompt") or ""),
        "files": list(request.get("codebase_paths") or []),
        "project": {k: project.get(k) for k in ("id", "name", "path")} if project else {"id": v2.project_id},
        "v2_run_id": v2.id,
    }
    outputs = {
        "summary": output.get("summary") or "",
        "file_changes": [_file_change(c) for c in output.get("fileChanges") or [] if isinstance(c, dict)],
    }
    error = None
    if status is RunStatus.failed:
        message = output.get("error") or (
            f"the run had not finished in v2 (status {data.get('status')!r})"
            if data.get("status") not in _STATUSES
            else output.get("summary") or "failed"
        )
        error = {"code": "v2_run_failed", "message": str(message)}
    usage = _usage(output.get("tokenUsage") or _dict(output.get("rawOutput")).get("token_usage"))
    llm = _dict(request.get("llm_config"))
    model = litellm_model(llm.get("provider"), str(llm["model"])) if llm.get("model") else None
    step = StepRecord(
        run_id=_run_id(v2, started), key="reply", step_id="reply", item_index=None, attempt=1,
        status=StepStatus.succeeded.value if error is None else StepStatus.failed.value,
        started_at=started, finished_at=finished, error=error, usage=usage,
        output={"json": output.get("rawOutput"), "model": model, "usage": usage} if error is None else None,
    )  # fmt: skip
    run = RunRecord(
        run_id=step.run_id, workflow_id=V2_RUN_WORKFLOW_ID, workflow_name=V2_RUN_WORKFLOW["name"],
        workflow=V2_RUN_WORKFLOW, workflow_digest=V2_RUN_DIGEST, inputs=inputs, status=status.value,
        created_at=started, started_at=started, finished_at=finished, outputs=outputs if error is None else None,
        error=error, usage={"prompt_tokens": 0, "completion_tokens": 0, "cost_usd": None, **(usage or {})},
    )  # fmt: skip
    return run, step


def _events(run: RunRecord, step: StepRecord) -> list[Event]:
    ok = run.status == RunStatus.succeeded.value
    # the step's output is in the run document already; the event carries what a timeline shows
    step_data: dict[str, Any] = {"attempt": 1, "usage": step.usage} if ok else {"attempt": 1, "error": step.error}
    return [
        Event(1, EventType.run_started.value, run.run_id, None, run.started_at, {"imported_from": "clarion-v2"}),
        Event(2, (EventType.step_completed if ok else EventType.step_failed).value, run.run_id, "reply",
              run.finished_at, step_data),
        Event(3, (EventType.workflow_succeeded if ok else EventType.workflow_failed).value, run.run_id, None,
              run.finished_at, {"outputs": run.outputs} if ok else {"error": run.error}),
    ]  # fmt: skip


def _run_id(v2: V2Run, started: datetime) -> str:
    """Time-ordered like every run id (so history sorts in with new runs), and the same on
    every import of the same v2 run."""
    ms = max(0, int(started.timestamp() * 1000))
    suffix = hashlib.sha256(f"clarion-v2\0{v2.project_id}\0{v2.id}".encode()).hexdigest()[:14]
    return f"{run_id_floor(ms)}{suffix}"


def _times(v2: V2Run) -> tuple[datetime | None, datetime | None]:
    """Start from the id (``run-<ms>``), end from the row's ``created_at`` (saved at the end)."""
    saved = _sqlite_time(v2.created_at)
    match = _STARTED_IN_ID.match(v2.id)
    started = datetime.fromtimestamp(int(match.group(1)) / 1000, UTC) if match else saved
    if started is None:
        return None, None
    return started, saved if saved is not None and saved >= started else started


@lru_cache(maxsize=4096)
def _sqlite_time(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def _file_change(change: dict[str, Any]) -> dict[str, Any]:
    """The "File Operations" shape v3's ``file_write`` ``changes`` takes."""
    out = {"action": change.get("action"), "path": change.get("path"), "new_content": change.get("new_content", "")}
    if change.get("original_content") is not None:
        out["original_content"] = change["original_content"]
    return out


def _usage(value: Any) -> dict[str, Any] | None:
    """Token counts under any of the names providers use (prompt/input, completion/output)."""
    if not isinstance(value, dict):
        return None
    norm = {re.sub(r"[^a-z]", "", str(k).lower()): v for k, v in value.items()}
    prompt = next((norm[k] for k in ("prompttokens", "inputtokens", "prompt", "input") if k in norm), None)
    completion = next(
        (norm[k] for k in ("completiontokens", "outputtokens", "completion", "output") if k in norm), None
    )
    if not isinstance(prompt, int | float) and not isinstance(completion, int | float):
        return None
    return {"prompt_tokens": int(prompt or 0), "completion_tokens": int(completion or 0)}


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}
