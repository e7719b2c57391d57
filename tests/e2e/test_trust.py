"""Red-team tests of issue 19 ("Trust I") against the stack `make run` starts: each shows one
attack failing, through Envoy, the sidecar's tokens and the bridges in front of real MCP servers.
alice and bob here are the test users carol and dave of tests/oidc, used by no other test (so no
other test's sessions count against their limits; both may use `everything` and `memory`).

  1  bob, with his own valid token, cannot use alice's session (POST, GET, resume, DELETE)
  2  an MCP server does not see the gateway's environment (GITHUB_CLIENT_SECRET)
  3  one user cannot open more than their sessions or make more than their tool calls per second
  8  bob does not see alice's memory, in sessions and in 2026-07-28 stateless mode
  9  x_mcpgw_* headers never reach a bridge; a bridge refuses them (and requests without identity)
"""

from __future__ import annotations

import json
from pathlib import Path

import anyio
import httpx
import pytest
import yaml
from conftest import (GATEWAY_SECRET, INITIALIZE, MCP_HEADERS, SESSIONS_PER_USER, TOOL_CALLS_PER_SECOND,
                      McpUser, user)
from login import Browser
from mcp import Client
from mcp.client.streamable_http import streamable_http_client


@pytest.fixture(scope="module")
def people(stack):
    """alice's and bob's SDK clients per server, logged in on first use."""
    made: dict[tuple[str, str], McpUser] = {}
    logins = {"alice": "carol", "bob": "dave"}

    def get(login: str, server: str) -> McpUser:
        if (login, server) not in made:
            u = user(logins[login])
            made[login, server] = McpUser(f"{stack.url}/{server}/mcp", Browser(u["login"], u["password"]))
        return made[login, server]

    return get


async def call(client: McpUser, tool: str, arguments: dict, mode: str = "legacy") -> str:
    """One tool call through the SDK (`legacy`: in a session; `auto`: 2026-07-28, stateless)."""
    async with client.http() as http:
        async with Client(streamable_http_client(client.url, http_client=http), mode=mode) as c:
            assert c.protocol_version == ("2026-07-28" if mode == "auto" else "2025-11-25")
            result = await c.call_tool(tool, arguments)
    assert not result.is_error, result
    return "\n".join(getattr(part, "text", "") for part in result.content)


def logged_in(client: McpUser) -> str:
    """`client`'s access token (logging in through the SDK the first time)."""
    if not client.storage.tokens:
        anyio.run(call, client, "echo", {"message": "log in"})
    return client.access_token


def headers(token: str, session: str | None = None, **extra: str) -> dict[str, str]:
    h = {**MCP_HEADERS, "Authorization": f"Bearer {token}", **extra}
    if session:
        h["Mcp-Session-Id"] = session
    return h


def open_session(url: str, token: str) -> str:
    r = httpx.post(url, json=INITIALIZE, headers=headers(token))
    assert r.status_code == 200, r.text
    session = r.headers["mcp-session-id"]
    done = httpx.post(url, json={"jsonrpc": "2.0", "method": "notifications/initialized"},
                      headers=headers(token, session))
    assert done.status_code == 202, done.text
    return session


def echo(n: int, message: str = "hi") -> dict:
    return {"jsonrpc": "2.0", "id": n, "method": "tools/call",
            "params": {"name": "echo", "arguments": {"message": message}}}


def test_1_a_session_answers_only_the_user_who_opened_it(stack, people):
    alice, bob = people("alice", "everything"), people("bob", "everything")
    a, b = logged_in(alice), logged_in(bob)
    session = open_session(alice.url, a)
    # An SSE answer puts events (ids like 1-0) in the session's replay buffer.
    progress = {"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {
        "name": "trigger-long-running-operation", "arguments": {"duration": 0.2, "steps": 2},
        "_meta": {"progressToken": "p"}}}
    r = httpx.post(alice.url, json=progress, headers=headers(a, session), timeout=30)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream"), r.text
    event_id = next(line[3:].strip() for line in r.text.splitlines() if line.startswith("id:"))

    unknown = httpx.post(alice.url, json=echo(3), headers=headers(b, "0" * 32))
    assert unknown.status_code == 404
    attempts = {
        "POST a tool call": httpx.post(alice.url, json=echo(4, "bob was here"), headers=headers(b, session)),
        "GET her stream": httpx.get(alice.url, headers=headers(b, session, Accept="text/event-stream")),
        "resume her events": httpx.get(alice.url, headers=headers(
            b, session, Accept="text/event-stream", **{"Last-Event-ID": event_id})),
        "DELETE her session": httpx.delete(alice.url, headers=headers(b, session)),
    }
    for what, r in attempts.items():
        assert r.status_code == 404, f"bob could {what}: {r.status_code} {r.text[:200]}"
        assert r.content == unknown.content, f"{what}: must look exactly like an unknown session"
    mine = httpx.post(alice.url, json=echo(5, "still mine"), headers=headers(a, session))
    assert mine.status_code == 200 and "still mine" in mine.text, mine.text
    assert httpx.delete(alice.url, headers=headers(a, session)).status_code == 200


def test_2_mcp_servers_do_not_see_the_gateways_environment(stack, people):
    env = anyio.run(call, people("alice", "everything"), "get-env", {})
    assert "PATH" in env, env[:300]
    assert GATEWAY_SECRET not in env
    assert "GITHUB_CLIENT_SECRET" not in env
    assert "MCPGW_" not in env


def test_3_a_user_has_at_most_so_many_sessions_and_tool_calls_per_second(stack, people):
    alice, bob = people("alice", "everything"), people("bob", "everything")
    a, b = logged_in(alice), logged_in(bob)
    sessions = [open_session(alice.url, a) for _ in range(SESSIONS_PER_USER)]
    try:
        r = httpx.post(alice.url, json=INITIALIZE, headers=headers(a))
        assert r.status_code == 429, r.text
        assert int(r.headers["retry-after"]) >= 1
        assert r.json()["error"]["code"] == -32029 and r.json()["id"] == INITIALIZE["id"]
        # bob is not held back by alice.
        httpx.delete(bob.url, headers=headers(b, open_session(bob.url, b)))

        answers = [httpx.post(alice.url, json=echo(n), headers=headers(a, sessions[0]))
                   for n in range(3 * TOOL_CALLS_PER_SECOND)]
        limited = [r for r in answers if r.status_code == 429]
        assert limited, [r.status_code for r in answers]
        assert {r.status_code for r in answers} == {200, 429}
        assert int(limited[0].headers["retry-after"]) >= 1
        body = limited[0].json()
        assert body["error"]["code"] == -32029 and isinstance(body["id"], int), body
    finally:
        for s in sessions:
            httpx.delete(alice.url, headers=headers(a, s))


@pytest.mark.parametrize("mode", ["legacy", "auto"], ids=["sessions", "stateless-2026-07-28"])
def test_8_users_do_not_share_a_servers_state(stack, people, mode):
    alice, bob = people("alice", "memory"), people("bob", "memory")
    secret = f"alice-private-{mode}"
    created = anyio.run(call, alice, "create_entities", {
        "entities": [{"name": secret, "entityType": "note", "observations": ["only for alice"]}]}, mode)
    assert secret in created
    assert secret not in anyio.run(call, bob, "read_graph", {}, mode)
    # alice's state outlives the process that wrote it: another session, another mode, sees it.
    other = "auto" if mode == "legacy" else "legacy"
    assert secret in anyio.run(call, alice, "read_graph", {}, other)
    assert secret not in anyio.run(call, bob, "read_graph", {}, other)


def envoy_admin(stack) -> str:
    doc = yaml.safe_load((Path(stack.state_dir) / "envoy.yaml").read_text())
    return f"http://127.0.0.1:{doc['admin']['address']['socket_address']['port_value']}"


def dropped_underscore_headers(stack) -> int:
    stats = httpx.get(f"{envoy_admin(stack)}/stats?format=json").json()["stats"]
    return sum(s.get("value", 0) for s in stats if s.get("name", "").endswith("dropped_headers_with_underscores"))


def test_9_underscore_identity_headers_never_reach_a_bridge(stack, people):
    bob = people("bob", "everything")
    token = logged_in(bob)
    before = dropped_underscore_headers(stack)
    spoofed = {"x_mcpgw_groups": "admins", "X_Mcpgw_User": "admin"}
    r = httpx.post(bob.url, json=INITIALIZE, headers={**headers(token), **spoofed})
    assert r.status_code == 200, r.text
    httpx.delete(bob.url, headers=headers(token, r.headers["mcp-session-id"]))
    assert dropped_underscore_headers(stack) >= before + 2, "Envoy passed headers with `_` on"

    # Defence in depth: a bridge reached some other way refuses them, and serves no request
    # without the identity only the gateway sets.
    bridge = f"{stack.info['bridges']['everything']}/mcp"
    identity = {"x-mcpgw-subject": "oidc:alice", "x-mcpgw-client-id": "c"}
    direct = httpx.post(bridge, json=INITIALIZE, headers={**MCP_HEADERS, **identity, "x_mcpgw_subject": "oidc:bob"})
    assert direct.status_code == 400 and "`_`" in direct.json()["error"]["message"], direct.text
    anonymous = httpx.post(bridge, json=INITIALIZE, headers=MCP_HEADERS)
    assert anonymous.status_code == 403, anonymous.text
    assert "x-mcpgw-subject" in anonymous.json()["error"]["message"]
