"""How the ``clarion`` command shows runs on a terminal: a line per step transition, the
diff of a step waiting for approval, an agent's reply as it streams, and the summary."""

from __future__ import annotations

import json
import os
from typing import Any, TextIO

from ..agent.v2runs import V2_RUN_WORKFLOW_ID
from ..core.protocol import EventType, RunStatus
from ..llm.cache import is_cached
from ..storage.records import Event
from ..workflow.agent_run import AGENT_REPLY_STEP, AGENT_RUN_WORKFLOW_ID
from ..workflow.budget import describe
from ..workflow.models import WorkflowRun


class Style:
    """ANSI colours when writing to a terminal, plain text otherwise (logs, CI)."""

    def __init__(self, stream: TextIO) -> None:
        self.enabled = stream.isatty() and not os.environ.get("NO_COLOR")

    def __call__(self, text: str, code: str) -> str:
        return f"\033[{code}m{text}\033[0m" if self.enabled else text


STATUS_MARKS = {
    EventType.step_started: ("…", "2"),
    EventType.step_completed: ("✓", "32"),
    EventType.step_failed: ("✗", "31"),
    EventType.step_retrying: ("↻", "33"),
    EventType.step_skipped: ("–", "2"),
    EventType.step_cancelled: ("■", "33"),
    EventType.approval_requested: ("⏸", "35"),
    EventType.approval_granted: ("✓", "32"),
    EventType.approval_rejected: ("✗", "31"),
}
STATUS_WORDS = {
    EventType.step_started: "running",
    EventType.step_completed: "succeeded",
    EventType.step_failed: "failed",
    EventType.step_retrying: "retrying",
    EventType.step_skipped: "skipped",
    EventType.step_cancelled: "cancelled",
    EventType.approval_requested: "waiting",
    EventType.approval_granted: "approved",
    EventType.approval_rejected: "rejected",
}
AGENT_WORKFLOWS = frozenset({AGENT_RUN_WORKFLOW_ID, V2_RUN_WORKFLOW_ID})
DIFF_COLOURS = (("+++", "1"), ("---", "1"), ("+", "32"), ("-", "31"), ("@@", "36"))


class Progress:
    """One line per step transition: mark, step, status, duration and the reason, if any."""

    show_outputs = True

    def __init__(self, stream: TextIO) -> None:
        self.out = stream
        self.style = Style(stream)

    def event(self, event: Event) -> None:
        if event.type not in STATUS_MARKS:
            return
        mark, colour = STATUS_MARKS[event.type]
        data = event.data
        word = STATUS_WORDS[event.type]
        if event.type == EventType.step_completed and data.get("reused_from"):
            mark, colour, word = "=", "36", "reused"
        duration = f"{data['duration_ms']:.1f} ms" if data.get("duration_ms") is not None else ""
        detail = ""
        if "error" in data:
            detail = data["error"].get("message", "")
        elif event.type in (EventType.step_skipped, EventType.step_cancelled):
            detail = data.get("reason") or ""
        elif event.type == EventType.step_started and data.get("attempt", 1) > 1:
            detail = f"attempt {data['attempt']}"
        elif event.type == EventType.approval_requested:
            detail = data.get("message") or "waiting for approval"
        elif event.type in (EventType.approval_granted, EventType.approval_rejected):
            detail = " ".join(str(part) for part in (data.get("by"), data.get("comment")) if part)
        elif word == "reused":
            duration, detail = "", f"from run {data['reused_from']['run_id']}"
        elif event.type == EventType.step_completed and is_cached(data.get("output")):
            detail = "cached: no model call"
        line = (
            f"  {self.style(mark, colour)} {event.step_id:<24} {self.style(word, colour):<10} {duration:>10}  {detail}"
        )
        print(line.rstrip(), file=self.out, flush=True)

    def agent_request(self, run: WorkflowRun, heading: str = "  agent") -> None:
        """An agent run's agent (its v2 name beside the id, for imported runs), files and
        prompt: what was asked matters as much as the steps."""
        inputs = run.inputs
        if run.workflow_id not in AGENT_WORKFLOWS or not isinstance(inputs.get("prompt"), str):
            return
        name = f' "{inputs["agent_name"]}"' if inputs.get("agent_name") else ""
        print(f"{heading} {inputs.get('agent')}{name}", file=self.out)
        if inputs.get("files"):
            print(f"  files: {', '.join(map(str, inputs['files']))}", file=self.out)
        print("  prompt: " + inputs["prompt"].replace("\n", "\n          "), file=self.out, flush=True)

    def preview(self, preview: dict[str, Any]) -> None:
        """What a waiting step would do: the diff (coloured on a terminal), the command, or the config."""
        if preview.get("kind") == "diff":
            for file in preview.get("files", []):
                print(self.style(f"  {file['action']} {file['path']}", "1"), file=self.out)
                for line in file["diff"].splitlines():
                    colour = next((c for prefix, c in DIFF_COLOURS if line.startswith(prefix)), "")
                    print("    " + (self.style(line, colour) if colour else line), file=self.out)
        elif preview.get("kind") == "command":
            print(f"  $ {preview['command']}    (in {preview.get('cwd', '.')})", file=self.out)
        else:
            print("  " + json.dumps(preview.get("config", preview), indent=2, default=str), file=self.out)

    def waiting(self, run: WorkflowRun) -> None:
        for approval in run.approvals:
            print(self.style(f"step {approval.step_key} waits for approval", "35"), file=self.out)
            self.preview(approval.preview or {})
            print(f"  approve: clarion approve {run.run_id} {approval.step_key}", file=self.out)
            print(f"  reject:  clarion reject {run.run_id} {approval.step_key} --comment '...'", file=self.out)

    def summary(self, run: WorkflowRun) -> None:
        if run.status == RunStatus.waiting:
            self.waiting(run)
            return
        ok = run.status == RunStatus.succeeded
        colour = "32" if ok else "31"
        took = ""
        if run.started_at and run.finished_at:
            took = f" in {(run.finished_at - run.started_at).total_seconds():.2f} s"
        usage = run.usage
        tokens = (
            f", {usage.prompt_tokens + usage.completion_tokens} tokens"
            if usage.prompt_tokens or usage.completion_tokens
            else ""
        )
        cost = f", ${usage.cost_usd:.8f}".rstrip("0").rstrip(".") if usage.cost_usd else ""
        print(self.style(f"run {run.run_id} {run.status.value}{took}{tokens}{cost}", colour), file=self.out)
        if run.budget is not None:
            print(f"  budget: {describe(run.budget.model_dump())}", file=self.out)
        if run.error:
            print(f"  error: {run.error.get('message')}", file=self.out)
        if run.outputs and self.show_outputs:
            print("  outputs: " + json.dumps(run.outputs, default=str)[:2000], file=self.out)


RUN_COLOURS = {
    RunStatus.succeeded: "32",
    RunStatus.failed: "31",
    RunStatus.cancelled: "33",
    RunStatus.waiting: "35",
}


def dump_json(document: Any) -> None:
    print(json.dumps(document, indent=2, default=str))


class ReplyProgress(Progress):
    """An agent run's progress, with the agent's reply printed as it streams in. A structured
    (JSON) reply is not echoed piece by piece: its summary is printed once it is complete. The
    run's outputs are that reply again, so they are not printed at the end."""

    show_outputs = False

    def __init__(self, stream: TextIO) -> None:
        super().__init__(stream)
        self._reply = ""
        self._printed = 0

    def event(self, event: Event) -> None:
        if event.step_id != AGENT_REPLY_STEP:
            super().event(event)
        elif event.type == EventType.llm_token:
            self._reply += event.data.get("text", "")
            if not self._reply.lstrip().startswith(("{", "[", "`")):
                print(self._reply[self._printed :], end="", file=self.out, flush=True)
                self._printed = len(self._reply)
        elif event.type == EventType.step_completed:
            output = event.data.get("output") or {}
            structured = output.get("json") if isinstance(output.get("json"), dict) else None
            if structured is not None:
                print(structured.get("summary") or structured.get("message") or "", file=self.out)
            elif not self._printed:
                print(output.get("text", ""), file=self.out)
            else:
                print(file=self.out)
            super().event(event)
        elif event.type != EventType.step_started:
            super().event(event)
