//! The policy table (core/tests/fixtures/policy_table.json) through `Policy::authorize`; the same
//! table runs through the built filter in the wasmtime host (wasmhost/tests).

use serde_json::{Value, json};

use super::*;

const TABLE: &str = include_str!("../tests/fixtures/policy_table.json");

fn table() -> Value {
    serde_json::from_str(TABLE).unwrap()
}

fn caller(table: &Value, name: &str) -> Caller {
    let headers = &table["callers"][name];
    Caller::from_headers(|h| headers[h].as_str().map(str::to_owned))
}

fn body_of(case: &Value) -> Vec<u8> {
    match (&case["body"], case["body_raw"].as_str()) {
        (Value::Null, Some(raw)) => raw.as_bytes().to_vec(),
        (Value::Null, None) => Vec::new(),
        (body, _) => body.to_string().into_bytes(),
    }
}

#[test]
fn every_case_of_the_table_decides_as_written() {
    let t = table();
    let policy =
        Policy::try_from(serde_json::from_value::<RawPolicy>(t["policy"].clone()).unwrap())
            .unwrap();
    let cases = t["cases"].as_array().unwrap();
    assert!(cases.len() > 30);
    for case in cases {
        let name = case["name"].as_str().unwrap();
        let h = &case["headers"];
        let mcp = McpHeaders {
            protocol_version: h["mcp-protocol-version"].as_str().map(str::to_owned),
            method: h["mcp-method"].as_str().map(str::to_owned),
            name: h["mcp-name"].as_str().map(str::to_owned),
        };
        let caller = caller(&t, case["caller"].as_str().unwrap());
        let body = body_of(case);
        let out = policy.authorize(&HttpRequest {
            host: case["host"].as_str().unwrap(),
            path: case["path"].as_str().unwrap(),
            http_method: case["method"].as_str().unwrap(),
            mcp: &mcp,
            caller: &caller,
            body: &body,
        });
        let status = out.refusal.as_ref().map_or(200, |r| r.1);
        assert_eq!(
            status,
            case["status"].as_u64().unwrap() as u32,
            "{name}: {out:?}"
        );
        assert_eq!(
            out.rule.as_deref(),
            case["rule"].as_str(),
            "{name}: deciding rule"
        );
        if let Some((_, _, body)) = &out.refusal {
            let body: Value = serde_json::from_slice(body).unwrap();
            let text = body.to_string();
            assert!(
                !text.contains("no-env") && !text.contains("admins"),
                "{name}: error names a rule: {text}"
            );
            if let Some(code) = case["code"].as_i64() {
                assert_eq!(body["error"]["code"], json!(code), "{name}: {body}");
            }
            if let Some(expected) = case["batch_errors"].as_array() {
                let got: Vec<Value> = body
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|e| json!([e["id"], e["error"]["message"]]))
                    .collect();
                assert_eq!(&got, expected, "{name}");
            }
        }
    }
}

#[test]
fn every_list_case_shows_only_what_the_caller_may_call() {
    let t = table();
    let policy =
        Policy::try_from(serde_json::from_value::<RawPolicy>(t["policy"].clone()).unwrap())
            .unwrap();
    for case in t["lists"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let caller = caller(&t, case["caller"].as_str().unwrap());
        let kind = match case["kind"].as_str().unwrap() {
            "tools" => ListKind::Tools,
            "prompts" => ListKind::Prompts,
            _ => ListKind::Resources,
        };
        let server = case["server"].as_str().unwrap();
        let visible: Vec<&str> = case["entries"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e.as_str().unwrap())
            .filter(|e| policy.may_see(&caller, server, kind, e))
            .collect();
        let expected: Vec<&str> = case["visible"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e.as_str().unwrap())
            .collect();
        assert_eq!(visible, expected, "{name}");
    }
}

fn policy_errors(json: Value) -> Vec<String> {
    Policy::from_json(json.to_string().as_bytes())
        .unwrap_err()
        .0
}

#[test]
fn reports_every_config_problem_with_its_field_path() {
    let errors = policy_errors(json!({
        "servers": [
            {"name": "a", "path_prefix": "a/"},
            {"name": "a", "path_prefix": "/a/"}
        ],
        "rules": [
            {"effect": "allow", "servers": ["b"]},
            {"effect": "deny", "methods": []},
            {"effect": "allow", "condition": "secret == 1"},
            {"effect": "allow", "condition": "user =="},
            {"effect": "allow", "when": {"groups": []}}
        ],
        "limits": {"max_batch": 0}
    }));
    let expected = [
        "servers[1].name: `a` is defined twice",
        "servers[0].path_prefix: must start with `/`",
        "rules[0].servers[0]: no server is named `b`",
        "rules[1].methods: must not be empty (omit it to match any)",
        "rules[2].condition: unknown variable `secret`",
        "rules[3].condition:",
        "rules[4].when.groups: must not be empty (omit it to match any)",
        "limits.max_batch: must be positive",
    ];
    for e in expected {
        assert!(
            errors.iter().any(|x| x.starts_with(e)),
            "missing {e:?} in {errors:#?}"
        );
    }
}

#[test]
fn rejects_unknown_fields_and_effects() {
    let e = policy_errors(
        json!({"servers": [{"name": "a", "path_prefix": "/"}], "rules": [{"effect": "permit"}]}),
    );
    assert!(e[0].contains("permit"), "{e:?}");
    let e = policy_errors(json!({"servers": [{"name": "a", "path_prefix": "/", "tls": true}]}));
    assert!(e[0].contains("tls"), "{e:?}");
}

#[test]
fn an_empty_rule_list_denies_everything() {
    let p = Policy::from_json(br#"{"servers": [{"name": "a", "path_prefix": "/"}]}"#).unwrap();
    let caller = Caller {
        subject: Some("s".into()),
        ..Caller::default()
    };
    let d = p.evaluate(&Request {
        caller: &caller,
        server: "a",
        method: "ping",
        name: None,
        arguments: None,
    });
    assert_eq!(
        d,
        Decision {
            allowed: false,
            rule: None
        }
    );
}

#[test]
fn paths_outside_every_server_pass_only_when_configured() {
    let deny = Policy::from_json(br#"{"servers": [{"name": "a", "path_prefix": "/a/"}]}"#).unwrap();
    let pass = Policy::from_json(
        br#"{"servers": [{"name": "a", "path_prefix": "/a/"}], "other_paths": "pass"}"#,
    )
    .unwrap();
    let cases = [
        (&deny, "/token", false),
        (&pass, "/token", true),
        (&pass, "/a/mcp", false),
        (&deny, "/a/mcp", false),
    ];
    for (policy, path, want) in cases {
        assert_eq!(
            policy.passes_unchecked("gw", path),
            want,
            "{path}: {:?}",
            policy.other_paths
        );
    }
    let e = policy_errors(
        json!({"servers": [{"name": "a", "path_prefix": "/"}], "other_paths": "allow"}),
    );
    assert!(e[0].contains("allow"), "{e:?}");
}

#[test]
fn server_matching_prefers_longest_prefix_and_ignores_the_port() {
    let p = Policy::from_json(
        br#"{"servers": [
            {"name": "root", "path_prefix": "/"},
            {"name": "deep", "path_prefix": "/a/b/"},
            {"name": "hosted", "host": "Mcp.Example", "path_prefix": "/a/"}
        ]}"#,
    )
    .unwrap();
    let cases = [
        ("x", "/a/b/mcp", Some("deep")),
        ("mcp.example:443", "/a/mcp", Some("hosted")),
        ("other", "/a/mcp", Some("root")),
        ("mcp.example", "/z", Some("root")),
    ];
    for (host, path, want) in cases {
        assert_eq!(p.server_for(host, path), want, "{host}{path}");
    }
}

#[test]
fn globs_match_prefixes_suffixes_and_infixes() {
    let cases = [
        ("*", "", true),
        ("read_*", "read_graph", true),
        ("read_*", "xread_graph", false),
        ("*_nodes", "search_nodes", true),
        ("a*b*c", "aXbYc", true),
        ("a*b*c", "acb", false),
        ("ab*ba", "aba", false),
        ("exact", "exact", true),
        ("exact", "exactly", false),
    ];
    for (pattern, s, want) in cases {
        assert_eq!(Glob::new(pattern).matches(s), want, "{pattern} ~ {s}");
    }
}

#[test]
fn caller_from_headers_splits_lists_and_drops_empty_values() {
    let headers = [
        ("x-mcpgw-subject", "github:1"),
        ("x-mcpgw-groups", "a, a/b,,"),
        ("x-mcpgw-scopes", "x  y"),
        ("x-mcpgw-user", ""),
    ];
    let c = Caller::from_headers(|h| {
        headers
            .iter()
            .find(|(k, _)| *k == h)
            .map(|(_, v)| (*v).to_owned())
    });
    assert_eq!(
        c,
        Caller {
            subject: Some("github:1".into()),
            groups: vec!["a".into(), "a/b".into()],
            scopes: vec!["x".into(), "y".into()],
            ..Caller::default()
        }
    );
}
