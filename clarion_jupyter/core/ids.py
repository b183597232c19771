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


def new_run_id() -> str:
    """Time-ordered ids: sorting by id sorts by submission time, which makes paging cheap."""
    return f"{time.time_ns() // 1_000_000:012x}{secrets.token_hex(7)}"


def local_user() -> str | None:
    """Who decides at this machine's terminal or kernel: the login name (None when unknown).
    Through a server, decisions carry the Jupyter identity instead."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return None
