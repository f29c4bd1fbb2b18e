"""Shared helpers for the Python SDK client suite.

The suite drives the built `stackpilot` binary (env STACKPILOT_BIN, default
target/debug/stackpilot) with the official `mcp` Python SDK, over stdio and
Streamable HTTP, in both protocol eras:

* ``2025-11-25``: the initialize handshake (``Client(mode="legacy")``); a
  confirmation is an ``elicitation/create`` request from the server.
* ``2026-07-28``: the stateless per-request envelope, negotiated through
  ``server/discover`` (``Client(mode="auto")``); a confirmation is an
  input-required result that the SDK answers and retries.

Every test gets its own stack directory (pytest's ``tmp_path``).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import queue
import re
import subprocess
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx2
import jsonschema
import mcp_types as types
import pytest
from mcp import Client, StdioServerParameters
from mcp.client.streamable_http import streamable_http_client

REPO = Path(__file__).resolve().parents[2]
BIN = Path(os.environ.get("STACKPILOT_BIN", "target/debug/stackpilot"))
if not BIN.is_absolute():
    BIN = REPO / BIN

ERAS = ("2025-11-25", "2026-07-28")
TRANSPORTS = ("stdio", "http")

# No engine and no Ollama at addresses that answer nothing: probes fail fast.
SERVER_ENV = {
    "DOCKER_HOST": "unix:///tmp/stackpilot-test-no-docker.sock",
    "OLLAMA_HOST": "http://127.0.0.1:9",
    "STACKPILOT_LOG": "warn",
}

# A 16 GiB NVIDIA card: llama3.1:8b at 128K context gets a q8_0 KV cache.
GPU16 = {
    "nvidia_vram_bytes": 17179869184,
    "nvidia_compute_capability": "8.9",
    "memory_total_bytes": 68719476736,
    "memory_available_bytes": 60000000000,
    "logical_cores": 16,
}

# The choice differs from f16, so writing it overwrites a value: destructive.
DESTRUCTIVE_ENV = "# kept\nOLLAMA_KV_CACHE_TYPE=f16\nPOSTGRES_PASSWORD=hunter2\n"

CALL_TIMEOUT_S = 20.0


def select_args(**extra: Any) -> dict[str, Any]:
    """select_profile arguments that plan deterministically and write the .env."""
    args: dict[str, Any] = {
        "model": "llama3.1:8b",
        "context_length": 131072,
        "hardware": dict(GPU16),
        "write_env": True,
    }
    args.update(extra)
    return args


def pytest_sessionstart(session: pytest.Session) -> None:
    if not os.access(BIN, os.X_OK):
        pytest.exit(f"no stackpilot binary at {BIN}: run `cargo build` or set STACKPILOT_BIN", returncode=3)


def server_env() -> dict[str, str]:
    """The test process's environment without stackpilot settings, plus SERVER_ENV.

    A STACKPILOT_CONFIRM_KEY from outside would replace the key file that the
    expired-token test signs with, so every STACKPILOT_* variable is dropped.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("STACKPILOT_")}
    env.update(SERVER_ENV)
    return env


# --------------------------------------------------------------------------- stacks


@dataclass
class Stack:
    path: Path

    @property
    def env_path(self) -> Path:
        return self.path / ".env"

    def env_text(self) -> str:
        return self.env_path.read_text()

    def write_env(self, text: str) -> None:
        self.env_path.write_text(text)

    def audit_lines(self) -> list[dict[str, Any]]:
        p = self.path / ".stackpilot" / "audit.jsonl"
        if not p.exists():
            return []
        return [json.loads(line) for line in p.read_text().splitlines() if line.strip()]

    def last_audit(self) -> dict[str, Any]:
        lines = self.audit_lines()
        assert lines, "an audit line was written"
        return lines[-1]

    def confirm_key(self) -> bytes:
        return bytes.fromhex((self.path / ".stackpilot" / "confirm.key").read_text().strip())


def make_stack(root: Path, env: str) -> Stack:
    root.mkdir(parents=True, exist_ok=True)
    (root / "docker-compose.yml").write_text(
        "services:\n  web:\n    image: stackpilot-test/busybox:1\n    pull_policy: never\n"
    )
    (root / ".env").write_text(env)
    return Stack(root)


@pytest.fixture
def stack(tmp_path: Path) -> Stack:
    """A stack whose .env makes select_profile's write destructive."""
    return make_stack(tmp_path / "stack", DESTRUCTIVE_ENV)


@pytest.fixture
def empty_stack(tmp_path: Path) -> Stack:
    """A stack with an empty .env: select_profile's write only adds keys."""
    return make_stack(tmp_path / "stack", "")


# --------------------------------------------------------------------------- people


class Person:
    """An elicitation callback that records what it was asked and answers `answer`."""

    def __init__(self, answer: str) -> None:
        assert answer in ("accept", "decline", "cancel")
        self.answer = answer
        self.asked: list[types.ElicitRequestParams] = []

    async def __call__(self, context: Any, params: types.ElicitRequestParams) -> types.ElicitResult:
        self.asked.append(params)
        if self.answer == "accept":
            return types.ElicitResult(action="accept", content={"confirm": True})
        return types.ElicitResult(action=self.answer)


# --------------------------------------------------------------------------- servers


class HttpServer:
    """`stackpilot serve --http 127.0.0.1:0` as a child; the URL comes from its stderr."""

    def __init__(self, stack: Stack, flags: tuple[str, ...]) -> None:
        self.proc = subprocess.Popen(
            [str(BIN), "serve", "--stack", str(stack.path), "--http", "127.0.0.1:0", *flags],
            env=server_env(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.stderr: list[str] = []
        found: queue.Queue[str | None] = queue.Queue()

        def drain() -> None:
            assert self.proc.stderr is not None
            announced = False
            for line in self.proc.stderr:
                self.stderr.append(line)
                m = re.search(r"stackpilot listening on (\S+)", line)
                if m and not announced:
                    announced = True
                    found.put(m.group(1))
            if not announced:
                found.put(None)

        threading.Thread(target=drain, daemon=True).start()
        try:
            url = found.get(timeout=20)
        except queue.Empty:
            url = None
        if url is None:
            self.stop()
            raise RuntimeError("stackpilot --http did not listen:\n" + "".join(self.stderr))
        self.url: str = url
        self.base: str = url.removesuffix("/mcp")
        self.port: int = int(self.base.rsplit(":", 1)[1])

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@dataclass
class Target:
    """A way to reach one stackpilot server: a stdio command line or an HTTP URL."""

    transport: str
    stack: Stack
    flags: tuple[str, ...]
    http: HttpServer | None = None
    opened: list[Client] = field(default_factory=list)

    @asynccontextmanager
    async def connect(
        self,
        era: str,
        person: Person | None = None,
        token: str | None = None,
    ) -> AsyncIterator[Client]:
        """An entered SDK client at `era`, declaring elicitation only with a `person`."""
        assert era in ERAS
        async with AsyncExitStack() as stack:
            if self.transport == "stdio":
                server: Any = StdioServerParameters(
                    command=str(BIN),
                    args=["serve", "--stack", str(self.stack.path), *self.flags],
                    env=server_env(),
                )
            else:
                assert self.http is not None
                # The SDK's documented way to add headers: bring your own httpx2 client.
                headers = {"Authorization": f"Bearer {token}"} if token else {}
                http_client = await stack.enter_async_context(
                    httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(CALL_TIMEOUT_S))
                )
                server = streamable_http_client(self.http.url, http_client=http_client)
            client = Client(
                server,
                mode="legacy" if era == "2025-11-25" else "auto",
                elicitation_callback=person,
                read_timeout_seconds=CALL_TIMEOUT_S,
                client_info=types.Implementation(name="stackpilot-python-tests", version="1.0.0"),
            )
            await stack.enter_async_context(client)
            # "auto" probes server/discover; a server that answered it is on the modern era.
            assert client.protocol_version == era, f"negotiated {client.protocol_version}, wanted {era}"
            yield client


@pytest.fixture
def launch(transport: str) -> Iterator[Any]:
    """`launch(stack, *flags)` -> a Target on this test's transport; HTTP servers stop at teardown."""
    servers: list[HttpServer] = []

    def _launch(stack: Stack, *flags: str) -> Target:
        if transport == "stdio":
            return Target("stdio", stack, flags)
        server = HttpServer(stack, flags)
        servers.append(server)
        return Target("http", stack, flags, http=server)

    yield _launch
    for s in servers:
        s.stop()


@pytest.fixture
def http_server() -> Iterator[Any]:
    """`http_server(stack, *flags)` -> a running HttpServer, stopped at teardown."""
    servers: list[HttpServer] = []

    def _start(stack: Stack, *flags: str) -> HttpServer:
        s = HttpServer(stack, flags)
        servers.append(s)
        return s

    yield _start
    for s in servers:
        s.stop()


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    # Every test that names `transport` / `era` runs over both of each.
    if "transport" in metafunc.fixturenames:
        metafunc.parametrize("transport", TRANSPORTS)
    if "era" in metafunc.fixturenames:
        metafunc.parametrize("era", ERAS)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


# --------------------------------------------------------------------------- results


async def tool_map(client: Client) -> dict[str, types.Tool]:
    listed = await client.list_tools()
    return {t.name: t for t in listed.tools}


async def call(client: Client, name: str, args: dict[str, Any]) -> types.CallToolResult:
    return await client.call_tool(name, args)


def structured(result: types.CallToolResult) -> dict[str, Any]:
    assert result.structured_content is not None, f"structuredContent present: {result}"
    return result.structured_content


def ok(result: types.CallToolResult) -> dict[str, Any]:
    """The structured content of a successful result."""
    assert not result.is_error, f"tool succeeded: {result}"
    return structured(result)


def tool_error(result: types.CallToolResult) -> dict[str, Any]:
    """The `error` object of a failed result (isError with structured error)."""
    assert result.is_error, f"tool failed: {result}"
    assert result.content and result.content[0].type == "text" and result.content[0].text, "a text cause"
    err = structured(result)["error"]
    assert isinstance(err, dict) and err.get("kind") and err.get("message"), err
    return err


def validate_output(tool: types.Tool, value: Any, branch: str | None = None) -> None:
    """Validate `value` against the tool's outputSchema (and, if named, one of its branches)."""
    schema = tool.output_schema
    assert schema is not None, f"{tool.name} has an outputSchema"
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    errors = sorted(cls(schema).iter_errors(value), key=lambda e: list(e.path))
    assert not errors, f"{tool.name} structuredContent violates outputSchema: " + "; ".join(
        f"{'/'.join(map(str, e.path))}: {e.message}" for e in errors
    )
    if branch is not None:
        # The output schema's branches sit side by side in its anyOf, told apart by the
        # field each requires: the tool's own output, a confirmation request, a declined
        # plan, an error.
        marker = {"ConfirmationRequired": "confirmation_required", "Declined": "declined", "Error": "error"}
        markers = set(marker.values())
        if branch in marker:
            alts = [a for a in schema["anyOf"] if marker[branch] in a.get("required", [])]
        else:
            alts = [a for a in schema["anyOf"] if not markers & set(a.get("required", []))]
        assert len(alts) == 1, f"{tool.name}: one {branch} branch in {schema['anyOf']}"
        sub = {**alts[0], "$defs": schema.get("$defs", {})}
        errors = list(cls(sub).iter_errors(value))
        assert not errors, f"{tool.name} output is not a {branch}: " + "; ".join(e.message for e in errors)


# --------------------------------------------------------------------------- tokens


def _b64url_decode(s: str) -> bytes:
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


def _b64url_encode(b: bytes) -> str:
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def token_claims(token: str) -> dict[str, Any]:
    return json.loads(_b64url_decode(token.split(".", 1)[0]))


def sign_token(key: bytes, claims: dict[str, Any]) -> str:
    """A token as stackpilot makes one: base64url(claims) "." hex(hmac_sha256(key, that))."""
    payload = _b64url_encode(json.dumps(claims, separators=(",", ":")).encode())
    sig = hmac.new(key, payload.encode(), hashlib.sha256).hexdigest()
    return f"{payload}.{sig}"
