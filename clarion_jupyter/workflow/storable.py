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

from ..storage.records import isoformat
from .templates import TemplateError


def check_storable(value: Any, where: str, limit: int | None) -> None:
    """Raise :class:`TemplateError` naming the field of ``value`` that cannot be stored."""
    items = value.items() if isinstance(value, dict) else [("", value)]
    for key, item in items:
        name = f"{where}.{key}" if key else where
        try:
            size = _size(item)
        except (TypeError, ValueError, RecursionError) as exc:
            raise TemplateError(f"field '{name}' is not a JSON value: {exc}") from None
        if limit is not None and size > limit:
            raise TemplateError(f"field '{name}' is {size} bytes, more than the limit of {limit} (max_output_bytes)")


def _json_default(value: Any) -> Any:
    """What the store writes besides JSON's own types; anything else (an undefined template
    value, an object) is refused."""
    if isinstance(value, datetime):
        return isoformat(value)
    if isinstance(value, Undefined):
        raise TypeError(f"a template gave an undefined value ({value._undefined_message})")
    raise TypeError(f"{type(value).__name__} is not JSON")


def _size(value: Any) -> int:
    """Bytes of the value's JSON, by pydantic-core (several times faster than ``json``, twice
    per step); ``json`` says why a value is refused, and takes the lone surrogates that the
    store writes as U+FFFD (:func:`~..storage.records.json_text`)."""
    try:
        return len(to_json(value, fallback=_json_default))
    except PydanticSerializationError:
        return len(_ENCODER.encode(value))


_ENCODER = json.JSONEncoder(default=_json_default, separators=(",", ":"))
"""Built once: ``json.dumps`` with options builds an encoder per call."""
