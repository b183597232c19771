"""Jupyter auth on every endpoint and socket; API keys never in a response or a log."""

from __future__ import annotations

import json
import logging

import pytest
import tornado.websocket
from jupyter_server.utils import url_path_join
from tornado.httpclient import HTTPClientError, HTTPRequest

ROUTES = [
    ("GET", "api/v3/health"),
    ("GET", "api/v3/agents"),
    ("POST", "api/v3/agents/import"),
    ("GET", "api/v3/workflows/x"),
    ("POST", "api/v3/workflows/x/run"),
    ("GET", "api/v3/runs"),
    ("POST", "api/v3/runs/x/cancel"),
    ("GET", "api/v3/runs/x/events"),
    ("GET", "api/v3/tasks"),
    ("GET", "api/v3/openapi.yaml"),
    ("GET", "api/v3/cache"),
    ("DELETE", "api/v3/cache"),
    ("GET", "api/v3/no/such/path"),
]


@pytest.mark.parametrize(("method", "path"), ROUTES)
async def test_request_without_token_is_refused(http_server_client, jp_serverapp, jp_base_url, method, path):
    body = b"{}" if method == "POST" else None
    response = await http_server_client.fetch(
        url_path_join(jp_base_url, path), method=method, body=body, raise_error=False
    )
    assert response.code in (401, 403)
    assert json.loads(response.body)["error"]["code"] in ("unauthorized", "forbidden")


@pytest.mark.parametrize("path", ["ws/runs", "ws/runs/x/subscribe"])
async def test_websocket_without_token_is_refused(http_server_client, jp_http_port, jp_base_url, path):
    url = f"ws://localhost:{jp_http_port}{url_path_join(jp_base_url, path)}"
    with pytest.raises(HTTPClientError) as refused:
        await tornado.websocket.websocket_connect(url)
    assert refused.value.code in (401, 403)


async def test_cross_origin_websocket_with_login_cookie_is_refused(api, jp_http_port, jp_base_url):
    cookie = (await api("GET", "health")).headers["Set-Cookie"].split(";")[0]
    host = f"127.0.0.1:{jp_http_port}"  # the host the cookie was set for
    url = f"ws://{host}{url_path_join(jp_base_url, 'ws/runs')}"
    same_origin = {"Cookie": cookie, "Origin": f"http://{host}"}
    (await tornado.websocket.websocket_connect(HTTPRequest(url, headers=same_origin))).close()
    with pytest.raises(HTTPClientError) as refused:
        await tornado.websocket.websocket_connect(
            HTTPRequest(url, headers={**same_origin, "Origin": "http://evil.example"})
        )
    assert refused.value.code == 403


async def test_api_key_in_agent_parameters_is_refused_and_never_echoed_or_logged(api, caplog):
    secret = "sk-live-SECRET-0123456789"
    agent = {"name": "Leaky", "model": "openai/gpt-4o", "parameters": {"api_key": secret}}
    with caplog.at_level(logging.DEBUG):
        reply = await api("POST", "agents", body=agent)
    assert reply.status == 422
    assert secret not in json.dumps(reply.body)
    assert secret not in caplog.text


async def test_api_key_in_imported_document_is_never_echoed_or_logged(api, caplog):
    secret = "sk-proj-IMPORTED-SECRET-42"
    llm_config = f"{{provider: OpenAI, model: gpt-4o, api_key: {secret}}}"
    document = f"type: Agent\nmetadata: {{name: Imp}}\nproperties:\n  llm_config: {llm_config}\n"
    with caplog.at_level(logging.DEBUG):
        reply = await api("POST", "agents", "import", body=document)
    assert reply.status == 201
    assert secret not in json.dumps(reply.body)
    assert secret not in caplog.text
    assert secret not in json.dumps((await api("GET", "agents", "imp")).body)
