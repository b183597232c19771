"""Reading JSON and YAML documents from clients, with bounds, as JSON data only.

A few hundred bytes of YAML can expand to gigabytes (an alias bomb), refer to itself
(``&x [*x]``), or carry types JSON does not have (``!!set``, ``!!binary``); JSON can nest
deeper than the code that walks it, or hold a 5,000-digit integer. Each of these either
stalled the server or ended in a 500. Here they are refused while parsing, in milliseconds,
with a :class:`DocumentError` that says where; what comes out is plain JSON data (dicts,
lists, strings, finite numbers, booleans, null) whose nesting is bounded.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
from collections.abc import Callable
from typing import Any, TypeVar

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

MAX_DEPTH = 100
"""Deepest nesting of lists and mappings in a document."""
MAX_YAML_NODES = 200_000
"""Most values a YAML document may expand to, counting every use of an alias."""
MAX_INT_DIGITS = 100
INLINE_PARSE_CHARS = 64 * 1024
"""Documents up to this size are read on the caller's event loop, where they take under a
millisecond or so; larger ones in a thread (YAML is parsed in Python: 2 MB take seconds)."""

T = TypeVar("T")


class DocumentError(ValueError):
    """A document cannot be read; ``where`` is ``line L, column C`` when known."""

    def __init__(self, message: str, where: str | None = None) -> None:
        super().__init__(f"{message} at {where}" if where else message)
        self.message = message
        self.where = where


class DocumentRefused(DocumentError):
    """A document that parses but is beyond the bounds (nesting, aliases, numbers, types)."""


def _where(mark: Any) -> str | None:
    return f"line {mark.line + 1}, column {mark.column + 1}" if mark is not None else None


# --------------------------------------------------------------------------- YAML


class _BoundedLoader(yaml.SafeLoader):
    """PyYAML's safe loader, with nesting bounded while composing, alias expansion counted
    and cycles refused before anything is constructed, and JSON types only."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: Node | None, index: Any) -> Node:
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise DocumentRefused(f"nested deeper than {MAX_DEPTH} levels", _where(self.peek_event().start_mark))
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def compose_document(self) -> Node:
        node = super().compose_document()
        _check_expansion(node)
        return node

    def construct_mapping(self, node: MappingNode, deep: bool = False) -> dict[Any, Any]:
        """A key written twice in one mapping is refused, where the second is: PyYAML would keep
        the last without a word, so a person editing the first (``description: null`` left
        below a new ``description:``) would lose the edit. Go's yaml.v3, which wrote v2's files,
        refuses them too. A merge (``<<``) may still bring a key that the mapping overrides."""
        seen: set[str] = set()
        for key, _ in node.value:
            if isinstance(key, ScalarNode) and key.tag != "tag:yaml.org,2002:merge":
                if key.value in seen:
                    raise DocumentError(
                        f"the key '{key.value}' is written twice in one mapping", _where(key.start_mark)
                    )
                seen.add(key.value)
        return super().construct_mapping(node, deep)


def _check_expansion(root: Node) -> None:
    """Count the values the node graph expands to (aliases included); refuse cycles."""
    sizes: dict[int, int] = {}
    on_path: set[int] = set()
    # iterative post-order walk: (node, children already pushed)
    stack: list[tuple[Node, bool]] = [(root, False)]
    while stack:
        node, expanded = stack.pop()
        key = id(node)
        if expanded:
            on_path.discard(key)
            sizes[key] = 1 + sum(sizes[id(child)] for child in _children(node))
            if sizes[key] > MAX_YAML_NODES:
                raise DocumentRefused(
                    f"expands to more than {MAX_YAML_NODES:,} values (aliases)", _where(node.start_mark)
                )
            continue
        if key in sizes:
            continue
        if key in on_path:
            raise DocumentRefused("an alias refers to a node that contains it", _where(node.start_mark))
        on_path.add(key)
        stack.append((node, True))
        for child in _children(node):
            if id(child) in on_path:
                raise DocumentRefused("an alias refers to a node that contains it", _where(child.start_mark))
            if id(child) not in sizes:
                stack.append((child, False))


def _children(node: Node) -> list[Node]:
    if isinstance(node, SequenceNode):
        return list(node.value)
    if isinstance(node, MappingNode):
        return [part for pair in node.value for part in pair]
    return []


def _refuse_tag(loader: _BoundedLoader, node: Node) -> Any:
    raise DocumentRefused(
        f"the YAML tag {node.tag} is not allowed: documents hold JSON data only", _where(node.start_mark)
    )


def _timestamp_as_text(loader: _BoundedLoader, node: Node) -> str:
    """An unquoted date stays the text it was written as: JSON has no date type."""
    return loader.construct_scalar(node)  # type: ignore[arg-type]


def _bounded_int(loader: _BoundedLoader, node: Node) -> int:
    text = loader.construct_scalar(node)  # type: ignore[arg-type]
    if len(text.lstrip("+-").replace("_", "")) > MAX_INT_DIGITS:
        raise DocumentRefused(f"integer longer than {MAX_INT_DIGITS} digits", _where(node.start_mark))
    return loader.construct_yaml_int(node)  # type: ignore[arg-type]


def _finite_float(loader: _BoundedLoader, node: Node) -> float:
    value = loader.construct_yaml_float(node)  # type: ignore[arg-type]
    if not math.isfinite(value):
        raise DocumentRefused("numbers must be finite (no .inf or .nan)", _where(node.start_mark))
    return value


for _tag in ("set", "binary", "omap", "pairs"):
    _BoundedLoader.add_constructor(f"tag:yaml.org,2002:{_tag}", _refuse_tag)
_BoundedLoader.add_constructor("tag:yaml.org,2002:timestamp", _timestamp_as_text)
_BoundedLoader.add_constructor("tag:yaml.org,2002:int", _bounded_int)
_BoundedLoader.add_constructor("tag:yaml.org,2002:float", _finite_float)


def _yaml_error(exc: yaml.YAMLError) -> DocumentError:
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc)
    return DocumentError(f"not valid YAML/JSON: {problem}", _where(mark))


_INNERMOST = re.compile(r"\[[^\[\]{}]*\]|\{[^\[\]{}]*\}")


def _check_flow_depth(text: str) -> None:
    """Refuse deeply nested flow collections (``[[[[...``) before PyYAML's scanner sees them:
    it looks ahead to the end of a flow collection, at a cost that grows with its depth.

    Each pass removes the innermost bracket pairs (at C speed), so a document nested ``d``
    levels deep takes ``d`` passes; what is left unmatched nests too. Brackets inside quoted
    text count as well, so this is a bound, not a parse: only a document with over
    :data:`MAX_DEPTH` nested (or unclosed) brackets reaches it.
    """
    if text.count("[") + text.count("{") <= MAX_DEPTH:
        return
    skeleton = re.sub(r"[^\[\]{}]+", "", text)
    for _ in range(MAX_DEPTH + 1):
        skeleton, removed = _INNERMOST.subn("", skeleton)
        if not removed:
            break
    else:
        raise DocumentRefused(f"nested deeper than {MAX_DEPTH} levels")
    if skeleton.count("[") + skeleton.count("{") > MAX_DEPTH:
        raise DocumentRefused(f"nested deeper than {MAX_DEPTH} levels (or brackets left open)")


async def off_loop(size: int, read: Callable[..., T], *args: Any) -> T:
    """``read(*args)``, in a thread when the document is ``size`` characters or more, so that
    the loop keeps serving (pure-Python parsing gives up the GIL every few milliseconds)."""
    if size <= INLINE_PARSE_CHARS:
        return read(*args)
    return await asyncio.to_thread(read, *args)


def load_yaml(text: str) -> Any:
    """One YAML (or JSON) document as JSON data."""
    return _read_yaml(text, lambda loader: loader.get_single_data())


def load_yaml_all(text: str) -> list[Any]:
    """Every document of a YAML stream (``---`` separated) as JSON data."""
    return _read_yaml(
        text, lambda loader: [loader.construct_document(loader.get_node()) for _ in iter(loader.check_node, False)]
    )


def _read_yaml(text: str, read: Callable[[_BoundedLoader], Any]) -> Any:
    _check_flow_depth(text)
    loader = None
    try:
        loader = _BoundedLoader(text)  # the reader already refuses control characters here
        return read(loader)
    except yaml.YAMLError as exc:
        raise _yaml_error(exc) from None
    except RecursionError:
        raise DocumentRefused(f"nested deeper than {MAX_DEPTH} levels") from None
    finally:
        if loader is not None:
            loader.dispose()


# --------------------------------------------------------------------------- JSON


def _json_int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_INT_DIGITS:
        raise DocumentRefused(f"integer longer than {MAX_INT_DIGITS} digits")
    return int(text)


def _json_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise DocumentRefused(f"number {text[:40]} is out of range")
    return value


def _json_constant(name: str) -> Any:
    raise DocumentRefused(f"{name} is not a JSON number")


def load_json(text: str | bytes) -> Any:
    """A JSON document as JSON data: finite numbers, integers of bounded length, bounded nesting."""
    try:
        value = json.loads(text, parse_int=_json_int, parse_float=_json_float, parse_constant=_json_constant)
    except json.JSONDecodeError as exc:
        raise DocumentError(f"not valid JSON: {exc.msg}", f"line {exc.lineno}, column {exc.colno}") from None
    except RecursionError:
        raise DocumentRefused(f"nested deeper than {MAX_DEPTH} levels") from None
    except DocumentError:
        raise
    except ValueError as exc:
        raise DocumentError(f"not valid JSON: {exc}") from None
    check_data(value)
    return value


def check_data(value: Any) -> None:
    """Refuse nesting deeper than :data:`MAX_DEPTH` and containers that contain themselves."""
    stack: list[tuple[Any, int]] = [(value, 0)]
    seen: set[int] = set()
    while stack:
        item, depth = stack.pop()
        if not isinstance(item, (dict, list)):
            continue
        if depth >= MAX_DEPTH:
            raise DocumentRefused(f"nested deeper than {MAX_DEPTH} levels")
        if id(item) in seen:
            if _contains(item, item):
                raise DocumentRefused("a value contains itself")
            continue
        seen.add(id(item))
        children = item.values() if isinstance(item, dict) else item
        stack.extend((child, depth + 1) for child in children)


def _contains(container: Any, target: Any) -> bool:
    """Whether ``target`` is reachable from inside ``container`` (only asked for shared values)."""
    stack = list(container.values() if isinstance(container, dict) else container)
    seen: set[int] = set()
    while stack:
        item = stack.pop()
        if item is target:
            return True
        if isinstance(item, (dict, list)) and id(item) not in seen:
            seen.add(id(item))
            stack.extend(item.values() if isinstance(item, dict) else item)
    return False


def load_any(text: str) -> list[Any]:
    """The documents of a text that is either one JSON document or a YAML stream."""
    try:
        return [load_json(text)]
    except DocumentRefused:
        raise
    except DocumentError:
        return load_yaml_all(text)
