"""`make run`: the whole gateway on one origin, as local processes, until Ctrl-C.

Starts, in order, Redis, the local OpenID provider (tests/oidc, unless mcpgw.toml says GitHub),
the sidecar, one bridge per enabled MCP server and Envoy with the mcpgw filters (envoy/gateway.yaml
rendered for mcpgw.toml). Only Envoy's port is fixed (mcpgw.toml [gateway] port); everything
else listens on a free loopback port. Each process runs in its own process group with a
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
START_TIMEOUT = 60.0
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

    def start(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> Child:
        log = self.state_dir / f"{name}.log"
        out = open(log, "wb")
        try:
            proc = subprocess.Popen(
                argv,
                cwd=ROOT,
                env={**os.environ, **(env or {})},
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


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return 200 <= r.status < 300
    except OSError:
        return False


def sidecar_config(cfg: render.Config, redis_port: int, oidc_issuer: str | None, path: Path) -> None:
    """The sidecar's configuration for this run (its format: sidecar/README section)."""
    lines = [
        f'issuer = "{cfg.public_url}"',
        f'redis_url = "redis://127.0.0.1:{redis_port}"',
    ]
    path.write_text("\n".join(lines) + "\n")


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


def run(cfg: render.Config, sup: Supervisor, bin_dir: Path) -> None:
    state = cfg.state_dir
    redis_port = free_port()
    redis = sup.start("redis", ["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1",
                                "--save", "", "--appendonly", "no", "--dir", str(state)])
    sup.wait_port(redis, redis_port)

    oidc_issuer = None
    if cfg.upstream == "oidc":
        oidc_port = free_port()
        oidc_issuer = f"http://127.0.0.1:{oidc_port}"
        oidc = sup.start("oidc", ["node", "tests/oidc/server.mjs"], {"PORT": str(oidc_port)})
        sup.wait_port(oidc, oidc_port)

    sidecar_port = free_port()
    sidecar_toml = state / "sidecar.toml"
    sidecar_config(cfg, redis_port, oidc_issuer, sidecar_toml)
    sidecar = sup.start("sidecar", [str(bin_dir / "mcpgw-sidecar"), "--config", str(sidecar_toml),
                                    "--listen", f"127.0.0.1:{sidecar_port}"])
    sup.wait_port(sidecar, sidecar_port)

    bridges: dict[str, tuple[str, int]] = {}
    for server in cfg.enabled_servers():
        port = free_port()
        child = sup.start(f"bridge-{server.name}", [str(bin_dir / "mcpgw-bridge"), "--listen",
                                                    f"127.0.0.1:{port}", "--", *server.command],
                          {"MEMORY_FILE_PATH": str(state / f"{server.name}-memory.jsonl")})
        sup.wait_port(child, port)
        bridges[server.name] = ("127.0.0.1", port)

    envoy_yaml = state / "envoy.yaml"
    doc = render.render(render.load_gateway(), public_url=cfg.public_url, listen=("127.0.0.1", cfg.port),
                        servers=bridges, protected=render.resources(cfg.public_url, cfg.enabled_servers()),
                        sidecar=("127.0.0.1", sidecar_port), admin_port=free_port())
    envoy_yaml.write_text(yaml.safe_dump(doc, sort_keys=False))
    envoy = sup.start("envoy", [str(ROOT / ".venv/bin/envoy"), "-c", str(envoy_yaml),
                                "--use-dynamic-base-id", "--log-level", "warn"])
    sup.wait_port(envoy, cfg.port)
    banner(cfg, oidc_issuer)


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
    Python SDK:       .venv/bin/python tests/py/connect.py {url}/{first}/mcp
  Logs: {cfg.state_dir.relative_to(ROOT)}/<process>.log
""",
        flush=True,
    )


def test_users() -> str:
    users = ROOT / "tests" / "oidc" / "users.json"
    try:
        listed = json.loads(users.read_text())
    except (OSError, ValueError):
        return f"see {users.relative_to(ROOT)}"
    return ", ".join(f"{u.get('login', u.get('sub'))} / {u.get('password')}" for u in listed)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
