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
* ``engine``: the sizes of the engine's bounded in-memory state (run views, plans, claims).

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


def breakdown(engine: Any) -> dict[str, Any]:
    return {
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
    route = url_path_join(serverapp.base_url, "clarion-bench/memory")
    serverapp.web_app.add_handlers(".*$", [(route, MemoryHandler)])
