"""A run's cost budget: ``budget: {usd, tokens, unpriced}`` in the workflow or per run, held call by call.

Before an LLM call is sent, the engine reserves its worst case (:mod:`..llm.pricing`: the
prompt counted with litellm's token counter, plus the call's ``max_tokens`` or the model's
output limit, priced by litellm's cost map); a call whose reservation would pass a limit,
on top of what was spent and what calls in flight hold, is not sent: its step fails with
``budget_exceeded``. After the call its hold is settled to the usage and cost it reported.

One :class:`BudgetLedger` per run lives in the engine, beside the run's executor: the
executor is one coroutine, and a reservation is checked and taken without an await between,
so parallel steps cannot together pass a limit. The reservation happens in the engine
before the job is sent, also with Redis or NATS workers; the job carries the prompt tokens
reserved, and the worker refuses to send a prompt that grew since (a file of the codebase
context changed): it may never spend more than was reserved.

The ledger's state (limits, spent, and each hold in flight with its prices) is the run
record's ``budget``, written with the transition that changed it, so a resumed run keeps
what it spent and the holds of the jobs a broker still runs. What is settled:

- a reply: its ``usage`` and ``cost_usd`` (priced at the hold's prices when the reply says
  none); a reply that reports no usage counts as its whole hold; a cache hit (``cached``)
  costs nothing;
- a failure that reports the usage of a call made (a reply refused by its schema):
  that usage; any other failure, or a cancelled call, releases its hold: the provider
  reported nothing to count.

A model litellm has no price for still counts against ``tokens``; a ``usd`` limit refuses
its calls unless the budget says ``unpriced: allow`` (their cost then counts as nothing,
and ``unpriced_calls`` says how many there were).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from ..agent.models import Agent
from ..core.errors import Problem, ValidationFailed
from ..core.workspace import Workspace
from ..llm.pricing import OUTPUT_LIMITS, Quote
from ..llm.provider import ProviderError
from ..task.base import Task, TaskFailed, config_problems
from ..task.builtin.llm_call import LLMCallConfig, LLMCallTask, prepare_call
from ..task.queue import Job

BUDGET_EXCEEDED = "budget_exceeded"
"""The step error code of a call the budget did not let through."""

Quoter = Callable[[Job, type[Task]], Awaitable[Quote]]


class Budget(BaseModel):
    """The limits of a run: the workflow's ``budget:``, or a run request's ``budget`` (whose fields replace the workflow's)."""

    model_config = ConfigDict(extra="forbid")

    usd: float | None = Field(
        None, gt=0, allow_inf_nan=False, strict=True, description="Most the run may spend, in US dollars."
    )
    tokens: int | None = Field(None, gt=0, strict=True, description="Most tokens (prompt and reply) the run may use.")
    unpriced: Literal["refuse", "allow"] = Field(
        "refuse",
        description="A model with no known price under a usd limit: refuse its calls, or allow them "
        "(their tokens still count).",
    )

    @model_validator(mode="after")
    def _says_something(self) -> Budget:
        if not self.model_fields_set:
            raise ValueError("give usd, tokens or both")
        return self

    def over(self, base: Budget | None) -> Budget:
        """This budget's given fields over ``base``'s (a run's budget over its workflow's)."""
        if base is None:
            return self
        return base.model_copy(update=self.model_dump(exclude_unset=True))

    @property
    def limited(self) -> bool:
        return self.usd is not None or self.tokens is not None


class BudgetState(BaseModel):
    """The run document's ``budget``: the limits, what settled calls spent, and what calls in flight hold."""

    usd: float | None = None
    tokens: int | None = None
    unpriced: Literal["refuse", "allow"] = "refuse"
    spent_usd: float = 0.0
    """The cost of the settled calls (calls of unpriced models count as nothing)."""
    spent_tokens: int = 0
    reserved_usd: float = 0.0
    """What the calls in flight hold: their worst case, until they settle."""
    reserved_tokens: int = 0
    unpriced_calls: int = 0
    """Settled calls whose cost is unknown (with ``unpriced: allow``)."""


def effective_budget(workflow: Budget | None, run: Budget | None) -> Budget | None:
    """The budget a run holds to: the run's fields over the workflow's; None without a limit."""
    chosen = run.over(workflow) if run is not None else workflow
    return chosen if chosen is not None and chosen.limited else None


def given_budget(usd: float | None, tokens: int | None) -> dict[str, Any] | None:
    """A run's budget from the command line's or the magic's flags (None: none given)."""
    given = {name: value for name, value in (("usd", usd), ("tokens", tokens)) if value is not None}
    return given or None


def limits_of(state: dict[str, Any]) -> Budget | None:
    """The limits a run held to, from its record's ``budget`` (what a re-run of it holds to)."""
    given = {name: state[name] for name in ("usd", "tokens") if state.get(name) is not None}
    return Budget.model_validate({**given, "unpriced": state.get("unpriced", "refuse")}) if given else None


def parse_budget(value: Budget | dict[str, Any] | None, field: str = "budget") -> Budget | None:
    """A budget given as a mapping (the interface's callers), or :class:`ValidationFailed` naming the field."""
    if value is None or isinstance(value, Budget):
        return value
    try:
        return Budget.model_validate(value)
    except ValidationError as exc:
        names = [".".join([field, *map(str, e["loc"])]) for e in exc.errors()]
        problems = [
            Problem(loc=name, message=e["msg"], field=name) for name, e in zip(names, exc.errors(), strict=True)
        ]
        raise ValidationFailed(problems, what="budget") from None


class BudgetLedger:
    """One run's budget in the engine: reserve a call's worst case, settle it to what it spent."""

    def __init__(self, state: dict[str, Any], quoter: Quoter) -> None:
        """``state``: the run record's ``budget`` (new, or as a resumed run stored it)."""
        self._view = BudgetState.model_validate({k: v for k, v in state.items() if k != "holds"})
        self._holds: dict[str, dict[str, Any]] = dict(state.get("holds") or {})
        self._quoter = quoter
        self.changed = True
        """Set by every change (and at first, so the run's first event announces the budget);
        the executor writes the run and clears it with its next event."""

    @staticmethod
    def initial(budget: Budget) -> dict[str, Any]:
        """The run record's ``budget`` of a new run: its limits, nothing spent or held."""
        return BudgetState.model_validate(budget.model_dump()).model_dump() | {"holds": {}}

    @staticmethod
    def applies(task: type[Task]) -> bool:
        """Whether a step of this task type calls a model (and so reserves)."""
        return issubclass(task, LLMCallTask)

    def record(self) -> dict[str, Any]:
        """What the run record stores: the document's view and the holds in flight."""
        return self.snapshot() | {"holds": {job: dict(hold) for job, hold in self._holds.items()}}

    def snapshot(self) -> dict[str, Any]:
        """The run document's ``budget`` (and the events' ``data.budget``)."""
        view = self._view
        view.reserved_tokens = sum(h["tokens"] for h in self._holds.values())
        view.reserved_usd = sum((h["usd"] or 0.0 for h in self._holds.values()), 0.0)
        return view.model_dump()

    # -- before the call -------------------------------------------------------------

    async def reserve(self, job: Job, task: type[Task], force: bool = False) -> tuple[dict[str, Any], bool] | None:
        """Hold ``job``'s worst case; the step error (and whether it may be retried) when the
        call may not be sent. ``force``: the job is already in a broker, so it is held whatever
        it costs. On success the job carries the prompt tokens reserved, for the worker's check."""
        try:
            quote = await self._quoter(job, task)
        except (ValidationError, TaskFailed, ProviderError) as exc:
            # The task itself would fail the same way; a job already sent counts when it reports.
            return None if force else _quote_failure(exc)
        refusal = None if force else self._refusal(quote)
        if refusal is not None:
            return refusal, False
        self._holds[job.id] = {
            "tokens": quote.prompt_tokens + (quote.output_tokens or 0),
            "usd": quote.cost_usd,
            "input_cost_per_token": quote.input_cost_per_token,
            "output_cost_per_token": quote.output_cost_per_token,
        }
        self.changed = True
        job.resources = {**job.resources, "budget": {"prompt_tokens": quote.prompt_tokens}}
        return None

    def _refusal(self, quote: Quote) -> dict[str, Any] | None:
        view = self._view
        if quote.output_tokens is None:
            return _error(
                BUDGET_EXCEEDED,
                f"the run has a budget, and nothing bounds this call's reply: model '{quote.model}' has no output "
                f"limit in litellm's model map; set {OUTPUT_LIMITS[0]} in the agent's or the step's parameters",
                self._details(quote, None),
            )
        need_tokens = quote.prompt_tokens + quote.output_tokens
        held = self.snapshot()
        if view.usd is not None and quote.cost_usd is None and view.unpriced == "refuse":
            return _error(
                BUDGET_EXCEEDED,
                f"model '{quote.model}' has no price in litellm's cost map, so the run's budget of "
                f"{_usd(view.usd)} cannot hold its calls: say `unpriced: allow` in the budget (its tokens "
                "still count) or use a priced model",
                self._details(quote, need_tokens),
            )
        over = []
        if view.tokens is not None and view.spent_tokens + held["reserved_tokens"] + need_tokens > view.tokens:
            in_flight = held["reserved_tokens"]
            over.append(
                f"{need_tokens:,} tokens ({quote.prompt_tokens:,} prompt + {quote.output_tokens:,} reply at most) "
                f"on top of {view.spent_tokens:,} spent"
                + (f" and {in_flight:,} held by calls in flight" if in_flight else "")
                + f" would pass the limit of {view.tokens:,} tokens"
            )
        usd = quote.cost_usd
        if view.usd is not None and usd is not None and view.spent_usd + held["reserved_usd"] + usd > view.usd:
            in_flight = held["reserved_usd"]
            over.append(
                f"{_usd(usd)} at most on top of {_usd(view.spent_usd)} spent"
                + (f" and {_usd(in_flight)} held by calls in flight" if in_flight else "")
                + f" would pass the limit of {_usd(view.usd)}"
            )
        if not over:
            return None
        return _error(BUDGET_EXCEEDED, "budget exceeded, the call was not made: " + "; ".join(over),
                      self._details(quote, need_tokens))  # fmt: skip

    def _details(self, quote: Quote, need_tokens: int | None) -> dict[str, Any]:
        held = self.snapshot()
        return {
            "model": quote.model,
            "call_tokens": need_tokens,
            "call_usd": quote.cost_usd,
            "spent_tokens": held["spent_tokens"],
            "spent_usd": held["spent_usd"],
            "reserved_tokens": held["reserved_tokens"],
            "reserved_usd": held["reserved_usd"],
            "limit_tokens": held["tokens"],
            "limit_usd": held["usd"],
        }

    # -- after the call --------------------------------------------------------------

    def settle(self, job_id: str, output: Any = None, error: dict[str, Any] | None = None) -> None:
        """Replace ``job_id``'s hold by what its call spent (see the module's docstring)."""
        hold = self._holds.pop(job_id, None)
        spent = _spent(output, error)
        if spent is None or (spent == "unknown" and hold is None):
            if hold is not None:  # failed without a word of usage: nothing to count
                self.changed = True
            return
        self.changed = True
        if spent == "unknown":  # a reply without usage: its worst case
            tokens, cost = hold["tokens"], hold["usd"]
        else:
            prompt, completion, cost = spent
            tokens = prompt + completion
            if cost is None and hold is not None and hold["input_cost_per_token"] is not None:
                cost = prompt * hold["input_cost_per_token"] + completion * hold["output_cost_per_token"]
        self._view.spent_tokens += tokens
        if cost is None:
            self._view.unpriced_calls += 1
        else:
            self._view.spent_usd += cost

    def release(self, job_id: str) -> None:
        """Drop a hold whose call will not report (interrupted by a restart)."""
        if self._holds.pop(job_id, None) is not None:
            self.changed = True

    def release_all(self) -> None:
        """The run is ending: what is still in flight is cancelled and counts as nothing."""
        if self._holds:
            self._holds.clear()
            self.changed = True


def _spent(output: Any, error: dict[str, Any] | None) -> tuple[int, int, float | None] | Literal["unknown"] | None:
    """What a finished call reported: (prompt, completion, cost), ``unknown`` for a reply
    without usage, None for a failure that reported nothing."""
    if error is not None:
        details = error.get("details")
        output = details if isinstance(details, dict) and isinstance(details.get("usage"), dict) else None
        if output is None:
            return None
    if not isinstance(output, dict):
        return None
    if output.get("cached") is True:
        return 0, 0, 0.0
    usage = output.get("usage")
    if not isinstance(usage, dict) or not (usage.get("prompt_tokens") or usage.get("completion_tokens")):
        return "unknown" if error is None else None
    cost = output.get("cost_usd")
    return int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0), cost


def llm_quoter(workspace: Workspace) -> Quoter:
    """How the engine prices an ``llm_call`` job: the request its task would send, prepared
    here as the worker will (the agent, the codebase context, the parameters), then quoted
    by the task's provider (litellm in its own process: the server never imports it)."""

    async def quote(job: Job, task: type[Task]) -> Quote:
        provider = getattr(task, "provider", LLMCallTask.provider)
        agent = Agent.model_validate(job.resources["agent"])
        prepared = await prepare_call(agent, LLMCallConfig.model_validate(job.config), workspace, provider)
        return await provider.quote(prepared.request)

    return quote


def describe(budget: dict[str, Any]) -> str:
    """A run's budget in a line, for a cell or a terminal: spent against each limit, and what
    calls in flight hold."""
    tokens = f"{budget['spent_tokens']:,}" + (f" of {budget['tokens']:,}" if budget.get("tokens") else "") + " tokens"
    parts = [f"{_usd(budget['spent_usd'])} of {_usd(budget['usd'])}" if budget.get("usd") else None, tokens]
    line = " · ".join(part for part in parts if part) + " spent"
    if budget.get("reserved_tokens"):
        line += f" ({budget['reserved_tokens']:,} tokens held by calls in flight)"
    if budget.get("unpriced_calls"):
        line += f" · {budget['unpriced_calls']} call{'s' if budget['unpriced_calls'] != 1 else ''} of unpriced models"
    return line


def _quote_failure(exc: ValidationError | TaskFailed | ProviderError) -> tuple[dict[str, Any], bool]:
    """The step error of a call that could not be priced: the one its task would have given."""
    if isinstance(exc, ValidationError):
        return _error("invalid_config", config_problems(exc)), False
    if isinstance(exc, TaskFailed):
        return _error(exc.code, exc.message, exc.details), exc.retryable
    return _error("task_failed", f"the call could not be priced for the budget: {exc.message}"), exc.retryable


def _error(code: str, message: str, details: Any = None) -> dict[str, Any]:
    error: dict[str, Any] = {"code": code, "message": message}
    if details is not None:
        error["details"] = details
    return error


def _usd(value: float) -> str:
    """Dollars with the digits small amounts need ($0.000063, $1.25)."""
    return f"${value:.6f}".rstrip("0").rstrip(".") if value < 1 else f"${value:,.2f}"
