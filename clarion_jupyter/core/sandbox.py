"""The one Jinja2 environment for user templates: step configs and agents' system prompts.

Templates come from documents, not from code, and they are evaluated on the engine's event
loop, so the environment guards three things:

- **Code**: Jinja's sandbox (no private attributes, no unsafe callables), in its immutable
  form, so a template cannot mutate what it reads (``steps.a.output.update(...)`` is refused);
  the engine's state and a cached workflow are never changed by a run.
- **Typos**: strict undefined variables, and no undefined value hidden inside a result
  (``[run.nope]``, ``{'k': steps.a.output.nope}``): a typo is an error naming what was
  undefined, never an empty string or a value that cannot be stored.
- **Cost**: an evaluation :class:`Budget`. Operations whose result would be too large are
  refused *before* they run (``3 ** (2*10**7)``, ``'a' * 10**8``, ``'x'|center(10**9)``,
  ``'%0999999999d' % 1``), because one such C-level operation cannot be interrupted once it
  started; so are filters that would take longer than the time left (``urlize`` or ``sort``
  over megabytes: Jinja runs their loops in one call, which no deadline check reaches);
  everything else is bounded by a deadline checked at every call, filter, attribute read,
  loop iteration and output join. A template over budget fails its step; it never stalls
  the server.
"""

from __future__ import annotations

import functools
import gc
import json
import re
import string
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, MutableMapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from jinja2 import StrictUndefined, Template, Undefined, nodes
from jinja2.exceptions import SecurityError
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.visitor import NodeTransformer
from markupsafe import Markup


@dataclass(frozen=True, slots=True)
class Budget:
    """What one template evaluation may cost.

    ``time_s`` is small on purpose: templates are evaluated on the event loop, so the budget
    is also the longest a template can hold the server. It counts the evaluating thread's own
    CPU time, less garbage collection: neither a busy neighbour (other threads, other
    processes) nor a collection pause that happened to land in it is the template's doing,
    and counting them failed steps at random on a loaded machine.
    """

    max_chars: int = 10_000_000
    """Largest string, list or rendered text (and total size of a rendered value)."""
    max_int_bits: int = 1 << 16
    """Largest integer an arithmetic operation may produce (~19,700 decimal digits)."""
    max_items: int = 100_000
    """Largest number of groups ``batch``/``slice`` may make (as Jinja's ``range`` limit)."""
    time_s: float = 0.05


DEFAULT_BUDGET = Budget()
MAX_VALUE_DEPTH = 200
"""Deepest nesting of a rendered value (documents are bounded far below this)."""


class BudgetExceeded(SecurityError):
    """A template tried to do more than its :class:`Budget` allows."""


class _Collections(threading.local):
    """Time this thread spent in garbage collection (``gc.callbacks`` run in its thread)."""

    total = 0.0
    started = 0.0


_collections = _Collections()


def _time_collections(phase: str, _info: dict[str, Any]) -> None:
    if phase == "start":
        _collections.started = time.perf_counter()
    else:
        _collections.total += time.perf_counter() - _collections.started


gc.callbacks.append(_time_collections)


def _work_time() -> float:
    return time.thread_time() - _collections.total


class _Meter:
    """Checks are frequent (every call, attribute, loop iteration): most compare the cheap wall
    clock, which never runs slower than the thread's CPU time; only once wall time passes the
    budget is the work itself measured, and the wall deadline moved by what is left of it."""

    __slots__ = ("budget", "start", "wall_deadline")

    def __init__(self, budget: Budget) -> None:
        self.budget = budget
        self.start = _work_time()
        self.wall_deadline = time.monotonic() + budget.time_s

    def remaining(self) -> float:
        """A lower bound of the time left: what the wall clock leaves, or, once that ran out,
        what the work itself left (and the wall deadline moves by it)."""
        left = self.wall_deadline - time.monotonic()
        return left if left >= 0 else self.work_left()

    def work_left(self) -> float:
        left = self.budget.time_s - (_work_time() - self.start)
        self.wall_deadline = time.monotonic() + max(left, 0)
        return left

    def tick(self) -> None:
        if time.monotonic() > self.wall_deadline and self.work_left() < 0:
            raise BudgetExceeded(f"template evaluation took longer than its budget of {self.budget.time_s:g} s")

    def size(self, size: int, what: str) -> None:
        if size > self.budget.max_chars:
            raise BudgetExceeded(f"{what} would be {size:,} long, over the template limit of {self.budget.max_chars:,}")


_meter: ContextVar[_Meter | None] = ContextVar("clarion_template_meter", default=None)


@contextmanager
def budget(limits: Budget = DEFAULT_BUDGET) -> Iterator[None]:
    """Evaluate templates within ``limits``; nested evaluations share the outer budget."""
    if _meter.get() is not None:
        yield
        return
    token = _meter.set(_Meter(limits))
    try:
        yield
    finally:
        _meter.reset(token)


def _current() -> _Meter:
    meter = _meter.get()
    return meter if meter is not None else _Meter(DEFAULT_BUDGET)


# --------------------------------------------------------------------------- size estimates

_PERCENT_SPEC = re.compile(r"%(?:\([^)]*\))?[#0\- +]*(\*|\d*)(?:\.(\*|\d*))?[hlL]?[a-zA-Z%]")
_FORMAT_SPEC = re.compile(r"^(?:.?[<>=^])?[+\- ]?z?#?0?(\d*)[,_]?(?:\.(\d*))?")


def _check_widths(widths: Iterable[str], meter: _Meter) -> None:
    for width in widths:
        if width == "*":
            raise BudgetExceeded("'*' widths are not allowed in template format strings")
        if width:
            meter.size(int(width), "a formatted field")


def check_percent_format(fmt: str, meter: _Meter | None = None) -> None:
    """Refuse ``%`` formatting whose field widths exceed the budget (``'%0999999999d' % 1``)."""
    meter = meter or _current()
    meter.size(len(fmt), "a format string")
    _check_widths((w for match in _PERCENT_SPEC.finditer(fmt) for w in match.groups() if w is not None), meter)


def check_brace_format(fmt: str, meter: _Meter | None = None) -> None:
    """Refuse ``str.format`` fields wider than the budget, or with nested (computed) specs."""
    meter = meter or _current()
    for _literal, field, spec, _conversion in string.Formatter().parse(fmt):
        if field is None or not spec:
            continue
        if "{" in spec:
            raise BudgetExceeded("nested replacement fields in a format spec are not allowed in templates")
        match = _FORMAT_SPEC.match(spec)
        if match:
            _check_widths((w for w in match.groups() if w is not None), meter)


def _length(value: Any) -> int:
    return len(value) if isinstance(value, (str, bytes, list, tuple)) else len(str(value))


def _replace_size(text: str, old: str, new: str, count: int | None = None) -> int:
    occurrences = (len(text) + 1) if not old else text.count(old)
    if count is not None and count >= 0:
        occurrences = min(occurrences, count)
    return len(text) + occurrences * (len(new) - len(old))


def _join_size(separator: str, items: list[Any]) -> int:
    return len(separator) * max(len(items) - 1, 0) + sum(_length(item) for item in items)


def _check_str_method(method: Any, args: tuple[Any, ...], kwargs: dict[str, Any], meter: _Meter) -> tuple[Any, ...]:
    """Pre-check the str methods whose result can be far larger than their inputs."""
    text, name = method.__self__, method.__name__
    if name in ("center", "ljust", "rjust", "zfill") and args and isinstance(args[0], int):
        meter.size(args[0], f"str.{name}()")
    elif name == "expandtabs":
        tabsize = args[0] if args else kwargs.get("tabsize", 8)
        if isinstance(tabsize, int):
            meter.size(len(text) * max(tabsize, 1), "str.expandtabs()")
    elif name == "replace" and len(args) >= 2 and isinstance(args[0], str) and isinstance(args[1], str):
        meter.size(_replace_size(text, args[0], args[1], *args[2:3]), "str.replace()")
    elif name == "join" and args:
        items = list(args[0])
        meter.size(_join_size(text, items), "str.join()")
        args = (items, *args[1:])
    elif name in ("translate", "maketrans"):
        raise BudgetExceeded(f"str.{name}() is not allowed in templates")
    return args


# --------------------------------------------------------------------------- guarded filters

FILTER_SPEED: dict[str, tuple[float | None, float | None]] = {
    "sort": (150_000, 50_000),
    "groupby": (200_000, 200_000),
    "unique": (300_000, 300_000),
    "urlize": (300_000, None),
    "dictsort": (None, 500_000),
    "tojson": (None, 300_000),
    "pprint": (1_500_000, 300_000),
    "min": (800_000, 1_000_000),
    "max": (800_000, 1_000_000),
    "batch": (1_000_000, 1_000_000),
    "wordwrap": (1_000_000, None),
    "map": (None, 1_000_000),
    "select": (None, 1_000_000),
    "reject": (None, 1_000_000),
    "selectattr": (None, 1_000_000),
    "rejectattr": (None, 1_000_000),
    "title": (2_500_000, None),
    "join": (3_000_000, 1_000_000),
    "urlencode": (4_000_000, 1_000_000),
    "wordcount": (5_000_000, None),
    "striptags": (5_000_000, None),
}
"""How many characters of a text, and entries of a list or mapping, each filter whose work
grows with its input gets through per second at worst (a third of what this project's
2-core machines measured over a million). Unlisted filters run at C speed or in constant time."""


def _check_work(meter: _Meter, name: str, value: Any) -> None:
    text_speed, items_speed = FILTER_SPEED.get(name, (None, None))
    speed = text_speed if isinstance(value, str) else items_speed if isinstance(value, (list, tuple, dict)) else None
    if speed is None:
        return
    needed = len(value) / speed
    if needed > meter.remaining() and needed > meter.work_left():
        raise BudgetExceeded(
            f"{name} over {len(value):,} {'characters' if isinstance(value, str) else 'items'} would take "
            f"longer than the template budget of {meter.budget.time_s:g} s"
        )


def _guard(name: str, filters: dict[str, Callable[..., Any]], check: Callable[..., None] | None = None) -> None:
    """Wrap a built-in filter with the deadline, its expected work, and a pre-check of its arguments."""
    original = filters[name]
    skip = 1 if getattr(original, "jinja_pass_arg", None) is not None else 0

    @functools.wraps(original)
    def guarded(*args: Any, **kwargs: Any) -> Any:
        meter = _current()
        meter.tick()
        if len(args) > skip:
            _check_work(meter, name, args[skip])
        if check is not None:
            check(meter, *args[skip:], **kwargs)
        return original(*args, **kwargs)

    filters[name] = guarded


def _center(meter: _Meter, value: Any, width: int = 80) -> None:
    if isinstance(width, int):
        meter.size(width, "center")


def _indent(meter: _Meter, value: Any, width: int | str = 4, *args: Any, **kwargs: Any) -> None:
    pad = len(width) if isinstance(width, str) else width if isinstance(width, int) else 0
    text = str(value)
    meter.size(len(text) + (text.count("\n") + 1) * pad, "indent")


def _wordwrap(
    meter: _Meter,
    value: Any,
    width: int = 79,
    break_long_words: bool = True,
    wrapstring: Any = None,
    *args: Any,
    **kwargs: Any,
) -> None:
    text = str(value)
    meter.size(len(text) * (1 + len(str(wrapstring or "\n"))), "wordwrap")


def _format(meter: _Meter, value: Any, *args: Any, **kwargs: Any) -> None:
    check_percent_format(str(value), meter)


def _replace(meter: _Meter, value: Any, old: Any, new: Any, count: int | None = None) -> None:
    meter.size(_replace_size(str(value), str(old), str(new), count), "replace")


def _join(meter: _Meter, value: Any, d: Any = "", attribute: Any = None) -> None:
    if isinstance(value, (list, tuple)) and attribute is None:
        meter.size(_join_size(str(d), list(value)), "join")


def _groups(meter: _Meter, value: Any, count: Any, *args: Any, **kwargs: Any) -> None:
    if isinstance(count, int) and count > meter.budget.max_items:
        raise BudgetExceeded(f"{count:,} groups are more than the template limit of {meter.budget.max_items:,}")


def _sum(meter: _Meter, value: Any, attribute: Any = None, start: Any = 0) -> None:
    if not isinstance(start, (int, float)):
        raise BudgetExceeded("sum() adds numbers only in templates (use join for text)")


# --------------------------------------------------------------------------- values


def check_value(value: Any, depth: int = 0) -> int:
    """Raise on an undefined value anywhere inside ``value``; return its size (for the budget)."""
    if isinstance(value, str):
        return len(value)
    if isinstance(value, Undefined):
        value._fail_with_undefined_error()
    if depth > MAX_VALUE_DEPTH:
        raise BudgetExceeded(f"a template value is nested deeper than {MAX_VALUE_DEPTH} levels")
    if isinstance(value, Mapping):
        return sum(check_value(k, depth + 1) + check_value(v, depth + 1) for k, v in value.items()) + 1
    if isinstance(value, (list, tuple, set, frozenset)):
        return sum(check_value(item, depth + 1) for item in value) + 1
    return 1


_SCALARS = (str, int, float, bool, type(None), datetime, date)


def materialize(value: Any, meter: _Meter | None = None) -> Any:
    """The result of an expression as plain data: a fresh copy, so it never aliases the context;
    lazy results (``map``, ``select``, ``range``, ``items()``) as lists; undefined values and
    non-data objects (functions, macros, namespaces) as errors."""
    meter = meter or _current()
    total = [0]

    def walk(item: Any, depth: int) -> Any:
        total[0] += _length(item) if isinstance(item, str) else 1
        if total[0] > meter.budget.max_chars:
            meter.size(total[0], "the rendered value")
        if isinstance(item, Markup):
            return str(item)
        if isinstance(item, _SCALARS):
            return item
        if isinstance(item, Undefined):
            item._fail_with_undefined_error()
        if depth > MAX_VALUE_DEPTH:
            raise BudgetExceeded(f"a template value is nested deeper than {MAX_VALUE_DEPTH} levels")
        if isinstance(item, Mapping):
            return {walk(k, depth + 1): walk(v, depth + 1) for k, v in item.items()}
        if isinstance(item, (list, tuple, set, frozenset, range, Iterator)) or type(item).__name__ in (
            "dict_items",
            "dict_keys",
            "dict_values",
        ):
            meter.tick()
            return [walk(v, depth + 1) for v in item]
        raise BudgetExceeded(f"a template evaluated to a {type(item).__name__}, which is not data")

    return walk(value, 0)


def _finalize(value: Any) -> Any:
    """Applied to every ``{{ ... }}`` of a rendered text: an undefined inside a list or a dict
    would otherwise print as ``Undefined``."""
    if not isinstance(value, (str, int, float)):
        _current().size(check_value(value), "an output")
    return value


# --------------------------------------------------------------------------- the environment


class _Guards(NodeTransformer):
    """Every ``for`` iterates through the budget; every ``~`` result is size-checked."""

    def visit_For(self, node: nodes.For) -> nodes.Node:
        self.generic_visit(node)
        node.iter = nodes.Filter(node.iter, "_metered", [], [], None, None, lineno=node.lineno)
        return node

    def visit_Concat(self, node: nodes.Concat) -> nodes.Node:
        self.generic_visit(node)
        return nodes.Filter(node, "_sized", [], [], None, None, lineno=node.lineno)


def _metered(iterable: Any) -> Iterator[Any]:
    meter = _current()
    for count, item in enumerate(iterable):
        if count % 64 == 0:
            meter.tick()
        yield item


def _sized(value: Any) -> Any:
    _current().size(_length(value), "a ~ concatenation")
    return value


class _BudgetedTemplate(Template):
    def render(self, *args: Any, **kwargs: Any) -> str:
        with budget():
            return super().render(*args, **kwargs)


class _Environment(ImmutableSandboxedEnvironment):
    """Dotted access reads mapping keys before attributes, so an input or output named
    ``items``, ``keys`` or ``values`` is that value, not the dict method of that name."""

    template_class = _BudgetedTemplate
    intercepted_binops = frozenset({"*", "**", "+", "%"})

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.globals.pop("lipsum", None)  # lipsum(n=10**9): output unbounded by its input
        checks: dict[str, Callable[..., None]] = {
            "center": _center,
            "indent": _indent,
            "wordwrap": _wordwrap,
            "format": _format,
            "replace": _replace,
            "join": _join,
            "batch": _groups,
            "slice": _groups,
            "sum": _sum,
        }
        for name in list(self.filters):
            _guard(name, self.filters, checks.get(name))
        self.filters |= {"fromjson": json.loads, "_metered": _metered, "_sized": _sized}

    def make_globals(self, d: MutableMapping[str, Any] | None) -> MutableMapping[str, Any]:
        """A plain dict, not Jinja's ChainMap over the environment's globals: each evaluation
        copies a template's globals into its context, and a ChainMap is iterated in Python,
        which doubled the cost of a step's template. This environment's globals are set once,
        in ``__init__``, before any template is compiled, so a copy never misses a change."""
        return {**self.globals, **(d or {})}

    @staticmethod
    def concat(pieces: Iterable[str]) -> str:  # type: ignore[override]
        """Every rendered text and block buffer is joined here: size-checked, deadline-checked."""
        meter = _current()
        parts: list[str] = []
        size = 0
        for piece in pieces:
            parts.append(piece)
            size += len(piece)
            if len(parts) % 64 == 0:
                meter.tick()
            if size > meter.budget.max_chars:
                meter.size(size, "the rendered text")
        return "".join(parts)

    def _generate(self, source: nodes.Template, *args: Any, **kwargs: Any) -> str:
        return super()._generate(_Guards().visit(source), *args, **kwargs)

    def getattr(self, obj: Any, attribute: str) -> Any:
        _current().tick()
        if isinstance(obj, dict) and attribute in obj:
            return obj[attribute]
        return super().getattr(obj, attribute)

    def getitem(self, obj: Any, argument: Any) -> Any:
        _current().tick()
        return super().getitem(obj, argument)

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        meter = _current()
        meter.tick()
        if isinstance(getattr(__obj, "__self__", None), str) and hasattr(__obj, "__name__"):
            args = _check_str_method(__obj, args, kwargs, meter)
        return super().call(__context, __obj, *args, **kwargs)

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        wrapper = super().wrap_str_format(value)
        if wrapper is not None and isinstance(value.__self__, str):
            check_brace_format(value.__self__)
        return wrapper

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        _check_binop(_current(), operator, left, right)
        return super().call_binop(context, operator, left, right)

    def compile_expression(self, source: str, undefined_to_none: bool = True) -> Callable[..., Any]:  # type: ignore[override]
        """The expression's value as plain data (see :func:`materialize`), within the budget."""
        expression = super().compile_expression(source, undefined_to_none)

        def evaluate(*args: Any, **kwargs: Any) -> Any:
            with budget():
                return materialize(expression(*args, **kwargs))

        return evaluate


def _check_binop(meter: _Meter, operator: str, left: Any, right: Any) -> None:
    """Refuse an operation whose result would exceed the budget, before computing it."""
    ints = isinstance(left, int) and isinstance(right, int)
    if operator == "**" and ints:
        if abs(left) > 1 and right > 0 and (abs(left).bit_length() - 1) * right > meter.budget.max_int_bits:
            raise BudgetExceeded(
                f"{left} ** {right} is a larger integer than templates allow ({meter.budget.max_int_bits:,} bits)"
            )
    elif operator == "*" and ints:
        if left.bit_length() + right.bit_length() > meter.budget.max_int_bits:
            raise BudgetExceeded(
                f"the product is a larger integer than templates allow ({meter.budget.max_int_bits:,} bits)"
            )
    elif operator == "*":
        sequence, count = (left, right) if isinstance(right, int) else (right, left)
        if isinstance(count, int) and isinstance(sequence, (str, list, tuple)):
            meter.size(len(sequence) * count, "the repeated sequence")
    elif operator == "+" and isinstance(left, (str, list, tuple)) and isinstance(right, (str, list, tuple)):
        meter.size(len(left) + len(right), "the concatenation")
    elif operator == "%" and isinstance(left, str):
        check_percent_format(left, meter)


environment = _Environment(undefined=StrictUndefined, autoescape=False, keep_trailing_newline=True, finalize=_finalize)
