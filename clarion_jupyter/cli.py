"""The ``clarion`` command: validate, run and inspect workflows on the embedded engine."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TextIO

import yaml

from .backends import Backend, open_backend
from .core.errors import ClarionError, ValidationFailed
from .core.protocol import EventType
from .storage.records import Event
from .task.registry import TaskRegistry
from .workflow.compiler import compile_workflow
from .workflow.engine import Engine
from .workflow.models import Workflow, WorkflowRun, parse_workflow

EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 1, 2, 130


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
}
STATUS_WORDS = {
    EventType.step_started: "running",
    EventType.step_completed: "succeeded",
    EventType.step_failed: "failed",
    EventType.step_retrying: "retrying",
    EventType.step_skipped: "skipped",
}


class Progress:
    """One line per step transition: mark, step, status, duration and the reason, if any."""

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
        line = f"  {self.style(mark, colour)} {event.step_id:<24} {self.style(STATUS_WORDS[event.type], colour):<10} {duration:>10}  {detail}"
        print(line.rstrip(), file=self.out, flush=True)

    def summary(self, run: WorkflowRun) -> None:
        ok = run.status == "succeeded"
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
        if run.outputs:
            print("  outputs: " + json.dumps(run.outputs, default=str)[:2000], file=self.out)


def parse_inputs(pairs: list[str], workflow: Workflow) -> dict[str, Any]:
    """``k=v`` pairs; values of non-string inputs are read as YAML (``3``, ``[a, b]``, ``true``)."""
    inputs: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ClarionError(f"--input expects key=value, got {pair!r}")
        spec = workflow.inputs.get(key)
        if spec is not None and spec.type == "string":
            inputs[key] = value
        else:
            try:
                inputs[key] = yaml.safe_load(value) if value else value
            except yaml.YAMLError:
                inputs[key] = value
    return inputs


def dump_json(document: Any) -> None:
    print(json.dumps(document, indent=2, default=str))


def _engine(args: argparse.Namespace) -> Engine:
    return Engine(db_path=args.db, workers=args.workers, workspace_root=args.workspace)


async def cmd_validate(args: argparse.Namespace) -> int:
    workflow = parse_workflow(Path(args.file).read_text())
    plan = compile_workflow(workflow, TaskRegistry.from_entry_points())
    print(f"ok: workflow '{workflow.id}' ({len(plan.nodes)} steps, inputs: {', '.join(workflow.inputs) or 'none'})")
    return 0


@asynccontextmanager
async def _backend(args: argparse.Namespace) -> AsyncIterator[Backend]:
    backend = await open_backend(_engine(args))
    try:
        yield backend
    finally:
        await backend.close()


async def cmd_run(args: argparse.Namespace) -> int:
    workflow = parse_workflow(Path(args.file).read_text())
    inputs = parse_inputs(args.input, workflow)
    async with _backend(args) as backend:
        run_id = await backend.submit(workflow, inputs)
        progress = None if args.json else Progress(sys.stdout)
        if progress:
            print(f"run {run_id}: {workflow.name}", flush=True)
        try:
            async for event in backend.subscribe(run_id):
                if progress:
                    progress.event(event)
        except asyncio.CancelledError:
            await backend.cancel(run_id)
            raise
        run = await backend.get_run(run_id)
    if progress:
        progress.summary(run)
    else:
        dump_json(run.model_dump(mode="json"))
    return 0 if run.status == "succeeded" else EXIT_FAILED


async def cmd_runs(args: argparse.Namespace) -> int:
    async with _backend(args) as backend:
        runs, cursor = await backend.list_runs(args.workflow, args.status, args.limit)
    if args.json:
        dump_json({"runs": [r.model_dump(mode="json") for r in runs], "next_cursor": cursor})
        return 0
    style = Style(sys.stdout)
    for run in runs:
        colour = {"succeeded": "32", "failed": "31", "cancelled": "33"}.get(run.status.value, "36")
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
    async with _engine(args) as engine:
        run_ids = [args.run_id] if args.run_id else list(engine.resumed)
        if args.run_id and args.run_id not in engine.resumed:
            run = await engine.get_run(args.run_id)
            print(f"run {run.run_id} is {run.status.value}: nothing to resume")
            return 0 if run.status == "succeeded" else EXIT_FAILED
        if not run_ids:
            print("no interrupted runs")
            return 0
        runs = await asyncio.gather(*(engine.wait(r) for r in run_ids))
    progress = Progress(sys.stdout)
    for run in runs:
        progress.summary(run)
    return 0 if all(r.status == "succeeded" for r in runs) else EXIT_FAILED


async def cmd_agents_import(args: argparse.Namespace) -> int:
    async with _engine(args) as engine:
        report = await engine.import_v2(args.path, dry_run=args.dry_run)
    if args.json:
        dump_json(report.as_dict())
    else:
        print("\n".join(report.summary_lines()))
        for warning in report.warnings:
            print(f"warning: {warning.source}: {warning.message}", file=sys.stderr)
        for error in report.errors:
            print(f"error: {error.source}: {error.message}", file=sys.stderr)
    return 0 if report.complete else EXIT_FAILED


async def cmd_agents_list(args: argparse.Namespace) -> int:
    async with _engine(args) as engine:
        agents = await engine.agents.list()
    if args.json:
        dump_json([a.model_dump(mode="json") for a in agents])
    else:
        for agent in agents:
            print(f"{agent.id:<24} {agent.model}")
    return 0


async def cmd_worker(args: argparse.Namespace) -> int:
    from .task.worker import run_worker

    await run_worker(args.queue, workers=args.workers, workspace_root=args.workspace)
    return 0


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--db",
        default=os.environ.get("CLARION_DB"),
        help="DuckDB file (default: $CLARION_DB or the server extension's file)",
    )
    common.add_argument("--workers", type=int, default=8, help="concurrent steps")
    common.add_argument("--workspace", default=".", help="workspace root for file and shell steps")
    common.add_argument("--json", action="store_true", help="print the API's JSON document")

    parser = argparse.ArgumentParser(prog="clarion", description="Run and inspect Clarion workflows.")
    sub = parser.add_subparsers(dest="command", required=True)

    def add(
        name: str, handler: Callable[[argparse.Namespace], Awaitable[int]], help_: str, parent: Any = sub
    ) -> argparse.ArgumentParser:
        command = parent.add_parser(name, parents=[common], help=help_, description=help_)
        command.set_defaults(handler=handler)
        return command

    add("validate", cmd_validate, "check a workflow file and list every problem").add_argument("file")
    run = add("run", cmd_run, "run a workflow file with live progress; exit code 0 only on success")
    run.add_argument("file")
    run.add_argument(
        "--input", "-i", action="append", default=[], metavar="KEY=VALUE", help="a workflow input (repeatable)"
    )
    runs = add("runs", cmd_runs, "list runs, newest first")
    runs.add_argument("--workflow", help="only runs of this workflow id")
    runs.add_argument("--status", choices=["queued", "running", "succeeded", "failed", "cancelled"])
    runs.add_argument("--limit", type=int, default=20)
    add("show", cmd_show, "show one run with its steps").add_argument("run_id")
    add("resume", cmd_resume, "finish runs that a crash interrupted").add_argument("run_id", nargs="?")
    add("worker", cmd_worker, "process step jobs from a broker queue").add_argument(
        "--queue", required=True, help="redis://... or nats://..."
    )
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
        return EXIT_USAGE if exc.status != 404 else EXIT_FAILED
    except FileNotFoundError as exc:
        print(f"error: {exc.strerror}: {exc.filename}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
