"""The workflow document and the run records, as pydantic models.

One model validates YAML and JSON alike; :func:`parse_workflow` turns either (or a dict)
into a :class:`Workflow` and reports every problem with the step and field it concerns.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal, NamedTuple

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    StrictBool,
    Tag,
    ValidationError,
    model_validator,
)

from ..core.documents import DocumentError, check_data, load_yaml
from ..core.errors import Problem, ValidationFailed
from ..core.ids import SLUG_PATTERN, slugify
from ..core.protocol import RunStatus, StepStatus
from ..storage.records import without_surrogates
from .budget import Budget, BudgetState

STEP_ID_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]{0,63}$"
InputType = Literal["string", "number", "integer", "boolean", "array", "object"]
_PYTHON_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,),
    "number": (int, float),
    "integer": (int,),
    "boolean": (bool,),
    "array": (list,),
    "object": (dict,),
}


def matches_type(value: Any, json_type: str) -> bool:
    """Whether a JSON value has a JSON-schema type (booleans are not numbers, as in JSON)."""
    if isinstance(value, bool) and json_type != "boolean":
        return False
    return isinstance(value, _PYTHON_TYPES[json_type])


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class InputSpec(_Strict):
    """A declared workflow input; without ``default`` it is required."""

    type: InputType = "string"
    default: Any = None
    description: str | None = None

    @property
    def required(self) -> bool:
        return "default" not in self.model_fields_set

    @model_validator(mode="after")
    def _default_has_type(self) -> InputSpec:
        if self.default is not None and not matches_type(self.default, self.type):
            raise ValueError(f"default {self.default!r:.60} is not of type {self.type}")
        return self


class RetryPolicy(_Strict):
    """Exponential backoff with jitter: attempt n waits ``backoff_s * 2**(n-1)`` (capped)."""

    max_attempts: int = Field(1, ge=1, le=100)
    backoff_s: float = Field(1.0, ge=0)
    max_backoff_s: float = Field(60.0, ge=0)
    jitter: float = Field(0.1, ge=0, le=1)

    def delay(self, attempt: int, rand: float) -> float:
        base = min(self.backoff_s * 2 ** (attempt - 1), self.max_backoff_s)
        return base * (1 + self.jitter * (2 * rand - 1))


class ApprovalPolicy(_Strict):
    """A person reviews what the step is about to do (its preview) before it runs."""

    if_: str | bool = Field(True, alias="if", description="Ask only when this condition (a template) is true.")
    message: str | None = Field(None, max_length=2000, description="Shown to the person deciding.")
    timeout_s: float | None = Field(None, gt=0, description="No decision within this time rejects.")
    on_reject: Literal["fail", "skip"] = Field("fail", description="What a rejection does to the step.")


def _approval_policy(value: Any) -> Any:
    """``approval: true`` is the default policy, ``approval: false`` none at all."""
    if value is True:
        return ApprovalPolicy()
    if value is False:
        return None
    return value


class Step(_Strict):
    """One step of a workflow document, as written; the compiler turns it into a node."""

    id: str = Field(pattern=STEP_ID_PATTERN)
    task: str
    name: str | None = None
    description: str | None = None
    with_: dict[str, Any] = Field(default_factory=dict, alias="with")
    needs: list[str] | None = None
    if_: str | bool | None = Field(None, alias="if")
    for_each: str | list[Any] | None = None
    retry: RetryPolicy = Field(default_factory=RetryPolicy)
    timeout_s: float | None = Field(None, gt=0)
    continue_on_error: bool = False
    approval: Annotated[ApprovalPolicy | None, BeforeValidator(_approval_policy)] = None
    allow_protected: StrictBool = Field(
        False,
        description="Let file tasks touch `.git/` and credential files (`.env*`, keys, `.ssh/`). "
        "A literal of the document, never a template, so no step output can turn it on.",
    )


class ParallelGroup(_Strict):
    """Members run concurrently; the item after the group waits for all of them."""

    parallel: list[Step] = Field(min_length=1)


def _item_kind(value: Any) -> str:
    if isinstance(value, dict) and "parallel" in value:
        return "parallel"
    if isinstance(value, ParallelGroup):
        return "parallel"
    return "step"


StepItem = Annotated[
    Annotated[Step, Tag("step")] | Annotated[ParallelGroup, Tag("parallel")],
    Discriminator(_item_kind),
]


class Workflow(_Strict):
    """A workflow document (YAML or JSON), validated by one model whatever door it came through."""

    id: str = Field("", pattern=r"^$|" + SLUG_PATTERN)
    name: str = Field(min_length=1, max_length=200)
    description: str | None = None
    inputs: dict[str, InputSpec] = Field(default_factory=dict)
    steps: list[StepItem] = Field(min_length=1)
    outputs: dict[str, Any] = Field(default_factory=dict)
    budget: Budget | None = None
    """What every run may spend on LLM calls (a run request's ``budget`` replaces fields of it)."""

    @model_validator(mode="after")
    def _derive_id(self) -> Workflow:
        if not self.id:
            self.id = slugify(self.name)
        return self

    def iter_steps(self) -> list[Step]:
        """Every step, groups flattened, in document order."""
        out: list[Step] = []
        for item in self.steps:
            out.extend(item.parallel if isinstance(item, ParallelGroup) else [item])
        return out

    def to_document(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True, exclude_defaults=True) | {"id": self.id}


def load_document(source: str | bytes | dict[str, Any], what: str = "workflow") -> dict[str, Any]:
    """Parse YAML or JSON text (JSON is YAML) into a mapping, with a located error.

    Parsing is bounded (nesting, alias expansion, JSON types only: see
    :mod:`..core.documents`), so a hostile document is refused in milliseconds. A lone
    surrogate (what ``"\\ud800"`` in JSON parses to) becomes U+FFFD here, as undecodable bytes
    do: no UTF-8 text can hold one, so the store would keep U+FFFD, and a run's own copy of its
    document, its name and its steps' settings hold from the start what is stored.
    """
    try:
        if isinstance(source, dict):
            check_data(source)
            data = source
        else:
            if isinstance(source, bytes):
                source = source.decode("utf-8", errors="replace")
            data = load_yaml(source)
    except DocumentError as exc:
        raise ValidationFailed([Problem(loc=exc.where or "document", message=exc.message)], what) from None
    if not isinstance(data, dict):
        raise ValidationFailed([Problem(loc="document", message="must be a mapping (an object)")], what)
    return without_surrogates(data)


def parse_workflow(source: str | bytes | dict[str, Any] | Workflow) -> Workflow:
    """Validate a workflow document's shape; every problem names its step and field."""
    if isinstance(source, Workflow):
        return source
    data = load_document(source)
    try:
        return Workflow.model_validate(data)
    except ValidationError as exc:
        raise ValidationFailed(pydantic_problems(exc, data)) from None


def pydantic_problems(exc: ValidationError, data: dict[str, Any]) -> list[Problem]:
    """Rewrite pydantic's positional locations (``steps.2.parallel.0``) as step ids."""
    problems = []
    for err in exc.errors():
        loc = list(err["loc"])
        step_id, field_path = _locate(loc, data)
        message = err["msg"]
        if err["type"] == "extra_forbidden":
            message = "unknown field"
        if step_id is not None:
            where = f"step '{step_id}'" + (f" field '{field_path}'" if field_path else "")
            problems.append(Problem(loc=where, message=message, step=step_id, field=field_path or None))
        else:
            path = ".".join(str(p) for p in loc) or "document"
            problems.append(Problem(loc=path, message=message, field=path))
    return problems


def _locate(loc: list[Any], data: dict[str, Any]) -> tuple[str | None, str]:
    if len(loc) < 2 or loc[0] != "steps" or not isinstance(loc[1], int):
        return None, ""
    steps = data.get("steps") or []
    item = steps[loc[1]] if loc[1] < len(steps) else None
    rest = loc[2:]
    if rest and rest[0] in ("step", "parallel"):
        kind, rest = rest[0], rest[1:]
        if kind == "parallel" and rest and rest[0] == "parallel":
            rest = rest[1:]
            if rest and isinstance(rest[0], int):
                members = item.get("parallel") if isinstance(item, dict) else None
                item = members[rest[0]] if isinstance(members, list) and rest[0] < len(members) else None
                rest = rest[1:]
                if rest and rest[0] == "step":
                    rest = rest[1:]
    step_id = item.get("id") if isinstance(item, dict) else None
    label = str(step_id) if step_id else f"#{loc[1] + 1}"
    return label, ".".join(str(p) for p in rest)


class Usage(BaseModel):
    """Tokens and cost of a step or a run (cost None when the model's price is unknown)."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float | None = None


class StepRun(BaseModel):
    """One attempt of one step (or of one ``for_each`` item, whose key is ``id[i]``)."""

    key: str
    step_id: str
    item_index: int | None = None
    attempt: int
    status: StepStatus
    started_at: datetime | None = None
    finished_at: datetime | None = None
    duration_ms: float | None = None
    output: Any = None
    error: dict[str, Any] | None = None
    usage: Usage | None = None
    reused_from: dict[str, Any] | None = None
    """In a re-run: ``{run_id, attempt}`` of the parent's attempt whose output was copied (no task call)."""


class PendingApproval(BaseModel):
    """A step waiting for a person: what they are shown and since when."""

    step_key: str
    preview: Any = None
    message: str | None = None
    requested_at: datetime
    timeout_s: float | None = None


class WorkflowRun(BaseModel):
    """The run document: what the REST API, ``clarion show --json`` and ``Engine.wait`` return."""

    run_id: str
    workflow_id: str
    workflow_name: str
    status: RunStatus
    inputs: dict[str, Any] = Field(default_factory=dict)
    outputs: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    idempotency_key: str | None = None
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    usage: Usage = Field(default_factory=Usage)
    last_seq: int = 0
    workflow: dict[str, Any] | None = None
    """The document as this run ran it (its snapshot); in the document of one run, not in lists."""
    steps: list[StepRun] = Field(default_factory=list)
    approvals: list[PendingApproval] = Field(default_factory=list)
    """Steps waiting for a decision (``POST /api/v3/runs/{run_id}/approvals/{step_key}``)."""
    parent_run_id: str | None = None
    """A re-run's: the run it was made from (``POST /api/v3/runs/{run_id}/rerun``)."""
    changes: dict[str, Any] | None = None
    """A re-run's: what differs from its parent."""
    budget: BudgetState | None = None
    """With a budget: its limits, what settled calls spent and what calls in flight hold."""
    cache: bool | None = None
    """Whether the run asked for the LLM cache (null: it left it to its steps, agents and the server)."""


class RunPage(NamedTuple):
    """One page of runs, newest first; ``next_cursor`` (None on the last page) asks for the next.
    A tuple, so ``runs, cursor = await clarion.list_runs()`` reads as it always did."""

    runs: list[WorkflowRun]
    next_cursor: str | None


class Decision(BaseModel):
    """A person's stored decision on a step that waited for approval."""

    run_id: str
    step_key: str
    decision: Literal["approve", "reject"]
    by: str | None = None
    comment: str | None = None
