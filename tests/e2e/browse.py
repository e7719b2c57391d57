"""A stand-in for the user's web browser, for `webbrowser` (BROWSER="python browse.py LOGIN %s"):
opens the authorization URL, signs in as LOGIN (tests/oidc/users.json) on the OpenID provider's
form, approves the consent page, and delivers the authorization response to the loopback
redirect URI the client listens on, as a browser would.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import anyio
import httpx

sys.path.insert(0, str(Path(__file__).parent))

from login import Browser  # noqa: E402

USERS = Path(__file__).resolve().parents[1] / "oidc" / "users.json"


async def main(login: str, url: str) -> None:
    user = next(u for u in json.loads(USERS.read_text()) if u["login"] == login)
    redirect_uri = parse_qs(urlsplit(url).query)["redirect_uri"][0]
    redirected = await Browser(user["login"], user["password"]).authorize(url, redirect_uri)
    httpx.get(redirected.url, timeout=10).raise_for_status()


if __name__ == "__main__":
    anyio.run(main, sys.argv[1], sys.argv[2])
