"""No secret in any log: one whole run through the `make run` stack (registration, the browser's
login at the OpenID provider, consent, code, tokens, refresh, introspection, MCP calls, tokens
and codes a client puts in query strings), then every log the stack wrote is searched for each
token, code, state and secret value the run used.
"""

from __future__ import annotations

import json
import secrets
import subprocess
import time

import httpx
from conftest import MCP_HEADERS, client_auth, connect


def test_no_token_code_state_or_secret_reaches_a_log(stack):
    client = connect(f"{stack.url}/everything/mcp", "alice")
    browser = client.browser
    info = client.storage.client_info
    tokens = client.storage.tokens
    # The sidecar's and the provider's codes, states and nonces the browser carried.
    carried = {v for k, v in browser.query if k in ("code", "state", "nonce")}
    assert len(carried) >= 4, browser.query
    used = {tokens.access_token, tokens.refresh_token, info.client_secret, *carried}

    auth, data = client_auth(info)
    refreshed = httpx.post(f"{stack.url}/token", auth=auth, data={
        **data, "grant_type": "refresh_token", "refresh_token": tokens.refresh_token})
    assert refreshed.status_code == 200, refreshed.text
    used |= {refreshed.json()["access_token"], refreshed.json()["refresh_token"]}
    httpx.post(f"{stack.url}/introspect", auth=auth, data={**data, "token": refreshed.json()["access_token"]})

    # Clients that put credentials in query strings, and a forged callback.
    in_query = secrets.token_urlsafe(32)
    used.add(in_query)
    bearer = {**MCP_HEADERS, "Authorization": f"Bearer {refreshed.json()['access_token']}"}
    httpx.post(f"{stack.url}/everything/mcp?access_token={refreshed.json()['access_token']}&x={in_query}",
               headers=bearer, content=json.dumps({"jsonrpc": "2.0", "id": 2, "method": "ping"}))
    httpx.get(f"{stack.url}/oauth/callback?code={in_query}&state={in_query}")
    httpx.get(f"{stack.url}/authorize?client_id={info.client_id}&code_challenge={in_query}")
    httpx.get(f"{stack.url}/nowhere?access_token={in_query}")

    # Envoy writes its access log in batches: wait until the last request is in it.
    deadline = time.monotonic() + 30
    while "/nowhere" not in (stack.state_dir / "envoy.log").read_text(errors="replace"):
        assert time.monotonic() < deadline, "the access log must show the requests"
        time.sleep(0.5)
    logs = {p.name: p.read_text(errors="replace") for p in stack.state_dir.glob("*.log")}
    assert "sidecar.log" in logs, sorted(logs)
    used = {v for v in used if v and len(v) >= 16}
    # Where, not what: the failure message must not spread the values either.
    leaks = [f"{name}:{text[:text.index(v)].count(chr(10)) + 1}" for name, text in logs.items()
             for v in used if v in text]
    assert not leaks, f"secrets in the logs at {leaks}"


def test_redis_is_bounded_and_only_ephemeral_state_can_be_evicted(stack):
    """`make run`'s Redis has a memory limit with volatile-ttl eviction; every key the sidecar
    wrote has a TTL except the signing keys and the revocation feed (never evicted), so pending
    logins, codes and counters are bounded in count and time."""
    port = stack.info["redis"].rsplit(":", 1)[1]

    def cli(*args: str) -> list[str]:
        out = subprocess.run(["redis-cli", "-p", port, "--no-raw", *args], capture_output=True,
                             text=True, check=True).stdout
        return [line.split(") ", 1)[-1].strip().strip('"') for line in out.splitlines() if line.strip()]

    assert cli("CONFIG", "GET", "maxmemory")[1] != "0"
    assert cli("CONFIG", "GET", "maxmemory-policy")[1] == "volatile-ttl"
    # A login's worth of keys at least (this module's other test ran one).
    keys = [k for k in cli("--scan") if k]
    assert any(k.startswith("oauth:client:") for k in keys), keys
    forever = sorted(k for k in keys if cli("TTL", k)[0] == "-1")
    assert forever == ["oauth:keys", "oauth:revoked"] or forever == ["oauth:keys"], forever
