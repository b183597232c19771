"""Where a server's memory is: a Jupyter server extension for benchmarks (``bench/soak.py --probe``).

RSS alone cannot say what grows. This adds ``GET /clarion-bench/memory`` to the server it is
loaded in (``jpserver_extensions = {"memory_probe": True}``, with ``bench/`` on its
``PYTHONPATH``), which answers the process's memory by owner, in MiB:

* ``duckdb``: the engine's DuckDB buffer pool by tag (``duckdb_memory()``: cached table
  pages, ART indexes, uncheckpointed rows, ...) and its ``memory_limit``;
* ``jemalloc``: DuckDB's allocator (bundled in its module): bytes allocated and the pages it
  keeps resident (freed pages stay resident until it purges them);
* ``glibc``: ``mallinfo2()`` over every arena (C++ objects, Python objects over 512 bytes),
  in use and free;
* ``python``: pymalloc's arenas and the blocks in use (``sys._debugmallocstats``), and the
  objects the collector tracks;
* ``rss``: the kernel's split of the resident pages (``/proc/self/status``): anonymous
  (the heaps above, thread stacks) and file-backed (the code of Python, DuckDB and the other
  native modules, paged in as code paths first run);
* ``engine``: the sizes of the engine's bounded in-memory state (run views, plans, claims);
* ``traced`` (only when the server was started with ``CLARION_PROBE_TRACE=1``, which starts
  ``tracemalloc``): the Python memory traced, and the source lines whose allocations grew most
  since the last reading. Python's allocations that the heaps above cannot tell apart (strings,
  buffers over 512 bytes in the glibc heap) show up here by the line that made them; what grows
  in a heap but not here is native (DuckDB's C++ objects).

Reading it costs a few milliseconds of the server's time (a ``gc.get_objects()`` and a
DuckDB query, on a thread), once a minute.
"""

from __future__ import annotations

import asyncio
import ctypes
import gc
import os
import re
import sys
import tempfile
import tracemalloc
from pathlib import Path
from typing import Any

import _duckdb
from jupyter_server.base.handlers import APIHandler
from jupyter_server.utils import url_path_join
from tornado import web

MIB = 2**20


class _Mallinfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")
    ]  # fmt: skip


def rss_split() -> dict[str, float]:
    fields = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines() if ":" in line)
    return {name.lower(): round(int(fields[name].split()[0]) / 1024, 1) for name in ("RssAnon", "RssFile")}


def glibc() -> dict[str, float]:
    libc = ctypes.CDLL("libc.so.6")
    libc.mallinfo2.restype = _Mallinfo2
    info = libc.mallinfo2()
    return {
        "in_use": round(info.uordblks / MIB, 1),
        "free": round(info.fordblks / MIB, 1),
        "mmap": round(info.hblkhd / MIB, 1),
    }


def jemalloc() -> dict[str, float]:
    """DuckDB's bundled jemalloc, through the ``mallctl`` its module exports."""
    lib = ctypes.CDLL(_duckdb.__file__)
    epoch = ctypes.c_uint64(1)
    lib.duckdb_je_mallctl(b"epoch", None, None, ctypes.byref(epoch), ctypes.c_size_t(8))
    stats = {}
    for name in ("allocated", "resident"):
        value, size = ctypes.c_size_t(0), ctypes.c_size_t(8)
        lib.duckdb_je_mallctl(
            f"stats.{name}".encode(), ctypes.byref(value), ctypes.byref(size), None, ctypes.c_size_t(0)
        )
        stats[name] = round(value.value / MIB, 1)
    return stats


def pymalloc() -> dict[str, float]:
    """pymalloc's own figures: ``sys._debugmallocstats`` writes them to the C stderr only."""
    with tempfile.TemporaryFile() as out:
        saved = os.dup(2)
        os.dup2(out.fileno(), 2)
        try:
            sys._debugmallocstats()
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        out.seek(0)
        text = out.read().decode()

    def figure(label: str) -> int:
        match = re.search(rf"# {label}\s*=\s*([\d,]+)", text)
        return int(match.group(1).replace(",", "")) if match else -1

    return {
        "arenas": figure("arenas allocated current"),
        "in_blocks": round(figure("bytes in allocated blocks") / MIB, 1),
    }


def duckdb_memory(engine: Any) -> dict[str, Any]:
    cursor = engine.storage._db.cursor()
    try:
        tags = cursor.execute(
            "SELECT tag, memory_usage_bytes FROM duckdb_memory() WHERE memory_usage_bytes > 0 ORDER BY tag"
        ).fetchall()
        limit = cursor.execute("SELECT current_setting('memory_limit')").fetchone()[0]
    finally:
        cursor.close()
    return {"limit": limit, **{tag.lower(): round(used / MIB, 1) for tag, used in tags}}


TRACE_FRAMES = 4
"""Frames kept per traced allocation: enough to get from a library's line to the caller in this project."""


class Growth:
    """``tracemalloc`` snapshots, each compared with the one before."""

    def __init__(self) -> None:
        self._last: tracemalloc.Snapshot | None = None

    def reading(self, top: int = 6) -> dict[str, Any]:
        snapshot = tracemalloc.take_snapshot().filter_traces([tracemalloc.Filter(False, tracemalloc.__file__)])
        last, self._last = self._last, snapshot
        traced = {"traced_mb": round(tracemalloc.get_traced_memory()[0] / MIB, 1)}
        if last is None:
            return traced
        grown = sorted(snapshot.compare_to(last, "traceback"), key=lambda stat: -stat.size_diff)[:top]
        return {
            **traced,
            "grew_kb": [
                {"kb": round(stat.size_diff / 1024), "count": stat.count_diff, "at": _where(stat.traceback)}
                for stat in grown
                if stat.size_diff > 0
            ],
        }


def _where(traceback: tracemalloc.Traceback) -> str:
    return " < ".join(f"{Path(frame.filename).name}:{frame.lineno}" for frame in reversed(traceback))


_growth = Growth()


def breakdown(engine: Any) -> dict[str, Any]:
    traced = {"traced": _growth.reading()} if tracemalloc.is_tracing() else {}
    return {
        **traced,
        "rss": rss_split(),
        "duckdb": duckdb_memory(engine),
        "jemalloc": jemalloc(),
        "glibc": glibc(),
        "python": {**pymalloc(), "gc_objects": len(gc.get_objects())},
        "engine": {
            "run_views": len(engine._views._views),
            "plans": len(engine._plans),
            "claims": len(engine._runs_live._claims),
        },
    }


class MemoryHandler(APIHandler):
    @web.authenticated
    async def get(self) -> None:
        engine = self.settings["clarion_jupyter"].engine
        self.finish(await asyncio.get_running_loop().run_in_executor(None, breakdown, engine))


def _jupyter_server_extension_points() -> list[dict[str, str]]:
    return [{"module": "memory_probe"}]


def _load_jupyter_server_extension(serverapp: Any) -> None:
    if os.environ.get("CLARION_PROBE_TRACE") == "1":
        tracemalloc.start(TRACE_FRAMES)
    route = url_path_join(serverapp.base_url, "clarion-bench/memory")
    serverapp.web_app.add_handlers(".*$", [(route, MemoryHandler)])
