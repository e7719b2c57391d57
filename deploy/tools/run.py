"""`make run`: the whole gateway on one origin, as local processes, until Ctrl-C.

Starts, in order, Redis, the local OpenID provider (tests/oidc, unless mcpgw.toml says GitHub),
the sidecar, one bridge per enabled MCP server and Envoy with the mcpgw filters (envoy/gateway.yaml
rendered for mcpgw.toml). Envoy, the sidecar and the bridges listen on the loopback ports
mcpgw.toml's [gateway] names (0: any free port); Redis and the OpenID provider on free ones.
Once everything is up it writes <state_dir>/stack.json (addresses and process ids). Each process runs in its own process group with a
parent-death signal, and its output goes to <state_dir>/<name>.log.

Ctrl-C (SIGINT), SIGTERM or any process exiting stops everything: SIGTERM to each process group
in reverse start order, SIGKILL to what is left after a grace period, then the runner exits. No
process it started outlives it, even if the runner itself is killed (PR_SET_PDEATHSIG).

    python deploy/tools/run.py [--config mcpgw.toml] --bin-dir target/debug
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import yaml

import render

ROOT = render.ROOT
GRACE_SECONDS = 8.0
START_TIMEOUT = 120.0
PR_SET_PDEATHSIG = 1


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _die_with_parent() -> None:
    # In the child, before exec: SIGKILL when the runner dies, whatever the way.
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


@dataclass
class Child:
    name: str
    proc: subprocess.Popen
    log: Path


class Stop(Exception):
    """Raised by the signal handler and when a child exits: the runner shuts down."""


class Supervisor:
    def __init__(self, state_dir: Path):
        self.state_dir = state_dir
        self.children: list[Child] = []

    def start(self, name: str, argv: list[str], env: dict[str, str] | None = None,
              inherit: bool = True) -> Child:
        """Starts `argv` with `env` added to the runner's environment, or (`inherit=False`) with
        `env` alone."""
        log = self.state_dir / f"{name}.log"
        out = open(log, "wb")
        try:
            proc = subprocess.Popen(
                argv,
                cwd=ROOT,
                env={**(os.environ if inherit else {}), **(env or {})},
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                # Its own process group: the terminal's Ctrl-C reaches the runner only, and the
                # runner stops the whole group (the process and anything it started).
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )
        except OSError as e:
            raise SystemExit(f"cannot start {name} ({argv[0]}): {e}") from e
        finally:
            out.close()
        child = Child(name, proc, log)
        self.children.append(child)
        return child

    def check(self) -> None:
        for c in self.children:
            if c.proc.poll() is not None:
                raise Stop(f"{c.name} exited with status {c.proc.returncode}; see {c.log}")

    def wait_port(self, child: Child, port: int) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            self.check()
            if port_open(port):
                return
            time.sleep(0.05)
        raise Stop(f"{child.name} did not listen on {port} within {START_TIMEOUT:.0f}s; see {child.log}")

    def wait_ok(self, child: Child, url: str) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            self.check()
            try:
                with urllib.request.urlopen(url, timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.1)
        raise Stop(f"{url} did not answer 200 within {START_TIMEOUT:.0f}s; see {child.log}")

    def stop_all(self) -> None:
        for c in reversed(self.children):
            _signal_group(c.proc, signal.SIGTERM)
        deadline = time.monotonic() + GRACE_SECONDS
        for c in reversed(self.children):
            try:
                c.proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                print(f"  {c.name} did not stop in {GRACE_SECONDS:.0f}s: killing it", flush=True)
        for c in self.children:
            # The group may hold grandchildren even when the leader is gone.
            _signal_group(c.proc, signal.SIGKILL)
            c.proc.wait()


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        pass


def toml_text(table: dict, prefix: str = "") -> str:
    """A TOML document for `table`: scalars and lists of scalars as `key = value` (JSON's string,
    number, boolean and array spellings are TOML's too), dicts as tables, lists of dicts as
    arrays of tables."""
    plain = {k: v for k, v in table.items() if not _is_table(v)}
    lines = [f"{k} = {json.dumps(v)}" for k, v in plain.items() if v is not None]
    for key, value in table.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            lines.append(f"\n[{name}]")
            lines.append(toml_text(value, f"{name}.").rstrip("\n"))
        elif _is_table(value):
            for item in value:
                lines.append(f"\n[[{name}]]")
                lines.append(toml_text(item, f"{name}.").rstrip("\n"))
    return "\n".join(line for line in lines if line) + "\n"


def _is_table(value) -> bool:
    return isinstance(value, dict) or (
        isinstance(value, list) and bool(value) and all(isinstance(v, dict) for v in value)
    )


# The local OpenID provider's client for the sidecar (tests/oidc/server.mjs reads the same
# variables; a development-only secret on loopback).
OIDC_CLIENT_ID = "mcpgw"
OIDC_CLIENT_SECRET = "mcpgw-dev-secret"


def sidecar_config(cfg: render.Config, listen: int, redis_port: int, oidc_issuer: str | None) -> dict:
    """The sidecar's configuration for this run (its format: sidecar/src/config.rs, README)."""
    if oidc_issuer:
        upstream = {"kind": "oidc", "issuer": oidc_issuer, "client_id": OIDC_CLIENT_ID,
                    "scopes": ["openid", "profile", "email", "groups"]}
    else:
        # The id and secret come from the environment (MCPGW_UPSTREAM_CLIENT_*), never a file.
        upstream = {"kind": "github"}
    allow = (
        {"users": cfg.allowed_users, "orgs": cfg.allowed_orgs}
        if cfg.allowed_users or cfg.allowed_orgs
        else {"everyone": True}
    )
    conf = {
        "issuer": cfg.public_url,
        "listen": f"127.0.0.1:{listen}",
        "redis_url": f"redis://127.0.0.1:{redis_port}",
        "log_format": "text",
        "upstream": upstream,
        "allow": allow,
        "resources": render.resources(cfg.public_url, cfg.enabled_servers()),
    }
    if cfg.access_token_lifetime:
        conf["tokens"] = {"access_token_lifetime": cfg.access_token_lifetime}
    return conf


def sidecar_env(cfg: render.Config) -> dict[str, str]:
    if cfg.upstream == "oidc":
        return {"MCPGW_UPSTREAM_CLIENT_SECRET": OIDC_CLIENT_SECRET}
    return {
        "MCPGW_UPSTREAM_CLIENT_ID": os.environ["GITHUB_CLIENT_ID"],
        "MCPGW_UPSTREAM_CLIENT_SECRET": os.environ["GITHUB_CLIENT_SECRET"],
    }


# What a bridge gets of the runner's environment: enough to run and log. Never the gateway's
# secrets (GITHUB_CLIENT_SECRET and the like); the MCP server behind it gets only what its
# [servers.<name>] table names.
BRIDGE_ENV = ("PATH", "RUST_LOG", "LANG", "TZ")


def bridge_env(server: render.Server) -> dict[str, str]:
    names = (*BRIDGE_ENV, *server.env_passthrough)
    return {n: os.environ[n] for n in names if n in os.environ}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=ROOT / "mcpgw.toml")
    parser.add_argument("--bin-dir", type=Path, required=True)
    args = parser.parse_args(argv[1:])
    try:
        cfg = render.load_config(args.config)
    except render.ConfigError as e:
        print(e, file=sys.stderr)
        return 2
    if port_open(cfg.port):
        print(f"port {cfg.port} is in use: stop what listens there or set [gateway] port in {args.config}", file=sys.stderr)
        return 1
    if cfg.upstream == "github" and not (os.environ.get("GITHUB_CLIENT_ID") and os.environ.get("GITHUB_CLIENT_SECRET")):
        print("login.upstream = \"github\" needs GITHUB_CLIENT_ID and GITHUB_CLIENT_SECRET in the environment", file=sys.stderr)
        return 2

    shutil.rmtree(cfg.state_dir, ignore_errors=True)
    cfg.state_dir.mkdir(parents=True)
    sup = Supervisor(cfg.state_dir)

    def on_signal(signum, _frame):
        raise Stop(f"{signal.Signals(signum).name}: stopping")

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)

    try:
        run(cfg, sup, args.bin_dir)
        while True:
            sup.check()
            time.sleep(0.2)
    except Stop as e:
        print(f"\n==> {e}", flush=True)
        return 0 if "stopping" in str(e) else 1
    finally:
        # Stopping must not be cut short by a second Ctrl-C.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        sup.stop_all()
        print("==> everything stopped", flush=True)


def port_or_free(port: int) -> int:
    return port or free_port()


def run(cfg: render.Config, sup: Supervisor, bin_dir: Path) -> None:
    state = cfg.state_dir
    for port in (cfg.sidecar_port, *bridge_ports(cfg).values()):
        if port and port_open(port):
            raise Stop(f"port {port} is in use: stop what listens there or set [gateway] "
                       f"sidecar_port / bridge_ports_from in {cfg.path} (0: any free port)")
    redis_port = free_port()
    redis = sup.start("redis", ["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1",
                                "--save", "", "--appendonly", "no", "--dir", str(state)])
    sup.wait_port(redis, redis_port)

    oidc_issuer = None
    if cfg.upstream == "oidc":
        oidc_port = free_port()
        oidc_issuer = f"http://127.0.0.1:{oidc_port}"
        oidc = sup.start("oidc", ["node", "tests/oidc/server.mjs"], {
            "PORT": str(oidc_port),
            "OIDC_CLIENT_ID": OIDC_CLIENT_ID,
            "OIDC_CLIENT_SECRET": OIDC_CLIENT_SECRET,
            "OIDC_REDIRECT_URIS": f"{cfg.public_url}/oauth/callback",
            "OIDC_USERS": str(users_file()),
        })
        sup.wait_port(oidc, oidc_port)

    sidecar_port = port_or_free(cfg.sidecar_port)
    sidecar_toml = state / "sidecar.toml"
    sidecar_toml.write_text(toml_text(sidecar_config(cfg, sidecar_port, redis_port, oidc_issuer)))
    sidecar = sup.start("sidecar", [str(bin_dir / "mcpgw-sidecar"), "--config", str(sidecar_toml)],
                        sidecar_env(cfg))
    sup.wait_port(sidecar, sidecar_port)

    bridges: dict[str, tuple[str, int]] = {}
    for name, wanted in bridge_ports(cfg).items():
        server = next(s for s in cfg.servers if s.name == name)
        port = port_or_free(wanted)
        child = sup.start(f"bridge-{name}", [str(bin_dir / "mcpgw-bridge"), "--listen",
                                             f"127.0.0.1:{port}",
                                             *render.bridge_flags(server, str(state / f"bridge-{name}")),
                                             "--", *server.command],
                          bridge_env(server), inherit=False)
        sup.wait_port(child, port)
        bridges[name] = ("127.0.0.1", port)

    envoy_yaml = state / "envoy.yaml"
    doc = render.render(render.load_gateway(), public_url=cfg.public_url, listen=("127.0.0.1", cfg.port),
                        servers=bridges, protected=render.resources(cfg.public_url, cfg.enabled_servers()),
                        policy_config=render.policy(cfg.enabled_servers()),
                        sidecar=("127.0.0.1", sidecar_port), admin_port=free_port())
    envoy_yaml.write_text(render.dump(doc))
    envoy = sup.start("envoy", [str(ROOT / ".venv/bin/envoy"), "-c", str(envoy_yaml),
                                "--use-dynamic-base-id", "--log-level", "warn"])
    sup.wait_port(envoy, cfg.port)
    # Listening is not serving yet: the modules load on the workers and fetch the JWKS. Ready is
    # the authorization server metadata answering through Envoy.
    sup.wait_ok(envoy, f"http://127.0.0.1:{cfg.port}/.well-known/oauth-authorization-server")
    # Written last: its presence says everything is up (tests wait for it).
    stack = {
        "public_url": cfg.public_url,
        "sidecar": f"http://127.0.0.1:{sidecar_port}",
        "redis": f"redis://127.0.0.1:{redis_port}",
        "oidc_issuer": oidc_issuer,
        "bridges": {name: f"http://{host}:{port}" for name, (host, port) in bridges.items()},
        "pids": {c.name: c.proc.pid for c in sup.children},
    }
    tmp = state / "stack.json.tmp"
    tmp.write_text(json.dumps(stack, indent=2) + "\n")
    tmp.rename(state / "stack.json")
    banner(cfg, oidc_issuer)


def bridge_ports(cfg: render.Config) -> dict[str, int]:
    """Each enabled server's bridge port: bridge_ports_from + its index among all [servers.*]
    tables (so disabling one moves no other), or 0 (any free port)."""
    return {
        s.name: cfg.bridge_ports_from + i if cfg.bridge_ports_from else 0
        for i, s in enumerate(cfg.servers)
        if s.enabled
    }


def banner(cfg: render.Config, oidc_issuer: str | None) -> None:
    url = cfg.public_url
    servers = "\n".join(f"    {s.name:<12} {url}/{s.name}/mcp" for s in cfg.enabled_servers())
    login = (
        f"  Login: the local OpenID provider at {oidc_issuer}\n"
        f"    test users: {test_users()}\n"
        if oidc_issuer
        else "  Login: GitHub (OAuth App callback: " + url + "/oauth/callback)\n"
    )
    first = cfg.enabled_servers()[0].name
    print(
        f"""
==> mcpgw is running on {url}   (Ctrl-C stops everything)

  MCP servers (OAuth 2.1; clients discover everything from the first 401):
{servers}
  Authorization server metadata: {url}/.well-known/oauth-authorization-server
{login}
  Connect a client, for example:
    Claude Code:      claude mcp add --transport http {first} {url}/{first}/mcp
    MCP Inspector:    npx @modelcontextprotocol/inspector   (URL {url}/{first}/mcp, Streamable HTTP)
    Python SDK:       .venv/bin/python deploy/tools/connect.py {url}/{first}/mcp
  Logs: {shown(cfg.state_dir)}/<process>.log
""",
        flush=True,
    )


def shown(path: Path) -> Path:
    """`path` relative to the repository when it is inside it."""
    return path.relative_to(ROOT) if path.is_relative_to(ROOT) else path


def users_file() -> Path:
    """The local OpenID provider's test users: $OIDC_USERS, or tests/oidc/users.json."""
    return Path(os.environ.get("OIDC_USERS") or ROOT / "tests" / "oidc" / "users.json")


def test_users() -> str:
    users = users_file()
    try:
        listed = json.loads(users.read_text())
    except (OSError, ValueError):
        return f"see {shown(users)}"
    return ", ".join(f"{u.get('login', u.get('sub'))} / {u.get('password')}" for u in listed)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
