"""Traefik's side: the sidecar's /verify behind ForwardAuth, played exactly as Traefik v3 does it
(traefik/pkg/middlewares/auth/forward.go), with the middleware settings read from the shipped
traefik/dynamic/mcpgw.yml:

- the auth request is a GET to `address`, carrying only `authRequestHeaders` from the client's
  request (hop-by-hop headers removed) plus X-Forwarded-Method / -Proto / -Host / -Uri / -For set
  by Traefik itself (trustForwardHeader: false, so client-sent ones are ignored), and with
  `forwardBody` the request's body (over `maxBodySize`: Traefik answers 401 itself);
- a non-2xx answer goes back to the client as it is: status, headers, body;
- on 2xx, each `authResponseHeaders` entry is removed from the request and copied from the
  answer, then every request header matching `authResponseHeadersRegex` is removed and the
  answer's matching headers are copied;
- then the router's other middlewares (drop-authorization, strip-<name>) and the bridge.

Traefik itself has no installable binary here; the sidecar, Redis, the bridges and the tokens
are the real ones of the `make run` stack.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

import httpx
import pytest
import yaml
from conftest import INITIALIZE, MCP_HEADERS, claims, client_auth, connect
from stack import ROOT

DYNAMIC = yaml.safe_load((ROOT / "traefik/dynamic/mcpgw.yml").read_text())["http"]
HOP_BY_HOP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te",
              "trailer", "transfer-encoding", "upgrade"}
CLIENT_IP = "192.0.2.7"



@dataclass
class Sent:
    """What Traefik answered the client, and what it sent to /verify and to the bridge."""

    response: httpx.Response
    auth_request: httpx.Request
    upstream_request: httpx.Request | None


class Traefik:
    """The `web` entry point of traefik/dynamic/mcpgw.yml with the stack's addresses."""

    def __init__(self, stack, host: str):
        self.host = host
        self.services = {"sidecar": stack.info["sidecar"],
                         **{f"bridge-{n}": url for n, url in stack.info["bridges"].items()}}
        self.http = httpx.Client(timeout=30)

    def router(self, path: str) -> dict:
        return next(r for r in DYNAMIC["routers"].values() if r["rule"] == f"Path(`{path}`)")

    def request(self, method: str, uri: str, headers: dict[str, str], body: bytes = b"") -> Sent:
        path = uri.split("?")[0]
        router = self.router(path)
        headers = {k.lower(): v for k, v in headers.items()}
        auth_request = None
        for name in router["middlewares"]:
            middleware = DYNAMIC["middlewares"][name]
            if "forwardAuth" in middleware:
                answer, auth_request = self.forward_auth(middleware["forwardAuth"], method, uri, headers, body)
                if answer is not None:
                    return Sent(answer, auth_request, None)
            elif "headers" in middleware:
                # Traefik's headers middleware: an empty value removes the header.
                for key, value in middleware["headers"]["customRequestHeaders"].items():
                    headers.pop(key.lower(), None)
                    if value:
                        headers[key.lower()] = value
            elif "stripPrefix" in middleware:
                for prefix in middleware["stripPrefix"]["prefixes"]:
                    if uri.startswith(prefix):
                        uri = uri[len(prefix):]
                        headers["x-forwarded-prefix"] = prefix
                        break
        upstream = self.http.build_request(method, self.services[router["service"]] + uri,
                                           headers=headers, content=body)
        return Sent(self.http.send(upstream), auth_request, upstream)

    def forward_auth(self, conf: dict, method: str, uri: str, headers: dict[str, str], body: bytes):
        allowed = [h.lower() for h in conf.get("authRequestHeaders", [])]
        sent = {k: v for k, v in headers.items() if k not in HOP_BY_HOP and (not allowed or k in allowed)}
        sent.update({
            "x-forwarded-for": CLIENT_IP,
            "x-forwarded-method": method,
            "x-forwarded-proto": "http",
            "x-forwarded-host": self.host,
            "x-forwarded-uri": uri,
        })
        address = conf["address"].replace("http://127.0.0.1:8090", self.services["sidecar"])
        forwarded = body if conf.get("forwardBody") else b""
        if len(forwarded) > conf.get("maxBodySize", -1) >= 0:
            return httpx.Response(401), None
        auth_request = self.http.build_request("GET", address, headers=sent, content=forwarded)
        answer = self.http.send(auth_request)
        if not 200 <= answer.status_code < 300:
            return answer, auth_request
        for name in conf.get("authResponseHeaders", []):
            headers.pop(name.lower(), None)
            if name in answer.headers:
                headers[name.lower()] = answer.headers[name]
        regex = conf.get("authResponseHeadersRegex")
        if regex:
            pattern = re.compile(regex)
            for key in [k for k in headers if pattern.search(k)]:
                del headers[key]
            headers.update({k.lower(): v for k, v in answer.headers.items() if pattern.search(k)})
        return None, auth_request


@pytest.fixture(scope="module")
def bob(stack):
    """bob's token for /everything/mcp, from the sidecar through the SDK's OAuth flow."""
    return connect(f"{stack.url}/everything/mcp", "bob")


@pytest.fixture(scope="module")
def traefik(stack):
    return Traefik(stack, stack.url.split("://")[1])


def test_without_a_token_the_client_gets_verify_401_as_it_is(traefik, stack):
    ping = b'{"jsonrpc":"2.0","id":1,"method":"ping"}'
    sent = traefik.request("POST", "/everything/mcp", {**MCP_HEADERS, "X-Forwarded-Host": "evil.example"}, ping)
    auth = sent.auth_request
    assert auth.method == "GET" and auth.content == ping
    assert auth.headers["x-forwarded-method"] == "POST"
    assert auth.headers["x-forwarded-host"] == traefik.host, "client-sent X-Forwarded-* must not reach /verify"
    assert sent.upstream_request is None, "the bridge must not be reached"
    assert sent.response.status_code == 401
    challenge = sent.response.headers["www-authenticate"]
    assert challenge.startswith("Bearer ")
    assert f'resource_metadata="{stack.url}/.well-known/oauth-protected-resource/everything/mcp"' in challenge


def test_a_valid_token_passes_with_the_identity_and_without_spoofed_headers(traefik, bob, stack):
    token = bob.access_token
    headers = {**MCP_HEADERS, "Authorization": f"Bearer {token}", "X-Mcpgw-User": "admin",
               "X-Mcpgw-Groups": "admins", "X-Mcpgw-Anything": "spoofed", "Cookie": "session=1"}
    sent = traefik.request("POST", "/everything/mcp", headers, json.dumps(INITIALIZE).encode())
    assert sent.response.status_code == 200, sent.response.text
    assert "cookie" not in sent.auth_request.headers, "only authRequestHeaders go to /verify"
    upstream = sent.upstream_request.headers
    minted = claims(token)
    assert upstream["x-mcpgw-user"] == "bob"
    assert upstream["x-mcpgw-subject"] == minted["sub"]
    assert upstream["x-mcpgw-groups"].split(",") == minted["groups"]
    assert upstream["x-mcpgw-client-id"] == minted["client_id"]
    assert upstream["x-mcpgw-resource"] == f"{stack.url}/everything/mcp"
    assert "x-mcpgw-anything" not in upstream
    assert "authorization" not in upstream, "the token must not reach the MCP server"
    assert sent.upstream_request.url.path == "/mcp"

    session = sent.response.headers["mcp-session-id"]
    call = traefik.request("POST", "/everything/mcp", {
        **MCP_HEADERS, "Authorization": f"Bearer {token}", "Mcp-Session-Id": session,
    }, json.dumps({"jsonrpc": "2.0", "id": 2, "method": "tools/call",
                   "params": {"name": "echo", "arguments": {"message": "via traefik"}}}).encode())
    assert call.response.status_code == 200
    assert "via traefik" in call.response.text
    assert call.auth_request.headers["mcp-session-id"] == session


def test_a_token_for_another_server_gets_401_invalid_token(traefik, bob, stack):
    sent = traefik.request("POST", "/memory/mcp?x=1", {**MCP_HEADERS, "Authorization": f"Bearer {bob.access_token}"},
                           json.dumps(INITIALIZE).encode())
    assert sent.auth_request.headers["x-forwarded-uri"] == "/memory/mcp?x=1"
    assert sent.response.status_code == 401
    assert sent.response.json()["error"] == "invalid_token", "the body of /verify reaches the client"
    challenge = sent.response.headers["www-authenticate"]
    assert 'error="invalid_token"' in challenge
    assert "/.well-known/oauth-protected-resource/memory/mcp" in challenge


@pytest.mark.parametrize("authorization", ["Bearer not-a-jwt", "Bearer " + "a" * 20000, "Basic Ym9iOmJvYg==", "Bearer"])
def test_malformed_credentials_get_401_not_an_error(traefik, authorization):
    sent = traefik.request("GET", "/everything/mcp", {**MCP_HEADERS, "Authorization": authorization})
    assert sent.response.status_code == 401
    assert sent.upstream_request is None


def test_a_revoked_token_is_refused_at_once(traefik, bob, stack):
    auth, data = client_auth(bob.storage.client_info)
    revoked = httpx.post(f"{stack.url}/revoke", auth=auth, data={**data, "token": bob.access_token})
    assert revoked.status_code == 200
    sent = traefik.request("POST", "/everything/mcp", {**MCP_HEADERS, "Authorization": f"Bearer {bob.access_token}"},
                           json.dumps(INITIALIZE).encode())
    assert sent.response.status_code == 401
    assert sent.upstream_request is None



@pytest.fixture(scope="module")
def tokens(stack) -> dict[tuple[str, str], str]:
    """An access token per (user, server) for alice (engineering) and bob (sales), each from the
    sidecar through the SDK's OAuth flow; `time` is for sales only (the policy), so alice's token
    for it is minted and then refused by the policy."""

    return {(login, server): connect(f"{stack.url}/{server}/mcp", login, status=None).access_token
            for login in ("alice", "bob") for server in ("everything", "time")}


def rpc(method: str, params: dict | None = None) -> bytes:
    return json.dumps({"jsonrpc": "2.0", "id": 7, "method": method, **({"params": params} if params else {})}).encode()


# (whose token, for which server) or None, then the request: method, path, extra headers, body.
EDGE_TABLE = [
    (None, "POST", "/time/mcp", {}, rpc("initialize", INITIALIZE["params"])),
    (("bob", "everything"), "POST", "/everything/mcp", {}, rpc("initialize", INITIALIZE["params"])),
    (("bob", "time"), "POST", "/time/mcp", {}, rpc("initialize", INITIALIZE["params"])),
    (("alice", "time"), "POST", "/time/mcp", {}, rpc("initialize", INITIALIZE["params"])),
    (("alice", "time"), "POST", "/time/mcp", {}, rpc("tools/call", {"name": "get_current_time"})),
    (("alice", "time"), "GET", "/time/mcp", {}, b""),
    (("alice", "time"), "DELETE", "/time/mcp", {"Mcp-Session-Id": "s"}, b""),
    (("alice", "everything"), "POST", "/time/mcp", {}, rpc("initialize", INITIALIZE["params"])),
    (("bob", "time"), "POST", "/time/mcp", {"Mcp-Method": "tools/list"}, rpc("ping")),
    (("bob", "time"), "POST", "/time/mcp", {}, b"{not json"),
    (("bob", "time"), "POST", "/time/mcp", {}, b"[" + b",".join([rpc("ping")] * 40) + b"]"),
    (("alice", "time"), "POST", "/time/mcp", {}, b"[" + rpc("ping") + b"," + rpc("tools/list") + b"]"),
]


@pytest.mark.parametrize("row", range(len(EDGE_TABLE)))
def test_verify_decides_each_request_as_envoy_does(row, traefik, tokens, stack):
    who, method, path, extra, body = EDGE_TABLE[row]
    headers = {**MCP_HEADERS, **extra}
    if who:
        headers["Authorization"] = f"Bearer {tokens[who]}"
    envoy = httpx.request(method, stack.url + path, headers=headers, content=body, timeout=30)
    sent = traefik.request(method, path, headers, body)
    assert sent.response.status_code == envoy.status_code, (
        f"{who} {method} {path}: Envoy {envoy.status_code} {envoy.text[:200]!r}, "
        f"Traefik {sent.response.status_code} {sent.response.text[:200]!r}")
    if envoy.status_code in (400, 403, 413):
        # Refused by the policy at both edges: the same JSON-RPC error, from the same core call.
        assert sent.upstream_request is None
        assert sent.response.json() == envoy.json()
