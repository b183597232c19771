"""Secrets: which environment variables an agent may use as its API key, and masking their values.

An agent names the variable that holds its key (``api_key_env``) and chooses where the key
is sent (``api_base``), so without a rule any server variable (``HOME``, a database URL)
could be sent to any host. :class:`SecretPolicy` is that rule: only names matching a pattern
(by default ending in ``_API_KEY``, ``_KEY`` or ``_TOKEN``) may be used.

Whatever a step returns may still contain a secret (a reply that echoes its bearer token, a
shell command that prints its environment). :class:`SecretMasker` replaces the value of every
set variable whose name matches the policy with ``***`` in what leaves a worker (outputs,
errors, progress events), in everything the engine stores and announces (its group-commit
writer masks each batch: run inputs, approval previews, errors) and in log records, the way
CI systems mask their secrets. Like theirs, it also masks the forms a secret is most often
printed in: base64 (at each of the three alignments inside a longer encoding), URL
percent-encoding and JSON string escaping.

Masking what is shown cannot help a secret pasted into a document (a workflow's prompt, an
agent's system prompt): the document is stored, copied into every run's snapshot and sent
to the model. :meth:`SecretMasker.locate` finds such values so that saving refuses them,
naming the field and the variable, never the value.
"""

from __future__ import annotations

import base64
import json
import logging
import math
import os
import re
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

from pydantic_core import PydanticSerializationError, to_json

DEFAULT_SECRET_ENV_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*(_API_KEY|_KEY|_TOKEN)$"
MASK = "***"
MIN_SECRET_LENGTH = 4
"""Shorter values are not masked (masking ``1`` or ``on`` everywhere would garble every
output), so they may not be an agent's key either."""


class SecretPolicy:
    """Which environment variable names hold secrets (and so may be an agent's ``api_key_env``)."""

    def __init__(self, pattern: str = DEFAULT_SECRET_ENV_PATTERN) -> None:
        self.pattern = pattern
        self._regex = re.compile(pattern)

    def allows(self, name: str) -> bool:
        return self._regex.fullmatch(name) is not None

    def refusal(self, name: str) -> str:
        return (
            f"environment variable {name} may not be used as an API key: its name must match "
            f"{self.pattern} (the server's ClarionExtension.secret_env_pattern)"
        )

    def key_problem(self, name: str, environ: Mapping[str, str] | None = None) -> str | None:
        """Why the variable ``name`` cannot be used as a key now (None: it can, or it is unset,
        which the provider reports itself)."""
        if not self.allows(name):
            return self.refusal(name)
        value = (os.environ if environ is None else environ).get(name)
        if value and len(value) < MIN_SECRET_LENGTH:
            return (
                f"environment variable {name} holds {len(value)} characters: too short to be masked "
                f"in what Clarion stores, so it may not be used as an API key (at least {MIN_SECRET_LENGTH})"
            )
        return None

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SecretPolicy) and other.pattern == self.pattern

    def __hash__(self) -> int:
        return hash(self.pattern)

    def __repr__(self) -> str:
        return f"SecretPolicy({self.pattern!r})"


ENVIRONMENT_TTL_S = 1.0


@dataclass(slots=True)
class _Scan:
    """One policy's read of the process's environment: the secret values, when they were
    checked, and the raw environment they came from."""

    values: frozenset[str]
    checked_at: float
    raw: dict[bytes, bytes]
    """A copy of the bytes mapping behind ``os.environ`` (``os.environ._data``, on POSIX), as it
    was read. Comparing it with the live one is a dictionary comparison in C, a few microseconds,
    where reading the environment again decodes and matches every variable (~0.1 ms): most
    re-reads (every new run asks for one) find nothing changed, and then cost only that."""


_scans: dict[str, _Scan] = {}
"""The secret values of the process's environment, by policy pattern."""


def _raw_environ() -> dict[bytes, bytes]:
    return os.environ._data  # type: ignore[attr-defined]  # CPython's own store behind os.environ


def reread_environment(*names: str) -> None:
    """Make every masker check the environment again before it next masks.

    With ``names`` (the variables a step is about to hand on), only when one of them holds a
    value that some masker's last read lacks: a call's key is nearly always the one read a
    moment ago. A check that finds the environment as it was read costs a dictionary
    comparison (see :class:`_Scan`), not another read."""
    if names and all(_known(name) for name in names):
        return
    for scan in _scans.values():
        scan.checked_at = -math.inf


def _known(name: str) -> bool:
    """Whether every cached read whose policy counts ``name`` as a secret holds its value."""
    value = os.environ.get(name)
    if not value or len(value) < MIN_SECRET_LENGTH:
        return True
    return all(value in scan.values or re.fullmatch(pattern, name) is None for pattern, scan in _scans.items())


class SecretMasker:
    """Masks the current values of the secret environment variables in text and JSON data.

    A key exported after the server started is masked too. Reading the whole environment
    costs ~0.1 ms, and masking happens several times per step, so the process's environment
    is checked for changes at most every :data:`ENVIRONMENT_TTL_S`, and at once after
    :func:`reread_environment`, which every step that hands secrets on (an LLM call reading its
    key, a shell command given the environment) calls first: a value a step can print is
    always known by then. The compiled pattern is rebuilt only when the values change.
    """

    def __init__(self, policy: SecretPolicy | None = None, environ: Mapping[str, str] | None = None) -> None:
        self.policy = policy or SecretPolicy()
        self._environ = os.environ if environ is None else environ
        self._values: frozenset[str] = frozenset()
        self._regex: re.Pattern[str] | None = None
        self._probe: re.Pattern[str] | None = None

    def _scan(self) -> frozenset[str]:
        return frozenset(
            value
            for name, value in self._environ.items()
            if len(value) >= MIN_SECRET_LENGTH and self.policy.allows(name)
        )

    def _current(self) -> frozenset[str]:
        if self._environ is not os.environ:
            return self._scan()
        now = time.monotonic()
        scan = _scans.get(self.policy.pattern)
        if scan is not None and now - scan.checked_at <= ENVIRONMENT_TTL_S:
            return scan.values
        raw = _raw_environ()
        if scan is not None and scan.raw == raw:
            scan.checked_at = now
            return scan.values
        copied = dict(raw)  # before the read: a change made meanwhile differs from it at the next check
        scan = _scans[self.policy.pattern] = _Scan(self._scan(), now, copied)
        return scan.values

    def _pattern(self) -> re.Pattern[str] | None:
        values = self._current()
        if values != self._values:
            self._values = values
            forms = {form for value in values for form in _printed_forms(value) if len(form) >= MIN_SECRET_LENGTH}
            self._regex = _alternatives(forms)
            self._probe = _alternatives(forms | {_escaped(form) for form in forms})
        return self._regex

    def masking(self) -> Callable[[Any], Any] | None:
        """:meth:`mask` for the secrets set now, or None when there are none (nothing to do)."""
        regex = self._pattern()
        probe = self._probe
        return None if regex is None else lambda value: _mask_data(value, regex, probe)

    @property
    def longest(self) -> int:
        """Length of the longest secret value (0 when none is set): how much of a stream to hold
        back so that a secret split across two pieces is still masked."""
        self._pattern()
        return max(map(len, self._values), default=0)

    def text(self, text: str) -> str:
        regex = self._pattern()
        return text if regex is None else regex.sub(MASK, text)

    def mask(self, value: Any) -> Any:
        """``value`` with every secret inside its strings (keys included) replaced by ``***``."""
        regex = self._pattern()
        return value if regex is None else _mask_data(value, regex, self._probe)

    def locate(self, value: Any) -> list[tuple[tuple[str | int, ...], str]]:
        """Where in ``value`` (a JSON document) the value of a set secret variable appears, in
        any printed form, as (path, variable name) pairs; keys count as their mapping's path.
        The environment is read afresh: a document is saved rarely, and a key exported a moment
        ago must count."""
        reread_environment()
        regex = self._pattern()
        if regex is None or _clean(value, self._probe):  # nearly always
            return []
        owners = {
            form: name
            for name, secret in sorted(self._environ.items())
            if len(secret) >= MIN_SECRET_LENGTH and self.policy.allows(name)
            for form in _printed_forms(secret)
        }
        found: list[tuple[tuple[str | int, ...], str]] = []
        for path, text in _strings(value, ()):
            if (hit := regex.search(text)) is not None:
                found.append((path, owners.get(hit.group(), "a secret variable")))
        return found


def _printed_forms(value: str) -> Iterator[str]:
    """The value, and how it looks base64-, URL- or JSON-encoded.

    Inside a longer base64 text, the value's bytes start at any of three alignments; for each,
    only the characters that depend on the value alone are kept (the first and last ones also
    carry bits of the neighbouring bytes)."""
    yield value
    yield quote(value, safe="")
    yield json.dumps(value)[1:-1]
    raw = value.encode()
    for shift, dropped in ((0, 0), (1, 2), (2, 3)):
        for encode in (base64.b64encode, base64.urlsafe_b64encode):
            encoded = encode(b"\0" * shift + raw).decode().rstrip("=")[dropped:]
            yield encoded if (shift + len(raw)) % 3 == 0 else encoded[:-1]


def _alternatives(forms: set[str]) -> re.Pattern[str] | None:
    ordered = sorted(forms, key=len, reverse=True)  # longest first: a key containing another
    return re.compile("|".join(map(re.escape, ordered))) if ordered else None


def _escaped(form: str) -> str:
    """A form as it looks inside a JSON string that pydantic-core wrote (non-ASCII kept)."""
    return json.dumps(form, ensure_ascii=False)[1:-1]


def _probe_text(value: Any) -> str:
    """The value encoded at C speed, to look for secrets in. A string holding a secret's form
    holds, once JSON-escaped, that form JSON-escaped (escaping goes character by character),
    so the probe pattern (every form, and every form escaped) finds in the encoding whatever
    :func:`_mask` would find in the strings; what is not JSON :func:`_mask` leaves alone, and
    the encoding leaves it out (``null``)."""
    return to_json(value, fallback=_left_out).decode()


def _left_out(_value: Any) -> None:
    """What :func:`_probe_text` encodes a value that is not JSON as."""


def _clean(value: Any, probe: re.Pattern[str]) -> bool:
    """Whether a dict or list holds no form of a secret, as its encoding shows at C speed
    (False also when it cannot be told so: a lone surrogate, a cycle)."""
    if not isinstance(value, (dict, list, tuple)):
        return False
    try:
        return probe.search(_probe_text(value)) is None
    except (PydanticSerializationError, TypeError, ValueError, RecursionError):
        return False


def _mask_data(value: Any, regex: re.Pattern[str], probe: re.Pattern[str]) -> Any:
    """:func:`_mask`, unless the value is :func:`_clean` (nearly always: the walk over every
    string of every output, event and record was most of masking's cost): then ``value`` itself."""
    return value if _clean(value, probe) else _mask(value, regex)


def _mask(value: Any, regex: re.Pattern[str]) -> Any:
    if isinstance(value, str):
        return regex.sub(MASK, value)
    if isinstance(value, dict):
        return {_mask(k, regex): _mask(v, regex) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_mask(item, regex) for item in value]
    return value


SECRET_IN_DOCUMENT = (
    "holds the value of the secret variable {name}: documents are stored and shown as written "
    "(in every run's snapshot too), so a secret may not be pasted into one; leave it in the "
    "environment and name the variable (an agent's api_key_env)"
)
"""Why a document is refused, naming the variable (never its value)."""


def _strings(value: Any, path: tuple[str | int, ...]) -> Iterator[tuple[tuple[str | int, ...], str]]:
    if isinstance(value, str):
        yield path, value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _strings(key, path)
            yield from _strings(item, (*path, key))
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            yield from _strings(item, (*path, index))


class SecretLogFilter(logging.Filter):
    """Masks secrets in a log record's message (its arguments merged in) and exception text."""

    def __init__(self, masker: SecretMasker) -> None:
        super().__init__()
        self.masker = masker

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        masked = self.masker.text(message)
        if masked != message:
            record.msg, record.args = masked, None
        if record.exc_info and record.exc_info[1] is not None:
            text = logging.Formatter().formatException(record.exc_info)
            masked_exc = self.masker.text(text)
            if masked_exc != text:
                record.exc_info, record.exc_text = None, masked_exc
        return True


_SECRET_PARAMS = ("pass", "token", "secret", "key")
"""Query parameters whose values are credentials (``password=``, ``auth_token=``, ``api_key=``)."""


def redact_url(url: str, *, keep: frozenset[str] = frozenset()) -> str:
    """``url`` fit to show in health, logs and errors: the password or token in its user info
    (also NATS's ``nats://TOKEN@host``) and credential-like query parameters masked; ``keep``
    names parameters that only look like credentials."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, host = netloc.rpartition("@")
        user, sep, _password = userinfo.partition(":")
        netloc = f"{user}:***@{host}" if sep else f"***@{host}"
    query = [
        (k, "***" if k not in keep and any(s in k.lower() for s in _SECRET_PARAMS) else v)
        for k, v in parse_qsl(parts.query)
    ]
    return urlunsplit(parts._replace(netloc=netloc, query=urlencode(query, safe="*")))
