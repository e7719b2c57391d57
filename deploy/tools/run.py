"""`make run`: the whole gateway on one origin, as local processes, until Ctrl-C.

Starts, in order, Redis, the local OpenID provider (tests/oidc, unless mcpgw.toml says GitHub),
the sidecar, one bridge per enabled MCP server and Envoy with the mcpgw filters (envoy/gateway.yaml
rendered for mcpgw.toml). Envoy, the sidecar and the bridges listen on the loopback ports
mcpgw.toml's [gateway] names (0: any free port); Redis and the OpenID provider on free ones.
Redis keeps its data in <state_dir> (append-only file, every write synced), so registrations,
grants, consents, keys and revocations survive restarts; `--fresh` empties <state_dir> first.
Before anything starts, the ports are checked (in use, or the same port twice) and each enabled
MCP server is started once and must answer `initialize`.

Once everything is up it writes <state_dir>/stack.json (addresses, process ids, restarts). Each
process runs in its own process group with a parent-death signal, and its output goes to
<state_dir>/<name>.log. From then on a process that exits is reported and restarted on the same
port, after a backoff that doubles while it keeps failing; the others keep serving.

Ctrl-C (SIGINT) or SIGTERM stops everything: SIGTERM to each process group in reverse start
order, SIGKILL to what is left after a grace period, then the runner exits. No process it started
outlives it, even if the runner itself is killed (PR_SET_PDEATHSIG). A process exiting while the
stack starts stops it all.

    python deploy/tools/run.py [--config mcpgw.toml] [--fresh] --bin-dir target/debug
    python deploy/tools/run.py status [--config mcpgw.toml]
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
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import yaml

import render

ROOT = render.ROOT
GRACE_SECONDS = 8.0
START_TIMEOUT = 120.0
PR_SET_PDEATHSIG = 1
# Restarts: the first after BACKOFF_FIRST, doubling up to BACKOFF_MAX while the process keeps
# exiting within STABLE_SECONDS of its start.
BACKOFF_FIRST = 0.5
BACKOFF_MAX = 30.0
STABLE_SECONDS = 30.0
# How long an MCP server command has to answer `initialize` before the stack starts.
PROBE_TIMEOUT = 30.0


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
    argv: list[str]
    env: dict[str, str]
    proc: subprocess.Popen
    log: Path
    # The loopback port it listens on, if any (for `status`).
    port: int | None = None
    started: float = field(default_factory=time.monotonic)
    restarts: int = 0
    # Consecutive exits within STABLE_SECONDS of a start (the backoff's exponent).
    failures: int = 0
    # While it is down: when it is restarted.
    restart_at: float | None = None


class Stop(Exception):
    """Raised by the signal handler and when a child exits while the stack starts: the runner
    shuts down."""


def _spawn(name: str, argv: list[str], env: dict[str, str], log: Path, mode: str) -> subprocess.Popen:
    out = open(log, mode)
    try:
        return subprocess.Popen(
            argv,
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            # Its own process group: the terminal's Ctrl-C reaches the runner only, and the
            # runner stops the whole group (the process and anything it started).
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
    except OSError as e:
        raise Stop(f"cannot start {name} ({argv[0]}): {e}") from e
    finally:
        out.close()


class Supervisor:
    def __init__(self, state_dir: Path):
        self.state_dir = state_dir
        self.children: list[Child] = []
        # Called after a restart (rewrites stack.json).
        self.on_restart = lambda: None

    def start(self, name: str, argv: list[str], env: dict[str, str] | None = None,
              port: int | None = None, inherit: bool = True) -> Child:
        """Starts `argv` with `env` added to the runner's environment, or (`inherit=False`) with
        `env` alone; a restart uses the same."""
        log = self.state_dir / f"{name}.log"
        full = {**(os.environ if inherit else {}), **(env or {})}
        child = Child(name, argv, full, _spawn(name, argv, full, log, "wb"), log, port)
        self.children.append(child)
        return child

    def check(self) -> None:
        for c in self.children:
            if c.proc.poll() is not None:
                raise Stop(f"{c.name} exited with status {c.proc.returncode}; see {c.log}")

    def supervise(self) -> None:
        """Reports each process that exited and restarts it when its backoff has passed."""
        now = time.monotonic()
        for c in self.children:
            if c.restart_at is None and c.proc.poll() is not None:
                # Its group may hold grandchildren still (a bridge's MCP servers).
                _signal_group(c.proc, signal.SIGKILL)
                c.failures = c.failures + 1 if now - c.started < STABLE_SECONDS else 1
                delay = min(BACKOFF_FIRST * 2 ** (c.failures - 1), BACKOFF_MAX)
                c.restart_at = now + delay
                print(f"==> {c.name} exited with status {c.proc.returncode}; restarting it in "
                      f"{delay:.1f}s (see {shown(c.log)})", flush=True)
            elif c.restart_at is not None and now >= c.restart_at:
                c.proc = _spawn(c.name, c.argv, c.env, c.log, "ab")
                c.started, c.restart_at = now, None
                c.restarts += 1
                print(f"==> {c.name} restarted (pid {c.proc.pid}, restart {c.restarts})", flush=True)
                self.on_restart()

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

    def table(self) -> dict:
        """Each process: pid, address, restarts (stack.json's `processes`)."""
        return {
            c.name: {"pid": c.proc.pid, "address": f"127.0.0.1:{c.port}" if c.port else None,
                     "restarts": c.restarts}
            for c in self.children
        }


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
# Redis' memory limit in `make run`.
REDIS_MAXMEMORY = "256mb"
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
        # Envoy's policy filter's, so /verify (Traefik) decides as Envoy does.
        "policy": render.policy(cfg.enabled_servers()),
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
    parser.add_argument("command", nargs="?", choices=["run", "status"], default="run",
                        help="run (the default): start the stack; status: show the running one")
    parser.add_argument("--config", type=Path, default=ROOT / "mcpgw.toml")
    parser.add_argument("--bin-dir", type=Path)
    parser.add_argument("--fresh", action="store_true",
                        help="empty state_dir first: no clients, grants, keys or revocations")
    args = parser.parse_args(argv[1:])
    try:
        cfg = render.load_config(args.config)
    except render.ConfigError as e:
        print(e, file=sys.stderr)
        return 2
    if args.command == "status":
        return status(cfg)
    if args.bin_dir is None:
        parser.error("--bin-dir is required to run")
    problems = port_problems(cfg) + command_problems(cfg)
    if cfg.upstream == "github" and not (os.environ.get("GITHUB_CLIENT_ID") and os.environ.get("GITHUB_CLIENT_SECRET")):
        problems.append("login.upstream = \"github\" needs GITHUB_CLIENT_ID and GITHUB_CLIENT_SECRET in the environment")
    if not problems:
        # Each server once, in parallel, before anything else starts or is touched.
        problems = probe_servers(cfg)
    if problems:
        for problem in problems:
            print(f"{args.config}: {problem}", file=sys.stderr)
        print("nothing was started", file=sys.stderr)
        return 2

    if args.fresh:
        shutil.rmtree(cfg.state_dir, ignore_errors=True)
    cfg.state_dir.mkdir(parents=True, exist_ok=True)
    # Its presence says the stack is up: never a previous run's.
    (cfg.state_dir / "stack.json").unlink(missing_ok=True)
    sup = Supervisor(cfg.state_dir)

    def on_signal(signum, _frame):
        raise Stop(f"{signal.Signals(signum).name}: stopping")

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)

    try:
        run(cfg, sup, args.bin_dir)
        while True:
            sup.supervise()
            time.sleep(0.1)
    except Stop as e:
        print(f"\n==> {e}", flush=True)
        return 0 if "stopping" in str(e) else 1
    finally:
        # Stopping must not be cut short by a second Ctrl-C.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        sup.stop_all()
        (cfg.state_dir / "stack.json").unlink(missing_ok=True)
        print("==> everything stopped", flush=True)


def port_problems(cfg: render.Config) -> list[str]:
    """The fixed ports mcpgw.toml names that are in use or named twice."""
    named = [("gateway.port", cfg.port), ("gateway.sidecar_port", cfg.sidecar_port)]
    named += [(f"gateway.bridge_ports_from (servers.{name})", port) for name, port in bridge_ports(cfg).items()]
    problems, seen = [], {}
    for key, port in named:
        if not port:
            continue
        if port in seen:
            problems.append(f"{key}: port {port} is also {seen[port]}'s (0: any free port)")
            continue
        seen[port] = key
        if port_open(port):
            problems.append(f"{key}: port {port} is in use: stop what listens there or choose another (0: any free port)")
    return problems


def command_problems(cfg: render.Config) -> list[str]:
    """Each enabled server whose command is not an executable file (relative paths are from the
    repository root, as the bridges run them)."""
    problems = []
    for server in cfg.enabled_servers():
        program = server.command[0]
        found = (str(ROOT / program) if os.access(ROOT / program, os.X_OK) else None) if "/" in program \
            else shutil.which(program)
        if not found or not Path(found).is_file():
            problems.append(f"servers.{server.name}.command: `{program}` is not an executable file "
                            "(installed? `make deps` installs the shipped servers)")
    return problems


def probe_env(server: render.Server, scratch: Path) -> dict[str, str]:
    """What the bridge gives `server`'s process (PATH, the variables its table passes through,
    its `env` with `{user_dir}` naming `scratch`, which is also HOME), for the probe."""
    env = {n: os.environ[n] for n in ("PATH", *server.env_passthrough) if n in os.environ}
    env.update({k: v.replace("{user_dir}", str(scratch)) for k, v in server.env.items()})
    env["HOME"] = str(scratch)
    return env


def probe_servers(cfg: render.Config) -> list[str]:
    """Starts each enabled server's command once, in parallel, and sends it `initialize`: those
    that exit or do not answer within PROBE_TIMEOUT are problems."""
    problems: dict[str, str] = {}

    def probe(server: render.Server) -> None:
        with tempfile.TemporaryDirectory(prefix=f"mcpgw-probe-{server.name}-") as scratch:
            problem = probe_server(server.command, probe_env(server, Path(scratch)))
        if problem:
            problems[server.name] = f"servers.{server.name}.command: {problem}"

    threads = [threading.Thread(target=probe, args=(s,)) for s in cfg.enabled_servers()]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return [problems[s.name] for s in cfg.enabled_servers() if s.name in problems]


def probe_server(command: list[str], env: dict[str, str]) -> str | None:
    """None when `command` answers an MCP `initialize` on stdio, else what went wrong."""
    initialize = {"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {},
        "clientInfo": {"name": "mcpgw-run", "version": "1"}}}
    try:
        proc = subprocess.Popen(command, cwd=ROOT, env=env, stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                start_new_session=True, preexec_fn=_die_with_parent)
    except OSError as e:
        return f"cannot start `{command[0]}`: {e}"
    timer = threading.Timer(PROBE_TIMEOUT, _signal_group, (proc, signal.SIGKILL))
    timer.start()
    try:
        proc.stdin.write((json.dumps(initialize) + "\n").encode())
        proc.stdin.flush()
        for line in proc.stdout:
            try:
                answer = json.loads(line)
            except ValueError:
                continue
            if isinstance(answer, dict) and answer.get("id") == 0:
                return None if "result" in answer else f"refused `initialize`: {answer.get('error')}"
    except OSError:
        pass
    finally:
        timer.cancel()
        _signal_group(proc, signal.SIGKILL)
        stderr = proc.stderr.read().decode(errors="replace").strip().splitlines()[-3:]
        proc.wait()
    why = f"exited with status {proc.returncode}" if proc.returncode not in (None, -signal.SIGKILL) \
        else f"did not answer `initialize` within {PROBE_TIMEOUT:.0f}s"
    return f"`{' '.join(command)}` {why}" + (f": {' / '.join(stderr)}" if stderr else "")


def status(cfg: render.Config) -> int:
    """Prints the running stack's processes from stack.json: pid, running, address, restarts."""
    try:
        stack = json.loads((cfg.state_dir / "stack.json").read_text())
    except (OSError, ValueError):
        print(f"no stack is running from {shown(cfg.state_dir)} (no stack.json)", file=sys.stderr)
        return 1
    print(f"{stack['public_url']}")
    print(f"  {'process':<20} {'pid':>8}  {'state':<10} {'address':<22} restarts")
    for name, p in stack["processes"].items():
        up = _alive(p["pid"])
        listening = up and (not p["address"] or port_open(int(p["address"].rsplit(":", 1)[1])))
        state = "ready" if listening else "starting" if up else "down"
        print(f"  {name:<20} {p['pid']:>8}  {state:<10} {p['address'] or '-':<22} {p['restarts']}")
    return 0


def _alive(pid: int) -> bool:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return False
    return fields[0] != "Z"


def port_or_free(port: int) -> int:
    return port or free_port()


def write_stack(cfg: render.Config, sup: Supervisor, info: dict) -> None:
    """<state_dir>/stack.json: `info` with each process's pid (`pids`) and its details
    (`processes`), replaced atomically."""
    stack = {**info, "pids": {c.name: c.proc.pid for c in sup.children}, "processes": sup.table()}
    tmp = cfg.state_dir / "stack.json.tmp"
    tmp.write_text(json.dumps(stack, indent=2) + "\n")
    tmp.rename(cfg.state_dir / "stack.json")


def run(cfg: render.Config, sup: Supervisor, bin_dir: Path) -> None:
    state = cfg.state_dir
    redis_port = free_port()
    # Append-only file in state_dir, every write synced: a restart (or kill -9) loses nothing.
    # Bounded: past maxmemory Redis evicts the keys nearest their expiry first (volatile-ttl):
    # rate counters, codes, pending logins (minutes) long before clients and grants (days); the
    # signing keys and the revocation feed have no TTL and are never evicted.
    redis = sup.start("redis", ["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1",
                                "--save", "", "--appendonly", "yes", "--appendfsync", "always",
                                "--dir", str(state), "--maxmemory", REDIS_MAXMEMORY,
                                "--maxmemory-policy", "volatile-ttl"], port=redis_port)
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
        }, port=oidc_port)
        sup.wait_port(oidc, oidc_port)

    sidecar_port = port_or_free(cfg.sidecar_port)
    sidecar_toml = state / "sidecar.toml"
    sidecar_toml.write_text(toml_text(sidecar_config(cfg, sidecar_port, redis_port, oidc_issuer)))
    sidecar = sup.start("sidecar", [str(bin_dir / "mcpgw-sidecar"), "--config", str(sidecar_toml)],
                        sidecar_env(cfg), port=sidecar_port)
    sup.wait_port(sidecar, sidecar_port)

    bridges: dict[str, tuple[str, int]] = {}
    for name, wanted in bridge_ports(cfg).items():
        server = next(s for s in cfg.servers if s.name == name)
        port = port_or_free(wanted)
        child = sup.start(f"bridge-{name}", [str(bin_dir / "mcpgw-bridge"), "--listen",
                                             f"127.0.0.1:{port}",
                                             *render.bridge_flags(server, str(state / f"bridge-{name}")),
                                             "--", *server.command],
                          bridge_env(server), port=port, inherit=False)
        sup.wait_port(child, port)
        bridges[name] = ("127.0.0.1", port)

    envoy_yaml = state / "envoy.yaml"
    doc = render.render(render.load_gateway(), public_url=cfg.public_url, listen=("127.0.0.1", cfg.port),
                        servers=bridges, protected=render.resources(cfg.public_url, cfg.enabled_servers()),
                        policy_config=render.policy(cfg.enabled_servers()),
                        sidecar=("127.0.0.1", sidecar_port), admin_port=free_port())
    envoy_yaml.write_text(render.dump(doc))
    envoy = sup.start("envoy", [str(ROOT / ".venv/bin/envoy"), "-c", str(envoy_yaml),
                                "--use-dynamic-base-id", "--log-level", "warn"], port=cfg.port)
    sup.wait_port(envoy, cfg.port)
    # Listening is not serving yet: the modules load on the workers and fetch the JWKS. Ready is
    # the authorization server metadata answering through Envoy.
    sup.wait_ok(envoy, f"http://127.0.0.1:{cfg.port}/.well-known/oauth-authorization-server")
    # Written last: its presence says everything is up (tests wait for it); rewritten after
    # every restart.
    info = {
        "public_url": cfg.public_url,
        "sidecar": f"http://127.0.0.1:{sidecar_port}",
        "redis": f"redis://127.0.0.1:{redis_port}",
        "oidc_issuer": oidc_issuer,
        "bridges": {name: f"http://{host}:{port}" for name, (host, port) in bridges.items()},
    }
    sup.on_restart = lambda: write_stack(cfg, sup, info)
    write_stack(cfg, sup, info)
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
  Logs: {shown(cfg.state_dir)}/<process>.log   State: {shown(cfg.state_dir)} (FRESH=1 make run empties it)
  Status: .venv/bin/python deploy/tools/run.py status{'' if cfg.path == ROOT / 'mcpgw.toml' else f' --config {cfg.path}'}
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
