"""``%%clarion`` and ``%clarion``: workflows, agents and run history from notebook cells.

Arguments are parsed with argparse; every mistake is an IPython ``UsageError`` (a readable
message under the cell, no traceback), and so is an invalid workflow, listing every problem
with its step and field. Values of ``--input``/``--var`` are YAML scalars, or Python values
of the user's namespace: ``$name`` is the variable itself and ``{expr}`` the expression's
value (not their text, as IPython's own ``$`` expansion would give).
"""

from __future__ import annotations

import argparse
import shlex
import sys
import threading
from dataclasses import asdict, is_dataclass
from typing import Any, NoReturn

import yaml
from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_cell_magic, magics_class, no_var_expand
from IPython.display import display
from pydantic import ValidationError

from ..agent.models import Agent
from ..api import save_agent, save_workflow
from ..core.errors import ClarionError, ValidationFailed
from ..core.protocol import RunStatus
from ..workflow.agent_run import AgentRunRequest
from ..workflow.agent_runs import context_lines, refuse_over_cap
from ..workflow.budget import given_budget
from ..workflow.models import load_document, parse_workflow, pydantic_problems
from .loop import BackgroundLoop
from .run import Run
from .session import Session
from .tables import table

HELP = """Clarion: workflows and agents in notebook cells.

  %%clarion [--input k=v ...] [--save] [--cache | --no-cache] [--budget USD] [--budget-tokens N]
            [--no-wait] [--local] [--name VAR]
  <workflow YAML>
      Run the workflow in the cell; a live widget follows it and the cell leaves a Run
      handle in `_` (and in VAR). --save stores the workflow under its id (`%clarion run ID`
      runs it again); --cache answers LLM calls made before from the LLM cache, so running
      the cell again pays nothing twice (--no-cache: always call; a step's with.cache wins);
      --budget and --budget-tokens cap what the run's LLM calls may spend (over the
      workflow's `budget:`); --no-wait returns at once; --local uses an engine in this kernel.
      The stop button (interrupt) cancels a run the cell waits for.

  %%clarion agent AGENT_ID [--file PATH ...] [--var k=v ...] [--apply review|auto|never]
  <the prompt>
      Run an agent on the prompt (and the files); the reply is rendered, and its file
      changes shown as a diff with Apply / Discard (--apply review, the default).

  %%clarion save-agent
  <agent YAML: id, name, model, system_prompt, parameters, api_key_env, ...>
      Create the agent, or replace the one with that id.

  %%clarion sql            SQL over the run history (the cell's body), as a table
  %clarion sql SELECT ...  the same on one line; views: runs, steps, events, llm_calls
  %clarion runs [--limit N] [--status S] [--workflow ID]   recent runs
  %clarion show RUN_ID     the widget of any run (live while it runs; its Run in `_`)
  %clarion cancel RUN_ID
  %clarion rerun RUN_ID [--from STEP] [--input k=v ...] [--model M [--agent A]] [--cache] [--budget USD] [--budget-tokens N] [--no-wait] [--name VAR]
      run a finished run again with changes; the steps no change reaches are copied
  %clarion compare RUN_ID RUN_ID [...]   the runs side by side; the steps that differ marked
  %clarion approve RUN_ID STEP [--comment TEXT]
  %clarion reject RUN_ID STEP [--comment TEXT]
  %clarion agents          the agents
  %clarion workflows       the saved workflows
  %clarion run ID [--input k=v ...] [--cache] [--budget USD] [--budget-tokens N] [--no-wait] [--name VAR]
      run a saved workflow
  %clarion help            this text

Input values are YAML scalars (3, true, [a, b], text), or from this notebook: $name is the
variable's value, {expr} the expression's. Every line magic also takes --local.
"""


class _Parser(argparse.ArgumentParser):
    """argparse that reports mistakes as UsageError instead of exiting the kernel."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{self.prog}: {message}\nusage: {self.format_usage().removeprefix('usage: ').strip()}")

    def exit(self, status: int = 0, message: str | None = None) -> NoReturn:
        raise UsageError(message or HELP)


def _identifier(value: str) -> str:
    if not value.isidentifier():
        raise argparse.ArgumentTypeError(f"'{value}' is not a Python variable name")
    return value


def _parser(name: str, *, wait: bool = True, budget: bool = False) -> _Parser:
    """``budget``: the run's ``--budget USD`` and ``--budget-tokens N``."""
    parser = _Parser(prog=f"%clarion {name}".strip(), add_help=False)
    parser.add_argument("--local", action="store_true")
    if wait:
        parser.add_argument("--no-wait", action="store_true")
        parser.add_argument("--name", metavar="VAR", type=_identifier)
    if budget:
        parser.add_argument("--budget", type=float, metavar="USD")
        parser.add_argument("--budget-tokens", type=int, metavar="N")
    return parser


def _budget(opts: argparse.Namespace) -> dict[str, Any] | None:
    return given_budget(opts.budget, opts.budget_tokens)


def _cached(parser: _Parser) -> _Parser:
    """``--cache`` / ``--no-cache``: the run's choice for the LLM cache (unset: None)."""
    parser.add_argument("--cache", action=argparse.BooleanOptionalAction)
    return parser


WORKFLOW = _cached(_parser("", budget=True))
WORKFLOW.prog = "%%clarion"
WORKFLOW.add_argument("--input", action="append", default=[], metavar="k=v")
WORKFLOW.add_argument("--save", action="store_true")
AGENT = _parser("agent")
AGENT.add_argument("agent_id")
AGENT.add_argument("--file", action="append", default=[], metavar="PATH")
AGENT.add_argument("--var", action="append", default=[], metavar="k=v")
AGENT.add_argument("--apply", choices=["review", "auto", "never"], default="review")
RUN = _cached(_parser("run", budget=True))
RUN.add_argument("workflow_id")
RUN.add_argument("--input", action="append", default=[], metavar="k=v")
RUNS = _parser("runs", wait=False)
RUNS.add_argument("--limit", type=int, default=20)
RUNS.add_argument("--status", choices=[s.value for s in RunStatus])
RUNS.add_argument("--workflow")
SHOW = _parser("show", wait=False)
SHOW.add_argument("run_id")
CANCEL = _parser("cancel", wait=False)
CANCEL.add_argument("run_id")
RERUN = _cached(_parser("rerun", budget=True))
RERUN.add_argument("run_id")
RERUN.add_argument("--from", dest="from_step", metavar="STEP")
RERUN.add_argument("--input", action="append", default=[], metavar="k=v")
RERUN.add_argument("--model")
RERUN.add_argument("--agent")
COMPARE = _parser("compare", wait=False)
COMPARE.add_argument("run_ids", nargs="+", metavar="RUN_ID")
DECIDE = {name: _parser(name, wait=False) for name in ("approve", "reject")}
for _decide in DECIDE.values():
    _decide.add_argument("run_id")
    _decide.add_argument("step")
    _decide.add_argument("--comment")
SAVE_AGENT = _parser("save-agent", wait=False)
LISTS = {name: _parser(name, wait=False) for name in ("agents", "workflows")}
SUBCOMMANDS = (
    "runs",
    "show",
    "cancel",
    "rerun",
    "compare",
    "approve",
    "reject",
    "agents",
    "workflows",
    "run",
    "sql",
    "help",
)


@magics_class
class ClarionMagics(Magics):
    """``%%clarion`` and ``%clarion``: a notebook's door to the interface, with one background loop per kernel so cells can block without blocking widgets' comms."""

    def __init__(self, shell: Any) -> None:
        super().__init__(shell)
        self.loop = BackgroundLoop()
        embedded = Session(self.loop)
        self.sessions = {True: embedded, False: Session(self.loop, embedded=embedded)}
        # Before the interpreter shuts thread pools down (``atexit`` is too late: the engine's
        # close needs them), so a kernel that exits stops its embedded engine cleanly. This is
        # the hook concurrent.futures itself uses; its callbacks run newest first.
        threading._register_atexit(self.close)

    def close(self) -> None:
        """Stop the embedded engine (its journal folded in, the database checkpointed) and the client."""
        for session in (self.sessions[False], self.sessions[True]):
            session.close()

    def session(self, local: bool = False) -> Session:
        """The kernel's server, else the embedded engine; with ``local``, the embedded engine."""
        return self.sessions[local]

    @no_var_expand
    @line_cell_magic
    def clarion(self, line: str, cell: str | None = None) -> Any:
        args = _split(line)
        try:
            if cell is None:
                return self._line(args)
            if args[:1] == ["agent"]:
                return self._agent_cell(args[1:], cell)
            if args[:1] == ["sql"]:
                return self._sql(args[1:], cell)
            if args[:1] == ["save-agent"]:
                return self._save_agent(args[1:], cell)
            return self._workflow_cell(args, cell)
        except ClarionError as exc:
            raise UsageError(_explain(exc)) from None

    clarion.__doc__ = HELP

    # -- cells -------------------------------------------------------------------

    def _workflow_cell(self, args: list[str], cell: str) -> None:
        opts = WORKFLOW.parse_args(args)
        inputs = self._values(opts.input, "--input")
        # The editor counts the %%clarion line as line 1: so do the problems' line numbers.
        workflow = parse_workflow("\n" + cell)
        session = self.session(opts.local)
        clarion = session.clarion()
        if opts.save:
            self.loop.run(save_workflow(clarion, workflow, cell))
        run_id = self.loop.run(clarion.submit(workflow, inputs, budget=_budget(opts), cache=opts.cache))
        return self._present(Run(session, run_id, workflow=workflow), opts.no_wait, opts.name)

    def _agent_cell(self, args: list[str], cell: str) -> None:
        opts = AGENT.parse_args(args)
        variables = self._values(opts.var, "--var")
        if not cell.strip():
            raise UsageError("%%clarion agent: the cell is the prompt, and it is empty")
        session = self.session(opts.local)
        clarion = session.clarion()
        doc = {"prompt": cell.strip(), "variables": variables, "files": opts.file, "apply": opts.apply}
        try:
            request = AgentRunRequest.model_validate(doc)
        except ValidationError as exc:
            raise ValidationFailed(pydantic_problems(exc, doc), what="agent run") from None
        prompt = self.loop.run(clarion.prompt_agent(opts.agent_id, request))
        print("\n".join(context_lines(prompt)))  # what is sent is known before it is sent
        refuse_over_cap(prompt)
        run_id = self.loop.run(clarion.run_agent(opts.agent_id, request))
        return self._present(Run(session, run_id, agent=True), opts.no_wait, opts.name)

    def _save_agent(self, args: list[str], cell: str) -> None:
        opts = SAVE_AGENT.parse_args(args)
        doc = load_document(cell, what="agent")
        try:
            agent = Agent.model_validate(doc)
        except ValidationError as exc:
            raise ValidationFailed(pydantic_problems(exc, doc), what="agent") from None
        self.loop.run(save_agent(self.session(opts.local).clarion(), agent.model_dump(mode="json")))
        print(f"saved agent '{agent.id}' ({agent.model})")

    def _sql(self, args: list[str], cell: str | None) -> Any:
        local = "--local" in args
        sql = (cell if cell is not None else " ".join(a for a in args if a != "--local")).strip()
        if not sql:
            raise UsageError(
                "%clarion sql: give a query, e.g. %clarion sql SELECT status, count(*) FROM runs GROUP BY 1"
            )
        result = self.loop.run(self.session(local).clarion().query(sql))
        return table(result.columns, result.rows, result.truncated)

    def _present(self, run: Run, no_wait: bool, name: str | None) -> None:
        """Show the live widget, leave the handle in ``_`` (and ``name``), and unless
        ``no_wait`` block until the run ends, through the decisions it waits for (taken with the
        widget's buttons, which act while the cell blocks, or anywhere else). An interrupt
        (the stop button, Ctrl-C) while the cell runs cancels the run."""
        if name:
            self.shell.user_ns[name] = run
        self.shell.displayhook.update_user_ns(run)
        handle = None
        try:
            handle = display(run.widget, display_id=True)
            if no_wait:
                return
            self.loop.run(run._settled(stop_on_waiting=False, announce_waiting=True))
        except KeyboardInterrupt:
            print(f"Interrupted: cancelling run {run.run_id} …", file=sys.stderr)
            try:
                run.cancel()
                self.loop.run(run._settled(stop_on_waiting=False), timeout=30)
            except ClarionError as exc:  # it ended meanwhile
                print(f"(not cancelled: {exc.message})", file=sys.stderr)
        run.refresh()
        if handle is not None:
            handle.update(run.widget)  # the final state, for a saved notebook and static viewers

    # -- line magics ---------------------------------------------------------------

    def _line(self, args: list[str]) -> Any:
        if not args or args[0] in ("help", "-h", "--help"):
            print(HELP)
            return None
        command, rest = args[0], args[1:]
        if command not in SUBCOMMANDS:
            raise UsageError(
                f"%clarion: unknown command '{command}'; one of: {', '.join(SUBCOMMANDS)} (see %clarion help)"
            )
        if command == "sql":
            return self._sql(rest, None)
        if command == "run":
            opts = RUN.parse_args(rest)
            session = self.session(opts.local)
            inputs = self._values(opts.input, "--input")
            clarion = session.clarion()
            run_id = self.loop.run(
                clarion.submit_saved(opts.workflow_id, inputs, budget=_budget(opts), cache=opts.cache)
            )
            return self._present(Run(session, run_id), opts.no_wait, opts.name)
        if command == "runs":
            opts = RUNS.parse_args(rest)
            runs, _ = self.loop.run(
                self.session(opts.local)
                .clarion()
                .list_runs(workflow_id=opts.workflow, status=opts.status, limit=opts.limit)
            )
            columns = ["run_id", "workflow_id", "status", "created_at", "duration_s", "cost_usd"]
            rows = [[r.run_id, r.workflow_id, r.status.value, r.created_at.isoformat(timespec="seconds"),
                     _duration_s(r), r.usage.cost_usd] for r in runs]  # fmt: skip
            return table(columns, rows)
        if command == "show":
            opts = SHOW.parse_args(rest)
            session = self.session(opts.local)
            document = self.loop.run(session.clarion().get_run(opts.run_id))
            run = Run(session, document.run_id)
            run.state.load(document)
            return self._present(run, True, None)
        if command == "cancel":
            opts = CANCEL.parse_args(rest)
            self.loop.run(self.session(opts.local).clarion().cancel(opts.run_id))
            print(f"run {opts.run_id} cancelled")
            return None
        if command == "rerun":
            opts = RERUN.parse_args(rest)
            parent = Run(self.session(opts.local), opts.run_id)
            inputs = self._values(opts.input, "--input")
            run = parent.rerun(
                from_step=opts.from_step,
                inputs=inputs,
                model=opts.model,
                agent=opts.agent,
                budget=_budget(opts),
                cache=opts.cache,
            )
            return self._present(run, opts.no_wait, opts.name)
        if command == "compare":
            opts = COMPARE.parse_args(rest)
            first, *others = opts.run_ids
            return Run(self.session(opts.local), first).compare(*others)
        if command in DECIDE:
            opts = DECIDE[command].parse_args(rest)
            clarion = self.session(opts.local).clarion()
            decide = clarion.approve if command == "approve" else clarion.reject
            self.loop.run(decide(opts.run_id, opts.step, comment=opts.comment))
            print(f"run {opts.run_id}: step {opts.step} {command}d")
            return None
        opts = LISTS[command].parse_args(rest)
        clarion = self.session(opts.local).clarion()
        items = [
            _plain(i) for i in self.loop.run(clarion.list_agents() if command == "agents" else clarion.list_workflows())
        ]
        columns = ["id", "name", "model", "description"] if command == "agents" else ["id", "name", "description"]
        return table(columns, [[item.get(c) for c in columns] for item in items])

    def _values(self, pairs: list[str], flag: str) -> dict[str, Any]:
        values: dict[str, Any] = {}
        for pair in pairs:
            key, sep, raw = pair.partition("=")
            if not sep or not key:
                raise UsageError(f"{flag} {pair!r}: write it as name=value")
            values[key] = self._value(key, raw, flag)
        return values

    def _value(self, key: str, raw: str, flag: str) -> Any:
        namespace = self.shell.user_ns
        if raw.startswith("$") and raw[1:].isidentifier():
            if raw[1:] not in namespace:
                raise UsageError(f"{flag} {key}: no variable '{raw[1:]}' in this notebook")
            return namespace[raw[1:]]
        if raw.startswith("{") and raw.endswith("}") and not _is_yaml_mapping(raw):
            try:
                return eval(raw[1:-1], namespace)  # the user's own expression, in their own kernel
            except Exception as exc:
                raise UsageError(f"{flag} {key}: {{{raw[1:-1]}}} failed: {type(exc).__name__}: {exc}") from None
        try:
            return yaml.safe_load(raw) if raw else ""
        except yaml.YAMLError:
            return raw


def _split(line: str) -> list[str]:
    """Shell-like words, except that a ``{expr}`` with spaces stays one word (``n={x * 2}``)."""
    try:
        words = shlex.split(line)
    except ValueError as exc:
        raise UsageError(f"%clarion: cannot parse the arguments: {exc}") from None
    merged: list[str] = []
    depth = 0
    for word in words:
        if depth > 0:
            merged[-1] += " " + word
        else:
            merged.append(word)
        depth += word.count("{") - word.count("}")
    return merged


def _is_yaml_mapping(raw: str) -> bool:
    """``{a: 1}`` is a YAML mapping, ``{x + 1}`` a Python expression."""
    try:
        return isinstance(yaml.safe_load(raw), dict) and ":" in raw
    except yaml.YAMLError:
        return False


def _duration_s(run: Any) -> float | None:
    if run.started_at is None or run.finished_at is None:
        return None
    return round((run.finished_at - run.started_at).total_seconds(), 3)


def _plain(item: Any) -> dict[str, Any]:
    if hasattr(item, "model_dump"):
        return item.model_dump(mode="json")
    if is_dataclass(item):
        data = asdict(item)
        return {**(data.get("doc") or {}), **{k: v for k, v in data.items() if k != "doc"}}
    return dict(item)


def _explain(exc: ClarionError) -> str:
    """An error of the engine or the API (the same classes) as readable lines: every problem
    with its step and field."""
    if not isinstance(exc, ValidationFailed):
        return exc.message
    problems = [(p.loc, p.message) for p in exc.problems]
    head = exc.message.split(":", 1)[0]
    lines = "\n".join(f"  {loc}: {message}" for loc, message in problems)
    return f"{head}: {len(problems)} problem{'s' if len(problems) != 1 else ''}\n{lines}"


def load_ipython_extension(ipython: Any) -> None:
    ipython.register_magics(ClarionMagics)
