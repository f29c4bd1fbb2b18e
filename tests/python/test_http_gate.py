"""The HTTP front door, with plain httpx: bearer auth, Host/Origin checks, body limit.
The SDK client is used alongside to show the same server still serves MCP."""

from __future__ import annotations

from pathlib import Path

import httpx
import httpx2
import pytest
from conftest import ERAS, Target, call, ok, tool_map
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

pytestmark = pytest.mark.anyio

TOKEN = "s3cret-for-tests"

INIT = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {
        "protocolVersion": "2025-11-25",
        "capabilities": {},
        "clientInfo": {"name": "stackpilot-python-tests", "version": "1.0.0"},
    },
}
MCP_HEADERS = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}


def post(url: str, headers: dict[str, str] | None = None, **kw) -> httpx.Response:
    return httpx.post(url, headers={**MCP_HEADERS, **(headers or {})}, timeout=20, **kw)


def assert_initialized(r: httpx.Response) -> None:
    assert r.status_code == 200, (r.status_code, r.text)
    assert '"serverInfo"' in r.text and "stackpilot" in r.text


async def test_bearer_token_required(http_server, stack):
    server = http_server(stack, "--auth-token", TOKEN)
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}):
        r = post(server.url, headers, json=INIT)
        assert r.status_code == 401, (headers, r.status_code, r.text)
        assert r.headers.get("www-authenticate", "").startswith("Bearer")
    assert_initialized(post(server.url, {"Authorization": f"Bearer {TOKEN}"}, json=INIT))
    # The health probe stays open.
    assert httpx.get(f"{server.base}/healthz", timeout=20).status_code == 200

    target = Target("http", stack, (), http=server)
    for era in ERAS:
        async with target.connect(era, token=TOKEN) as client:
            # Every tool the table exports into tools/ (held equal to the code).
            assert sorted(await tool_map(client)) == sorted(
                p.stem for p in (Path(__file__).resolve().parents[2] / "tools").glob("*.json")
            )
            ok(await call(client, "detect_hardware", {}))
    # The SDK without the token does not get in.
    # The SDK without the token does not get in: the 401 surfaces as an MCPError.
    for era in ERAS:
        with pytest.raises(ExceptionGroup) as raised:
            async with target.connect(era) as client:
                await tool_map(client)
        assert raised.group_contains(MCPError, depth=None), raised.value


@pytest.mark.parametrize(
    "host",
    ["evil.example", "evil.example:{port}", "127.0.0.1.nip.io:{port}", "localhost.evil.example:{port}"],
)
async def test_foreign_host_header_forbidden(http_server, stack, host):
    server = http_server(stack, "--auth-token", TOKEN)
    auth = {"Authorization": f"Bearer {TOKEN}"}
    r = post(server.url, {**auth, "Host": host.format(port=server.port)}, json=INIT)
    assert r.status_code == 403, (host, r.status_code, r.text)
    assert "Host" in r.text
    # Refused before auth: no token, still 403 rather than 401.
    assert post(server.url, {"Host": host.format(port=server.port)}, json=INIT).status_code == 403
    for good in (f"localhost:{server.port}", f"127.0.0.1:{server.port}"):
        assert_initialized(post(server.url, {**auth, "Host": good}, json=INIT))


@pytest.mark.parametrize(
    "origin",
    ["http://evil.example", "https://evil.example:443", "http://localhost.evil.example", "null", "file://"],
)
async def test_foreign_origin_forbidden(http_server, stack, origin):
    server = http_server(stack)
    r = post(server.url, {"Origin": origin}, json=INIT)
    assert r.status_code == 403, (origin, r.status_code, r.text)
    assert "Origin" in r.text
    for good in ("http://localhost:3000", f"http://127.0.0.1:{server.port}"):
        assert_initialized(post(server.url, {"Origin": good}, json=INIT))


async def test_oversized_body_413_and_still_serving(http_server, stack):
    server = http_server(stack)
    pad = "a" * (5 * 1024 * 1024)
    body = ('{"jsonrpc":"2.0","id":1,"method":"ping","params":{"pad":"' + pad + '"}}').encode()
    r = post(server.url, content=body)
    assert r.status_code == 413, (r.status_code, r.text[:200])
    target = Target("http", stack, (), http=server)
    for era in ERAS:
        async with target.connect(era) as client:
            ok(await call(client, "detect_hardware", {}))


async def test_http_sessions_by_era(http_server, stack, era):
    """2025-11-25 runs in an Mcp-Session-Id session; 2026-07-28 is stateless:
    self-contained POSTs, no session id either way."""
    server = http_server(stack)
    seen: list[tuple[str, str | None, str | None, str | None]] = []

    async def on_response(response: httpx2.Response) -> None:
        request = response.request
        seen.append(
            (
                request.method,
                request.headers.get("mcp-session-id"),
                response.headers.get("mcp-session-id"),
                request.headers.get("mcp-protocol-version"),
            )
        )

    async with httpx2.AsyncClient(event_hooks={"response": [on_response]}, timeout=20) as http:
        mode = "legacy" if era == "2025-11-25" else "auto"
        async with Client(streamable_http_client(server.url, http_client=http), mode=mode) as client:
            assert client.protocol_version == era
            ok(await call(client, "detect_hardware", {}))
    posts = [s for s in seen if s[0] == "POST"]
    assert len(posts) >= 3, seen
    if era == "2025-11-25":
        session = posts[0][2]
        assert session, "initialize opens a session"
        assert all(p[1] == session for p in posts[1:]), seen
    else:
        assert all(p[1] is None and p[2] is None for p in seen), f"no session at 2026-07-28: {seen}"
        assert all(p[3] == "2026-07-28" for p in posts), seen
