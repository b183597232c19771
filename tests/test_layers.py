"""The import rule: domains import downward only, so the layout keeps telling the architecture.

A module may import the ground floor and the layers below its own, and its own package;
nothing sideways or upward. Function-level and ``TYPE_CHECKING`` imports count too: a
lazy upward import is still an upward dependency.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "clarion_jupyter"
LAYERS: dict[str, int] = {
    "core": 0,
    "storage": 1,
    "llm": 2,
    "agent": 2,
    "api": 5,
    "task": 3,
    "workflow": 4,
    "settings": 5,
    "server": 6,
    "notebook": 6,
    "cli": 6,
    "testing": 7,
}
"""Lower numbers are lower floors. ``clarion_jupyter/__init__`` and ``_version`` sit outside:
the package root re-exports the public API."""


def _room(module: str) -> str | None:
    """The top-level room of a dotted module path inside the package (``None``: the root)."""
    parts = module.split(".")
    if parts[0] != "clarion_jupyter" or len(parts) < 2:
        return None
    return parts[1] if parts[1] in LAYERS else None


def _imports(path: Path, package_dir: Path = PACKAGE) -> list[tuple[int, str]]:
    """Absolute names of the package modules a file imports, with their line numbers."""
    package = list(path.relative_to(package_dir.parent).parts[:-1])
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                target = ".".join([*base, *([node.module] if node.module else [])])
            else:
                target = node.module or ""
            found.append((node.lineno, target))
        elif isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
    return [(line, name) for line, name in found if name.startswith("clarion_jupyter")]


def _violations(package_dir: Path = PACKAGE) -> list[str]:
    problems = []
    for path in sorted(package_dir.rglob("*.py")):
        rel = path.relative_to(package_dir.parent).with_suffix("")
        room = _room(".".join(rel.parts))
        if room is None:
            continue
        for line, target in _imports(path, package_dir):
            if target in ("clarion_jupyter", "clarion_jupyter.__init__"):
                # The package root re-exports Engine and Client: importing it from a room is an
                # import of the top floors in disguise.
                problems.append(f"{rel}.py:{line}: {room} (floor {LAYERS[room]}) imports the package root")
                continue
            other = _room(target)
            if other is None or other == room:
                continue
            if LAYERS[other] >= LAYERS[room]:
                problems.append(
                    f"{rel}.py:{line}: {room} (floor {LAYERS[room]}) imports {target} (floor {LAYERS[other]})"
                )
    return problems


def test_every_module_imports_only_lower_floors() -> None:
    assert _violations() == []


def test_an_upward_import_is_reported_even_when_lazy_and_relative(tmp_path: Path) -> None:
    agent = tmp_path / "clarion_jupyter" / "agent"
    agent.mkdir(parents=True)
    (agent / "service.py").write_text(
        "from ..core.ids import slugify\n\ndef run():\n    from ..workflow.engine import Engine\n"
    )
    assert _violations(tmp_path / "clarion_jupyter") == [
        "clarion_jupyter/agent/service.py:4: agent (floor 2) imports clarion_jupyter.workflow.engine (floor 4)"
    ]


def test_a_sideways_import_is_reported(tmp_path: Path) -> None:
    llm = tmp_path / "clarion_jupyter" / "llm"
    llm.mkdir(parents=True)
    (llm / "provider.py").write_text("from clarion_jupyter.agent.models import Agent\n")
    assert len(_violations(tmp_path / "clarion_jupyter")) == 1


def test_an_import_of_the_package_root_inside_a_room_is_reported(tmp_path: Path) -> None:
    storage = tmp_path / "clarion_jupyter" / "storage"
    storage.mkdir(parents=True)
    (storage / "store.py").write_text("def load():\n    from clarion_jupyter import Engine\n")
    assert _violations(tmp_path / "clarion_jupyter") == [
        "clarion_jupyter/storage/store.py:2: storage (floor 1) imports the package root"
    ]


def _exists(target: str) -> bool:
    """Whether a dotted package path names a module, a package, or a name in one."""
    path = PACKAGE.parent.joinpath(*target.split("."))
    parent = path.parent
    return (
        path.with_suffix(".py").is_file()
        or (path / "__init__.py").is_file()
        or (parent.with_suffix(".py").is_file() or (parent / "__init__.py").is_file())
    )


def test_every_import_inside_the_package_names_a_module_that_exists() -> None:
    """A lazy import with one dot too few fails only when its line runs: find it here instead."""
    missing = [
        f"{path.relative_to(PACKAGE.parent)}:{line}: {target}"
        for path in sorted(PACKAGE.rglob("*.py"))
        for line, target in _imports(path)
        if not _exists(target)
    ]
    assert missing == []


OUTSIDE_THE_FLOORS = {"__init__.py", "_version.py", "labextension", "__pycache__"}
"""The package root, its version, and the built sidebar (no Python)."""


def test_every_module_of_the_package_is_on_a_floor() -> None:
    unplaced = [
        entry.name
        for entry in PACKAGE.iterdir()
        if entry.name not in OUTSIDE_THE_FLOORS and entry.name.removesuffix(".py") not in LAYERS
    ]
    assert unplaced == [], f"add these to LAYERS (and CONTRIBUTING's table): {unplaced}"


@pytest.mark.parametrize("room", sorted(LAYERS))
def test_every_room_exists(room: str) -> None:
    assert (PACKAGE / room).is_dir() or (PACKAGE / f"{room}.py").is_file()


TRANSPORTS = [PACKAGE / "server", PACKAGE / "notebook", PACKAGE / "cli", PACKAGE / "api"]
ENGINE_INSIDES = re.compile(r"engine(?:\(\)\))?\.(agents|workflows|registry|bus|runs|_db|validator)\b")


def test_transports_use_the_engine_facade_only() -> None:
    """Handlers, sockets, the CLI and the notebook call Engine methods, never its services."""
    files = [f for t in TRANSPORTS for f in ([t] if t.is_file() else sorted(t.rglob("*.py")))]
    reaching = [
        f"{f.relative_to(PACKAGE.parent)}:{n}: {line.strip()}"
        for f in files
        for n, line in enumerate(f.read_text().splitlines(), 1)
        if ENGINE_INSIDES.search(line)
    ]
    assert reaching == []


def _modules_imported(path: Path) -> set[str]:
    """The top-level names of every module a file imports (absolute imports)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_only_storage_knows_duckdb() -> None:
    """DuckDB's types and errors stay behind the storage protocols, so another store plugs in
    through ``Engine(storage=...)`` without a change elsewhere."""
    outside = [
        str(path.relative_to(PACKAGE.parent))
        for path in sorted(PACKAGE.rglob("*.py"))
        if path.relative_to(PACKAGE).parts[0] != "storage" and "duckdb" in _modules_imported(path)
    ]
    assert outside == []
    assert "duckdb" in _modules_imported(PACKAGE / "storage" / "database.py")


def test_every_public_class_says_why_it_exists() -> None:
    """A class a reader meets without knowing why it is there is a class they must reverse-engineer."""
    undocumented = [
        f"{path.relative_to(PACKAGE.parent)}:{node.lineno} {node.name}"
        for path in sorted(PACKAGE.rglob("*.py"))
        for node in ast.walk(ast.parse(path.read_text(), str(path)))
        if isinstance(node, ast.ClassDef) and not node.name.startswith("_") and not ast.get_docstring(node)
    ]
    assert undocumented == []
