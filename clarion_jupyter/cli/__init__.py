"""The ``clarion`` command: validate, run, inspect, cancel and approve workflows and agent runs.

Every command runs on the embedded engine, or through the Jupyter server that holds the
database when one does (``--verbose`` says which), with the extension's configuration. The
commands are :mod:`.commands`; how they look on a terminal is :mod:`.render`.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Awaitable, Callable
from typing import Any

from ..core.errors import ClarionError, ValidationFailed
from ..core.protocol import RunStatus
from .agents import cmd_agents_edit, cmd_agents_set
from .commands import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_USAGE,
    cmd_agent_rerun,
    cmd_agent_run,
    cmd_agents_import,
    cmd_agents_list,
    cmd_approve,
    cmd_cache_clear,
    cmd_cache_stats,
    cmd_cancel,
    cmd_compare,
    cmd_reject,
    cmd_rerun,
    cmd_resume,
    cmd_run,
    cmd_runs,
    cmd_runs_delete,
    cmd_show,
    cmd_validate,
    cmd_worker,
    cmd_workflows_delete,
)

RUN_ID_HELP = "the run's id, or a unique prefix of it (6 characters or more)"
CACHE_HELP = (
    "answer this run's LLM calls from the LLM cache when the same request was answered before "
    "(--no-cache: always call); a step's with.cache still wins (default: the agents' and the server's choice)"
)


def add_budget_flags(command: argparse.ArgumentParser) -> None:
    """``--budget-usd`` and ``--budget-tokens``: the run's budget, over the workflow's ``budget:``."""
    command.add_argument("--budget-usd", type=float, metavar="USD", help="most the run may spend on LLM calls, in USD")
    command.add_argument("--budget-tokens", type=int, metavar="N", help="most tokens the run's LLM calls may use")


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
    run.add_argument(
        "--save", action="store_true", help="also save the workflow under its id (a run alone never changes saved ones)"
    )
    add_budget_flags(run)
    run.add_argument("--cache", action=argparse.BooleanOptionalAction, help=CACHE_HELP)
    runs = add("runs", cmd_runs, "list runs, newest first")
    runs.add_argument("--workflow", help="only runs of this workflow id")
    runs.add_argument("--status", choices=[s.value for s in RunStatus])
    runs.add_argument("--limit", type=int, default=20)
    delete = add(
        "delete",
        cmd_runs_delete,
        "delete finished runs with all they stored (asks first on a terminal)",
        runs.add_subparsers(dest="runs_command"),
    )
    delete.add_argument("run_id", nargs="?", help=RUN_ID_HELP)
    delete.add_argument("--workflow", help="the finished runs of this workflow id")
    delete.add_argument("--status", choices=[s.value for s in RunStatus if s.terminal])
    delete.add_argument("--all", action="store_true", help="every finished run")
    delete.add_argument("--yes", "-y", action="store_true", help="do not ask (required when stdin is not a terminal)")
    add("show", cmd_show, "show one run with its steps").add_argument("run_id", help=RUN_ID_HELP)
    add("cancel", cmd_cancel, "cancel a run and follow it until it has stopped").add_argument(
        "run_id", help=RUN_ID_HELP
    )
    rerun = add("rerun", cmd_rerun, "run a finished run again with changes, reusing the steps no change reaches")
    rerun.add_argument("run_id", help=RUN_ID_HELP)
    rerun.add_argument("--from", dest="from_step", metavar="STEP", help="run this step and what reads it again")
    rerun.add_argument(
        "--input", "-i", action="append", default=[], metavar="KEY=VALUE", help="a changed input (repeatable)"
    )
    rerun.add_argument("--model", help="another model for the agents (this run only)")
    rerun.add_argument("--agent", help="with --model: only this agent's model")
    add_budget_flags(rerun)
    rerun.add_argument("--cache", action=argparse.BooleanOptionalAction, help=CACHE_HELP)
    add("compare", cmd_compare, "compare runs step by step; * marks the steps that differ").add_argument(
        "run_ids", nargs="+", metavar="RUN_ID", help=RUN_ID_HELP
    )
    add("resume", cmd_resume, "finish runs that a crash interrupted").add_argument(
        "run_id", nargs="?", help=RUN_ID_HELP
    )
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
    add_budget_flags(agent_run)
    agent_run.add_argument("--cache", action=argparse.BooleanOptionalAction, help=CACHE_HELP)
    agent_rerun = add(
        "rerun",
        cmd_agent_rerun,
        "run an imported Clarion v2 run again: a new agent run with its agent, prompt and files",
        agent,
    )
    agent_rerun.add_argument("run_id", help=RUN_ID_HELP)
    add_budget_flags(agent_rerun)
    agent_rerun.add_argument("--cache", action=argparse.BooleanOptionalAction, help=CACHE_HELP)
    for name, handler, verb in (("approve", cmd_approve, "let"), ("reject", cmd_reject, "refuse")):
        decide = add(name, handler, f"{verb} a step that waits for approval, then follow the run")
        decide.add_argument("run_id", help=RUN_ID_HELP)
        decide.add_argument("step", help="the step's key, e.g. apply or write[0]")
        decide.add_argument("--comment", "-m", help="a note kept with the decision")
    agents = sub.add_parser("agents", help="manage agents").add_subparsers(dest="agents_command", required=True)
    imports = add("import", cmd_agents_import, "import Clarion v2 agents and runs (clarion.db, YAML, JSON)", agents)
    imports.add_argument("path", help="a clarion.db, the test_storage/ folder, agent files, or a folder of them")
    imports.add_argument("--dry-run", action="store_true", help="show what would change and save nothing")
    add("list", cmd_agents_list, "list agents", agents)
    add(
        "edit", cmd_agents_edit, "edit an agent as YAML in $EDITOR; saved when the editor exits, if valid", agents
    ).add_argument("agent_id", help="the agent's id")
    setter = add(
        "set", cmd_agents_set, "set fields of an agent: model=..., api_key_env=..., parameters.temperature=0.2", agents
    )
    setter.add_argument("agent_id", help="the agent's id")
    setter.add_argument(
        "pairs", nargs="+", metavar="KEY=VALUE", help="a field (dotted for nested ones) and its value, read as YAML"
    )
    cache = sub.add_parser("cache", help="the LLM cache").add_subparsers(dest="cache_command", required=True)
    clear = add(
        "clear", cmd_cache_clear, "delete cached LLM replies (every one, unless --agent or --older-than)", cache
    )
    clear.add_argument("--agent", help="only the replies to this agent's calls")
    clear.add_argument("--older-than", metavar="AGE", help="only replies stored longer ago than AGE: 7d, 12h, 30m, 45s")
    add("stats", cmd_cache_stats, "what the LLM cache holds: entries, bytes against the cap, by agent", cache)
    workflows = sub.add_parser("workflows", help="manage saved workflows").add_subparsers(
        dest="workflows_command", required=True
    )
    workflow_delete = add("delete", cmd_workflows_delete, "delete a saved workflow (its runs stay)", workflows)
    workflow_delete.add_argument("workflow_id", help="the saved workflow's id")
    workflow_delete.add_argument(
        "--yes", "-y", action="store_true", help="do not ask (required when stdin is not a terminal)"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code = asyncio.run(args.handler(args))
        sys.stdout.flush()  # here, where a reader that went away is handled, not at the interpreter's exit
        return code
    except BrokenPipeError:
        # The reader went away (``clarion runs | head``): what it wanted was printed. Point
        # stdout at nothing, so the interpreter's final flush does not fail again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
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
