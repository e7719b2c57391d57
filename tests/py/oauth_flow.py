"""The official MCP Python SDK's OAuth client against the real sidecar binary, a real Redis and the
real OpenID provider (tests/oidc): discovery, dynamic registration, PKCE authorization (the test
plays the user at the provider's login form and the sidecar's consent page, over HTTP), token,
and refresh with rotation.

Without Envoy in front, the protected resource is the sidecar's own `/verify`, called the way
Traefik's ForwardAuth calls it (`X-Forwarded-*` naming the MCP server `/everything/mcp`): its 401
starts the SDK's flow, and after login the same request passes with the identity headers. The
full-stack version through Envoy lives in tests/e2e (it shares the login driver,
tests/e2e/login.py).

    .venv/bin/python -m pytest tests/py/oauth_flow.py     (after `cargo build -p mcpgw-sidecar`)
"""

from __future__ import annotations

import base64
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx2
import pytest
from mcp.client.auth import AuthorizationCodeResult, OAuthClientProvider
from mcp.shared.auth import OAuthClientMetadata

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "e2e"))
sys.path.insert(0, str(ROOT / "deploy" / "tools"))

from connect import Tokens  # noqa: E402  (the SDK token storage of README's client)
from login import Browser, Redirected  # noqa: E402
from stack import _die_with_parent, bin_dir, free_port  # noqa: E402


def claims(jwt: str) -> dict:
    """A JWT's payload, unverified (the sidecar's /verify verifies; the test reads what was minted)."""
    payload = jwt.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))

REDIRECT_URI = "http://127.0.0.1:1/callback"
USERS = {u["login"]: u for u in json.loads((ROOT / "tests/oidc/users.json").read_text())}
START_TIMEOUT = 30.0


def wait_port(proc: subprocess.Popen, port: int, log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"{proc.args[0]} exited:\n{log.read_text()}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"{proc.args[0]} did not listen on {port}:\n{log.read_text()}")


class Processes:
    """Child processes of this test, each logging to a file, killed at the end."""

    def __init__(self, logs: Path) -> None:
        self.logs = logs
        self.procs: list[subprocess.Popen] = []

    def start(self, name: str, args: list[str], port: int, env: dict[str, str] | None = None) -> None:
        log = self.logs / f"{name}.log"
        proc = subprocess.Popen(
            args,
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stdout=log.open("wb"),
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
            preexec_fn=_die_with_parent,
        )
        self.procs.append(proc)
        wait_port(proc, port, log)

    def stop(self) -> None:
        for proc in reversed(self.procs):
            proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@pytest.fixture(scope="module")
def sidecar(tmp_path_factory):
    """Redis, the OpenID provider and the sidecar binary; yields the sidecar's origin."""
    binary = bin_dir() / "mcpgw-sidecar"
    assert binary.exists(), f"{binary} not built: run `cargo build -p mcpgw-sidecar` (or set MCPGW_BIN_DIR)"
    logs = tmp_path_factory.mktemp("oauth-flow")
    procs = Processes(logs)
    redis_port, oidc_port, port = free_port(), free_port(), free_port()
    origin = f"http://127.0.0.1:{port}"
    try:
        procs.start("redis", ["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1",
                              "--save", "", "--appendonly", "no"], redis_port)
        procs.start("oidc", ["node", "tests/oidc/server.mjs"], oidc_port, {
            "PORT": str(oidc_port),
            "OIDC_CLIENT_ID": "mcpgw-sdk-test",
            "OIDC_CLIENT_SECRET": "sdk-test-secret",
            "OIDC_REDIRECT_URIS": f"{origin}/oauth/callback",
        })
        config = logs / "sidecar.toml"
        config.write_text(f"""
issuer = "{origin}"
redis_url = "redis://127.0.0.1:{redis_port}"
log_format = "text"

[registration]
mode = "open"

[upstream]
kind = "oidc"
issuer = "http://127.0.0.1:{oidc_port}"
client_id = "mcpgw-sdk-test"
client_secret = "sdk-test-secret"

[allow]
groups = ["engineering"]

[[resources]]
canonical_url = "{origin}/everything/mcp"
path_prefix = "/everything/mcp"
scopes_required = ["mcp:tools"]
""")
        procs.start("sidecar", [str(binary), "--config", str(config), "--listen", f"127.0.0.1:{port}"], port)
        yield origin
    finally:
        procs.stop()


def sdk_client(origin: str, browser: Browser, storage: Tokens) -> OAuthClientProvider:
    redirected: dict[str, Redirected] = {}

    async def redirect_handler(authorization_url: str) -> None:
        redirected["to"] = await browser.authorize(authorization_url, REDIRECT_URI)

    async def callback_handler() -> AuthorizationCodeResult:
        r = redirected.pop("to")
        assert r.error is None and r.code, f"authorization failed: error={r.error}"
        return AuthorizationCodeResult(code=r.code, state=r.state, iss=r.iss)

    return OAuthClientProvider(
        server_url=f"{origin}/everything/mcp",
        client_metadata=OAuthClientMetadata(
            client_name="mcpgw SDK OAuth test",
            redirect_uris=[REDIRECT_URI],
            grant_types=["authorization_code", "refresh_token"],
            response_types=["code"],
        ),
        storage=storage,
        redirect_handler=redirect_handler,
        callback_handler=callback_handler,
    )


def forward_auth_headers(origin: str) -> dict[str, str]:
    """What Traefik's ForwardAuth sends to /verify for a POST to the MCP server (plus the MCP
    protocol version header the client set, which tells the SDK to send RFC 8707 `resource`)."""
    return {
        "X-Forwarded-Method": "POST",
        "X-Forwarded-Proto": "http",
        "X-Forwarded-Host": origin.removeprefix("http://"),
        "X-Forwarded-Uri": "/everything/mcp",
        "MCP-Protocol-Version": "2025-11-25",
    }


@pytest.mark.anyio
async def test_sdk_discovers_registers_logs_in_and_refreshes(sidecar):
    origin = sidecar
    alice = USERS["alice"]
    browser = Browser(alice["login"], alice["password"])
    storage = Tokens()
    trail: list[tuple[str, str, int]] = []

    async def record(response: httpx2.Response) -> None:
        trail.append((response.request.method, response.request.url.path, response.status_code))

    provider = sdk_client(origin, browser, storage)
    try:
        async with httpx2.AsyncClient(auth=provider, timeout=30, event_hooks={"response": [record]}) as http:
            verified = await http.get(f"{origin}/verify", headers=forward_auth_headers(origin))
            assert verified.status_code == 200, (verified.status_code, verified.text, trail)
            assert verified.headers["x-mcpgw-user"] == "alice"
            assert verified.headers["x-mcpgw-subject"] == "oidc:alice"
            assert "engineering" in verified.headers["x-mcpgw-groups"].split(",")
            assert verified.headers["x-mcpgw-resource"] == f"{origin}/everything/mcp"

            paths = [(m, p) for m, p, _ in trail]
            assert ("GET", "/.well-known/oauth-authorization-server") in paths, trail
            assert ("POST", "/register") in paths, trail
            assert ("POST", "/token") in paths, trail
            assert any("/interaction/" in p for p in browser.pages), "the provider's login form was not used"
            assert any(p.endswith("/oauth/callback") for p in browser.pages), browser.pages
            assert any(p.endswith("/oauth/consent") for p in browser.pages), "the consent page was not answered"

            first = storage.tokens
            assert first is not None and first.refresh_token
            minted = claims(first.access_token)
            assert minted["iss"] == origin
            assert minted["aud"] == f"{origin}/everything/mcp"
            assert minted["sub"] == "oidc:alice"
            assert minted["client_id"] == storage.client_info.client_id
            assert "engineering" in minted["groups"]

            # Refresh: the access token is (made) expired; the SDK refreshes without the user.
            pages_before = len(browser.pages)
            provider.context.token_expiry_time = time.time() - 1
            again = await http.get(f"{origin}/verify", headers=forward_auth_headers(origin))
            assert again.status_code == 200, again.text
            assert len(browser.pages) == pages_before, "a refresh must not need the user"
            second = storage.tokens
            assert second.access_token != first.access_token
            assert second.refresh_token != first.refresh_token, "refresh tokens rotate"

        # The rotated-away refresh token is dead (reuse).
        info = storage.client_info
        form = {"grant_type": "refresh_token", "refresh_token": first.refresh_token, "client_id": info.client_id}
        auth = None
        if info.token_endpoint_auth_method == "client_secret_basic":
            auth = (info.client_id, info.client_secret)
        elif info.client_secret:
            form["client_secret"] = info.client_secret
        async with httpx2.AsyncClient(timeout=10) as plain:
            reused = await plain.post(f"{origin}/token", data=form, auth=auth)
        assert reused.status_code == 400, reused.text
        assert reused.json()["error"] == "invalid_grant"
    finally:
        await browser.aclose()


@pytest.fixture
def anyio_backend():
    return "asyncio"
