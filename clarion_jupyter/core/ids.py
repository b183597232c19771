"""Identifiers: document slugs and time-ordered run ids."""

from __future__ import annotations

import getpass
import re
import secrets
import time
import unicodedata

SLUG_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,63}$"
"""Agent and workflow ids."""


def slugify(name: str, fallback: str = "workflow") -> str:
    """An id derived from a display name (``"Bug Triager"`` -> ``"bug-triager"``)."""
    ascii_name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    slug = re.sub(r"[^a-z0-9_-]+", "-", ascii_name.lower()).strip("-_")[:64]
    return slug or fallback


RUN_ID_TIME_DIGITS = 12
"""A run id begins with its time: milliseconds since the epoch, in this many hex digits."""


def new_run_id() -> str:
    """Time-ordered ids: sorting by id sorts by submission time, which makes paging cheap."""
    return f"{run_id_floor(time.time_ns() // 1_000_000)}{secrets.token_hex(7)}"


def run_id_floor(ms: int) -> str:
    """The lowest run id made at ``ms`` (milliseconds since the epoch) or later: ``run_id >=
    run_id_floor(t)`` selects the runs submitted since ``t``."""
    return f"{max(0, ms):0{RUN_ID_TIME_DIGITS}x}"


def run_id_ms(run_id: str) -> int | None:
    """When a run id was made (milliseconds since the epoch); ``None`` for a string that is not one."""
    prefix = run_id[:RUN_ID_TIME_DIGITS]
    if len(prefix) < RUN_ID_TIME_DIGITS or any(c not in "0123456789abcdef" for c in prefix):
        return None
    return int(prefix, 16)


def local_user() -> str | None:
    """Who decides at this machine's terminal or kernel: the login name (None when unknown).
    Through a server, decisions carry the Jupyter identity instead."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return None
