"""DuckDB's buffer pool for the engine's file is bounded (``ClarionExtension.db_memory_limit``).

DuckDB's own default is 80 % of the machine's RAM, and it keeps every page it read until that
fills, so a server's memory would grow with its history. These tests read the limit back from
the engine's own DuckDB connection (``duckdb_settings()``), on a real file and a real server.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import duckdb
import pytest
from traitlets import TraitError

from clarion_jupyter.server.app import ClarionExtension
from clarion_jupyter.settings import configured_engine
from clarion_jupyter.storage.database import Database
from clarion_jupyter.workflow.engine import Engine


def duckdb_reads(size: str) -> str:
    """How DuckDB shows ``size`` as a memory limit (``1GB`` reads back as ``953.6 MiB``)."""
    with duckdb.connect(":memory:", config={"memory_limit": size}) as con:
        return con.execute("SELECT current_setting('memory_limit')").fetchone()[0]


def engine_limit(engine: Engine) -> str:
    cursor = engine.storage._db.cursor()
    try:
        return cursor.execute("SELECT value FROM duckdb_settings() WHERE name = 'memory_limit'").fetchone()[0]
    finally:
        cursor.close()


async def test_an_engine_bounds_its_buffer_pool_by_default_not_at_80_percent_of_ram(tmp_path: Path) -> None:
    async with Engine(tmp_path / "clarion.duckdb") as engine:
        assert engine_limit(engine) == duckdb_reads("1GB")


async def test_an_engine_takes_the_memory_limit_it_is_given(tmp_path: Path) -> None:
    async with Engine(tmp_path / "clarion.duckdb", db_memory_limit="96MB") as engine:
        assert engine_limit(engine) == duckdb_reads("96MB")
        run_id = await engine.submit(
            {"id": "w", "name": "W", "steps": [{"id": "a", "task": "echo", "with": {"value": 1}}]}
        )
        assert (await engine.wait(run_id)).status == "succeeded"


def test_a_size_duckdb_cannot_read_is_refused_before_the_file_is_opened(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not a size"):
        Database(tmp_path / "clarion.duckdb", memory_limit="lots")
    assert not (tmp_path / "clarion.duckdb").exists()


def test_the_trait_refuses_a_size_duckdb_cannot_read_naming_it() -> None:
    with pytest.raises(TraitError, match="db_memory_limit"):
        ClarionExtension(db_memory_limit="a gigabyte")


async def test_the_cli_engine_takes_the_servers_configured_limit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "jupyter_server_config.json").write_text('{"ClarionExtension": {"db_memory_limit": "80MB"}}')
    monkeypatch.chdir(tmp_path)
    async with configured_engine(tmp_path / "clarion.duckdb") as engine:
        assert engine_limit(engine) == duckdb_reads("80MB")


@pytest.mark.clarion(db_memory_limit="128MB")
async def test_the_server_opens_its_database_with_the_configured_limit(clarion: Any, api: Any) -> None:
    reply = await api("GET", "health")
    assert reply.status == 200
    assert engine_limit(clarion.engine) == duckdb_reads("128MB")
