"""The ``clarion`` command: validate, run, inspect and approve workflows and agent runs.

Every command runs on the embedded engine, or through the Jupyter server that holds the
database when one does (``--verbose`` says which), with the extension's configuration.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress
from pathlib import Path
from typing import Any, TextIO

import yaml

from .agent.migration import summary_lines
from .backends import Backend, open_backend
from .core.errors import ClarionError, ValidationFailed
from .core.protocol import EventType, RunStatus
from .settings import configured_traits, task_settings
from .storage.records import Event
from .task.registry import TaskRegistry
from .workflow.agent_run import AGENT_REPLY_STEP, AgentRunRequest
from .workflow.engine import Engine
from .workflow.models import Workflow, WorkflowRun, parse_workflow
from .workflow.validation import DEFAULT_MAX_STEPS, WorkflowValidator

EXIT_FAILED, EXIT_USAGE, EXIT_WAITING, EXIT_INTERRUPTED = 1, 2, 3, 130


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
    EventType.approval_requested: "waiting",
    EventType.approval_granted: "approved",
    EventType.approval_rejected: "rejected",
}
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
        duration = f"{data['duration_ms']:.1f} ms" if data.get("duration_ms") is not None else ""
        detail = ""
        if "error" in data:
            detail = data["error"].get("message", "")
        elif event.type == EventType.step_skipped:
            detail = data.get("reason") or ""
        elif event.type == EventType.step_started and data.get("attempt", 1) > 1:
            detail = f"attempt {data['attempt']}"
        elif event.type == EventType.approval_requested:
            detail = data.get("message") or "waiting for approval"
        elif event.type in (EventType.approval_granted, EventType.approval_rejected):
            detail = " ".join(str(part) for part in (data.get("by"), data.get("comment")) if part)
        line = f"  {self.style(mark, colour)} {event.step_id:<24} {self.style(STATUS_WORDS[event.type], colour):<10} {duration:>10}  {detail}"
        print(line.rstrip(), file=self.out, flush=True)

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
        if run.error:
            print(f"  error: {run.error.get('message')}", file=self.out)
        if run.outputs and self.show_outputs:
            print("  outputs: " + json.dumps(run.outputs, default=str)[:2000], file=self.out)


def parse_pairs(pairs: list[str], flag: str, typed: Callable[[str], bool] = lambda _key: False) -> dict[str, Any]:
    """``k=v`` pairs; values of ``typed`` keys are read as YAML (``3``, ``[a, b]``, ``true``)."""
    values: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ClarionError(f"{flag} expects key=value, got {pair!r}")
        values[key] = value
        if typed(key) and value:
            with suppress(yaml.YAMLError):
                values[key] = yaml.safe_load(value)
    return values


def parse_inputs(pairs: list[str], workflow: Workflow) -> dict[str, Any]:
    """Workflow inputs: strings as given, other declared types (and undeclared names) as YAML."""

    def typed(key: str) -> bool:
        spec = workflow.inputs.get(key)
        return spec is None or spec.type != "string"

    return parse_pairs(pairs, "--input", typed)


RUN_COLOURS = {
    RunStatus.succeeded: "32",
    RunStatus.failed: "31",
    RunStatus.cancelled: "33",
    RunStatus.waiting: "35",
}


def dump_json(document: Any) -> None:
    print(json.dumps(document, indent=2, default=str))


def _engine(args: argparse.Namespace) -> Engine:
    """An engine as the server extension is configured (its traits), the command line winning."""
    traits = configured_traits()
    settings = task_settings(traits)
    return Engine(
        db_path=args.db or traits.get("db_path") or None,
        workers=args.workers or traits.get("workers", 8),
        workspace_root=_workspace_root(args, traits),
        allow_shell=settings.allow_shell,
        max_output_bytes=settings.max_output_bytes,
        max_steps=traits.get("max_steps", DEFAULT_MAX_STEPS),
        secrets=settings.secrets,
    )


def _workspace_root(args: argparse.Namespace, traits: dict[str, Any]) -> str:
    return args.workspace or traits.get("workspace_root") or "."


async def cmd_validate(args: argparse.Namespace) -> int:
    traits = configured_traits()
    validator = WorkflowValidator(
        TaskRegistry.from_entry_points(),
        max_steps=traits.get("max_steps", DEFAULT_MAX_STEPS),
        allow_shell=traits.get("allow_shell", True),
    )
    plan = validator.compile(Path(args.file).read_text())
    workflow = plan.workflow
    print(f"ok: workflow '{workflow.id}' ({len(plan.nodes)} steps, inputs: {', '.join(workflow.inputs) or 'none'})")
    return 0


@asynccontextmanager
async def _backend(args: argparse.Namespace) -> AsyncIterator[Backend]:
    backend = await open_backend(_engine(args))
    if args.verbose:
        print(f"(using {backend.description})", file=sys.stderr)
    try:
        yield backend
    finally:
        await backend.close()


async def _follow(backend: Backend, run_id: str, progress: Progress | None, since: int = 0) -> WorkflowRun:
    """Print the run's events until it ends, or waits for a person (then the CLI's part is done:
    the run stays waiting, durably, until ``clarion approve`` or ``reject``)."""
    asked: set[str] = set()
    try:
        async for event in backend.subscribe(run_id, since):
            if progress:
                progress.event(event)
            if event.type == EventType.approval_requested:
                asked.add(event.step_id)
            elif event.type in (EventType.approval_granted, EventType.approval_rejected):
                asked.discard(event.step_id)
            if asked and (run := await backend.get_run(run_id)).status == RunStatus.waiting:
                return run
    except asyncio.CancelledError:
        await backend.cancel(run_id)
        raise
    return await backend.get_run(run_id)


def _finish(run: WorkflowRun, progress: Progress | None) -> int:
    """Exit 0 only when the run succeeded; 3 while it waits for a decision (a script must not go
    on as if it were done), 1 when it failed or was cancelled."""
    if progress:
        progress.summary(run)
    else:
        dump_json(run.model_dump(mode="json"))
    return _exit_code([run])


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


def _exit_code(runs: list[WorkflowRun]) -> int:
    if any(r.status != RunStatus.succeeded and r.status != RunStatus.waiting for r in runs):
        return EXIT_FAILED
    return EXIT_WAITING if any(r.status == RunStatus.waiting for r in runs) else 0


async def cmd_run(args: argparse.Namespace) -> int:
    workflow = parse_workflow(Path(args.file).read_text())
    inputs = parse_inputs(args.input, workflow)
    async with _backend(args) as backend:
        run_id = await backend.submit(workflow, inputs)
        progress = None if args.json else Progress(sys.stdout)
        if progress:
            print(f"run {run_id}: {workflow.name}", flush=True)
        run = await _follow(backend, run_id, progress)
    return _finish(run, progress)


async def cmd_runs(args: argparse.Namespace) -> int:
    async with _backend(args) as backend:
        runs, cursor = await backend.list_runs(args.workflow, args.status, args.limit)
    if args.json:
        dump_json({"runs": [r.model_dump(mode="json") for r in runs], "next_cursor": cursor})
        return 0
    style = Style(sys.stdout)
    for run in runs:
        colour = RUN_COLOURS.get(run.status, "36")
        created = run.created_at.strftime("%Y-%m-%d %H:%M:%S")
        print(f"{run.run_id}  {created}  {style(f'{run.status.value:<10}', colour)}  {run.workflow_id}")
    if not runs:
        print("no runs")
    return 0


async def cmd_show(args: argparse.Namespace) -> int:
    async with _backend(args) as backend:
        run = await backend.get_run(args.run_id)
        events = [] if args.json else await backend.events(args.run_id)
    if args.json:
        dump_json(run.model_dump(mode="json"))
        return 0
    print(f"run {run.run_id}: {run.workflow_name} ({run.workflow_id})")
    progress = Progress(sys.stdout)
    for event in events:
        if event.type != EventType.step_started:
            progress.event(event)
    progress.summary(run)
    return 0


async def cmd_resume(args: argparse.Namespace) -> int:
    """An engine start resumes what a crash interrupted; this follows those runs to their end."""
    async with _backend(args) as backend:
        if args.run_id:
            run = await backend.get_run(args.run_id)
            if run.status.terminal:
                print(f"run {run.run_id} is {run.status.value}: nothing to resume")
                return 0 if run.status == RunStatus.succeeded else EXIT_FAILED
            run_ids = [args.run_id]
        else:
            run_ids = await backend.interrupted()
        if not run_ids:
            print("no interrupted runs")
            return 0
        runs = await asyncio.gather(*(_follow(backend, r, None) for r in run_ids))
    progress = Progress(sys.stdout)
    for run in runs:
        progress.summary(run)
    return _exit_code(runs)


async def cmd_agent_run(args: argparse.Namespace) -> int:
    request = AgentRunRequest(
        prompt=args.prompt, files=args.file, variables=parse_pairs(args.var, "--var"), apply=args.apply
    )
    async with _backend(args) as backend:
        run_id = await backend.run_agent(args.agent, request)
        progress = None if args.json else ReplyProgress(sys.stdout)
        if progress:
            print(f"run {run_id}: agent {args.agent}", flush=True)
        run = await _follow(backend, run_id, progress)
    return _finish(run, progress)


async def _decide(args: argparse.Namespace, approve: bool) -> int:
    async with _backend(args) as backend:
        since = (await backend.get_run(args.run_id)).last_seq
        await backend.decide(args.run_id, args.step, approve, args.comment)
        progress = None if args.json else Progress(sys.stdout)
        run = await _follow(backend, args.run_id, progress, since)
    return _finish(run, progress)


async def cmd_approve(args: argparse.Namespace) -> int:
    return await _decide(args, approve=True)


async def cmd_reject(args: argparse.Namespace) -> int:
    return await _decide(args, approve=False)


async def cmd_agents_import(args: argparse.Namespace) -> int:
    async with _backend(args) as backend:
        report = await backend.import_agents(args.path, dry_run=args.dry_run)
    if args.json:
        dump_json(report)
    else:
        print("\n".join(summary_lines(report)))
        for warning in report["warnings"]:
            print(f"warning: {warning['source']}: {warning['message']}", file=sys.stderr)
        for error in report["errors"]:
            print(f"error: {error['source']}: {error['message']}", file=sys.stderr)
    return EXIT_FAILED if report["errors"] else 0


async def cmd_agents_list(args: argparse.Namespace) -> int:
    async with _backend(args) as backend:
        agents = await backend.list_agents()
    if args.json:
        dump_json([a.model_dump(mode="json") for a in agents])
    else:
        for agent in agents:
            print(f"{agent.id:<24} {agent.model}")
    return 0


async def cmd_worker(args: argparse.Namespace) -> int:
    """Run steps from the broker until SIGINT or SIGTERM, with the server's configured policy."""
    from .task.worker import run_worker

    traits = configured_traits()
    workers = args.workers or traits.get("workers", 8)
    workspace = _workspace_root(args, traits)

    def ready(queue: Any) -> None:
        if args.verbose:
            health = queue.health()
            print(
                f"(connected to {health['kind']} at {health['url']}, prefix {health['prefix']}: "
                f"{workers} slot(s), workspace {Path(workspace).resolve()})",
                file=sys.stderr,
                flush=True,
            )

    await run_worker(args.queue, task_settings(traits), workers=workers, workspace_root=workspace, ready=ready)
    return 0


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--db",
        default=os.environ.get("CLARION_DB"),
        help="DuckDB file (default: $CLARION_DB or the server extension's file)",
    )
    common.add_argument("--workers", type=int, help="concurrent steps (default: the extension's workers, or 8)")
    common.add_argument(
        "--workspace",
        "--workspace-root",
        dest="workspace",
        help="workspace root for file and shell steps (default: the extension's workspace_root, or the current folder)",
    )
    common.add_argument("--json", action="store_true", help="print the API's JSON document")
    common.add_argument(
        "--verbose", "-v", action="store_true", help="say whether the embedded engine or a running server is used"
    )

    parser = argparse.ArgumentParser(prog="clarion", description="Run and inspect Clarion workflows.")
    sub = parser.add_subparsers(dest="command", required=True)

    def add(
        name: str, handler: Callable[[argparse.Namespace], Awaitable[int]], help_: str, parent: Any = sub
    ) -> argparse.ArgumentParser:
        command = parent.add_parser(name, parents=[common], help=help_, description=help_)
        command.set_defaults(handler=handler)
        return command

    add("validate", cmd_validate, "check a workflow file and list every problem").add_argument("file")
    run = add(
        "run", cmd_run, "run a workflow file with live progress; exit code 0 on success, 3 while it waits for approval"
    )
    run.add_argument("file")
    run.add_argument(
        "--input", "-i", action="append", default=[], metavar="KEY=VALUE", help="a workflow input (repeatable)"
    )
    runs = add("runs", cmd_runs, "list runs, newest first")
    runs.add_argument("--workflow", help="only runs of this workflow id")
    runs.add_argument("--status", choices=[s.value for s in RunStatus])
    runs.add_argument("--limit", type=int, default=20)
    add("show", cmd_show, "show one run with its steps").add_argument("run_id")
    add("resume", cmd_resume, "finish runs that a crash interrupted").add_argument("run_id", nargs="?")
    add("worker", cmd_worker, "run step jobs from a broker queue until SIGINT or SIGTERM").add_argument(
        "--queue",
        required=True,
        help="the server's queue_url: redis://HOST:6379/0 or nats://HOST:4222, with ?prefix=...&visibility_timeout=S",
    )
    agent = sub.add_parser("agent", help="run an agent").add_subparsers(dest="agent_command", required=True)
    agent_run = add(
        "run", cmd_agent_run, "run an agent on a prompt (and files); review its file changes before they apply", agent
    )
    agent_run.add_argument("agent", help="the agent's id")
    agent_run.add_argument("prompt", help="the task for the agent")
    agent_run.add_argument(
        "--file", "-f", action="append", default=[], metavar="PATH", help="a workspace file to send (repeatable)"
    )
    agent_run.add_argument(
        "--var", action="append", default=[], metavar="NAME=VALUE", help="a user variable of the agent (repeatable)"
    )
    agent_run.add_argument(
        "--apply",
        choices=["review", "auto", "never"],
        default="review",
        help="review the diff first (default), apply at once, or never",
    )
    for name, handler, verb in (("approve", cmd_approve, "let"), ("reject", cmd_reject, "refuse")):
        decide = add(name, handler, f"{verb} a step that waits for approval, then follow the run")
        decide.add_argument("run_id")
        decide.add_argument("step", help="the step's key, e.g. apply or write[0]")
        decide.add_argument("--comment", "-m", help="a note kept with the decision")
    agents = sub.add_parser("agents", help="manage agents").add_subparsers(dest="agents_command", required=True)
    imports = add("import", cmd_agents_import, "import Clarion v2 agents and runs (clarion.db, YAML, JSON)", agents)
    imports.add_argument("path", help="a clarion.db, the test_storage/ folder, agent files, or a folder of them")
    imports.add_argument("--dry-run", action="store_true", help="show what would change and save nothing")
    add("list", cmd_agents_list, "list agents", agents)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return asyncio.run(args.handler(args))
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except ValidationFailed as exc:
        print(f"error: {exc.message.split(':')[0]}:", file=sys.stderr)
        for problem in exc.problems:
            print(f"  - {problem}", file=sys.stderr)
        return EXIT_FAILED
    except ClarionError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        problems = exc.details if isinstance(exc.details, list) else []
        for problem in problems:
            if isinstance(problem, dict) and "message" in problem:
                print(f"  - {problem.get('loc', '')}: {problem['message']}", file=sys.stderr)
        return EXIT_USAGE if exc.status not in (404, 409) else EXIT_FAILED
    except FileNotFoundError as exc:
        print(f"error: {exc.strerror}: {exc.filename}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
