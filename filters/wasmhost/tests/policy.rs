//! The policy table (core/tests/fixtures/policy_table.json, the same one core's unit tests run)
//! through the built module `dist/mcpgw_filter_policy.wasm` (`make wasm`) in the wasmtime host,
//! plus what only the filter does: list-response rewriting, stats, access-log properties, the
//! route header, body buffering limits, configuration refusal.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // reason: a test fails by panicking

use std::sync::OnceLock;

use mcpgw_wasmhost::{Exchange, Plugin, Shared, Vm};
use serde_json::{Value, json};

const TABLE: &str = include_str!("../../../core/tests/fixtures/policy_table.json");

/// The module, compiled once per test binary.
fn plugin() -> &'static Plugin {
    static PLUGIN: OnceLock<Plugin> = OnceLock::new();
    PLUGIN.get_or_init(|| {
        let path = mcpgw_testkit::dist_wasm("mcpgw_filter_policy.wasm");
        Plugin::load(&path)
            .unwrap_or_else(|e| panic!("cannot load {} (run `make wasm`): {e}", path.display()))
    })
}

fn table() -> Value {
    serde_json::from_str(TABLE).unwrap()
}

fn vm_with(shared: &Shared, policy: &Value) -> Vm {
    let vm = Vm::start(plugin(), shared, policy.to_string().as_bytes()).unwrap();
    assert!(vm.configured, "configuration refused: {:?}", vm.logs());
    vm
}

/// Request headers as Envoy hands them to the filter, identity as the JWT filter set it.
fn headers(
    t: &Value,
    caller: &str,
    method: &str,
    host: &str,
    path: &str,
    extra: &Value,
    body: &[u8],
) -> Vec<(String, String)> {
    let mut h = vec![
        (":method".to_owned(), method.to_owned()),
        (":path".to_owned(), path.to_owned()),
        (":authority".to_owned(), host.to_owned()),
        ("content-type".to_owned(), "application/json".to_owned()),
    ];
    if !body.is_empty() {
        h.push(("content-length".to_owned(), body.len().to_string()));
    }
    for source in [&t["callers"][caller], extra] {
        if let Some(map) = source.as_object() {
            h.extend(
                map.iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_owned())),
            );
        }
    }
    h
}

fn send(vm: &mut Vm, headers: &[(String, String)], body: &[u8]) -> Exchange {
    let h: Vec<(&str, &str)> = headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    vm.request(&h, body).unwrap()
}

fn body_of(case: &Value) -> Vec<u8> {
    match (&case["body"], case["body_raw"].as_str()) {
        (Value::Null, Some(raw)) => raw.as_bytes().to_vec(),
        (Value::Null, None) => Vec::new(),
        (body, _) => body.to_string().into_bytes(),
    }
}

#[test]
fn every_case_of_the_table_decides_as_written_in_the_module() {
    let t = table();
    let shared = Shared::default();
    let mut vm = vm_with(&shared, &t["policy"]);
    let cases = t["cases"].as_array().unwrap();
    for case in cases {
        let name = case["name"].as_str().unwrap();
        let body = body_of(case);
        let h = headers(
            &t,
            case["caller"].as_str().unwrap(),
            case["method"].as_str().unwrap(),
            case["host"].as_str().unwrap(),
            case["path"].as_str().unwrap(),
            &case["headers"],
            &body,
        );
        let ex = send(&mut vm, &h, &body);
        let status = ex.local.as_ref().map_or(200, |l| l.status);
        assert_eq!(
            u64::from(status),
            case["status"].as_u64().unwrap(),
            "{name}: {ex:?}\n{:?}",
            vm.logs()
        );
        assert_eq!(
            vm.property(ex.context_id, "mcpgw_policy.rule").as_deref(),
            case["rule"].as_str(),
            "{name}: rule"
        );
        match &ex.local {
            None => {
                assert!(!ex.held, "{name}: allowed request is still held");
                assert_eq!(ex.body, body, "{name}: body reaches the upstream unchanged");
                assert!(
                    ex.header("x-mcpgw-server").is_some(),
                    "{name}: route header"
                );
                assert_eq!(
                    vm.property(ex.context_id, "mcpgw_policy.decision")
                        .as_deref(),
                    Some("allowed")
                );
            }
            Some(local) => {
                assert_eq!(
                    local.header("content-type"),
                    Some("application/json"),
                    "{name}"
                );
                let error: Value = serde_json::from_slice(&local.body).unwrap();
                let text = error.to_string();
                assert!(
                    !text.contains("no-env") && !text.contains("admins"),
                    "{name}: error names a rule: {text}"
                );
                if let Some(code) = case["code"].as_i64() {
                    assert_eq!(error["error"]["code"], json!(code), "{name}");
                }
                if let Some(expected) = case["batch_errors"].as_array() {
                    let got: Vec<Value> = error
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|e| json!([e["id"], e["error"]["message"]]))
                        .collect();
                    assert_eq!(&got, expected, "{name}");
                }
            }
        }
        vm.finish(ex.context_id).unwrap();
    }
    let allowed: u64 = shared
        .metrics()
        .iter()
        .filter(|m| m.name.starts_with("mcpgw_policy.allowed."))
        .map(|m| m.value)
        .sum();
    let expected = cases.iter().filter(|c| c["status"] == 200).count() as u64;
    assert_eq!(
        allowed,
        expected,
        "allowed counters: {:?}",
        shared.metrics()
    );
    let decisions: u64 = shared.metrics().iter().map(|m| m.value).sum();
    assert_eq!(
        decisions,
        cases.len() as u64,
        "one counted decision per request: {:?}",
        shared.metrics()
    );
    assert!(
        shared
            .metric("mcpgw_policy.denied.everything.tools_call")
            .unwrap_or(0)
            > 0
    );
    assert_eq!(
        shared.metric("mcpgw_policy.too_large.everything.http_post"),
        Some(1),
        "{:?}",
        shared.metrics()
    );
}

fn list_response(kind: &str, id: i64, entries: &[Value]) -> Value {
    let key = if kind == "resources" { "uri" } else { "name" };
    let items: Vec<Value> = entries
        .iter()
        .map(|e| json!({ key: e, "description": "d" }))
        .collect();
    json!({"jsonrpc": "2.0", "id": id, "result": { kind: items }})
}

fn visible(kind: &str, body: &Value) -> Vec<Value> {
    let key = if kind == "resources" { "uri" } else { "name" };
    body["result"][kind]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e[key].clone())
        .collect()
}

fn list_request(vm: &mut Vm, t: &Value, case: &Value) -> Exchange {
    let kind = case["kind"].as_str().unwrap();
    let body = json!({"jsonrpc": "2.0", "id": 7, "method": format!("{kind}/list")})
        .to_string()
        .into_bytes();
    let path = format!("/{}/mcp", case["server"].as_str().unwrap());
    let h = headers(
        t,
        case["caller"].as_str().unwrap(),
        "POST",
        "gw.local",
        &path,
        &Value::Null,
        &body,
    );
    let ex = send(vm, &h, &body);
    assert!(
        ex.local.is_none(),
        "{}: list request refused: {ex:?}",
        case["name"]
    );
    assert_eq!(
        ex.header("accept-encoding"),
        None,
        "compression is refused for lists"
    );
    ex
}

#[test]
fn list_responses_show_only_what_the_caller_may_call_in_json_and_sse() {
    let t = table();
    let shared = Shared::default();
    let mut vm = vm_with(&shared, &t["policy"]);
    for case in t["lists"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let kind = case["kind"].as_str().unwrap();
        let upstream = list_response(kind, 7, case["entries"].as_array().unwrap());
        let expected = case["visible"].as_array().unwrap();

        let ex = list_request(&mut vm, &t, case);
        let json_body = upstream.to_string();
        let len = json_body.len().to_string();
        let r = vm
            .respond(
                &ex,
                &[
                    (":status", "200"),
                    ("content-type", "application/json"),
                    ("content-length", &len),
                ],
                json_body.as_bytes(),
            )
            .unwrap();
        assert!(r.local.is_none() && !r.held, "{name}: {r:?}");
        assert!(
            r.headers.iter().all(|(k, _)| k != "content-length"),
            "{name}: stale content-length"
        );
        let got: Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(&visible(kind, &got), expected, "{name} (JSON)");

        let ex = list_request(&mut vm, &t, case);
        let sse = format!(
            "event: message\ndata: {}\n\nevent: message\ndata: {upstream}\n\n",
            json!({"jsonrpc": "2.0", "method": "notifications/message", "params": {"level": "info", "data": "x"}})
        );
        let r = vm
            .respond(
                &ex,
                &[(":status", "200"), ("content-type", "text/event-stream")],
                sse.as_bytes(),
            )
            .unwrap();
        let text = String::from_utf8(r.body).unwrap();
        let events: Vec<Value> = text
            .lines()
            .filter_map(|l| l.strip_prefix("data: "))
            .map(|d| serde_json::from_str(d).unwrap())
            .collect();
        assert_eq!(events.len(), 2, "{name}: {text}");
        assert_eq!(
            events[0]["method"], "notifications/message",
            "{name}: other events pass"
        );
        assert_eq!(&visible(kind, &events[1]), expected, "{name} (SSE)");
    }
    assert!(
        shared
            .metric("mcpgw_policy.list_entries_hidden.everything")
            .unwrap_or(0)
            > 0
    );
}

#[test]
fn a_list_response_that_cannot_be_filtered_is_replaced_by_an_error() {
    let t = table();
    let mut vm = vm_with(&Shared::default(), &t["policy"]);
    let case = &t["lists"][0];
    let ex = list_request(&mut vm, &t, case);
    let r = vm
        .respond(
            &ex,
            &[(":status", "200"), ("content-type", "application/json")],
            b"{\"jsonrpc\":",
        )
        .unwrap();
    let error: Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(error["error"]["code"], -32603, "{r:?}");
    let limit = t["policy"]["limits"]["max_response_bytes"]
        .as_u64()
        .unwrap() as usize;
    let ex = list_request(&mut vm, &t, case);
    let huge = format!("{{\"pad\":\"{}\"}}", "x".repeat(limit));
    let r = vm
        .respond(
            &ex,
            &[(":status", "200"), ("content-type", "application/json")],
            huge.as_bytes(),
        )
        .unwrap();
    let error: Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(
        error["error"]["code"], -32603,
        "an oversized list response is not passed unfiltered"
    );
}

#[test]
fn a_chunked_body_is_buffered_and_refused_past_the_limit() {
    let t = table();
    let mut vm = vm_with(&Shared::default(), &t["policy"]);
    vm.chunk_size = 512;
    let limit = t["policy"]["limits"]["max_body_bytes"].as_u64().unwrap() as usize;
    let call = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
        "params": {"name": "echo", "arguments": {"message": "m".repeat(limit / 2)}}})
    .to_string()
    .into_bytes();
    // No Content-Length: the body arrives in chunks and is buffered until the end.
    let h = headers(
        &t,
        "alice",
        "POST",
        "gw.local",
        "/everything/mcp",
        &Value::Null,
        &[],
    );
    let ex = send(&mut vm, &h, &call);
    assert!(ex.local.is_none() && !ex.held, "{ex:?}");
    assert_eq!(ex.body, call);
    let big = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
        "params": {"name": "echo", "arguments": {"message": "m".repeat(limit)}}})
    .to_string()
    .into_bytes();
    let ex = send(&mut vm, &h, &big);
    assert_eq!(ex.local.as_ref().map(|l| l.status), Some(413), "{ex:?}");
}

#[test]
fn the_route_header_names_the_matched_server_and_replaces_a_client_value() {
    let t = table();
    let mut vm = vm_with(&Shared::default(), &t["policy"]);
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": "ping"})
        .to_string()
        .into_bytes();
    let extra = json!({"x-mcpgw-server": "time"});
    let h = headers(
        &t,
        "alice",
        "POST",
        "gw.local",
        "/memory/mcp",
        &extra,
        &body,
    );
    let ex = send(&mut vm, &h, &body);
    let values: Vec<&str> = ex
        .headers
        .iter()
        .filter(|(k, _)| k == "x-mcpgw-server")
        .map(|(_, v)| v.as_str())
        .collect();
    assert_eq!(values, ["memory"]);
    assert_eq!(
        vm.property(ex.context_id, "mcpgw_policy.server").as_deref(),
        Some("memory")
    );
    assert_eq!(
        vm.property(ex.context_id, "mcpgw_policy.method").as_deref(),
        Some("ping")
    );
}

#[test]
fn an_invalid_policy_is_refused_with_every_problem_logged() {
    let bad = json!({"servers": [{"name": "a", "path_prefix": "a"}], "rules": [{"effect": "allow", "condition": "user =="}]});
    let vm = Vm::start(plugin(), &Shared::default(), bad.to_string().as_bytes()).unwrap();
    assert!(!vm.configured);
    let logs: Vec<&str> = vm.logs().iter().map(|(_, m)| m.as_str()).collect();
    let error = logs
        .iter()
        .find(|m| m.contains("invalid policy"))
        .unwrap_or_else(|| panic!("{logs:?}"));
    assert!(
        error.contains("servers[0].path_prefix") && error.contains("rules[0].condition"),
        "{error}"
    );
    let vm = Vm::start(plugin(), &Shared::default(), b"not json").unwrap();
    assert!(!vm.configured);
}
