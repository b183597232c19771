"""What every Clarion handler shares: the engine, JSON errors, request bodies and query parameters.

Errors are the API's contract (``{"error": {"code", "message", "details"}}``), so they are
rendered here once for REST and WebSocket handlers alike: a :class:`ClarionError` keeps its
own status, tornado's HTTP errors (403, 404, 405) get a code named after their status, and
anything else is a server bug: 500, logged with its traceback, and never shown to the client.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import shutil
import tempfile
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar

from jupyter_server.base.handlers import APIHandler
from jupyter_server.utils import url_path_join
from pydantic import BaseModel, ValidationError
from tornado import httputil, web

from ..core.documents import DocumentError, load_json, load_yaml, off_loop
from ..core.errors import BadRequest, ClarionError, ValidationFailed
from ..workflow.models import pydantic_problems

if TYPE_CHECKING:
    from ..workflow.engine import Engine
    from .app import ClarionExtension

log = logging.getLogger(__name__)
M = TypeVar("M", bound=BaseModel)

EXTENSION_NAME = "clarion_jupyter"
AUTH_RESOURCE = "clarion"
"""The resource name Jupyter authorizers see for every Clarion endpoint."""
YAML_TYPES = frozenset({"application/yaml", "application/x-yaml", "text/yaml", "text/x-yaml"})
DOCUMENT_TYPES = YAML_TYPES | {"application/json", "", "application/x-www-form-urlencoded"}
"""Media types read as JSON or YAML. No type, or the form type that ``curl -d`` and tornado's
client send when none is given, means JSON."""
INTERNAL_ERROR = "internal server error (the details are in the server log)"


class PayloadTooLarge(ClarionError):
    """A body over the server's limit: refused before it is parsed, so one request cannot exhaust memory."""

    code = "payload_too_large"
    status = 413


class UnsupportedMediaType(ClarionError):
    """A body in a media type the endpoint does not read: 415, rather than a guess at its syntax."""

    code = "unsupported_media_type"
    status = 415


def error_document(status: int, exc: BaseException | None) -> tuple[int, dict[str, Any]]:
    """The status and body that answer a failed request."""
    if isinstance(exc, ClarionError):
        return exc.status, exc.as_dict()
    if status >= 500:
        return 500, {"error": {"code": "internal", "message": INTERNAL_ERROR, "details": None}}
    phrase = httputil.responses.get(status, "Error")
    message = phrase
    if isinstance(exc, web.HTTPError) and exc.log_message:
        message = exc.log_message % exc.args if exc.args else exc.log_message
    return status, {"error": {"code": re.sub(r"\W+", "_", phrase.lower()), "message": message, "details": None}}


class ClarionHandlerMixin:
    """Shared by the REST and WebSocket handlers (a mixin, since their tornado bases differ)."""

    auth_resource = AUTH_RESOURCE
    settings: dict[str, Any]
    request: httputil.HTTPServerRequest

    @property
    def clarion(self) -> ClarionExtension:
        return self.settings[EXTENSION_NAME]

    async def engine(self) -> Engine:
        return await self.clarion.ready()

    def int_argument(self, name: str, default: int, minimum: int, maximum: int | None = None) -> int:
        """An integer query parameter within bounds; anything else is the client's error (400)."""
        raw = self.get_query_argument(name, None)  # type: ignore[attr-defined]
        if raw is None:
            return default
        try:
            value = int(raw)
        except ValueError:
            raise BadRequest(f"query parameter '{name}' must be an integer", details={name: raw}) from None
        if value < minimum or (maximum is not None and value > maximum):
            bounds = f"between {minimum} and {maximum}" if maximum is not None else f"at least {minimum}"
            raise BadRequest(f"query parameter '{name}' must be {bounds}", details={name: value})
        return value

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        exc_info = kwargs.get("exc_info")
        status, body = error_document(status_code, exc_info[1] if exc_info else None)
        self.set_status(status)  # type: ignore[attr-defined]
        self.set_header("Content-Type", "application/json")  # type: ignore[attr-defined]
        if status == 405:
            self.set_header("Allow", ", ".join(self.allowed_methods()))  # type: ignore[attr-defined]
        self.finish(json.dumps(body))  # type: ignore[attr-defined]

    def allowed_methods(self) -> list[str]:
        """The methods this handler implements (tornado's base class answers 405 for the rest)."""
        return [
            method
            for method in ("GET", "POST", "PUT", "PATCH", "DELETE")
            if getattr(type(self), method.lower()) is not getattr(web.RequestHandler, method.lower())
        ]

    def log_exception(
        self, typ: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None
    ) -> None:
        """Client errors are one line without the request body; only server bugs get a traceback."""
        if isinstance(value, ClarionError):
            log.info("%s %s -> %d %s", self.request.method, self.request.path, value.status, value.code)
        elif isinstance(value, web.HTTPError):
            super().log_exception(typ, value, tb)  # type: ignore[misc]
        else:
            log.error("%s %s failed", self.request.method, self.request.path, exc_info=(typ, value, tb))  # type: ignore[arg-type]


class ClarionHandler(ClarionHandlerMixin, APIHandler):
    """Base of the REST handlers: JSON in, JSON out."""

    async def prepare(self) -> None:  # type: ignore[override]
        await super().prepare()
        # Unauthenticated requests go on to be refused (403) by the method's decorators.
        if self.current_user is not None and len(self.request.body) > self.clarion.max_body_bytes:
            raise PayloadTooLarge(
                f"the request body is larger than the limit of {self.clarion.max_body_bytes} bytes",
                details={"limit": self.clarion.max_body_bytes, "size": len(self.request.body)},
            )

    @property
    def media_type(self) -> str:
        return self.request.headers.get("Content-Type", "").split(";")[0].strip().lower()

    def body_text(self, accept: frozenset[str] = DOCUMENT_TYPES) -> str:
        if self.request.body and self.media_type not in accept:
            raise UnsupportedMediaType(
                f"cannot read a {self.media_type} body: send application/json or application/yaml",
                details={"content_type": self.media_type},
            )
        try:
            return self.request.body.decode("utf-8")
        except UnicodeDecodeError:
            raise BadRequest("the request body is not UTF-8 text") from None

    async def body_document(self, *, required: bool = True) -> dict[str, Any]:
        """The body as a mapping: YAML with a YAML content type, JSON otherwise; 400 if malformed or
        beyond the bounds of :mod:`..core.documents` (nesting, aliases, number sizes, non-JSON types).
        A large body is parsed in a thread."""
        text = self.body_text()
        if not required and not text.strip():
            return {}
        try:
            doc = await off_loop(len(text), load_yaml if self.media_type in YAML_TYPES else load_json, text)
        except DocumentError as exc:
            raise BadRequest(f"the request body is {exc}", details={"where": exc.where}) from None
        if not isinstance(doc, dict):
            raise BadRequest("the request body must be an object (a mapping)")
        return doc

    async def body_model(self, model: type[M], what: str, doc: dict[str, Any] | None = None) -> M:
        """The body (or ``doc``) validated by a pydantic model; problems name their fields (422)."""
        doc = await self.body_document(required=False) if doc is None else doc
        try:
            return model.model_validate(doc)
        except ValidationError as exc:
            raise ValidationFailed(pydantic_problems(exc, doc), what=what) from None

    @property
    def user_name(self) -> str | None:
        """Who is deciding or starting something, as Jupyter's identity provider names them to people:
        ``display_name``, else ``name``, else ``username`` (which may be a random id)."""
        user = self.current_user
        named = getattr(user, "display_name", None) or getattr(user, "name", None) or getattr(user, "username", None)
        return named or (user if isinstance(user, str) else None)

    def api_url(self, *parts: str) -> str:
        return url_path_join(self.base_url, "api/v3", *parts)

    def reply(self, doc: Any, status: int = 200, location: str | None = None) -> None:
        self.set_status(status)
        if location is not None:
            self.set_header("Location", location)
        self.finish(json.dumps(doc, default=str))


class SpooledUpload(ClarionHandler):
    """Base of a handler (decorated with tornado's ``stream_request_body``) whose body may be far
    larger than ``max_body_bytes``: a ``clarion.db`` of any size up to ``max_import_bytes``.

    The body is written to a file in a private temporary folder as it arrives, through a
    thread, so memory stays flat and the loop never waits on the disk; the handler reads the
    file from :attr:`upload_path`. Only ``application/octet-stream`` (a database file) gets the
    larger limit: any other body is still bounded by ``max_body_bytes`` and is read into
    ``request.body`` (and ``request.files``) as tornado would have, so documents are parsed
    with the usual bounds. The folder goes when the request ends."""

    _folder: Path | None = None
    _file: Any = None
    _received = 0

    async def prepare(self) -> None:  # type: ignore[override]
        await super().prepare()
        if self.current_user is None:
            return  # refused (403) by the method's decorators; nothing is spooled
        limit = self.upload_limit
        declared = int(self.request.headers.get("Content-Length", "0") or 0)
        if declared > limit:
            raise PayloadTooLarge(self._too_large(limit), details={"limit": limit, "size": declared})
        self.request.connection.set_max_body_size(limit)  # type: ignore[union-attr]
        self._folder = Path(await asyncio.to_thread(tempfile.mkdtemp, prefix="clarion-upload-"))
        self._file = await asyncio.to_thread((self._folder / self.upload_name).open, "wb")

    @property
    def upload_limit(self) -> int:
        """The largest body this request may send: a database file's, else any body's."""
        if self.media_type == "application/octet-stream":
            return self.clarion.max_import_bytes
        return self.clarion.max_body_bytes

    @property
    def upload_name(self) -> str:
        """The file name the client gave (``Content-Disposition: attachment; filename=...``), so
        the report names the file as a local import would; ``upload`` when it gave none."""
        _, params = httputil._parse_header(self.request.headers.get("Content-Disposition", ""))
        name = Path(params.get("filename", "")).name
        return name if name not in ("", ".", "..") else "upload"

    @property
    def upload_path(self) -> Path:
        assert self._folder is not None
        return self._folder / self.upload_name

    def _too_large(self, limit: int) -> str:
        if self.media_type == "application/octet-stream":
            return f"the upload is larger than the import limit of {limit} bytes (the server's max_import_bytes)"
        return (
            f"the request body is larger than the limit of {limit} bytes: send a clarion.db on its own as "
            "application/octet-stream (`clarion agents import path/to/clarion.db` does), which may be larger"
        )

    async def data_received(self, chunk: bytes) -> None:
        if self._file is None:
            return
        self._received += len(chunk)
        await asyncio.to_thread(self._file.write, chunk)

    async def spooled(self) -> None:
        """Once the body is in: close the file, and put a small body where tornado puts one."""
        if self._file is None:
            return
        await asyncio.to_thread(self._file.close)
        if self.media_type != "application/octet-stream":
            self.request.body = await self.spooled_body()
            try:
                httputil.parse_body_arguments(
                    self.request.headers.get("Content-Type", ""),
                    self.request.body,
                    self.request.body_arguments,
                    self.request.files,
                    self.request.headers,
                )
            except httputil.HTTPInputError as exc:  # no boundary, no final boundary, a part without headers
                raise BadRequest(f"the request body is not a valid form upload: {exc}") from None

    async def spooled_body(self) -> bytes:
        """The spooled body in memory, for what is not read from the file: within ``max_body_bytes``."""
        limit = self.clarion.max_body_bytes
        if self._received > limit:
            raise PayloadTooLarge(
                f"the request body is larger than the limit of {limit} bytes, and is not a clarion.db",
                details={"limit": limit, "size": self._received},
            )
        return await asyncio.to_thread(self.upload_path.read_bytes)

    def on_finish(self) -> None:
        self._discard()

    def on_connection_close(self) -> None:
        super().on_connection_close()
        self._discard()

    def _discard(self) -> None:
        folder, file, self._folder, self._file = self._folder, self._file, None, None
        if folder is not None:
            asyncio.get_running_loop().run_in_executor(None, _remove, folder, file)


def _remove(folder: Path, file: Any) -> None:
    """Blocking: close the spool file (a request cut short leaves it open) and remove its folder."""
    if file is not None:
        file.close()
    shutil.rmtree(folder, ignore_errors=True)
