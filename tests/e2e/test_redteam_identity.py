"""Red team, identities: users whose upstream claims carry what one component might read
differently from another (a comma inside a group, Unicode spaces around it, control characters
in a login, an unverified email standing in for a login) try to reach servers restricted to
`admins` / `admin`, through the stack `make run` starts, logging in with the official MCP Python
SDK's OAuth client as any user would. Each is refused; the real admin, as a control, is let in.

The users are tests/oidc/hostile-users.json, served by the local OpenID provider (OIDC_USERS).
"""

from __future__ import annotations

import anyio
import pytest
from conftest import INITIALIZE, MCP_HEADERS, McpUser, claims
from login import Browser

import stack as stack_mod

USERS_FILE = stack_mod.ROOT / "tests/oidc/hostile-users.json"

SERVERS = """
[servers.admins]
command = [".venv/bin/mcp-server-time"]
allow_groups = ["admins"]

[servers.admin]
command = [".venv/bin/mcp-server-time"]
allow_users = ["admin"]

[servers.ldap]
command = [".venv/bin/mcp-server-time"]
allow_groups = ["cn=admins,ou=groups,dc=corp"]
"""

LOGIN_REFUSED = "login refused"


@pytest.fixture(scope="module")
def hostile_stack(tmp_path_factory, monkeypatch_module):
    monkeypatch_module.setenv("OIDC_USERS", str(USERS_FILE))
    running = stack_mod.start(tmp_path_factory.mktemp("redteam-identity"), SERVERS)
    yield running
    running.stop()


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as mp:
        yield mp


def attempt(stack, server: str, login: str) -> tuple[int | str, dict]:
    """Logs `login` in for `server` with the SDK's OAuth client and sends `initialize`: the HTTP
    status and the access token's claims, or LOGIN_REFUSED when no token was issued."""
    client = McpUser(f"{stack.url}/{server}/mcp", Browser(login, f"{login}-password"))

    async def initialize():
        async with client.http() as http:
            return await http.post(client.url, json=INITIALIZE, headers=MCP_HEADERS)

    try:
        response = anyio.run(initialize)
    except AssertionError as e:
        assert "error=access_denied" in str(e), e
        return LOGIN_REFUSED, {}
    return response.status_code, claims(client.access_token)


def test_the_real_admin_is_let_in(hostile_stack):
    for server in ("admins", "admin"):
        status, minted = attempt(hostile_stack, server, "admin")
        assert status == 200, (server, status)
        assert minted["preferred_username"] == "admin" and minted["groups"] == ["admins"]


@pytest.mark.parametrize("login, group", [
    ("contractor", "contractors,admins"),
    ("nbsp", "admins\u00a0"),
    ("ideographic", "\u3000admins"),
    ("linesep", "admins\u2028"),
])
def test_a_group_is_matched_exactly_as_the_token_states_it(hostile_stack, login, group):
    status, minted = attempt(hostile_stack, "admins", login)
    assert minted["groups"] == [group], "the token must carry the group as the provider sent it"
    assert status == 403, f"{login} with group {group!r} reached an admins-only server"


def test_a_group_holding_commas_is_one_group(hostile_stack):
    """An LDAP DN is one group: it opens the server that names it whole, and no other."""
    status, minted = attempt(hostile_stack, "ldap", "ldap")
    assert minted["groups"] == ["cn=admins,ou=groups,dc=corp"]
    assert status == 200, f"the DN's owner was refused: {status}"
    assert attempt(hostile_stack, "admins", "ldap")[0] == 403


@pytest.mark.parametrize("login", ["nul", "newline", "tab", "nulgroup"])
def test_claims_with_control_characters_get_no_token(hostile_stack, login):
    server = "admins" if login == "nulgroup" else "admin"
    status, _ = attempt(hostile_stack, server, login)
    assert status == LOGIN_REFUSED, f"{login}: {status}"


def test_an_unverified_email_never_stands_in_for_the_login(hostile_stack):
    status, minted = attempt(hostile_stack, "admin", "mallory")
    assert "preferred_username" not in minted and "email" not in minted, minted
    assert status == 403, f"mallory (email 'admin', unverified) got {status}"
