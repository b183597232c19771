"""Schemathesis against a live server: every operation, generated and mutated inputs, with a
valid token. Any 5xx, or any response that the OpenAPI spec does not describe (status, media
type, body schema, headers), fails the suite."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from clarion_jupyter.testing.server import JupyterServerProcess

CHECKS = ",".join(
    [
        "not_a_server_error",
        "status_code_conformance",
        "content_type_conformance",
        "response_schema_conformance",
        "response_headers_conformance",
    ]
)


async def test_no_generated_request_gets_a_5xx_or_a_response_outside_the_spec(tmp_path: Path) -> None:
    schemathesis = shutil.which("schemathesis", path=str(Path(sys.executable).parent)) or "schemathesis"
    with JupyterServerProcess(tmp_path) as server:
        await server.wait_ready()
        command = [schemathesis, "run", f"{server.url}api/v3/openapi.yaml"]
        command += ["-H", f"Authorization: token {server.token}", "--checks", CHECKS]
        command += ["--max-examples", "25", "--generation-deterministic", "--request-timeout", "30"]
        result = subprocess.run(
            command,
            capture_output=True,
            text=True,
            timeout=600,
            cwd=tmp_path,  # schemathesis keeps its example database in the working directory
        )
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    assert "generated," in result.stdout and " failed" not in result.stdout.split("Test cases:")[-1]
