"""A minimal MCP client for `make run`: the official MCP Python SDK with its OAuth provider.

    .venv/bin/python deploy/tools/connect.py http://127.0.0.1:8080/everything/mcp
    .venv/bin/python deploy/tools/connect.py http://127.0.0.1:8080/everything/mcp echo '{"message": "hi"}'

On the first 401 the SDK discovers the authorization server, registers itself, and sends you to
the login page: this script opens it in your browser (or prints it) and receives the redirect on a
loopback port of its own. Then it lists the server's tools, and calls one if you name it.
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
import threading
import webbrowser
from http.server import BaseHTTPRequestHandler, HTTPServer
from urllib.parse import parse_qs, urlsplit

import anyio
import httpx2
from mcp import Client
from mcp.client.auth import AuthorizationCodeResult, OAuthClientProvider
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.auth import OAuthClientMetadata

LOGIN_TIMEOUT = 300.0


class Tokens:
    """Token storage for one run (nothing is written to disk)."""

    def __init__(self) -> None:
        self.tokens = self.client_info = None

    async def get_tokens(self):
        return self.tokens

    async def set_tokens(self, tokens):
        self.tokens = tokens

    async def get_client_info(self):
        return self.client_info

    async def set_client_info(self, client_info):
        self.client_info = client_info


class Callback:
    """A one-shot HTTP server on a free loopback port that receives the authorization response."""

    def __init__(self) -> None:
        self.received: dict[str, str] = {}
        self.done = threading.Event()
        callback = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (http.server's naming)
                query = parse_qs(urlsplit(self.path).query)
                callback.received = {k: v[0] for k, v in query.items()}
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; charset=utf-8")
                self.end_headers()
                self.wfile.write(b"Logged in: you can close this tab and go back to the terminal.\n")
                callback.done.set()

            def log_message(self, *_):
                pass  # the query carries the authorization code: keep it out of the terminal

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        self.server = HTTPServer(("127.0.0.1", port), Handler)
        self.redirect_uri = f"http://127.0.0.1:{port}/callback"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    async def wait(self) -> AuthorizationCodeResult:
        if not await anyio.to_thread.run_sync(self.done.wait, LOGIN_TIMEOUT):
            raise SystemExit(f"no login within {LOGIN_TIMEOUT:.0f}s")
        self.server.shutdown()
        if "error" in self.received:
            raise SystemExit(f"authorization refused: {self.received['error']}")
        return AuthorizationCodeResult(
            code=self.received["code"], state=self.received.get("state"), iss=self.received.get("iss")
        )


async def open_login(url: str) -> None:
    print(f"\nLog in here (opening your browser):\n  {url}\n", flush=True)
    webbrowser.open(url)


async def main(url: str, tool: str | None, arguments: dict) -> None:
    callback = Callback()
    provider = OAuthClientProvider(
        server_url=url,
        client_metadata=OAuthClientMetadata(
            client_name="mcpgw connect.py",
            redirect_uris=[callback.redirect_uri],
            grant_types=["authorization_code", "refresh_token"],
            response_types=["code"],
        ),
        storage=Tokens(),
        redirect_handler=open_login,
        callback_handler=callback.wait,
    )
    async with httpx2.AsyncClient(auth=provider, timeout=60) as http:
        async with Client(streamable_http_client(url, http_client=http)) as client:
            tools = await client.list_tools()
            print(f"{url}: {len(tools.tools)} tools")
            for t in tools.tools:
                summary = (t.description or "").strip().splitlines()
                print(f"  {t.name:<28} {summary[0][:70] if summary else ''}")
            if tool:
                result = await client.call_tool(tool, arguments)
                print(f"\n{tool} ->")
                for content in result.content:
                    print(getattr(content, "text", content))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url", help="the MCP server, e.g. http://127.0.0.1:8080/everything/mcp")
    parser.add_argument("tool", nargs="?", help="a tool to call")
    parser.add_argument("arguments", nargs="?", default="{}", help="its arguments as JSON")
    args = parser.parse_args()
    try:
        anyio.run(main, args.url, args.tool, json.loads(args.arguments))
    except KeyboardInterrupt:
        sys.exit(130)
