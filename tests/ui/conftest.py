"""Browser tests of the JupyterLab sidebar: a real ``jupyter lab`` with the extension, driven by
Playwright in Debian's headless Chromium.

Every state a test reaches is saved as a screenshot under ``tests/ui/screenshots/`` (kept out
of git; the path is printed), named ``<test>-<state>.png``.
"""

from __future__ import annotations

import contextlib
import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from clarion_jupyter.testing.browser import lab_server
from clarion_jupyter.testing.server import JupyterServerProcess

SCREENSHOTS = Path(__file__).with_name("screenshots")


@dataclass
class Lab:
    """A JupyterLab process as the browser sees it: ``url`` includes the server's ``base_url``."""

    server: JupyterServerProcess
    base_url: str = "/"

    @property
    def url(self) -> str:
        return self.server.url.rstrip("/") + self.base_url

    @property
    def token(self) -> str:
        return self.server.token

    @property
    def headers(self) -> dict[str, str]:
        return self.server.headers

    @property
    def root(self) -> Path:
        return self.server.root

    def log_tail(self) -> str:
        return self.server.log_tail()


def start_lab(workdir: Path, base_url: str = "/", **kwargs: Any) -> Lab:
    server = lab_server(workdir, server={"base_url": base_url}, **kwargs).start()
    lab = Lab(server, base_url)
    wait_until_up(lab)
    return lab


def api(server: Lab, method: str, path: str, body: Any = None, *, yaml: str | None = None) -> Any:
    """A blocking call to the v3 API (tests seed and inspect state with it, beside the browser)."""
    data = yaml.encode() if yaml is not None else None if body is None else json.dumps(body).encode()
    headers = {**server.headers, "Content-Type": "application/yaml" if yaml is not None else "application/json"}
    request = urllib.request.Request(f"{server.url}api/v3/{path}", data=data, method=method, headers=headers)
    with urllib.request.urlopen(request, timeout=30) as response:
        text = response.read()
    return json.loads(text) if text else None


def save(lab, doc: dict | str) -> None:
    """Creates or replaces a workflow (the module's tests share one server)."""
    workflow_id = (yaml.safe_load(doc) if isinstance(doc, str) else doc)["id"]
    with contextlib.suppress(urllib.error.HTTPError):
        api(lab, "DELETE", f"workflows/{workflow_id}")
    if isinstance(doc, str):
        api(lab, "POST", "workflows", yaml=doc)
    else:
        api(lab, "POST", "workflows", doc)


def wait_until_the_workspace_forgets(lab: Lab, tab_id: str, timeout: float = 15) -> None:
    """Lab saves its layout a moment after it changes: the next page must not restore ``tab_id``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        request = urllib.request.Request(f"{lab.url}lab/api/workspaces/default", headers=lab.headers)
        with urllib.request.urlopen(request, timeout=30) as response:
            if tab_id not in response.read().decode():
                return
        time.sleep(0.2)
    raise AssertionError(f"Lab's saved layout still has {tab_id}")


def wait_until_up(server: Lab, path: str = "api/v3/health", timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        process = server.server.process
        if process is None or process.poll() is not None:
            raise RuntimeError(f"the server exited:\n{server.log_tail()}")
        try:
            request = urllib.request.Request(f"{server.url}{path}", headers=server.headers)
            with urllib.request.urlopen(request, timeout=5):
                return
        except (urllib.error.URLError, ConnectionError):
            time.sleep(0.2)
    raise RuntimeError(f"the server did not come up in {timeout} s:\n{server.log_tail()}")


def wait_for_run(server: Lab, run_id: str, statuses: set[str], timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = api(server, "GET", f"runs/{run_id}")
        if run["status"] in statuses:
            return run
        time.sleep(0.1)
    raise AssertionError(f"run {run_id} is still {run['status']}")


def finished_run(server: Lab, workflow_id: str, status: str = "succeeded", inputs: dict | None = None) -> str:
    """A run of ``workflow_id`` started through the API, once it has ended as ``status``."""
    run_id = api(server, "POST", f"workflows/{workflow_id}/run", {"inputs": inputs or {}})["run_id"]
    wait_for_run(server, run_id, {status})
    return run_id


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    """One JupyterLab for the module's tests (each test seeds what it needs under its own ids)."""
    lab = start_lab(tmp_path_factory.mktemp("lab"), clarion={"workers": 4})
    try:
        yield lab
    finally:
        lab.server.stop()


class Shots:
    """``await shots(page, "state")`` saves ``<test>-state.png`` and remembers it for the report."""

    def __init__(self, test: str) -> None:
        self.test = test
        self.saved: list[Path] = []

    async def __call__(self, page: Any, state: str) -> Path:
        SCREENSHOTS.mkdir(exist_ok=True)
        path = SCREENSHOTS / f"{self.test}-{state}.png"
        await page.screenshot(path=str(path))
        self.saved.append(path)
        return path


def forget_the_layout(lab: Lab) -> None:
    """Empty Lab's saved layout, so the next page restores nothing of the last test's (an
    unsaved notebook it left open would ask for a kernel in a dialog over the next test's clicks)."""
    body = json.dumps({"data": {}, "metadata": {"id": "default"}}).encode()
    headers = {**lab.headers, "Content-Type": "application/json"}
    request = urllib.request.Request(f"{lab.url}lab/api/workspaces/default", data=body, method="PUT", headers=headers)
    with urllib.request.urlopen(request, timeout=30):
        pass


@pytest.fixture(autouse=True)
def fresh_layout(request: pytest.FixtureRequest) -> None:
    """Each test that shares the module's JupyterLab opens it with nothing restored."""
    if "lab" in request.fixturenames:
        forget_the_layout(request.getfixturevalue("lab"))


@pytest.fixture
def shots(request: pytest.FixtureRequest) -> Iterator[Shots]:
    taken = Shots(request.node.name.removeprefix("test_"))
    yield taken
    if taken.saved:
        print("\nscreenshots:", *map(str, taken.saved), sep="\n  ")
