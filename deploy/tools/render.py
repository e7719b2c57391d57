"""Reads mcpgw.toml and renders the Envoy front-proxy configuration from envoy/gateway.yaml.

envoy/gateway.yaml is the one hand-written Envoy configuration. `make run` renders it for the
local processes (port, public URL, enabled servers from mcpgw.toml); `make k8s-render` renders it
for Kubernetes (Service DNS names, modules fetched from the in-cluster module server with their
sha256) into deploy/k8s/overlays/envoy/envoy.yaml and the Istio WasmPlugins. Rendering is a
structural edit of the parsed document (clusters, routes, wasm code sources) plus replacing the
public origin wherever gateway.yaml spells it, so the filters' own configuration formats stay
theirs.

    python deploy/tools/render.py k8s      # write the Kubernetes files
    python deploy/tools/render.py check    # fail if they differ from a fresh render
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
GATEWAY = ROOT / "envoy" / "gateway.yaml"
K8S = ROOT / "deploy" / "k8s"
K8S_ENVOY = K8S / "overlays" / "envoy" / "envoy.yaml"
K8S_WASMPLUGINS = K8S / "overlays" / "istio" / "wasmplugins.yaml"

# The origin gateway.yaml is written for; rendering replaces it with the configured one.
LOCAL_ORIGIN = "http://127.0.0.1:8080"
SIDECAR_CLUSTER = "sidecar"
SIDECAR_PORT = 8090
BRIDGE_PORT_K8S = 3000
# The bridges' state directory in Kubernetes (a volume of deploy/k8s/base/bridge/bridge.yaml).
BRIDGE_STATE_K8S = "/var/lib/mcpgw-bridge"
WASM_SERVER = "http://wasm.mcpgw.svc.cluster.local:8080"
NAMESPACE = "mcpgw"


ISOLATIONS = ("user", "session", "shared")


class ConfigError(Exception):
    """mcpgw.toml is not valid; the message names every problem with its key path."""


@dataclass
class Server:
    """One MCP server of mcpgw.toml's [servers] table."""

    name: str
    enabled: bool
    command: list[str]
    scopes: list[str]
    # Who may call it (the policy filter): logins and groups; both empty: every logged-in user.
    allow_users: list[str] = field(default_factory=list)
    allow_groups: list[str] = field(default_factory=list)
    # The MCP server's environment (the bridge gives it nothing else but PATH): variables set
    # (`{user_dir}` is the user's private directory) and names passed through from the gateway's.
    env: dict[str, str] = field(default_factory=dict)
    env_passthrough: list[str] = field(default_factory=list)
    # Which callers share a server process: "user" (each user their own, in a private
    # directory), "session" or "shared".
    isolation: str = "user"
    # Per-user limits of the bridge (None: the bridge's defaults).
    sessions_per_user: int | None = None
    tool_calls_per_second: int | None = None


@dataclass
class Config:
    """mcpgw.toml, validated."""

    port: int
    public_url: str
    state_dir: Path
    # Loopback ports of the sidecar and of the first bridge (0: any free port).
    sidecar_port: int
    bridge_ports_from: int
    upstream: str
    allowed_users: list[str]
    allowed_orgs: list[str]
    # The sidecar's access-token lifetime, e.g. "10m" (None: the sidecar's default).
    access_token_lifetime: str | None
    servers: list[Server]
    k8s_public_url: str
    path: Path = field(default=ROOT / "mcpgw.toml")

    def enabled_servers(self) -> list[Server]:
        return [s for s in self.servers if s.enabled]


def _take(table: dict, key: str, kind, where: str, errors: list[str], default=None):
    value = table.pop(key, default)
    if value is None:
        errors.append(f"{where}.{key}: missing")
    elif kind is list and not (
        isinstance(value, list) and all(isinstance(v, str) for v in value)
    ):
        errors.append(f"{where}.{key}: must be a list of strings")
    elif kind is not list and (
        not isinstance(value, kind) or (kind is int and isinstance(value, bool))
    ):
        errors.append(f"{where}.{key}: must be a {kind.__name__}")
    return value


def _unknown(table: dict, where: str, errors: list[str]) -> None:
    errors.extend(f"{where}.{key}: unknown key" for key in table)


def _origin(url, where: str, errors: list[str]) -> None:
    if not isinstance(url, str):
        return
    if not url.startswith(("http://", "https://")) or url.endswith("/"):
        errors.append(f"{where}: must be an http(s) origin without a trailing slash")
    elif url.startswith("http://") and not url.startswith(
        ("http://127.0.0.1", "http://localhost", "http://[::1]")
    ):
        errors.append(f"{where}: plain http is allowed for loopback only (OAuth 2.1)")


def load_config(path: Path) -> Config:
    """Parses and validates mcpgw.toml; raises ConfigError listing every problem."""
    try:
        raw = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise ConfigError(f"{path}: {e}") from e
    errors: list[str] = []
    gateway = raw.pop("gateway", {})
    login = raw.pop("login", {})
    servers = raw.pop("servers", {})
    k8s = raw.pop("kubernetes", {})
    _unknown(raw, "", errors)

    port = _take(gateway, "port", int, "gateway", errors, 8080)
    if isinstance(port, int) and not 1 <= port <= 65535:
        errors.append("gateway.port: must be 1..65535")
    public_url = _take(gateway, "public_url", str, "gateway", errors, f"http://127.0.0.1:{port}")
    _origin(public_url, "gateway.public_url", errors)
    state_dir = _take(gateway, "state_dir", str, "gateway", errors, "target/run")
    sidecar_port = _take(gateway, "sidecar_port", int, "gateway", errors, SIDECAR_PORT)
    bridge_ports_from = _take(gateway, "bridge_ports_from", int, "gateway", errors, 8101)
    for key, value in (("sidecar_port", sidecar_port), ("bridge_ports_from", bridge_ports_from)):
        if isinstance(value, int) and not 0 <= value <= 65535:
            errors.append(f"gateway.{key}: must be 0..65535 (0: any free port)")
    _unknown(gateway, "gateway", errors)

    upstream = _take(login, "upstream", str, "login", errors, "oidc")
    if upstream not in ("oidc", "github"):
        errors.append('login.upstream: must be "oidc" or "github"')
    allowed_users = _take(login, "allowed_users", list, "login", errors, [])
    allowed_orgs = _take(login, "allowed_orgs", list, "login", errors, [])
    lifetime = login.pop("access_token_lifetime", None)
    if lifetime is not None and not (isinstance(lifetime, str) and re.fullmatch(r"[1-9][0-9]*(s|m|h)", lifetime)):
        errors.append('login.access_token_lifetime: must be a duration like "90s", "10m" or "1h"')
    _unknown(login, "login", errors)

    parsed: list[Server] = []
    for name, table in servers.items():
        where = f"servers.{name}"
        if not name.replace("-", "").isalnum() or name != name.lower():
            errors.append(f"{where}: names are lowercase letters, digits and '-'")
        if not isinstance(table, dict):
            errors.append(f"{where}: must be a table")
            continue
        enabled = _take(table, "enabled", bool, where, errors, True)
        command = _take(table, "command", list, where, errors)
        if command == []:
            errors.append(f"{where}.command: must not be empty")
        scopes = _take(table, "scopes", list, where, errors, [])
        allow_users = _take(table, "allow_users", list, where, errors, [])
        allow_groups = _take(table, "allow_groups", list, where, errors, [])
        env = table.pop("env", {})
        if not (isinstance(env, dict) and all(isinstance(v, str) for v in env.values())):
            errors.append(f"{where}.env: must be a table of strings")
            env = {}
        for key in env:
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
                errors.append(f"{where}.env.{key}: names are letters, digits and '_'")
        env_passthrough = _take(table, "env_passthrough", list, where, errors, [])
        isolation = _take(table, "isolation", str, where, errors, "user")
        if isolation not in ISOLATIONS:
            errors.append(f"{where}.isolation: must be one of {', '.join(ISOLATIONS)}")
        limits = {}
        for key in ("sessions_per_user", "tool_calls_per_second"):
            value = table.pop(key, None)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 0
                                      or (key == "sessions_per_user" and value == 0)):
                errors.append(f"{where}.{key}: must be a whole number" + (" >= 1" if key == "sessions_per_user" else " (0: no limit)"))
            limits[key] = value
        _unknown(table, where, errors)
        parsed.append(
            Server(name, enabled, command or [], scopes or [], allow_users or [], allow_groups or [],
                   env, env_passthrough or [], isolation, **limits)
        )
    if not any(s.enabled for s in parsed):
        errors.append("servers: enable at least one MCP server")

    k8s_url = _take(k8s, "public_url", str, "kubernetes", errors, "https://mcp.example.com")
    _origin(k8s_url, "kubernetes.public_url", errors)
    _unknown(k8s, "kubernetes", errors)

    if errors:
        raise ConfigError(f"{path}:\n  " + "\n  ".join(errors))
    return Config(
        port=port,
        public_url=public_url,
        state_dir=ROOT / state_dir,
        sidecar_port=sidecar_port,
        bridge_ports_from=bridge_ports_from,
        upstream=upstream,
        allowed_users=allowed_users,
        allowed_orgs=allowed_orgs,
        access_token_lifetime=lifetime,
        servers=parsed,
        k8s_public_url=k8s_url,
        path=path,
    )


class _Dumper(yaml.SafeDumper):
    """Writes shared values (gateway.yaml's `&no_policy` anchor) out in full: plain YAML."""

    def ignore_aliases(self, data) -> bool:
        return True


def dump(doc: dict) -> str:
    return yaml.dump(doc, Dumper=_Dumper, sort_keys=False, width=100)


def load_gateway() -> dict:
    return yaml.safe_load(GATEWAY.read_text())


def _hcm(doc: dict) -> dict:
    listener = doc["static_resources"]["listeners"][0]
    return listener["filter_chains"][0]["filters"][0]["typed_config"]


def wasm_filters(doc: dict) -> list[dict]:
    """The `config` of each proxy-wasm HTTP filter, in chain order."""
    return [
        f["typed_config"]["config"]
        for f in _hcm(doc)["http_filters"]
        if f["typed_config"]["@type"].endswith("filters.http.wasm.v3.Wasm")
    ]


def bridge_cluster(name: str) -> str:
    return f"bridge_{name.replace('-', '_')}"


def resources(public_url: str, servers: list[Server]) -> list[dict]:
    """The protected resources (core's `Resource`, the shared contract) for the given servers."""
    return [
        {
            "canonical_url": f"{public_url}/{s.name}/mcp",
            "path_prefix": f"/{s.name}/mcp",
            "scopes_required": s.scopes,
            "metadata": {
                "authorization_servers": [public_url],
                "resource_name": s.name,
                **({"scopes_supported": s.scopes} if s.scopes else {}),
            },
        }
        for s in servers
    ]


def bridge_flags(server: Server, state_dir: str) -> list[str]:
    """The bridge's flags for `server` (its command follows `--`): isolation, the state directory,
    the MCP server's environment and the per-user limits of its table."""
    flags = ["--isolation", server.isolation, "--state-dir", state_dir]
    for key, value in server.env.items():
        flags += ["--env", f"{key}={value}"]
    if server.env_passthrough:
        flags += ["--env-pass", ",".join(server.env_passthrough)]
    if server.sessions_per_user is not None:
        flags += ["--max-sessions-per-user", str(server.sessions_per_user)]
    if server.tool_calls_per_second is not None:
        flags += ["--tool-calls-per-second", str(server.tool_calls_per_second)]
    return flags


def policy(servers: list[Server]) -> dict:
    """The policy filter's configuration (core's `RawPolicy`) for the given servers: each server
    is open to every logged-in user, or only to its `allow_users` / `allow_groups`."""
    rules = []
    for s in servers:
        if not (s.allow_users or s.allow_groups):
            rules.append({"name": f"{s.name}: every user", "effect": "allow", "servers": [s.name]})
        for kind, listed in (("users", s.allow_users), ("groups", s.allow_groups)):
            if listed:
                rules.append(
                    {"name": f"{s.name}: allowed {kind}", "effect": "allow", "servers": [s.name],
                     "when": {kind: listed}}
                )
    return {
        "servers": [{"name": s.name, "path_prefix": f"/{s.name}/mcp"} for s in servers],
        "rules": rules,
    }


def _edit_filter_configs(doc: dict, edit) -> None:
    for cfg in wasm_filters(doc):
        conf = cfg.get("configuration")
        if conf and "value" in conf:
            conf["value"] = json.dumps(edit(json.loads(conf["value"])), indent=2) + "\n"


def _endpoint(cluster: dict, host: str, port: int) -> None:
    sock = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"][
        "socket_address"
    ]
    sock["address"] = host
    sock["port_value"] = port


def render(
    doc: dict,
    *,
    public_url: str,
    listen: tuple[str, int],
    servers: dict[str, tuple[str, int]],
    protected: list[dict],
    sidecar: tuple[str, int],
    policy_config: dict | None = None,
    admin_port: int | None = None,
    cluster_type: str = "STATIC",
) -> dict:
    """gateway.yaml adapted: listener, public origin, the given servers only, their addresses.

    `protected` replaces the `resources` list of every filter configuration that has one, and
    `policy_config` the `servers` and `rules` of the policy filter's.
    """
    doc = copy.deepcopy(doc)
    listener = doc["static_resources"]["listeners"][0]
    listener["address"]["socket_address"].update(address=listen[0], port_value=listen[1])
    if admin_port is not None:
        doc["admin"]["address"]["socket_address"]["port_value"] = admin_port
    hcm = _hcm(doc)

    known = {
        r["match"]["path"].split("/")[1]
        for r in hcm["route_config"]["virtual_hosts"][0]["routes"]
        if r.get("route", {}).get("cluster", "").startswith("bridge_")
    }
    unknown = set(servers) - known
    if unknown:
        # A server gateway.yaml has no route for gets one like the others.
        routes = hcm["route_config"]["virtual_hosts"][0]["routes"]
        template = next(r for r in routes if r.get("route", {}).get("cluster", "").startswith("bridge_"))
        clusters = doc["static_resources"]["clusters"]
        ctemplate = next(c for c in clusters if c["name"].startswith("bridge_"))
        for name in sorted(unknown):
            route = copy.deepcopy(template)
            route["match"]["path"] = f"/{name}/mcp"
            route["route"]["cluster"] = bridge_cluster(name)
            routes.insert(routes.index(template), route)
            cluster = copy.deepcopy(ctemplate)
            cluster["name"] = cluster["load_assignment"]["cluster_name"] = bridge_cluster(name)
            clusters.append(cluster)
    removed = sorted(known - set(servers))

    routes = hcm["route_config"]["virtual_hosts"][0]["routes"]
    hcm["route_config"]["virtual_hosts"][0]["routes"] = [
        r for r in routes if r.get("route", {}).get("cluster") not in {bridge_cluster(n) for n in removed}
    ]
    clusters = []
    for c in doc["static_resources"]["clusters"]:
        if c["name"] in {bridge_cluster(n) for n in removed}:
            continue
        c["type"] = cluster_type
        if c["name"] == SIDECAR_CLUSTER:
            _endpoint(c, *sidecar)
        for name, addr in servers.items():
            if c["name"] == bridge_cluster(name):
                _endpoint(c, *addr)
        clusters.append(c)
    doc["static_resources"]["clusters"] = clusters

    def edit(conf):
        conf = json.loads(json.dumps(conf).replace(LOCAL_ORIGIN, public_url))
        if "resources" in conf:
            conf["resources"] = protected
        if policy_config is not None and "rules" in conf:
            conf.update(policy_config)
        return conf

    _edit_filter_configs(doc, edit)
    return doc


def wasm_sha256(filename: str) -> str:
    path = ROOT / "dist" / filename
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.exists() else "0" * 64


def render_k8s(doc: dict, cfg: Config) -> dict:
    """The Envoy edge of deploy/k8s/overlays/envoy: Service DNS names, modules fetched with sha256."""
    names = [s.name for s in cfg.enabled_servers()]
    out = render(
        doc,
        public_url=cfg.k8s_public_url,
        protected=resources(cfg.k8s_public_url, cfg.enabled_servers()),
        policy_config=policy(cfg.enabled_servers()),
        listen=("0.0.0.0", 8080),
        servers={n: (f"bridge-{n}.{NAMESPACE}.svc.cluster.local", BRIDGE_PORT_K8S) for n in names},
        sidecar=(f"sidecar.{NAMESPACE}.svc.cluster.local", SIDECAR_PORT),
        cluster_type="STRICT_DNS",
    )
    for cfg_ in wasm_filters(out):
        filename = Path(cfg_["vm_config"]["code"]["local"]["filename"]).name
        cfg_["vm_config"]["code"] = {
            "remote": {
                "http_uri": {"uri": f"{WASM_SERVER}/{filename}", "cluster": "wasm", "timeout": "10s"},
                "sha256": wasm_sha256(filename),
                "retry_policy": {"num_retries": 10},
            }
        }
    out["static_resources"]["clusters"].append(
        {
            "name": "wasm",
            "type": "STRICT_DNS",
            "connect_timeout": "2s",
            "load_assignment": {
                "cluster_name": "wasm",
                "endpoints": [
                    {
                        "lb_endpoints": [
                            {
                                "endpoint": {
                                    "address": {
                                        "socket_address": {
                                            "address": f"wasm.{NAMESPACE}.svc.cluster.local",
                                            "port_value": 8080,
                                        }
                                    }
                                }
                            }
                        ]
                    }
                ],
            },
        }
    )
    out["admin"]["address"]["socket_address"]["address"] = "127.0.0.1"
    return out


ISTIO_PHASES = {"mcpgw_jwt": ("AUTHN", 100), "mcpgw_policy": ("AUTHZ", 100)}


def render_wasmplugins(k8s_envoy: dict) -> list[dict]:
    """One Istio WasmPlugin per mcpgw filter, on the ingress gateway, with the same configuration.

    In Istio the sidecar is reached through Istio's outbound cluster name, so the filters'
    cluster references are rewritten to it.
    """
    istio_cluster = f"outbound|{SIDECAR_PORT}||sidecar.{NAMESPACE}.svc.cluster.local"
    plugins = []
    for cfg in wasm_filters(k8s_envoy):
        remote = cfg["vm_config"]["code"]["remote"]
        conf = json.loads(
            json.dumps(json.loads(cfg["configuration"]["value"])).replace(
                f'"{SIDECAR_CLUSTER}"', json.dumps(istio_cluster)
            )
        )
        if cfg["name"] == "mcpgw_policy":
            # A WasmPlugin cannot be turned off per route, as the Envoy edge turns the policy off
            # on the sidecar's routes: the policy passes paths that are no MCP server instead
            # (the VirtualService routes nothing else but the sidecar's OAuth endpoints).
            conf["other_paths"] = "pass"
        phase, priority = ISTIO_PHASES.get(cfg["name"], ("AUTHZ", 10))
        plugins.append(
            {
                "apiVersion": "extensions.istio.io/v1alpha1",
                "kind": "WasmPlugin",
                "metadata": {"name": cfg["name"].replace("_", "-"), "namespace": "istio-system"},
                "spec": {
                    "selector": {"matchLabels": {"istio": "ingressgateway"}},
                    "url": remote["http_uri"]["uri"],
                    "sha256": remote["sha256"],
                    "imagePullPolicy": "IfNotPresent",
                    "phase": phase,
                    "priority": priority,
                    "failStrategy": "FAIL_CLOSE",
                    "pluginName": cfg["root_id"],
                    "pluginConfig": conf,
                },
            }
        )
    return plugins


HEADER = (
    "# Rendered from envoy/gateway.yaml and mcpgw.toml by `make k8s-render`; do not edit.\n"
    "# sha256 values are those of dist/*.wasm at render time: render again after `make wasm`\n"
    "# and build the mcpgw-wasm image from the same dist/.\n"
)


def k8s_files(cfg: Config) -> dict[Path, str]:
    envoy = render_k8s(load_gateway(), cfg)
    plugins = render_wasmplugins(envoy)
    return {
        K8S_ENVOY: HEADER + dump(envoy),
        K8S_WASMPLUGINS: HEADER + yaml.dump_all(plugins, Dumper=_Dumper, sort_keys=False, width=100),
    }


def _without_sha256(text: str) -> str:
    return "\n".join(
        line for line in text.splitlines() if not line.strip().startswith("sha256:")
    )


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[1] not in ("k8s", "check"):
        print(__doc__, file=sys.stderr)
        return 2
    cfg = load_config(ROOT / "mcpgw.toml")
    stale = []
    for path, text in k8s_files(cfg).items():
        if argv[1] == "k8s":
            path.write_text(text)
            print(f"  wrote {path.relative_to(ROOT)}")
        elif not path.exists() or _without_sha256(path.read_text()) != _without_sha256(text):
            stale.append(str(path.relative_to(ROOT)))
    if stale:
        print(f"out of date with envoy/gateway.yaml: {', '.join(stale)}; run `make k8s-render`")
        return 1
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv))
    except ConfigError as e:
        print(e, file=sys.stderr)
        sys.exit(2)
