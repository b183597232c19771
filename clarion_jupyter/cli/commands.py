"""The ``clarion`` commands: each one a coroutine on the :class:`~clarion_jupyter.api.Clarion`
interface, so it runs the same on the embedded engine and through a running server."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, suppress
from pathlib import Path
from typing import Any

import yaml

from ..agent.migration import summary_lines
from ..api import Clarion, connect, save_workflow
from ..core.errors import ClarionError
from ..core.protocol import EventType, RunStatus
from ..settings import configured_engine, configured_traits, task_settings
from ..task.registry import TaskRegistry
from ..workflow.agent_run import AgentRunRequest
from ..workflow.agent_runs import context_lines, refuse_over_cap
from ..workflow.budget import given_budget, parse_budget
from ..workflow.compare import RunComparison, StepInRun
from ..workflow.engine import Engine
from ..workflow.fold import fold, initial
from ..workflow.models import Workflow, WorkflowRun, parse_workflow
from ..workflow.rerun import model_overrides
from ..workflow.v2_rerun import rerun_imported
from ..workflow.validation import DEFAULT_MAX_STEPS, WorkflowValidator
from .render import RUN_COLOURS, Progress, ReplyProgress, Style, dump_json

EXIT_FAILED, EXIT_USAGE, EXIT_WAITING, EXIT_INTERRUPTED = 1, 2, 3, 130


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


def _engine(args: argparse.Namespace) -> Engine:
    """An engine as the server extension is configured (its traits), the command line winning."""
    return configured_engine(args.db, workers=args.workers, workspace_root=args.workspace)


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
async def _clarion(args: argparse.Namespace) -> AsyncIterator[Clarion]:
    clarion = await connect(_engine(args))
    if args.verbose:
        print(f"(using {clarion})", file=sys.stderr)
    try:
        yield clarion
    finally:
        await clarion.aclose()


async def _follow(clarion: Clarion, run_id: str, progress: Progress | None, since: int = 0) -> WorkflowRun:
    """Print the run's events until it ends, or waits for a person (then the CLI's part is done:
    the run stays waiting, durably, until ``clarion approve`` or ``reject``). The run's state is
    the one event fold's, as in the notebook and the sidebar: no refetch per event."""
    start = await clarion.get_run(run_id)
    state = initial(start.model_dump(mode="json"))
    try:
        async for event in clarion.subscribe(run_id, since):
            if progress:
                progress.event(event)
            state = fold(state, event.as_dict())
            if state["run"]["status"] == RunStatus.waiting.value:
                break
    except asyncio.CancelledError:
        await clarion.cancel(run_id)
        await clarion.wait(run_id)  # stopped and stored before the engine closes
        raise
    return WorkflowRun.model_validate(state["run"])


async def _announced(clarion: Clarion, run_id: str, progress: Progress | None, title: str) -> WorkflowRun:
    """Say which run this is (not with ``--json``), then follow it as :func:`_follow` does."""
    if progress:
        print(title, flush=True)
    return await _follow(clarion, run_id, progress)


def _finish(run: WorkflowRun, progress: Progress | None) -> int:
    """Exit 0 only when the run succeeded; 3 while it waits for a decision (a script must not go
    on as if it were done), 1 when it failed or was cancelled."""
    if progress:
        progress.summary(run)
    else:
        dump_json(run.model_dump(mode="json"))
    return _exit_code([run])


def _exit_code(runs: list[WorkflowRun]) -> int:
    if any(r.status != RunStatus.succeeded and r.status != RunStatus.waiting for r in runs):
        return EXIT_FAILED
    return EXIT_WAITING if any(r.status == RunStatus.waiting for r in runs) else 0


async def cmd_run(args: argparse.Namespace) -> int:
    text = Path(args.file).read_text()
    workflow = parse_workflow(text)
    inputs = parse_inputs(args.input, workflow)
    async with _clarion(args) as clarion:
        if args.save:
            await save_workflow(clarion, workflow, text)
        run_id = await clarion.submit(
            workflow, inputs, budget=given_budget(args.budget_usd, args.budget_tokens), cache=args.cache
        )
        progress = None if args.json else Progress(sys.stdout)
        run = await _announced(clarion, run_id, progress, f"run {run_id}: {workflow.name}")
    return _finish(run, progress)


async def cmd_rerun(args: argparse.Namespace) -> int:
    """Run a finished run again with changes; its steps no change reaches are copied, not run."""
    async with _clarion(args) as clarion:
        parent = await clarion.get_run(args.run_id)
        inputs = parse_inputs(args.input, parse_workflow(parent.workflow or {}))
        overrides = model_overrides(parent.workflow or {}, args.model, args.agent) if args.model else None
        budget = given_budget(args.budget_usd, args.budget_tokens)
        run = await clarion.rerun(
            parent.run_id, from_step=args.from_step, inputs=inputs, overrides=overrides, budget=budget, cache=args.cache
        )
        progress = None if args.json else Progress(sys.stdout)
        run = await _announced(clarion, run.run_id, progress, f"run {run.run_id}: re-run of {parent.run_id}")
    return _finish(run, progress)


async def cmd_compare(args: argparse.Namespace) -> int:
    async with _clarion(args) as clarion:
        comparison = await clarion.compare_runs(args.run_ids)
    if args.json:
        dump_json(comparison.model_dump(mode="json"))
    else:
        _print_comparison(comparison, Style(sys.stdout))
    return 0


def _print_comparison(comparison: RunComparison, style: Style) -> None:
    """The runs by letter (id, status, totals, what each changed), then one line per step:
    ``*`` where the runs differ, each run's status and duration (``=`` where it was reused),
    and under a differing step what its outputs were."""
    letters = [chr(ord("A") + i) for i in range(len(comparison.runs))]
    for letter, run in zip(letters, comparison.runs, strict=True):
        totals = run.totals
        took = "" if totals.get("duration_ms") is None else f", {totals['duration_ms']:.0f} ms"
        changes = (
            f", re-run of {run.parent_run_id}: {json.dumps(run.changes, default=str)}" if run.parent_run_id else ""
        )
        print(f"{letter} {run.run_id} {run.status}{took}, {totals.get('tokens') or 0} tokens{changes}")
    width = max([len("step"), *(len(compared.key) for compared in comparison.steps)])
    print((f"  {'step':<{width}}" + "".join(f"  {letter:<22}" for letter in letters)).rstrip())
    for compared in comparison.steps:
        cells = "".join(f"  {_step_cell(s):<22}" for s in compared.per_run)
        mark = style("*", "33") if compared.differs else " "
        print(f"{mark} {compared.key:<{width}}{cells}".rstrip())
        if compared.differs:
            for letter, step in zip(letters, compared.per_run, strict=True):
                print(f"    {letter}: {json.dumps(step.output, default=str)[:200]}")


def _step_cell(step: StepInRun) -> str:
    if step.status is None:
        return "-"
    took = "" if step.duration_ms is None else f" {step.duration_ms:.0f} ms"
    return f"{'= ' if step.reused_from else ''}{step.status}{took}"


async def cmd_cache_clear(args: argparse.Namespace) -> int:
    """Delete cached LLM replies: an agent's, those older than an age, or every one."""
    async with _clarion(args) as clarion:
        deleted = await clarion.clear_cache(agent_id=args.agent, older_than=args.older_than)
    if args.json:
        dump_json({"deleted": deleted})
    else:
        print(f"deleted {deleted} cached repl{'y' if deleted == 1 else 'ies'}")
    return 0


async def cmd_cache_stats(args: argparse.Namespace) -> int:
    async with _clarion(args) as clarion:
        stats = await clarion.cache_stats()
    if args.json:
        dump_json(stats.model_dump(mode="json"))
        return 0
    share = stats.bytes / stats.max_bytes * 100
    print(f"{stats.entries} cached repl{'y' if stats.entries == 1 else 'ies'}, {stats.bytes:,} bytes "
          f"({share:.1f}% of the {stats.max_bytes:,}-byte cap); server default: {'on' if stats.server_default else 'off'}")  # fmt: skip
    if stats.oldest is not None:
        print(f"oldest {stats.oldest:%Y-%m-%d %H:%M:%S}, newest {stats.newest:%Y-%m-%d %H:%M:%S} (UTC)")
    for agent_id, count in stats.agents.items():
        print(f"  {agent_id:<24} {count}")
    return 0


async def cmd_runs(args: argparse.Namespace) -> int:
    async with _clarion(args) as clarion:
        runs, cursor = await clarion.list_runs(workflow_id=args.workflow, status=args.status, limit=args.limit)
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


async def _confirmed(args: argparse.Namespace, question: str) -> bool:
    """``--yes``, or a ``y`` typed on a terminal; without a terminal to ask on, only ``--yes``."""
    if args.yes:
        return True
    if not sys.stdin.isatty():
        raise ClarionError(f"{question}: stdin is not a terminal to confirm on, give --yes")
    answer = await asyncio.to_thread(input, f"{question} [y/N] ")
    return answer.strip().lower() in ("y", "yes")


async def cmd_runs_delete(args: argparse.Namespace) -> int:
    """Delete one finished run, or the finished runs of a workflow and/or status, or (``--all``) every one."""
    chosen = (args.run_id is not None, args.workflow is not None or args.status is not None, args.all)
    if sum(chosen) != 1:
        raise ClarionError("give a RUN_ID, or --workflow and/or --status, or --all (one of them)")
    if args.run_id is not None:
        question = f"delete run {args.run_id}?"
    elif args.all:
        question = "delete every finished run?"
    else:
        which = " and ".join(
            part for part in (args.workflow and f"workflow {args.workflow}", args.status and args.status) if part
        )
        question = f"delete the finished runs of {which}?"
    if not await _confirmed(args, question):
        print("nothing deleted")
        return EXIT_FAILED
    async with _clarion(args) as clarion:
        deleted = await clarion.delete_runs(run_id=args.run_id, workflow_id=args.workflow, status=args.status)
    if args.json:
        dump_json({"deleted": deleted})
    else:
        print(f"deleted {deleted} run{'' if deleted == 1 else 's'}")
    return 0


async def cmd_workflows_delete(args: argparse.Namespace) -> int:
    """Delete a saved workflow (its runs stay: each keeps its own copy of the workflow)."""
    if not await _confirmed(args, f"delete workflow {args.workflow_id}?"):
        print("nothing deleted")
        return EXIT_FAILED
    async with _clarion(args) as clarion:
        await clarion.delete_workflow(args.workflow_id)
    print(f"deleted workflow {args.workflow_id}")
    return 0


async def cmd_show(args: argparse.Namespace) -> int:
    async with _clarion(args) as clarion:
        run = await clarion.get_run(args.run_id)
        events = [] if args.json else await clarion.events(run.run_id)
    if args.json:
        dump_json(run.model_dump(mode="json"))
        return 0
    print(f"run {run.run_id}: {run.workflow_name} ({run.workflow_id})")
    progress = Progress(sys.stdout)
    progress.agent_request(run)
    for event in events:
        if event.type != EventType.step_started:
            progress.event(event)
    progress.summary(run)
    return 0


async def cmd_resume(args: argparse.Namespace) -> int:
    """An engine start resumes what a crash interrupted; this follows those runs to their end."""
    async with _clarion(args) as clarion:
        if args.run_id:
            run = await clarion.get_run(args.run_id)
            if run.status.terminal:
                print(f"run {run.run_id} is {run.status.value}: nothing to resume")
                return 0 if run.status == RunStatus.succeeded else EXIT_FAILED
            run_ids = [run.run_id]
        else:
            run_ids = await _unfinished(clarion)
        if not run_ids:
            print("no interrupted runs")
            return 0
        runs = await asyncio.gather(*(_follow(clarion, r, None) for r in run_ids))
    progress = Progress(sys.stdout)
    for run in runs:
        progress.summary(run)
    return _exit_code(runs)


async def cmd_agent_run(args: argparse.Namespace) -> int:
    request = AgentRunRequest(
        prompt=args.prompt, files=args.file, variables=parse_pairs(args.var, "--var"), apply=args.apply,
        budget=parse_budget(given_budget(args.budget_usd, args.budget_tokens)), cache=args.cache,
    )  # fmt: skip
    async with _clarion(args) as clarion:
        prompt = await clarion.prompt_agent(args.agent, request)
        if not args.json:
            print("\n".join(context_lines(prompt)), flush=True)  # what is sent is known before it is sent
        refuse_over_cap(prompt)
        run_id = await clarion.run_agent(args.agent, request)
        progress = None if args.json else ReplyProgress(sys.stdout)
        run = await _announced(clarion, run_id, progress, f"run {run_id}: agent {args.agent}")
    return _finish(run, progress)


async def cmd_agent_rerun(args: argparse.Namespace) -> int:
    """Repeat a run imported from Clarion v2 as a new agent run (same agent, prompt and files)."""
    async with _clarion(args) as clarion:
        run_id = await rerun_imported(
            clarion, args.run_id, parse_budget(given_budget(args.budget_usd, args.budget_tokens)), args.cache
        )
        progress = None if args.json else ReplyProgress(sys.stdout)
        if progress:
            progress.agent_request(await clarion.get_run(run_id), f"run {run_id}: agent")
        run = await _follow(clarion, run_id, progress)
    return _finish(run, progress)


async def _decide(args: argparse.Namespace, approve: bool) -> int:
    async with _clarion(args) as clarion:
        run = await clarion.get_run(args.run_id)
        decide = clarion.approve if approve else clarion.reject
        await decide(run.run_id, args.step, comment=args.comment)
        progress = None if args.json else Progress(sys.stdout)
        run = await _follow(clarion, run.run_id, progress, run.last_seq)
    return _finish(run, progress)


async def cmd_cancel(args: argparse.Namespace) -> int:
    """Cancel a run and follow it to its end (its running steps are stopped, processes killed)."""
    async with _clarion(args) as clarion:
        run = await clarion.get_run(args.run_id)
        await clarion.cancel(run.run_id)
        run = await _follow(clarion, run.run_id, None if args.json else Progress(sys.stdout), run.last_seq)
    if args.json:
        dump_json(run.model_dump(mode="json"))
    else:
        Progress(sys.stdout).summary(run)
    return 0 if run.status == RunStatus.cancelled else EXIT_FAILED


async def _unfinished(clarion: Clarion) -> list[str]:
    """Runs a crash left unfinished: an engine's start resumed them, so they are the active ones."""
    run_ids = []
    for status in (RunStatus.running, RunStatus.waiting, RunStatus.queued):
        run_ids += [r.run_id for r in (await clarion.list_runs(status=status.value, limit=500)).runs]
    return run_ids


async def cmd_approve(args: argparse.Namespace) -> int:
    return await _decide(args, approve=True)


async def cmd_reject(args: argparse.Namespace) -> int:
    return await _decide(args, approve=False)


async def cmd_agents_import(args: argparse.Namespace) -> int:
    async with _clarion(args) as clarion:
        report = await clarion.import_agents(Path(args.path), dry_run=args.dry_run)
    if args.json:
        dump_json(report)
    else:
        print("\n".join(summary_lines(report, server=not isinstance(clarion, Engine))))
        for warning in report["warnings"]:
            print(f"warning: {warning['source']}: {warning['message']}", file=sys.stderr)
        for error in report["errors"]:
            print(f"error: {error['source']}: {error['message']}", file=sys.stderr)
    return EXIT_FAILED if report["errors"] else 0


async def cmd_agents_list(args: argparse.Namespace) -> int:
    async with _clarion(args) as clarion:
        agents = await clarion.list_agents()
    if args.json:
        dump_json([a.model_dump(mode="json") for a in agents])
    else:
        for agent in agents:
            print(f"{agent.id:<24} {agent.name:<32} {agent.model}")
    return 0


async def cmd_worker(args: argparse.Namespace) -> int:
    """Run steps from the broker until SIGINT or SIGTERM, with the server's configured policy."""
    from ..task.worker import run_worker

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
