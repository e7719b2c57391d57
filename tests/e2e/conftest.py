"""Fixtures of the full-stack tests: one `make run` stack for the whole session (deploy/tools/run.py
with the test's configuration), the test users of tests/oidc, and an MCP client that logs in as
one of them through the official MCP Python SDK's OAuth provider.
"""

from __future__ import annotations

import base64
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

import anyio
import httpx2
import pytest
from mcp.client.auth import AuthorizationCodeResult, OAuthClientProvider
from mcp.shared.auth import OAuthClientInformationFull, OAuthClientMetadata

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "deploy" / "tools"))

import render  # noqa: E402
import stack as stack_mod  # noqa: E402
from connect import Tokens  # noqa: E402  (the token storage of README's client)
from login import Browser  # noqa: E402

USERS = json.loads((stack_mod.ROOT / "tests/oidc/users.json").read_text())
# The client's redirect URI: loopback, never listened on (the browser stops at the redirect).
REDIRECT_URI = "http://127.0.0.1:1/callback"

# The stack of these tests: three servers as `make run` ships them; `everything` with small
# per-user limits (test_trust.py reaches them); `memory` requires a scope (announced in its
# metadata, so the client asks for it) and keeps a graph per user; `time` only for the sales group
# (the policy filter), so alice (engineering) gets a token for it and is still refused.
SESSIONS_PER_USER = 3
TOOL_CALLS_PER_SECOND = 5
SERVERS = f"""
[servers.everything]
command = ["node_modules/.bin/mcp-server-everything"]
sessions_per_user = {SESSIONS_PER_USER}
tool_calls_per_second = {TOOL_CALLS_PER_SECOND}

[servers.memory]
command = ["node_modules/.bin/mcp-server-memory"]
scopes = ["memory:write"]
env = {{ MEMORY_FILE_PATH = "{{user_dir}}/memory.jsonl" }}

[servers.time]
command = [".venv/bin/mcp-server-time"]
allow_groups = ["sales"]
"""


# A secret in the gateway's environment (see the `stack` fixture).
GATEWAY_SECRET = "gateway-secret-7f3a9c"

# An MCP `initialize` request and the headers a streamable-HTTP client sends with it.
INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {
        "protocolVersion": "2025-11-25",
        "capabilities": {},
        "clientInfo": {"name": "mcpgw-e2e", "version": "1"},
    },
}
MCP_HEADERS = {
    "Accept": "application/json, text/event-stream",
    "Content-Type": "application/json",
    "MCP-Protocol-Version": "2025-11-25",
}

# Access tokens that outlive the test: Envoy refusing a revoked one is then the revocation feed's
# doing, not the token's expiry (see test_revoked_tokens_are_refused).
ACCESS_TOKEN_SECONDS = 600
LOGIN = f'access_token_lifetime = "{ACCESS_TOKEN_SECONDS}s"'


def feed_seconds() -> int:
    """How often the JWT filter refetches the sidecar's revocation feed (envoy/gateway.yaml)."""
    jwt = next(f for f in render.wasm_filters(render.load_gateway()) if f["name"] == "mcpgw_jwt")
    interval = json.loads(jwt["configuration"]["value"])["revocation"]["refresh_interval"]
    assert interval.endswith("s") and interval[:-1].isdigit(), interval
    return int(interval[:-1])


def user(login: str) -> dict:
    return next(u for u in USERS if u["login"] == login)


@pytest.fixture(scope="session")
def stack(tmp_path_factory):
    missing = stack_mod.missing_binaries()
    assert not missing, (
        f"{missing} not built in {stack_mod.bin_dir()}: run `make run-build` (or set MCPGW_BIN_DIR)"
    )
    # The gateway's environment holds a secret, as README's GitHub setup exports one: no MCP
    # server may see it.
    running = stack_mod.start(tmp_path_factory.mktemp("make-run"), SERVERS, login_toml=LOGIN,
                              env={"GITHUB_CLIENT_SECRET": GATEWAY_SECRET})
    yield running
    running.stop()


# The SDK's TokenStorage in memory, under the name tests/py/oauth_flow.py imports.
Memory = Tokens


@dataclass
class McpUser:
    """One person's MCP client for one server: the SDK's OAuth provider, its storage, the
    person's browser, and every request the client's HTTP stack made (method, path, status)."""

    url: str
    browser: Browser
    storage: Tokens = field(default_factory=Tokens)
    trail: list[tuple[str, str, int]] = field(default_factory=list)
    provider: OAuthClientProvider | None = None

    def __post_init__(self) -> None:
        redirected = {}

        async def redirect_handler(authorization_url: str) -> None:
            redirected["to"] = await self.browser.authorize(authorization_url, REDIRECT_URI)

        async def callback_handler() -> AuthorizationCodeResult:
            r = redirected.pop("to")
            assert r.error is None and r.code, f"authorization failed: {r.url.split('?')[0]} error={r.error}"
            return AuthorizationCodeResult(code=r.code, state=r.state, iss=r.iss)

        self.provider = OAuthClientProvider(
            server_url=self.url,
            client_metadata=OAuthClientMetadata(
                client_name="mcpgw full-stack test",
                redirect_uris=[REDIRECT_URI],
                grant_types=["authorization_code", "refresh_token"],
                response_types=["code"],
            ),
            storage=self.storage,
            redirect_handler=redirect_handler,
            callback_handler=callback_handler,
        )

    def http(self) -> httpx2.AsyncClient:
        """An HTTP client with the SDK's OAuth provider that records every exchange."""

        async def record(response: httpx2.Response) -> None:
            self.trail.append((response.request.method, response.request.url.path, response.status_code))

        return httpx2.AsyncClient(auth=self.provider, timeout=60, event_hooks={"response": [record]})

    @property
    def access_token(self) -> str:
        assert self.storage.tokens, "no token yet"
        return self.storage.tokens.access_token


def connect(url: str, login: str, status: int | None = 200) -> McpUser:
    """`login`'s MCP client for `url`, logged in through the SDK's OAuth flow by an `initialize`
    request, which must answer `status` (any, with None)."""
    person = user(login)
    client = McpUser(url, Browser(person["login"], person["password"]))

    async def initialize():
        async with client.http() as http:
            r = await http.post(client.url, json=INITIALIZE, headers=MCP_HEADERS)
            assert status is None or r.status_code == status, r.text

    anyio.run(initialize)
    return client


def claims(jwt: str) -> dict:
    """A JWT's payload, unverified (the gateway verifies; tests look at what was minted)."""
    payload = jwt.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


def client_auth(info: OAuthClientInformationFull) -> tuple[tuple[str, str] | None, dict[str, str]]:
    """(basic auth, form fields) authenticating a registered client as it registered (RFC 6749
    §2.3.1), for /token, /revoke and /introspect."""
    method = info.token_endpoint_auth_method or "client_secret_basic"
    if method == "client_secret_basic":
        return (info.client_id, info.client_secret), {}
    if method == "client_secret_post":
        return None, {"client_id": info.client_id, "client_secret": info.client_secret}
    return None, {"client_id": info.client_id}
