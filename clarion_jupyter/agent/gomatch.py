"""Go's ``path/filepath.Match``, the glob meaning of Clarion v2 agents, in Python.

v2 selected a file when ``filepath.Match(pattern, relative_path)`` said so: the pattern
must match the *whole* slash-separated path, ``*`` is any run of characters but ``/``,
``?`` one character but ``/``, ``[...]`` / ``[^...]`` one character of (or not of) a class
(ranges ``a-z``, ``\\`` escapes) and ``\\x`` a literal ``x``. There is no ``**``: two stars
are just one. A malformed pattern (``[``, ``[]``, a trailing ``\\``) matched nothing, because
v2 ignored the error. Imported agents keep that meaning, so they select the files they did.
"""

from __future__ import annotations

import re
from functools import lru_cache

_NEVER = re.compile(r"(?!)")


def go_match(pattern: str, path: str) -> bool:
    """Whether Go's ``filepath.Match(pattern, path)`` reports a match (on a posix path)."""
    return compile_go_glob(pattern).fullmatch(path) is not None


def is_valid_go_glob(pattern: str) -> bool:
    return _translate(pattern) is not None


@lru_cache(maxsize=1024)
def compile_go_glob(pattern: str) -> re.Pattern[str]:
    translated = _translate(pattern)
    return _NEVER if translated is None else re.compile(translated, re.DOTALL)


def _translate(pattern: str) -> str | None:
    """The pattern as a regular expression, or None when Go reports ``ErrBadPattern``."""
    out: list[str] = []
    i, n = 0, len(pattern)
    while i < n:
        char = pattern[i]
        if char == "*":
            out.append("[^/]*")
            i += 1
        elif char == "?":
            out.append("[^/]")
            i += 1
        elif char == "\\":
            if i + 1 >= n:
                return None
            out.append(re.escape(pattern[i + 1]))
            i += 2
        elif char == "[":
            parsed = _char_class(pattern, i + 1)
            if parsed is None:
                return None
            expression, i = parsed
            out.append(expression)
        else:
            out.append(re.escape(char))
            i += 1
    return "".join(out)


def _char_class(pattern: str, i: int) -> tuple[str, int] | None:
    """``[`` was at ``i - 1``: the class as a regex and the index after its ``]``."""
    negated = i < len(pattern) and pattern[i] == "^"
    if negated:
        i += 1
    ranges: list[tuple[str, str]] = []
    while True:
        if i < len(pattern) and pattern[i] == "]" and ranges:
            i += 1
            break
        lo, i = _class_char(pattern, i)
        if lo is None:
            return None
        hi = lo
        if pattern[i] == "-":  # _class_char guarantees a character follows
            hi, i = _class_char(pattern, i + 1)
            if hi is None:
                return None
        ranges.append((lo, hi))
    body = "".join(f"{re.escape(lo)}-{re.escape(hi)}" for lo, hi in ranges if lo <= hi)
    if not body:  # only inverted ranges: matches no character (or any, negated)
        return ("(?s:.)" if negated else "(?!)"), i
    return f"[{'^' if negated else ''}{body}]", i


def _class_char(pattern: str, i: int) -> tuple[str | None, int]:
    """One (possibly escaped) class character, as Go's ``getEsc`` reads it."""
    if i >= len(pattern) or pattern[i] in "-]":
        return None, i
    if pattern[i] == "\\":
        i += 1
        if i >= len(pattern):
            return None, i
    char = pattern[i]
    i += 1
    if i >= len(pattern):  # the class never closes
        return None, i
    return char, i
