"""The Jupyter server extension: one :class:`Engine` for the server's lifetime, and the v3 API.

The engine owns the DuckDB file, so opening it can fail (another process holds it). That
must not take the whole Jupyter server down with it: the failure is logged once, with the
engine's own explanation, and every Clarion endpoint then answers 503 with that message
while the rest of Jupyter keeps working.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import re
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from jupyter_server.extension.application import ExtensionApp
from traitlets import Bool, Enum, Float, Integer, TraitError, Unicode, default, validate

from .._version import __version__
from ..core.errors import ClarionError
from ..core.protocol import CloseCode, RunStatus
from ..core.secrets import DEFAULT_SECRET_ENV_PATTERN, SecretPolicy
from ..storage.database import DEFAULT_MEMORY_LIMIT, check_memory_limit, default_db_path
from ..storage.llm_cache import DEFAULT_MAX_BYTES as DEFAULT_LLM_CACHE_MAX_BYTES
from ..storage.query import MAX_BYTES
from ..task.base import DEFAULT_MAX_OUTPUT_BYTES
from ..task.broker import redact
from ..workflow.engine import Engine
from ..workflow.validation import DEFAULT_MAX_STEPS
from .base import EXTENSION_NAME
from .handlers import default_handlers
from .logs import JUPYTER_LOG_TEMPLATE, configure_logging
from .websocket import EventSocket, websocket_handlers

if TYPE_CHECKING:
    from jupyter_server.serverapp import ServerApp

log = logging.getLogger(__name__)


class EngineUnavailable(ClarionError):
    """The engine is not running: it failed to start (e.g. the database is locked) or is stopping."""

    status = 503

    def __init__(self, message: str, details: Any = None, code: str = "unavailable") -> None:
        super().__init__(message, details)
        self.code = code


class ClarionExtension(ExtensionApp):
    """Hosts the Clarion workflow engine in the Jupyter server and serves its REST and WebSocket API."""

    name = EXTENSION_NAME
    description = "Clarion v3: AI agents and durable workflows, hosted by the Jupyter server."

    db_path = Unicode(
        help="The DuckDB file holding agents, workflows and runs (default: $CLARION_DB, "
        "else clarion/clarion.duckdb in the Jupyter data dir). Only one process may open it."
    ).tag(config=True)
    db_memory_limit = Unicode(
        DEFAULT_MEMORY_LIMIT,
        help="What DuckDB may keep in memory for the database (its buffer pool: table pages, the primary "
        "keys' indexes, the engine's own query state), as a size such as 512MB or 2GB (default 1GB). DuckDB's "
        "own default is 80% of RAM, and it keeps every page it reads until that fills, so without a limit the "
        "server's memory grows with the run history; past the limit, pages are evicted and read from the file "
        "again. History queries have a 1GB limit of their own.",
    ).tag(config=True)
    workers = Integer(8, min=1, help="How many steps run concurrently in this server.").tag(config=True)
    queue_url = Unicode(
        "local", help="Where step jobs go: 'local' (in-process workers), or a redis:// or nats:// URL."
    ).tag(config=True)
    workspace_root = Unicode(
        help="The folder that file and shell steps are confined to (default: the server's root_dir)."
    ).tag(config=True)
    allow_shell = Bool(True, help="Whether workflows may run `shell` steps.").tag(config=True)
    max_output_bytes = Integer(
        DEFAULT_MAX_OUTPUT_BYTES, min=1, help="Cap on the captured output of one step (e.g. a shell command's stdout)."
    ).tag(config=True)
    log_format = Enum(
        ["text", "json"],
        "text",
        help="Format of the clarion_jupyter log: 'text' (as Jupyter's) or 'json' (one object per line).",
    ).tag(config=True)
    max_body_bytes = Integer(
        10 * 1024 * 1024, min=1, help="Largest request body the API accepts; larger ones get 413."
    ).tag(config=True)
    max_import_bytes = Integer(
        4 * 1024**3,
        min=1,
        help="Largest clarion.db that POST /api/v3/agents/import accepts (streamed to a temporary "
        "file, so it costs disk, not memory); other import bodies keep max_body_bytes.",
    ).tag(config=True)
    max_steps = Integer(
        DEFAULT_MAX_STEPS, min=1, help="Largest number of steps a workflow may have; larger ones get 422."
    ).tag(config=True)
    ws_buffer = Integer(
        10_000,
        min=1,
        help="Events buffered per WebSocket client; a client that falls further behind is closed "
        "with code 4008 and reconnects with `since`, so a slow client never slows the engine.",
    ).tag(config=True)
    secret_env_pattern = Unicode(
        DEFAULT_SECRET_ENV_PATTERN,
        help="Regular expression (matched against the whole name) for the environment variables that "
        "hold secrets. Only such a variable may be an agent's api_key_env (an agent also chooses the "
        "api_base its key is sent to), and the value of every set variable that matches is masked as "
        "*** in everything Clarion stores, streams or logs. Default: names ending in _API_KEY, _KEY or _TOKEN.",
    ).tag(config=True)
    max_query_bytes = Integer(
        MAX_BYTES,
        min=1,
        help="Largest answer of POST /api/v3/query, in bytes of JSON (default 20 MB): rows are "
        "fetched from DuckDB until the next would pass it, and the answer says truncated: true.",
    ).tag(config=True)
    ws_ping_interval_s = Float(
        30.0, min=0.0, help="Seconds between WebSocket pings that keep idle connections alive (0: no pings)."
    ).tag(config=True)
    activity_while_waiting = Bool(
        True,
        help="Whether a run waiting for an approval counts as activity of this server, as a running "
        "run does: either one keeps JupyterHub's idle culler (which reads /api/status last_activity) "
        "from stopping the server under it. False: only running and queued runs keep it alive.",
    ).tag(config=True)
    llm_cache = Bool(
        False,
        help="Whether LLM calls are answered from the LLM cache when the same request (model, api_base, "
        "messages, parameters, response format, tools) was answered before. The most specific choice wins: "
        "a step's with.cache, then the run's cache (%%clarion --cache, clarion run --cache, the run "
        "request's cache), then the agent's cache, then this. A hit calls no provider, costs 0 and keeps "
        "the first call's usage; `clarion cache clear` empties it.",
    ).tag(config=True)
    llm_cache_max_bytes = Integer(
        DEFAULT_LLM_CACHE_MAX_BYTES,
        min=1,
        help="Cap on the LLM cache's stored replies, in bytes (default 256 MiB): past it, the oldest "
        "entries are evicted.",
    ).tag(config=True)
    activity_interval_s = Float(
        60.0,
        min=0.01,
        help="Seconds between two checks for runs that count as activity (far below any culler's timeout).",
    ).tag(config=True)

    def get_default_logging_config(self) -> dict[str, Any]:
        """Keep Jupyter's line template for this app's own traitlets logger.

        ``log_format`` is the contract's ``text``/``json`` switch for the clarion_jupyter
        loggers, but traitlets also reads that trait as the template of the app's logger.
        """
        config = super().get_default_logging_config()
        config["formatters"]["console"]["format"] = JUPYTER_LOG_TEMPLATE
        return config

    @validate("db_memory_limit")
    def _valid_memory_limit(self, proposal: dict[str, Any]) -> str:
        try:
            return check_memory_limit(proposal["value"])
        except ValueError as exc:
            raise TraitError(f"db_memory_limit: {exc}") from None

    @validate("secret_env_pattern")
    def _valid_pattern(self, proposal: dict[str, Any]) -> str:
        try:
            re.compile(proposal["value"])
        except re.error as exc:
            raise TraitError(f"secret_env_pattern is not a valid regular expression: {exc}") from None
        return proposal["value"]

    @default("db_path")
    def _default_db_path(self) -> str:
        return str(default_db_path())

    @default("workspace_root")
    def _default_workspace_root(self) -> str:
        return str(self.serverapp.root_dir)

    def initialize_settings(self) -> None:
        """Create (but do not open) the engine: the server's event loop is not running yet."""
        secrets = SecretPolicy(self.secret_env_pattern)
        configure_logging(self.log_format, self.serverapp.log, secrets)
        self.engine = Engine(
            self.db_path,
            workers=self.workers,
            workspace_root=self.workspace_root,
            queue_url=self.queue_url,
            allow_shell=self.allow_shell,
            max_output_bytes=self.max_output_bytes,
            max_steps=self.max_steps,
            secrets=secrets,
            llm_cache=self.llm_cache,
            llm_cache_max_bytes=self.llm_cache_max_bytes,
            db_memory_limit=self.db_memory_limit,
        )
        self.sockets: set[EventSocket] = set()
        self._starting: asyncio.Future[None] | None = None
        self._warming: asyncio.Future[None] | None = None
        self._down: tuple[str, Any, str] | None = None
        self._activity: asyncio.Future[None] | None = None

    def initialize_handlers(self) -> None:
        self.handlers.extend(default_handlers + websocket_handlers)

    async def _start_jupyter_server_extension(self, serverapp: ServerApp) -> None:
        """Open the database and resume interrupted runs as soon as the server's loop runs."""
        await self._start()

    async def _start(self) -> None:
        # One start, shared: the server's start hook and early requests may race for it, and
        # a request that is cancelled must not cancel the start for everyone else.
        if self._starting is None:
            self._starting = asyncio.ensure_future(self._start_engine())
        await asyncio.shield(self._starting)

    async def _start_engine(self) -> None:
        try:
            await self.engine.start()
        except ClarionError as exc:
            self._fail(exc.message, exc.details, exc.code)
        except Exception as exc:
            log.exception("the Clarion engine failed to start")
            self._fail(f"the Clarion engine failed to start: {exc}")
        else:
            # What exists now (modules, the server, the engine) lives as long as the process:
            # keep it out of the collector's full passes, which otherwise pause the loop.
            gc.freeze()
            log.info("Clarion engine started on %s", self.engine.db_path)
            self._warming = asyncio.ensure_future(self._warm_up_llm())
            self._activity = asyncio.ensure_future(self._report_activity())

    async def _report_activity(self) -> None:
        """While runs are active, note the time under ``last_activity_times`` (what the server's
        ``/api/status`` reports the latest of): a long run with no one watching is activity."""
        times = self.serverapp.web_app.settings["last_activity_times"]
        statuses = [RunStatus.running, RunStatus.queued]
        if self.activity_while_waiting:
            statuses.append(RunStatus.waiting)
        while True:
            await asyncio.sleep(self.activity_interval_s)
            try:
                if self.engine.active_runs and await self._any_run(statuses):
                    times[EXTENSION_NAME] = datetime.now(UTC)
            except ClarionError as exc:  # the engine is stopping, or storage failed: try again next time
                log.warning("checking for active runs failed: %s", exc.message)

    async def _any_run(self, statuses: list[RunStatus]) -> bool:
        for status in statuses:
            if (await self.engine.list_runs(status=status.value, limit=1)).runs:
                return True
        return False

    async def _warm_up_llm(self) -> None:
        try:
            await self.engine.warm_up_llm()
        except Exception:  # a failed warm-up only means the first call starts the provider instead
            log.warning("warming up the LLM provider failed", exc_info=True)

    def _fail(self, message: str, details: Any = None, code: str = "unavailable") -> None:
        self._down = (message, details, code)
        log.error("Clarion API unavailable: %s", message)

    async def ready(self) -> Engine:
        """The running engine, starting it on first use; :class:`EngineUnavailable` if it cannot run."""
        if self._down is None:
            await self._start()
        if self._down is not None:
            raise EngineUnavailable(*self._down)
        return self.engine

    async def health(self) -> tuple[int, dict[str, Any]]:
        """The health document and its HTTP status (503 while the engine cannot run)."""
        try:
            engine = await self.ready()
        except EngineUnavailable as exc:
            return exc.status, {
                "status": "stopped",
                "version": __version__,
                "storage": {"kind": "duckdb", "path": self.engine.db_path},
                "queue": {"url": redact(self.queue_url)},
                **exc.as_dict(),
            }
        return 200, {"status": "ok", "version": __version__, **engine.health()}

    async def stop_extension(self) -> None:
        """Stop without finishing runs: whatever is in flight resumes at the next start."""
        self._down = ("the Jupyter server is shutting down", None, "unavailable")
        for socket in list(self.sockets):
            socket.shutdown(CloseCode.going_away, "server shutting down: reconnect later with since")
        if self._starting is not None:
            await self._starting
        if self._activity is not None:
            self._activity.cancel()
        await self.engine.stop()
        log.info("Clarion engine stopped")


def _jupyter_server_extension_points() -> list[dict[str, Any]]:
    return [{"module": "clarion_jupyter.server.app", "app": ClarionExtension}]
