"""What a run may store: every value (a step's config, output, approval preview, the run's
outputs) must encode as JSON, within ``max_output_bytes`` where that applies.

It is checked in the step that made the value, so a bad value fails that step with a
message naming its field instead of reaching the group commit, where it would fail a batch
of other runs' work.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from jinja2 import Undefined
from pydantic_core import PydanticSerializationError, to_json

from ..storage.records import isoformat, without_surrogates
from .templates import TemplateError


def storable(value: Any, where: str, limit: int | None) -> Any:
    """``value`` as a run keeps it; raise :class:`TemplateError` naming the field of it that
    cannot be stored. A lone surrogate becomes U+FFFD here, where the value enters the run,
    so its view, its events and its later steps hold what the store keeps (the same object
    otherwise)."""
    if not isinstance(value, dict):
        return _field(value, where, limit)
    kept = {key: _field(item, f"{where}.{key}" if key else where, limit) for key, item in value.items()}
    return value if all(kept[key] is item for key, item in value.items()) else kept


def _field(value: Any, name: str, limit: int | None) -> Any:
    try:
        size, kept = _encoded(value)
    except (TypeError, ValueError, RecursionError) as exc:
        raise TemplateError(f"field '{name}' is not a JSON value: {exc}") from None
    if limit is not None and size > limit:
        raise TemplateError(f"field '{name}' is {size} bytes, more than the limit of {limit} (max_output_bytes)")
    return kept


def _json_default(value: Any) -> Any:
    """What the store writes besides JSON's own types; anything else (an undefined template
    value, an object) is refused."""
    if isinstance(value, datetime):
        return isoformat(value)
    if isinstance(value, Undefined):
        raise TypeError(f"a template gave an undefined value ({value._undefined_message})")
    raise TypeError(f"{type(value).__name__} is not JSON")


def _encoded(value: Any) -> tuple[int, Any]:
    """Bytes of the value's JSON, by pydantic-core (several times faster than ``json``, twice
    per step), and the value to keep; ``json`` says why a value is refused."""
    try:
        return len(to_json(value, fallback=_json_default)), value
    except PydanticSerializationError:
        kept = without_surrogates(value)
        return len(_ENCODER.encode(kept)), kept


_ENCODER = json.JSONEncoder(default=_json_default, separators=(",", ":"))
"""Built once: ``json.dumps`` with options builds an encoder per call."""
