"""A person at a browser, for the full-stack tests: follows the authorization redirects, signs in
on the local OpenID provider's form (tests/oidc) and approves the sidecar's consent page, until
the authorization server redirects to the client's redirect URI. Only HTTP: no JavaScript is
needed by either page. Cookies are kept like a browser keeps them (one jar per person).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from html.parser import HTMLParser
from urllib.parse import parse_qs, urljoin, urlsplit

import httpx

MAX_STEPS = 25
APPROVE = re.compile(r"allow|approve|accept|authori[sz]e|consent|continue|yes", re.I)


@dataclass
class Form:
    action: str
    method: str
    fields: dict[str, str] = field(default_factory=dict)
    inputs: list[tuple[str, str]] = field(default_factory=list)  # (name, type)
    buttons: list[tuple[str, str, str]] = field(default_factory=list)  # (name, value, label)


class _Forms(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.forms: list[Form] = []
        self._button: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        a = {k: v or "" for k, v in attrs}
        if tag == "form":
            self.forms.append(Form(a.get("action", ""), a.get("method", "get").lower()))
        elif not self.forms:
            return
        elif tag == "input":
            kind = a.get("type", "text").lower()
            if kind == "submit":
                self.forms[-1].buttons.append((a.get("name", ""), a.get("value", ""), a.get("value", "")))
            elif a.get("name"):
                self.forms[-1].inputs.append((a["name"], kind))
                if kind == "hidden":
                    self.forms[-1].fields[a["name"]] = a.get("value", "")
        elif tag == "button" and a.get("type", "submit").lower() == "submit":
            self._button = [a.get("name", ""), a.get("value", ""), ""]

    def handle_data(self, data):
        if self._button is not None:
            self._button[2] += data

    def handle_endtag(self, tag):
        if tag == "button" and self._button is not None and self.forms:
            name, value, label = self._button
            self.forms[-1].buttons.append((name, value, label.strip()))
            self._button = None


@dataclass
class Redirected:
    """The authorization response the client's redirect URI received."""

    code: str | None
    state: str | None
    iss: str | None
    error: str | None
    url: str


class LoginFailed(AssertionError):
    pass


class Browser:
    """One person: `login`/`password` for the upstream provider's form."""

    def __init__(self, login: str, password: str):
        self.login = login
        self.password = password
        # The cookies outlive each authorization (sessions at the provider and the sidecar); the
        # HTTP client does not, so a Browser can be used from several event loops.
        self.cookies = httpx.Cookies()
        self.pages: list[str] = []  # every URL visited, without query strings
        # Every query parameter of those URLs, as (name, value) (codes and state: never logged).
        self.query: set[tuple[str, str]] = set()

    async def aclose(self) -> None:
        """Ends the person's sessions (forgets every cookie)."""
        self.cookies = httpx.Cookies()

    async def authorize(self, url: str, redirect_uri: str) -> Redirected:
        """Opens the authorization URL and acts like the user until `redirect_uri` is reached."""
        async with httpx.AsyncClient(follow_redirects=False, timeout=15, cookies=self.cookies) as http:
            self.http = http
            try:
                return await self._walk(url, redirect_uri)
            finally:
                self.cookies = http.cookies

    async def _walk(self, url: str, redirect_uri: str) -> Redirected:
        response = await self.http.get(url)
        for _ in range(MAX_STEPS):
            self.pages.append(str(response.url).split("?")[0])
            self.query.update((k, v) for k, vs in parse_qs(urlsplit(str(response.url)).query).items() for v in vs)
            if response.is_redirect:
                target = urljoin(str(response.url), response.headers["location"])
                self.query.update((k, v) for k, vs in parse_qs(urlsplit(target).query).items() for v in vs)
                if target.startswith(redirect_uri):
                    query = parse_qs(urlsplit(target).query)
                    one = lambda k: query.get(k, [None])[0]  # noqa: E731
                    return Redirected(one("code"), one("state"), one("iss"), one("error"), target)
                response = await self.http.get(target)
                continue
            if response.status_code != 200 or "<form" not in response.text:
                raise LoginFailed(
                    f"{response.request.method} {response.url.copy_with(query=None)} answered "
                    f"{response.status_code}: {response.text[:600]}"
                )
            response = await self._submit(response)
        raise LoginFailed(f"no redirect to {redirect_uri} after {MAX_STEPS} steps: {self.pages}")

    async def _submit(self, page: httpx.Response) -> httpx.Response:
        parser = _Forms()
        parser.feed(page.text)
        forms = [f for f in parser.forms if f.method == "post"] or parser.forms
        if not forms:
            raise LoginFailed(f"no form on {page.url}")
        login_form = next((f for f in forms if any(t == "password" for _, t in f.inputs)), None)
        form = login_form or forms[0]
        data = dict(form.fields)
        if login_form:
            for name, kind in form.inputs:
                if kind == "password":
                    data[name] = self.password
                elif kind in ("text", "email") or name in ("login", "username"):
                    data[name] = self.login
        buttons = [b for b in form.buttons if APPROVE.search(f"{b[0]} {b[1]} {b[2]}")] or form.buttons
        if buttons and buttons[0][0]:
            data[buttons[0][0]] = buttons[0][1]
        target = urljoin(str(page.url), form.action or str(page.url))
        if form.method == "post":
            return await self.http.post(target, data=data)
        return await self.http.get(target, params=data)
