"""A restart loses nothing: under the `make run` stack, Redis and then the sidecar are killed
(-9); the runner restarts each on its port while the rest keeps serving, and Redis comes back with
its data (its append-only file in state_dir). A client registered before still refreshes and its
user's consent is remembered, a token revoked before stays refused by Envoy and by /verify, the signing keys are unchanged and tokens
issued before stay valid. While the sidecar is unreachable, Envoy answers the OAuth endpoints
with OAuth JSON (503 `temporarily_unavailable`), not its plain-text 503.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import anyio
import httpx
import render
import stack as stack_mod
from conftest import INITIALIZE, MCP_HEADERS, McpUser, client_auth, feed_seconds, user
from login import Browser

RESTART_TIMEOUT = 30.0


def connect(client: McpUser) -> int:
    """An MCP `initialize` through the SDK's OAuth provider (it registers and logs in on the 401);
    the session it opened is closed again. Returns the `initialize` status."""

    async def initialize():
        async with client.http() as http:
            r = await http.post(client.url, json=INITIALIZE, headers=MCP_HEADERS)
            if session := r.headers.get("mcp-session-id"):
                await http.delete(client.url, headers={**MCP_HEADERS, "Mcp-Session-Id": session})
            return r.status_code

    return anyio.run(initialize)


# An `initialize` the bridge refuses (400) without opening a session: whether Envoy let the token
# through, with no session left open (the bridge limits each user's).
PROBE = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {}}


def envoy_accepts(stack, token: str) -> bool:
    """Whether Envoy lets `token` through to the bridge (False: the JWT filter's 401)."""
    r = httpx.post(f"{stack.url}/everything/mcp", json=PROBE,
                   headers={**MCP_HEADERS, "Authorization": f"Bearer {token}"})
    if r.status_code == 401:
        return False
    assert r.status_code == 400 and "protocolVersion" in r.text, (r.status_code, r.text)
    return True


def at_verify(stack, token: str) -> httpx.Response:
    # As Traefik's ForwardAuth asks: a GET with the MCP request's body (the policy decides on it).
    return httpx.request("GET", f"{stack.info['sidecar']}/verify", headers={
        "Authorization": f"Bearer {token}",
        "X-Forwarded-Method": "POST", "X-Forwarded-Proto": "http",
        "X-Forwarded-Host": stack.url.split("://")[1], "X-Forwarded-Uri": "/everything/mcp",
    }, content=b'{"jsonrpc":"2.0","id":1,"method":"ping"}')


def kill_and_await_restart(stack, name: str) -> None:
    """kill -9 the stack's `name`; returns once run.py restarted it and the sidecar is ready."""
    before = stack.refresh()["processes"][name]
    os.kill(before["pid"], signal.SIGKILL)
    deadline = time.monotonic() + RESTART_TIMEOUT
    while True:
        now = stack.refresh()["processes"][name]
        if now["restarts"] > before["restarts"]:
            try:
                if httpx.get(f"{stack.info['sidecar']}/ready").status_code == 200:
                    return
            except httpx.TransportError:
                pass
        assert time.monotonic() < deadline, f"{name} was not restarted\n{stack.logs()}"
        time.sleep(0.1)


def refused_throughout(stack, token: str, seconds: float) -> None:
    """Envoy refuses `token` on every request for `seconds` (every worker, every feed fetch)."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        assert not envoy_accepts(stack, token), "Envoy accepts a token revoked before the restart"
        time.sleep(0.2)


def test_redis_and_the_sidecar_killed_are_restarted_and_nothing_is_lost(stack):
    bob = user("bob")
    browser = Browser(bob["login"], bob["password"])
    kept = McpUser(f"{stack.url}/everything/mcp", browser)
    gone = McpUser(f"{stack.url}/everything/mcp", browser)
    for client in (kept, gone):
        assert connect(client) == 200
    revoked = gone.access_token

    # `gone`'s grant is revoked; Envoy refuses its access token once the feed lists it.
    auth, data = client_auth(gone.storage.client_info)
    for kind in ("refresh_token", "access_token"):
        token = getattr(gone.storage.tokens, kind)
        r = httpx.post(f"{stack.url}/revoke", auth=auth, data={**data, "token": token, "token_type_hint": kind})
        assert r.status_code == 200, r.text
    deadline = time.monotonic() + feed_seconds() + 3
    while envoy_accepts(stack, revoked):
        assert time.monotonic() < deadline, "Envoy did not refuse the revoked token"
        time.sleep(0.1)

    # Redis killed: restarted with its data, the rest served meanwhile.
    kill_and_await_restart(stack, "redis")
    info = kept.storage.client_info
    auth, data = client_auth(info)
    refreshed = httpx.post(f"{stack.url}/token", auth=auth, data={
        **data, "grant_type": "refresh_token", "refresh_token": kept.storage.tokens.refresh_token,
        "resource": kept.url,
    })
    assert refreshed.status_code == 200, f"a client registered before cannot refresh: {refreshed.text}"
    fresh = refreshed.json()["access_token"]
    assert envoy_accepts(stack, fresh)
    assert at_verify(stack, fresh).status_code == 200
    verdict = at_verify(stack, revoked)
    assert verdict.status_code == 401 and verdict.json()["error_description"] == "token revoked", verdict.text
    refused_throughout(stack, revoked, feed_seconds() + 2)
    # The same client authorizing again: its registration and bob's consent are remembered (no
    # consent page, straight back with a code).
    again = McpUser(kept.url, browser)
    again.storage.client_info = kept.storage.client_info
    consents = browser.pages.count(f"{stack.url}/oauth/consent")
    assert consents == 2, browser.pages  # bob approved each client once
    assert connect(again) == 200
    assert browser.pages.count(f"{stack.url}/oauth/consent") == consents, browser.pages

    # The sidecar killed: restarted with the same keys; tokens issued before stay valid, the
    # revoked one stays refused.
    jwks = httpx.get(f"{stack.url}/.well-known/jwks.json").json()
    kill_and_await_restart(stack, "sidecar")
    assert httpx.get(f"{stack.url}/.well-known/jwks.json").json() == jwks
    assert at_verify(stack, fresh).status_code == 200
    assert envoy_accepts(stack, fresh)
    assert at_verify(stack, revoked).status_code == 401
    refused_throughout(stack, revoked, feed_seconds() + 2)

    # What `status` shows: every process up, the two restarts counted.
    processes = json.loads((stack.state_dir / "stack.json").read_text())["processes"]
    assert processes["redis"]["restarts"] == 1 and processes["sidecar"]["restarts"] == 1, processes
    assert all(p["restarts"] == 0 for n, p in processes.items() if n not in ("redis", "sidecar")), processes


def test_envoy_answers_the_oauth_endpoints_with_oauth_json_while_the_sidecar_is_down(tmp_path):
    # make run's Envoy, its sidecar and bridges on ports nothing listens on.
    cfg = render.load_config(stack_mod.ROOT / "mcpgw.toml")
    port = stack_mod.free_port()
    url = f"http://127.0.0.1:{port}"
    doc = render.render(
        render.load_gateway(), public_url=url, listen=("127.0.0.1", port),
        servers={s.name: ("127.0.0.1", stack_mod.free_port()) for s in cfg.enabled_servers()},
        protected=render.resources(url, cfg.enabled_servers()),
        policy_config=render.policy(cfg.enabled_servers()),
        sidecar=("127.0.0.1", stack_mod.free_port()), admin_port=stack_mod.free_port(),
    )
    config = tmp_path / "envoy.yaml"
    config.write_text(render.dump(doc))
    log = tmp_path / "envoy.log"
    with open(log, "wb") as out:
        envoy = subprocess.Popen(
            [str(stack_mod.ROOT / ".venv/bin/envoy"), "-c", str(config), "--use-dynamic-base-id",
             "--log-level", "warn"],
            cwd=stack_mod.ROOT, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            preexec_fn=stack_mod._die_with_parent,
        )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                httpx.get(f"{url}/", timeout=1)
                break
            except httpx.TransportError:
                assert envoy.poll() is None and time.monotonic() < deadline, log.read_text()
                time.sleep(0.1)
        for method, path in [("GET", "/.well-known/oauth-authorization-server"), ("POST", "/register"),
                             ("GET", "/authorize?client_id=x"), ("POST", "/token"), ("POST", "/revoke"),
                             ("GET", "/oauth/callback?code=x")]:
            r = httpx.request(method, f"{url}{path}")
            assert r.status_code == 503, (path, r.status_code, r.text)
            assert r.headers["content-type"] == "application/json", (path, r.headers)
            assert r.headers["cache-control"] == "no-store", (path, r.headers)
            assert r.json()["error"] == "temporarily_unavailable", (path, r.text)
    finally:
        envoy.terminate()
        envoy.wait(30)
