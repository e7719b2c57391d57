"""Every configuration mcpgw ships is checked here with the tool that will consume it.

- Envoy: `envoy --mode validate` on each file under envoy/, on the Kubernetes rendering and on a
  `make run` rendering with a non-default mcpgw.toml (Envoy loads the built .wasm modules and
  runs their configuration checks, so a filter configuration it rejects fails here).
- Kubernetes: `kubectl kustomize` on each overlay, then every core resource validated against
  the Kubernetes OpenAPI schemas (kubernetes-validate, strict: unknown fields fail), then the
  properties the deployment promises (AOF Redis, 2 sidecar replicas with probes and a PDB,
  NetworkPolicies, non-root, resources, a sha256 on every module).
- Traefik: the YAML parsed against its documented structure (traefik-v3.schema.json), the
  seeds' priorities, ForwardAuth with the identity headers core defines, and the Kubernetes
  IngressRoute kept equal to the file-provider routers.
- mcpgw.toml: parsed and validated; bad files are refused with the key path.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "deploy" / "tools"))

import render  # noqa: E402
import run  # noqa: E402

VENV = ROOT / ".venv" / "bin"
OVERLAYS = sorted(p.name for p in (ROOT / "deploy/k8s/overlays").iterdir() if p.is_dir())
K8S_VERSION = "1.37.0"
# Kinds kubernetes-validate has no schema for (CRDs); they get structural checks below.
CRD_KINDS = {"WasmPlugin", "Gateway", "VirtualService", "IngressRoute", "Middleware", "EnvoyFilter"}
IDENTITY_RS = ROOT / "core" / "src" / "identity.rs"


def identity_headers() -> list[str]:
    """The x-mcpgw-* identity headers as core defines them (ALL_HEADERS' members)."""
    text = IDENTITY_RS.read_text()
    members = re.search(r"ALL_HEADERS: \[&str; \d+\] = \[([^\]]*)\]", text)
    assert members, "core/src/identity.rs no longer defines ALL_HEADERS"
    consts = dict(re.findall(r'pub const (\w+): &str = "([^"]+)"', text))
    return [consts[name.strip()] for name in members.group(1).split(",") if name.strip()]


def envoy_validate(path: Path) -> None:
    out = subprocess.run(
        [str(VENV / "envoy"), "--mode", "validate", "-c", str(path), "--use-dynamic-base-id",
         "--log-level", "error"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert out.returncode == 0, f"envoy rejects {path}:\n{out.stdout}\n{out.stderr}"


# ---------------------------------------------------------------------------------------- Envoy


ENVOY_FILES = [*sorted((ROOT / "envoy").glob("*.yaml")), render.K8S_ENVOY]


@pytest.mark.parametrize("path", ENVOY_FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_envoy_validates_every_shipped_file(path):
    envoy_validate(path)


def test_envoy_validates_a_make_run_rendering_with_a_server_disabled(tmp_path):
    cfg = render.load_config(ROOT / "mcpgw.toml")
    servers = {s.name: ("127.0.0.1", 18101 + i) for i, s in enumerate(cfg.enabled_servers())}
    dropped = sorted(servers)[0]
    del servers[dropped]
    kept = [s for s in cfg.enabled_servers() if s.name != dropped]
    doc = render.render(
        render.load_gateway(), public_url="http://127.0.0.1:18080", listen=("127.0.0.1", 18080),
        servers=servers, protected=render.resources("http://127.0.0.1:18080", kept),
        policy_config=render.policy(kept), sidecar=("127.0.0.1", 18090), admin_port=0,
    )
    text = yaml.safe_dump(doc)
    assert f"/{dropped}/mcp" not in text, "a disabled server keeps a route or a resource"
    assert "127.0.0.1:8080" not in text, "the public origin was not replaced everywhere"
    path = tmp_path / "run.yaml"
    path.write_text(text)
    envoy_validate(path)


def test_envoy_kubernetes_rendering_is_current_and_fetches_modules_with_sha256():
    assert render.main(["render.py", "check"]) == 0
    doc = yaml.safe_load(render.K8S_ENVOY.read_text())
    for cfg in render.wasm_filters(doc):
        remote = cfg["vm_config"]["code"]["remote"]
        assert re.fullmatch(r"[0-9a-f]{64}", remote["sha256"])
        assert cfg["fail_open"] is False


def hcm_of(doc: dict) -> dict:
    return doc["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]


@pytest.mark.parametrize("path", ENVOY_FILES, ids=lambda p: p.name)
def test_every_envoy_config_drops_headers_with_underscores(path):
    """x_mcpgw_* headers must never reach an upstream that folds `_` into `-` (issue 19, 9)."""
    hcm = hcm_of(yaml.safe_load(path.read_text()))
    assert hcm["common_http_protocol_options"]["headers_with_underscores_action"] == "DROP_HEADER"


def test_istio_gateway_drops_headers_with_underscores():
    (patch,) = by_kind(kustomize("istio"), "EnvoyFilter").values()
    (change,) = patch["spec"]["configPatches"]
    assert change["match"]["context"] == "GATEWAY"
    options = change["patch"]["value"]["typed_config"]["common_http_protocol_options"]
    assert options["headers_with_underscores_action"] == "DROP_HEADER"


# ----------------------------------------------------------------------------------- Kubernetes


def kustomize(overlay: str) -> list[dict]:
    out = subprocess.run(
        [str(VENV / "kubectl"), "kustomize", str(ROOT / "deploy/k8s/overlays" / overlay)],
        capture_output=True, text=True, timeout=60,
    )
    assert out.returncode == 0, f"kubectl kustomize {overlay}:\n{out.stderr}"
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def by_kind(docs: list[dict], kind: str) -> dict[str, dict]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


@pytest.fixture(scope="module", params=OVERLAYS)
def overlay(request):
    return request.param, kustomize(request.param)


def test_every_core_resource_matches_the_kubernetes_schema(overlay):
    name, docs = overlay
    checked = 0
    for doc in docs:
        if doc["kind"] in CRD_KINDS:
            continue
        try:
            kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
        except kubernetes_validate.ValidationError as e:
            pytest.fail(f"{name}: {doc['kind']}/{doc['metadata']['name']}: {e.message} at {list(e.path)}")
        checked += 1
    assert checked >= 15


def test_redis_keeps_an_append_only_file_on_a_volume(overlay):
    _, docs = overlay
    redis = by_kind(docs, "StatefulSet")["redis"]
    container = redis["spec"]["template"]["spec"]["containers"][0]
    assert "--appendonly yes" in " ".join(container["args"])
    assert "/data" in " ".join(container["args"])
    assert [m["mountPath"] for m in container["volumeMounts"]] == ["/data"]
    assert redis["spec"]["volumeClaimTemplates"][0]["metadata"]["name"] == "data"


def test_sidecar_runs_two_replicas_with_probes_and_a_disruption_budget(overlay):
    _, docs = overlay
    sidecar = by_kind(docs, "Deployment")["sidecar"]
    assert sidecar["spec"]["replicas"] == 2
    container = sidecar["spec"]["template"]["spec"]["containers"][0]
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert probe in container
    pdb = by_kind(docs, "PodDisruptionBudget")["sidecar"]
    assert pdb["spec"]["selector"]["matchLabels"].items() <= sidecar["spec"]["template"]["metadata"]["labels"].items()


def test_one_bridge_per_enabled_server(overlay):
    _, docs = overlay
    cfg = render.load_config(ROOT / "mcpgw.toml")
    deployments = by_kind(docs, "Deployment")
    services = by_kind(docs, "Service")
    for server in cfg.enabled_servers():
        bridge = deployments[f"bridge-{server.name}"]
        args = bridge["spec"]["template"]["spec"]["containers"][0]["args"]
        assert args[-1] == Path(server.command[0]).name
        # The server's table (isolation, environment, limits) reaches the bridge as in `make run`.
        assert args[:-2] == ["--listen", "0.0.0.0:3000", *render.bridge_flags(server, render.BRIDGE_STATE_K8S)]
        selector = services[f"bridge-{server.name}"]["spec"]["selector"]
        assert selector["app.kubernetes.io/instance"] == server.name


def test_every_pod_is_non_root_with_requests_and_limits(overlay):
    name, docs = overlay
    for doc in docs:
        if doc["kind"] not in ("Deployment", "StatefulSet"):
            continue
        pod = doc["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True, doc["metadata"]["name"]
        for c in pod["containers"]:
            assert c["securityContext"]["allowPrivilegeEscalation"] is False
            assert {"cpu", "memory"} <= set(c["resources"]["requests"]), c["name"]
            assert {"cpu", "memory"} <= set(c["resources"]["limits"]), c["name"]


def test_network_policies_let_only_the_edge_in_and_only_the_sidecar_reach_redis(overlay):
    name, docs = overlay
    policies = by_kind(docs, "NetworkPolicy")
    assert policies["default-deny-ingress"]["spec"]["podSelector"] == {}
    redis_from = policies["redis-from-sidecar"]["spec"]["ingress"][0]["from"]
    assert redis_from == [{"podSelector": {"matchLabels": {"app.kubernetes.io/name": "sidecar"}}}]
    edge_pods = [
        d for d in by_kind(docs, "Deployment").values()
        if d["spec"]["template"]["metadata"]["labels"].get("mcpgw.dev/edge") == "true"
    ]
    for policy in ("sidecar-from-edge", "bridges-from-edge"):
        (source,) = policies[policy]["spec"]["ingress"][0]["from"]
        if name == "envoy":
            assert source == {"podSelector": {"matchLabels": {"mcpgw.dev/edge": "true"}}}
            assert [d["metadata"]["name"] for d in edge_pods] == ["envoy"]
        else:
            # The edge is the ingress controller in its own namespace.
            assert source["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"] == (
                "istio-system" if name == "istio" else "traefik")
            assert source["podSelector"]["matchLabels"]


def test_istio_runs_one_wasm_plugin_per_filter_with_sha256():
    docs = kustomize("istio")
    k8s_envoy = yaml.safe_load(render.K8S_ENVOY.read_text())
    plugins = by_kind(docs, "WasmPlugin")
    assert len(plugins) == len(render.wasm_filters(k8s_envoy)) >= 1
    for plugin in plugins.values():
        spec = plugin["spec"]
        assert plugin["metadata"]["namespace"] == "istio-system"
        assert spec["selector"]["matchLabels"] == {"istio": "ingressgateway"}
        assert re.fullmatch(r"[0-9a-f]{64}", spec["sha256"])
        assert spec["failStrategy"] == "FAIL_CLOSE"
        assert spec["phase"] in ("AUTHN", "AUTHZ")
    # No per-route switch in Istio: the policy lets the sidecar's OAuth paths through itself.
    assert plugins["mcpgw-policy"]["spec"]["pluginConfig"]["other_paths"] == "pass"
    # Every cluster the JWT filter fetches from (JWKS, revocation feed) is Istio's name for the sidecar.
    jwt = plugins["mcpgw-jwt"]["spec"]["pluginConfig"]
    istio_sidecar = f"outbound|{render.SIDECAR_PORT}||sidecar.{render.NAMESPACE}.svc.cluster.local"
    assert jwt["jwks"]["remote"]["cluster"] == jwt["revocation"]["cluster"] == istio_sidecar
    (vs,) = by_kind(docs, "VirtualService").values()
    mcp_paths = {m["uri"]["exact"] for r in vs["spec"]["http"] for m in r.get("match", []) if "exact" in m["uri"] and m["uri"]["exact"].endswith("/mcp")}
    cfg = render.load_config(ROOT / "mcpgw.toml")
    assert mcp_paths == {f"/{s.name}/mcp" for s in cfg.enabled_servers()}


def test_no_edge_routes_the_revocation_feed_publicly():
    """GET /revoked is the JWT filter's feed: Envoy fetches it over the sidecar cluster, and no
    public route reaches it (Envoy answers 404, Istio routes only the listed OAuth paths, Traefik's
    catch-all rewrites the path)."""
    def reaches(match: dict, path: str) -> bool:
        return match.get("path", match.get("exact")) == path or path.startswith(match.get("prefix", "\0"))

    for doc in (yaml.safe_load((ROOT / "envoy/gateway.yaml").read_text()),
                yaml.safe_load(render.K8S_ENVOY.read_text())):
        (hcm,) = [f["typed_config"] for l in doc["static_resources"]["listeners"]
                  for c in l["filter_chains"] for f in c["filters"]]
        routes = [r for vh in hcm["route_config"]["virtual_hosts"] for r in vh["routes"]]
        first = next(r for r in routes if reaches(r["match"], "/revoked"))
        assert "direct_response" in first and first["direct_response"]["status"] == 404, first
        jwt = json.loads(next(f["typed_config"]["config"]["configuration"]["value"]
                              for f in hcm["http_filters"] if f["name"] == "mcpgw.jwt"))
        assert jwt["revocation"]["cluster"] == render.SIDECAR_CLUSTER
    (vs,) = by_kind(kustomize("istio"), "VirtualService").values()
    assert not any(reaches(m["uri"], "/revoked") for r in vs["spec"]["http"] for m in r.get("match", []))
    routers = traefik_dynamic()["routers"]
    assert routers["catch-all"]["middlewares"] == ["not-found"]
    assert traefik_dynamic()["middlewares"]["not-found"] == {"replacePath": {"path": "/not-found"}}
    assert not any("/revoked" in r["rule"] for r in routers.values())


# -------------------------------------------------------------------------------------- Traefik

TRAEFIK_SCHEMA = json.loads((Path(__file__).parent / "traefik-v3.schema.json").read_text())
TRAEFIK_FILES = [ROOT / "traefik/traefik.yml", *sorted((ROOT / "traefik/dynamic").glob("*.yml"))]
SEED_PRIORITIES = {"discovery": 10, "oauth": 4, "verify": 3, "catch-all": 1}


@pytest.mark.parametrize("path", TRAEFIK_FILES, ids=lambda p: p.name)
def test_traefik_files_follow_the_documented_structure(path):
    jsonschema.validate(yaml.safe_load(path.read_text()), TRAEFIK_SCHEMA)


def test_traefik_schema_rejects_misplaced_keys():
    dynamic = yaml.safe_load((ROOT / "traefik/dynamic/mcpgw.yml").read_text())
    dynamic["http"]["middlewares"]["mcpgw-auth"]["forwardAuth"]["authResponseHeader"] = ["x"]
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(dynamic, TRAEFIK_SCHEMA)


def traefik_dynamic() -> dict:
    return yaml.safe_load((ROOT / "traefik/dynamic/mcpgw.yml").read_text())["http"]


def test_traefik_routers_have_the_seeds_priorities_and_resolve():
    http = traefik_dynamic()
    routers = http["routers"]
    for name, priority in SEED_PRIORITIES.items():
        assert routers[name]["priority"] == priority
    cfg = render.load_config(ROOT / "mcpgw.toml")
    for server in cfg.enabled_servers():
        router = routers[f"mcp-{server.name}"]
        assert router["priority"] == 2
        assert router["rule"] == f"Path(`/{server.name}/mcp`)"
        # Authentication first, while X-Forwarded-Uri still carries the public path; then the
        # token is dropped (no passthrough) and the prefix stripped.
        assert router["middlewares"][:2] == ["mcpgw-auth", "drop-authorization"]
        drop = http["middlewares"]["drop-authorization"]["headers"]["customRequestHeaders"]
        assert drop == {"Authorization": ""}
        strip = http["middlewares"][router["middlewares"][2]]["stripPrefix"]["prefixes"]
        assert strip == [f"/{server.name}"]
    for name, router in routers.items():
        assert router["service"] in http["services"], name
        for m in router.get("middlewares", []):
            assert m in http["middlewares"], f"{name}: unknown middleware {m}"
        assert router["rule"].count("`") % 2 == 0, f"{name}: unbalanced backticks"


def test_traefik_forward_auth_passes_on_exactly_the_identity_headers():
    auth = traefik_dynamic()["middlewares"]["mcpgw-auth"]["forwardAuth"]
    assert auth["address"].endswith("/verify")
    assert auth["trustForwardHeader"] is False
    assert auth["authResponseHeaders"] == identity_headers()
    regex = re.compile(auth["authResponseHeadersRegex"].replace("(?i)", ""), re.I)
    assert all(regex.match(h) for h in identity_headers())
    assert not regex.match("authorization")
    assert "Authorization" in auth["authRequestHeaders"]


def test_traefik_ingressroute_mirrors_the_file_provider_routers():
    docs = kustomize("traefik")
    (route,) = by_kind(docs, "IngressRoute").values()
    middlewares = by_kind(docs, "Middleware")
    http = traefik_dynamic()
    file_routes = sorted(
        (" ".join(r["rule"].split()), r["priority"], tuple(r.get("middlewares", [])))
        for r in http["routers"].values()
    )
    crd_routes = sorted(
        (" ".join(r["match"].split()), r["priority"], tuple(m["name"] for m in r.get("middlewares", [])))
        for r in route["spec"]["routes"]
    )
    assert crd_routes == file_routes
    file_auth = dict(http["middlewares"]["mcpgw-auth"]["forwardAuth"])
    crd_auth = dict(middlewares["mcpgw-auth"]["spec"]["forwardAuth"])
    assert file_auth.pop("address").endswith("/verify") and crd_auth.pop("address").endswith("/verify")
    assert crd_auth == file_auth
    for name, m in http["middlewares"].items():
        if name != "mcpgw-auth":
            assert middlewares[name]["spec"] == m


# ---------------------------------------------------------------------------------- mcpgw.toml


def test_shipped_mcpgw_toml_is_valid():
    cfg = render.load_config(ROOT / "mcpgw.toml")
    assert cfg.public_url == f"http://127.0.0.1:{cfg.port}"
    assert {s.name for s in cfg.enabled_servers()} >= {"everything", "memory", "time"}
    for server in cfg.servers:
        assert (ROOT / server.command[0]).exists(), f"{server.name}: {server.command[0]} missing"


@pytest.mark.parametrize(
    "text, problem",
    [
        ('[gateway]\nprot = 1\n[servers.a]\ncommand = ["x"]\n', "gateway.prot: unknown key"),
        ('[gateway]\npublic_url = "http://example.com"\n[servers.a]\ncommand = ["x"]\n', "loopback only"),
        ('[gateway]\nport = "80"\n[servers.a]\ncommand = ["x"]\n', "gateway.port: must be a int"),
        ('[login]\nupstream = "gitlab"\n[servers.a]\ncommand = ["x"]\n', "login.upstream"),
        ('[servers.a]\nenabled = false\ncommand = ["x"]\n', "enable at least one"),
        ('[servers.a]\nenabled = true\n', "servers.a.command: missing"),
        ('[gateway]\nsidecar_port = 70000\n[servers.a]\ncommand = ["x"]\n', "gateway.sidecar_port"),
        ('[servers.a]\ncommand = ["x"]\nallow_groups = "eng"\n', "servers.a.allow_groups: must be a list"),
        ('[login]\naccess_token_lifetime = "10 minutes"\n[servers.a]\ncommand = ["x"]\n', "login.access_token_lifetime"),
        ("[servers.a\n", "mcpgw.toml"),
        ('[servers.a]\ncommand = ["x"]\nisolation = "nobody"\n', "servers.a.isolation: must be one of user, session, shared"),
        ('[servers.a]\ncommand = ["x"]\nenv = { A = 1 }\n', "servers.a.env: must be a table of strings"),
        ('[servers.a]\ncommand = ["x"]\nenv = { "A-B" = "x" }\n', "servers.a.env.A-B"),
        ('[servers.a]\ncommand = ["x"]\nsessions_per_user = 0\n', "servers.a.sessions_per_user"),
    ],
)
def test_bad_mcpgw_toml_is_refused_with_the_key_path(tmp_path, text, problem):
    path = tmp_path / "mcpgw.toml"
    path.write_text(text)
    with pytest.raises(render.ConfigError, match=re.escape(problem)):
        render.load_config(path)


def test_make_run_sidecar_configuration_is_toml_with_the_shared_resources():
    import tomllib

    cfg = render.load_config(ROOT / "mcpgw.toml")
    conf = run.sidecar_config(cfg, 8090, 6379, "http://127.0.0.1:9090")
    assert tomllib.loads(run.toml_text(conf)) == conf
    assert conf["resources"] == render.resources(cfg.public_url, cfg.enabled_servers())
    assert "client_secret" not in conf["upstream"], "secrets go through the environment"


def test_policy_lets_every_user_in_unless_a_server_lists_users_or_groups(tmp_path):
    path = tmp_path / "mcpgw.toml"
    path.write_text(
        '[servers.open]\ncommand = ["x"]\n'
        '[servers.team]\ncommand = ["x"]\nallow_users = ["bob"]\nallow_groups = ["sales"]\n'
        '[servers.off]\nenabled = false\ncommand = ["x"]\n'
    )
    cfg = render.load_config(path)
    conf = render.policy(cfg.enabled_servers())
    assert [s["name"] for s in conf["servers"]] == ["open", "team"]
    rules = {(tuple(r["servers"]), json.dumps(r.get("when"), sort_keys=True)) for r in conf["rules"]}
    assert rules == {
        (("open",), "null"),
        (("team",), json.dumps({"users": ["bob"]})),
        (("team",), json.dumps({"groups": ["sales"]})),
    }
    assert all(r["effect"] == "allow" for r in conf["rules"])
    assert run.bridge_ports(cfg) == {"open": 8101, "team": 8102}


def test_kubernetes_sidecar_config_has_the_resources_envoy_protects():
    import tomllib

    cfg = render.load_config(ROOT / "mcpgw.toml")
    sidecar = tomllib.loads((ROOT / "deploy/k8s/base/sidecar.toml").read_text())
    assert sidecar["issuer"] == cfg.k8s_public_url
    expected = render.resources(cfg.k8s_public_url, cfg.enabled_servers())
    got = [{**r, "scopes_required": r.get("scopes_required", [])} for r in sidecar["resources"]]
    assert got == expected
    k8s_envoy = yaml.safe_load(render.K8S_ENVOY.read_text())
    jwt = json.loads(render.wasm_filters(k8s_envoy)[0]["configuration"]["value"])
    assert jwt["issuer"] == sidecar["issuer"]
    assert [r["canonical_url"] for r in jwt["resources"]] == [r["canonical_url"] for r in expected]
    policy = json.loads(render.wasm_filters(k8s_envoy)[1]["configuration"]["value"])
    assert sidecar["policy"] == {k: policy[k] for k in ("servers", "rules")}, "/verify must enforce Envoy's policy"
