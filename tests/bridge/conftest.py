"""Fixtures for the bridge's end-to-end tests: start the built `mcpgw-bridge` binary as a child
process in front of a real stdio MCP server, wait for `/ready`, and stop it (SIGTERM, then SIGKILL)
afterwards. The binary comes from `$MCPGW_BRIDGE_BIN`, else `$CARGO_TARGET_DIR/debug`, else
`target/debug` (`make test-bridge` builds it first)."""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[2]
NODE_BIN = ROOT / "node_modules" / ".bin"
VENV_BIN = ROOT / ".venv" / "bin"

EVERYTHING = [str(NODE_BIN / "mcp-server-everything"), "stdio"]
MEMORY = [str(NODE_BIN / "mcp-server-memory")]
TIME = [str(VENV_BIN / "mcp-server-time"), "--local-timezone", "UTC"]

# The identity headers the gateway sets in front of every bridge (a bridge refuses requests
# without a subject, and serves a session only to the caller that opened it).
IDENTITY = {"x-mcpgw-subject": "oidc:bridge-tests", "x-mcpgw-client-id": "bridge-tests"}

# The revisions a client can speak to the bridge: the two session revisions (initialize
# handshake) and the stateless 2026-07-28.
REVISIONS = ["2025-06-18", "2025-11-25", "2026-07-28"]


def bridge_bin() -> Path:
    if env := os.environ.get("MCPGW_BRIDGE_BIN"):
        return Path(env)
    target = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
    return target / "debug" / "mcpgw-bridge"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _die_with_parent() -> None:
    # PR_SET_PDEATHSIG = 1: the bridge gets SIGKILL if pytest dies, and takes its children along.
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)


@dataclass
class Bridge:
    """A running bridge."""

    proc: subprocess.Popen[bytes]
    port: int
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/mcp"

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> int | None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


def start_bridge(
    child: Sequence[str], log: Path, flags: Sequence[str] = (), env: dict[str, str] | None = None
) -> Bridge:
    port = free_port()
    out = log.open("wb")
    # `env` is the child's (--env): a bridge passes none of its own environment on.
    child_env = [arg for k, v in (env or {}).items() for arg in ("--env", f"{k}={v}")]
    state = log.parent / f"state-{port}"
    proc = subprocess.Popen(
        [str(bridge_bin()), "--listen", f"127.0.0.1:{port}", "--state-dir", str(state), *child_env,
         *flags, "--", *child],
        stdin=subprocess.DEVNULL,
        stdout=out,
        stderr=subprocess.STDOUT,
        env={**os.environ, "RUST_LOG": "info"},
        preexec_fn=_die_with_parent,
    )
    bridge = Bridge(proc, port, log)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the bridge exited:\n{bridge.log_text()}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/ready", timeout=1).status_code == 200:
                return bridge
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    bridge.stop()
    raise RuntimeError(f"the bridge did not become ready:\n{bridge.log_text()}")


@pytest.fixture
def bridge_factory(tmp_path: Path) -> Iterator:
    """`bridge_factory(child, flags=(), env=None)` starts a bridge (`env`: the child's environment);
    all are stopped afterwards."""
    started: list[Bridge] = []

    def make(child: Sequence[str], flags: Sequence[str] = (), env: dict[str, str] | None = None) -> Bridge:
        b = start_bridge(child, tmp_path / f"bridge-{len(started)}.log", flags, env)
        started.append(b)
        return b

    yield make
    for b in started:
        b.stop()


def module_bridge(
    tmp_path_factory: pytest.TempPathFactory, name: str, child: Sequence[str], env: dict[str, str] | None = None
) -> Iterator[Bridge]:
    """For module-scoped fixtures: one bridge shared by a module's tests, stopped after them."""
    b = start_bridge(child, tmp_path_factory.mktemp(name) / "bridge.log", env=env)
    yield b
    b.stop()


@pytest.fixture(scope="module")
def everything(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bridge]:
    """One bridge in front of server-everything, shared by a module's tests."""
    yield from module_bridge(tmp_path_factory, "everything", EVERYTHING)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def connect(monkeypatch: pytest.MonkeyPatch):
    """`connect(url, revision, identity=IDENTITY, **client_options)`: an official-SDK `Client` that
    speaks `revision`, with the gateway's identity headers `identity` on every request.

    Session revisions use the initialize handshake (the SDK asks for its newest one, so an older
    revision is selected by lowering that constant); 2026-07-28 uses the SDK's default `auto` mode,
    which probes `server/discover` and adopts the stateless revision when the server offers it."""
    import mcp.client.session as client_session
    from mcp import Client
    from mcp.client.streamable_http import streamable_http_client
    from mcp.shared._httpx_utils import create_mcp_http_client

    @asynccontextmanager
    async def make(url: str, revision: str, identity: dict[str, str] = IDENTITY, **options):
        if revision != "2026-07-28":
            monkeypatch.setattr(client_session, "LATEST_HANDSHAKE_VERSION", revision)
        mode = "auto" if revision == "2026-07-28" else "legacy"
        async with create_mcp_http_client(headers=identity) as http:
            async with Client(streamable_http_client(url, http_client=http), mode=mode, **options) as c:
                yield c

    return make
