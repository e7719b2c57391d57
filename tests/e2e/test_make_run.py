"""The mission, end to end, over the stack `make run` starts (Envoy with the JWT and policy
filters, the sidecar on Redis, the local OpenID provider, bridges in front of real MCP servers):
the official MCP Python SDK client, with its OAuth provider, discovers everything from the first
401, registers, logs in (the test plays the user at the login form and the consent page), calls
tools on two servers, refreshes, is refused where the policy excludes it and where its token was
not minted for, revokes, and is refused after.

The tests run in file order and build on each other (one person, alice, one session).
"""

from __future__ import annotations

import time

import anyio
import httpx
import pytest
from conftest import INITIALIZE, MCP_HEADERS, USERS, McpUser, claims, client_auth, feed_seconds, user
from login import Browser
from mcp import Client
from mcp.client.streamable_http import streamable_http_client


@pytest.fixture(scope="module")
def alice():
    a = user("alice")
    return Browser(a["login"], a["password"])


@pytest.fixture(scope="module")
def clients(stack, alice):
    """alice's SDK client for each server, created on first use and kept across the tests."""
    made: dict[str, McpUser] = {}

    def get(name: str) -> McpUser:
        if name not in made:
            made[name] = McpUser(f"{stack.url}/{name}/mcp", alice)
        return made[name]

    return get


async def list_and_call(client: McpUser, tool: str, arguments: dict):
    async with client.http() as http:
        async with Client(streamable_http_client(client.url, http_client=http)) as session:
            tools = await session.list_tools()
            result = await session.call_tool(tool, arguments)
    return {t.name for t in tools.tools}, result


def text(result) -> str:
    assert not result.is_error, result
    return "\n".join(c.text for c in result.content if getattr(c, "type", "") == "text")


def www_authenticate(response: httpx.Response) -> str:
    return response.headers.get("www-authenticate", "")


def test_the_runner_prints_the_urls_the_test_users_and_how_to_connect(stack):
    banner = stack.log.read_text()
    for name in ("everything", "memory", "time"):
        assert f"{stack.url}/{name}/mcp" in banner
    for u in USERS:
        assert f"{u['login']} / {u['password']}" in banner
    assert f"deploy/tools/connect.py {stack.url}/everything/mcp" in banner


def test_first_401_leads_to_the_metadata_and_the_authorization_server(stack):
    url = stack.url
    r = httpx.post(f"{url}/everything/mcp", json=INITIALIZE, headers=MCP_HEADERS)
    assert r.status_code == 401
    challenge = www_authenticate(r)
    prm_url = f"{url}/.well-known/oauth-protected-resource/everything/mcp"
    assert challenge.startswith("Bearer ") and f'resource_metadata="{prm_url}"' in challenge, challenge

    prm = httpx.get(prm_url).json()
    assert prm["resource"] == f"{url}/everything/mcp"
    assert prm["authorization_servers"] == [url]

    asm = httpx.get(f"{url}/.well-known/oauth-authorization-server").json()
    assert asm["issuer"] == url
    assert asm["registration_endpoint"] == f"{url}/register"
    assert asm["code_challenge_methods_supported"] == ["S256"]
    assert httpx.get(asm["jwks_uri"]).json()["keys"], "no signing key published"


def test_sdk_client_registers_logs_in_and_calls_tools_on_two_servers(stack, clients, alice):
    everything = clients("everything")
    names, result = anyio.run(list_and_call, everything, "echo", {"message": "hello through mcpgw"})
    assert "echo" in names
    assert "hello through mcpgw" in text(result)

    # Everything came from the first 401: metadata, registration, authorization, token.
    assert everything.trail[0] == ("POST", "/everything/mcp", 401), everything.trail[:3]
    visited = [p for _, p, _ in everything.trail]
    for step in ("/.well-known/oauth-protected-resource/everything/mcp",
                 "/.well-known/oauth-authorization-server", "/register", "/token"):
        assert step in visited, f"{step} missing from {visited}"
    assert visited.index("/register") < visited.index("/token")
    assert any(p.endswith("/authorize") for p in alice.pages), alice.pages
    assert any("/interaction/" in p for p in alice.pages), "the OpenID provider's login form was not used"

    token = claims(everything.access_token)
    assert token["aud"] == f"{stack.url}/everything/mcp"
    assert token["iss"] == stack.url
    assert token["client_id"] == everything.storage.client_info.client_id
    assert token["preferred_username"] == "alice"
    assert "engineering" in token["groups"]
    assert everything.storage.tokens.refresh_token

    memory = clients("memory")
    names, result = anyio.run(list_and_call, memory, "create_entities", {
        "entities": [{"name": "mcpgw", "entityType": "project", "observations": ["runs on one origin"]}]
    })
    assert {"create_entities", "read_graph"} <= names
    assert "mcpgw" in text(result)
    minted = claims(memory.access_token)
    assert minted["aud"] == f"{stack.url}/memory/mcp"
    assert "memory:write" in minted["scope"].split(), "the scope memory requires was not granted"


def test_refresh_rotates_the_tokens_and_the_new_access_token_works(stack, clients, alice):
    everything = clients("everything")
    before = everything.storage.tokens
    logins = len(alice.pages)
    # The access token is due: the SDK refreshes before the next request.
    everything.provider.context.token_expiry_time = time.time() - 1
    everything.trail.clear()
    _, result = anyio.run(list_and_call, everything, "echo", {"message": "after refresh"})
    assert "after refresh" in text(result)

    after = everything.storage.tokens
    assert ("POST", "/token", 200) in everything.trail
    assert len(alice.pages) == logins, "a refresh must not need the user"
    assert after.access_token != before.access_token
    assert after.refresh_token and after.refresh_token != before.refresh_token, "refresh tokens rotate"
    assert claims(after.access_token)["aud"] == f"{stack.url}/everything/mcp"


def test_policy_refuses_a_server_the_user_is_not_allowed_on(stack, clients):
    time_client = clients("time")

    async def initialize():
        async with time_client.http() as http:
            return await http.post(time_client.url, json=INITIALIZE, headers=MCP_HEADERS)

    response = anyio.run(initialize)
    # The sidecar minted a token for /time/mcp (alice may log in), the JWT filter accepted it,
    # and the policy filter refused: time is for the sales group only.
    assert claims(time_client.access_token)["aud"] == f"{stack.url}/time/mcp"
    assert response.status_code == 403, response.text
    assert response.json()["error"]["message"] == "forbidden by policy"
    again = httpx.post(time_client.url, json=INITIALIZE,
                       headers={**MCP_HEADERS, "Authorization": f"Bearer {time_client.access_token}"})
    assert again.status_code == 403


def test_a_token_minted_for_one_server_is_refused_at_another(stack, clients):
    token = clients("everything").access_token
    r = httpx.post(f"{stack.url}/memory/mcp", json=INITIALIZE,
                   headers={**MCP_HEADERS, "Authorization": f"Bearer {token}"})
    assert r.status_code == 401
    challenge = www_authenticate(r)
    assert 'error="invalid_token"' in challenge, challenge
    assert "/.well-known/oauth-protected-resource/memory/mcp" in challenge


def test_revoked_tokens_are_refused(stack, clients, alice):
    everything = clients("everything")
    info = everything.storage.client_info
    tokens = everything.storage.tokens
    auth, data = client_auth(info)

    for kind in ("refresh_token", "access_token"):
        r = httpx.post(f"{stack.url}/revoke", auth=auth,
                       data={**data, "token": getattr(tokens, kind), "token_type_hint": kind})
        assert r.status_code == 200, r.text
    revoked_at = time.monotonic()

    # Envoy verifies access tokens locally, and learns of revocations from the sidecar's feed,
    # which each worker refetches every `revocation.refresh_interval`: within that (plus its
    # one-second tick and the fetch), every worker refuses the token, long before it expires.
    assert claims(tokens.access_token)["exp"] > time.time() + 60
    deadline = revoked_at + feed_seconds() + 2
    refused = 0
    while refused < 4:
        r = httpx.post(everything.url, json=INITIALIZE,
                       headers={**MCP_HEADERS, "Authorization": f"Bearer {tokens.access_token}"})
        refused = refused + 1 if r.status_code == 401 else 0
        assert refused or time.monotonic() < deadline, (
            f"Envoy still accepts the revoked token {time.monotonic() - revoked_at:.1f}s after /revoke")
        time.sleep(0.1)
    assert 'error="invalid_token", error_description="token revoked"' in www_authenticate(r)
    assert r.json() == {"error": "invalid_token", "error_description": "token revoked"}

    refresh = httpx.post(f"{stack.url}/token", auth=auth, data={
        **data, "grant_type": "refresh_token", "refresh_token": tokens.refresh_token,
        "resource": everything.url,
    })
    assert refresh.status_code == 400 and refresh.json()["error"] == "invalid_grant", refresh.text

    introspected = httpx.post(f"{stack.url}/introspect", auth=auth,
                              data={**data, "token": tokens.access_token}).json()
    assert introspected == {"active": False} or introspected["active"] is False

    # /verify, the check behind Traefik, sees the revocation at once.
    verify = httpx.get(f"{stack.info['sidecar']}/verify", headers={
        "Authorization": f"Bearer {tokens.access_token}",
        "X-Forwarded-Method": "POST", "X-Forwarded-Proto": "http",
        "X-Forwarded-Host": stack.url.split("://")[1], "X-Forwarded-Uri": "/everything/mcp",
    })
    assert verify.status_code == 401, verify.text
    # ... with the very answer Envoy gave (core's one denial builder on both paths).
    assert verify.headers["www-authenticate"] == www_authenticate(r)
    assert verify.content == r.content

    # The SDK client, once its access token is due, cannot refresh any more: the user must log
    # in again.
    logins = len(alice.pages)
    everything.provider.context.token_expiry_time = time.time() - 1
    everything.trail.clear()
    _, result = anyio.run(list_and_call, everything, "echo", {"message": "logged in again"})
    assert "logged in again" in text(result)
    assert ("POST", "/token", 400) in everything.trail, everything.trail
    assert len(alice.pages) > logins, "the revoked grant was refreshed without a new login"



@pytest.mark.parametrize("size", [70_000, 50_000_000])
def test_an_over_limit_body_for_the_sidecar_gets_413_through_envoy(stack, size):
    """The sidecar takes 64 KiB: Envoy answers a larger body 413 itself (the sidecar refusing it
    mid-upload made Envoy answer 503)."""
    r = httpx.post(f"{stack.url}/token", content=b"grant_type=" + b"x" * size,
                   headers={"content-type": "application/x-www-form-urlencoded"}, timeout=60)
    assert r.status_code == 413, (r.status_code, r.text[:200])
    # Under the limit the sidecar answers as usual (no client: invalid_client).
    ok = httpx.post(f"{stack.url}/token", data={"grant_type": "x" * 1000})
    assert ok.status_code == 401 and ok.json()["error"] == "invalid_client"
