//! The policy table (core/tests/fixtures/policy_table.json) through `Policy::authorize`; the same
//! table runs through the built filter in the wasmtime host (wasmhost/tests).

use serde_json::{Value, json};

use super::*;

const TABLE: &str = include_str!("../../tests/fixtures/policy_table.json");

fn table() -> Value {
    serde_json::from_str(TABLE).unwrap()
}

fn caller<'a>(table: &'a Value, name: &str) -> Caller<'a> {
    let headers = &table["callers"][name];
    Caller::from_headers(|h| headers[h].as_str()).unwrap()
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
            protocol_version: h["mcp-protocol-version"].as_str(),
            method: h["mcp-method"].as_str(),
            name: h["mcp-name"].as_str(),
        };
        let caller = caller(&t, case["caller"].as_str().unwrap());
        let body = body_of(case);
        let out = policy.authorize(&HttpRequest {
            server: policy.server_for(case["host"].as_str(), case["path"].as_str().unwrap()),
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
        assert_eq!(out.rule, case["rule"].as_str(), "{name}: deciding rule");
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
            policy.passes_unchecked(policy.server_for(Some("gw"), path)),
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
        assert_eq!(p.server_for(Some(host), path), want, "{host}{path}");
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
fn caller_from_headers_decodes_each_value_exactly() {
    let headers = [
        ("x-mcpgw-subject", "github:1"),
        ("x-mcpgw-groups", "contractors%2Cadmins,a/b,admins%C2%A0"),
        ("x-mcpgw-scopes", "x y"),
        ("x-mcpgw-user", ""),
    ];
    let c =
        Caller::from_headers(|h| headers.iter().find(|(k, _)| *k == h).map(|(_, v)| *v)).unwrap();
    assert_eq!(c.subject.as_deref(), Some("github:1"));
    assert_eq!(c.user, None);
    assert_eq!(
        c.groups.iter().collect::<Vec<_>>(),
        ["contractors,admins", "a/b", "admins\u{a0}"]
    );
    assert!(!c.groups.contains("admins"));
    assert_eq!(c.scopes.iter().collect::<Vec<_>>(), ["x", "y"]);
}

/// What the JWT filter cannot have written is refused, never read another way.
#[test]
fn malformed_identity_headers_are_refused() {
    for (name, value) in [
        ("x-mcpgw-user", "ad\u{0}min"),
        ("x-mcpgw-user", "admin\t"),
        ("x-mcpgw-user", "admin "),
        ("x-mcpgw-user", "adm\u{e9}"),
        ("x-mcpgw-user", "a%2"),
        ("x-mcpgw-user", "a%zz"),
        ("x-mcpgw-user", "%41dmin"),
        ("x-mcpgw-user", "a%c2%a0"),
        ("x-mcpgw-user", "%FF"),
        ("x-mcpgw-groups", "admins,a b"),
        ("x-mcpgw-groups", "admins,%"),
        ("x-mcpgw-scopes", "x,y"),
    ] {
        let got = Caller::from_headers(|h| (h == name).then_some(value));
        assert_eq!(
            got.map(|_| ()),
            Err(MalformedIdentity(
                CALLER_HEADERS.into_iter().find(|h| *h == name).unwrap()
            )),
            "{name}: {value:?}"
        );
    }
}

/// A policy that exercises every index path: method globs, server globs, rules for all servers,
/// conditions over each variable (some erroring, some reading `name`, some not), anonymous rules.
fn index_policy() -> Policy {
    Policy::from_json(
        json!({
            "servers": [
                {"name": "everything", "path_prefix": "/everything/"},
                {"name": "memory", "path_prefix": "/memory/"},
                {"name": "mem2", "path_prefix": "/mem2/"}
            ],
            "rules": [
                {"name": "proto", "effect": "allow", "methods": ["initialize", "ping", "notifications/*", "*/list"]},
                {"name": "mem-glob", "effect": "allow", "servers": ["mem*"], "methods": ["tools/*"], "names": ["read_*"]},
                {"name": "any-method", "effect": "allow", "servers": ["everything"], "names": ["echo", "add"], "when": {"scopes": ["mcp:tools"]}},
                {"name": "deny-glob", "effect": "deny", "methods": ["*/call"], "names": ["*danger*"]},
                {"name": "admins", "effect": "allow", "when": {"groups": ["acme/admins"]}},
                {"name": "long", "effect": "deny", "methods": ["tools/call"], "names": ["long*"], "condition": "!(\"acme/admins\" in groups) || arguments.duration > 60"},
                {"name": "by-name", "effect": "deny", "methods": ["tools/call", "prompts/get"], "condition": "name.startsWith(\"admin_\") && !(\"acme/admins\" in groups)"},
                {"name": "erroring-deny", "effect": "deny", "servers": ["memory"], "methods": ["tools/call"], "condition": "arguments.missing > 1"},
                {"name": "erroring-allow", "effect": "allow", "servers": ["mem2"], "condition": "arguments.missing > 1"},
                {"name": "who", "effect": "allow", "condition": "user == \"alice\" && server == \"mem2\" && method == \"tools/call\" && subject != \"\" && email == \"\" && client_id == \"client-a\" && \"openid\" in scopes && size(arguments) < 3"},
                {"name": "anon-ping", "effect": "allow", "servers": ["memory"], "methods": ["ping", "http:GET"], "anonymous": true},
                {"name": "sized", "effect": "deny", "methods": ["tools/call"], "condition": "size(arguments) > 2"},
                {"name": "clients", "effect": "allow", "methods": ["prompts/get", "resources/read"], "names": ["*"], "when": {"client_ids": ["client-b"], "users": ["bob"], "subjects": ["github:2"]}}
            ]
        })
        .to_string()
        .as_bytes(),
    )
    .unwrap()
}

/// The decision as the policy defines it: every rule in order, every field checked, a deny
/// that matches wins, then the first allow; the CEL variables all bound up front, through
/// `cel::to_value`.
fn walk_every_rule(p: &Policy, req: &Request<'_>) -> Decision {
    let mut allow = None;
    for (i, rule) in p.rules.iter().enumerate() {
        let named = rule
            .names
            .as_ref()
            .is_none_or(|n| req.name.is_some_and(|s| any_match(n, s)));
        if !(any_match(&rule.servers, req.server)
            && any_match(&rule.methods, req.method)
            && named
            && rule.matches_caller(req.caller))
        {
            continue;
        }
        let matched = rule.condition.as_ref().is_none_or(|c| {
            let mut ctx = Context::default();
            let id = req.caller;
            let s = |v: &Option<Cow<'_, str>>| v.as_deref().unwrap_or_default().to_owned();
            let list = |l: List<'_>| l.iter().map(Cow::into_owned).collect::<Vec<_>>();
            ctx.add_variable_from_value("subject", s(&id.subject));
            ctx.add_variable_from_value("user", s(&id.user));
            ctx.add_variable_from_value("email", s(&id.email));
            ctx.add_variable_from_value("client_id", s(&id.client_id));
            ctx.add_variable_from_value("groups", list(id.groups));
            ctx.add_variable_from_value("scopes", list(id.scopes));
            ctx.add_variable_from_value("server", req.server.to_owned());
            ctx.add_variable_from_value("method", req.method.to_owned());
            ctx.add_variable_from_value("name", req.name.unwrap_or_default().to_owned());
            let arguments = req
                .arguments
                .and_then(|a| cel::to_value(a).ok())
                .filter(|v| matches!(v, CelValue::Map(_)))
                .unwrap_or_else(|| CelValue::Map(HashMap::<String, CelValue>::new().into()));
            ctx.add_variable_from_value("arguments", arguments);
            match c.program.execute(&ctx) {
                Ok(CelValue::Bool(b)) => b,
                _ => rule.effect == Effect::Deny,
            }
        });
        if matched {
            match rule.effect {
                Effect::Deny => {
                    return Decision {
                        allowed: false,
                        rule: Some(i),
                    };
                }
                Effect::Allow if allow.is_none() => allow = Some(i),
                Effect::Allow => {}
            }
        }
    }
    Decision {
        allowed: allow.is_some(),
        rule: allow,
    }
}

fn index_callers(t: &Value) -> Vec<Caller<'_>> {
    let mut callers: Vec<Caller> = ["alice", "bob", "eve", "anon"]
        .iter()
        .map(|n| caller(t, n))
        .collect();
    callers.push(Caller {
        subject: Some("github:2".into()),
        user: Some("bob".into()),
        client_id: Some("client-b".into()),
        ..Caller::default()
    });
    callers
}

const INDEX_NAMES: &[&str] = &[
    "echo",
    "add",
    "read_graph",
    "long_op",
    "admin_reset",
    "my_danger_tool",
    "other",
    "",
    "é",
];

#[test]
fn the_rule_index_decides_like_walking_every_rule() {
    let t = table();
    let policies = [index_policy(), {
        Policy::try_from(serde_json::from_value::<RawPolicy>(t["policy"].clone()).unwrap()).unwrap()
    }];
    let arguments = [
        None,
        Some(json!({})),
        Some(json!({"duration": 61})),
        Some(json!({"duration": -5, "a": [1, 2.5, null, true], "b": {"c": "d"}})),
        Some(json!("not an object")),
    ];
    let methods = [
        "initialize",
        "ping",
        "notifications/initialized",
        "tools/list",
        "prompts/list",
        "tools/call",
        "tools/other",
        "prompts/get",
        "resources/read",
        "resources/templates/list",
        "completion/complete",
        "http:GET",
        "http:DELETE",
        "response",
        "",
    ];
    let servers = ["everything", "memory", "mem2", "time", "unknown", ""];
    let mut checked = 0;
    for p in &policies {
        for caller in &index_callers(&t) {
            for server in servers {
                for method in methods {
                    for name in INDEX_NAMES.iter().map(|n| Some(*n)).chain([None]) {
                        for args in &arguments {
                            let req = Request {
                                caller,
                                server,
                                method,
                                name,
                                arguments: args.as_ref(),
                            };
                            assert_eq!(p.evaluate(&req), walk_every_rule(p, &req), "{req:?}");
                            checked += 1;
                        }
                    }
                }
            }
        }
    }
    assert!(checked > 10_000, "{checked}");
}

#[test]
fn the_rule_index_sorts_rules_by_server_and_method() {
    let p = index_policy();
    let idx = |names: &[&str]| -> Vec<usize> {
        names
            .iter()
            .map(|n| (0..p.rule_count()).find(|&i| p.rule_name(i) == *n).unwrap())
            .collect()
    };
    let memory = &p.index.servers["memory"];
    let methods: Vec<&str> = memory.by_method.keys().map(String::as_str).collect();
    assert_eq!(
        methods,
        [
            "http:GET",
            "initialize",
            "ping",
            "prompts/get",
            "resources/read",
            "tools/call"
        ]
    );
    assert_eq!(
        memory.by_method["tools/call"],
        Candidates::new(
            idx(&["deny-glob", "long", "by-name", "erroring-deny", "sized"]),
            idx(&["mem-glob", "admins", "who"]),
            p.rule_count()
        )
    );
    assert_eq!(
        memory.other_methods,
        Candidates::new(
            idx(&["deny-glob"]),
            idx(&["proto", "mem-glob", "admins", "who"]),
            p.rule_count()
        )
    );
    assert_eq!(
        p.index.servers["everything"].by_method["ping"],
        Candidates::new(
            vec![],
            idx(&["proto", "any-method", "admins", "who"]),
            p.rule_count()
        )
    );
    assert_eq!(p.index.all.deny.len() + p.index.all.allow.len(), 13);
    assert_eq!(
        p.index.lookup("unknown", "ping"),
        (
            &p.index.all,
            Unchecked {
                server: true,
                method: true
            }
        )
    );
    assert_eq!(
        p.index.lookup("memory", "tools/other").1,
        Unchecked {
            server: false,
            method: true
        }
    );
}

#[test]
fn a_list_view_sees_what_may_see_sees() {
    let t = table();
    let table_policy =
        Policy::try_from(serde_json::from_value::<RawPolicy>(t["policy"].clone()).unwrap())
            .unwrap();
    for p in [&index_policy(), &table_policy] {
        for caller in &index_callers(&t) {
            for server in ["everything", "memory", "mem2", "time", "unknown"] {
                for kind in [ListKind::Tools, ListKind::Prompts, ListKind::Resources] {
                    let mut view = p.list_view(caller, server, kind);
                    // Twice over, so the second pass reads the memoised conditions.
                    for name in INDEX_NAMES.iter().chain(INDEX_NAMES) {
                        assert_eq!(
                            view.may_see(name),
                            p.may_see(caller, server, kind, name),
                            "{caller:?} {server} {kind:?} {name}"
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn remembered_conditions_decide_as_fresh_ones_and_the_memory_stays_bounded() {
    let p = index_policy();
    let t = table();
    let bob = caller(&t, "bob");
    let ask = |name: &str| {
        p.evaluate(&Request {
            caller: &bob,
            server: "everything",
            method: "prompts/get",
            name: Some(name),
            arguments: None,
        })
    };
    // `by-name` reads name and groups: first run, then from memory.
    let first = (ask("admin_reset"), ask("simple"));
    assert_eq!((ask("admin_reset"), ask("simple")), first);
    assert_eq!(
        first.0,
        walk_every_rule(
            &p,
            &Request {
                caller: &bob,
                server: "everything",
                method: "prompts/get",
                name: Some("admin_reset"),
                arguments: None,
            }
        )
    );
    for i in 0..3 * MEMO_ENTRIES {
        ask(&format!("tool{i}"));
        assert!(p.memo.len() <= MEMO_ENTRIES);
    }
    // Conditions over `arguments` are never kept.
    let before = p.memo.len();
    let args = json!({"duration": 61});
    p.evaluate(&Request {
        caller: &bob,
        server: "everything",
        method: "tools/call",
        name: Some("long_op"),
        arguments: Some(&args),
    });
    assert!(p.memo.len() <= before + 2, "{before} {}", p.memo.len());
}

#[test]
fn condition_variables_are_named_in_bit_order() {
    assert_eq!(Var::ALL.len(), CONDITION_VARIABLES.len());
    for (i, (v, name)) in Var::ALL.into_iter().zip(CONDITION_VARIABLES).enumerate() {
        assert_eq!(Var::of(name), Some(v), "{name}");
        assert_eq!(v.bit(), 1 << i, "{name}");
        assert_eq!(format!("{v:?}").to_lowercase(), name.replace('_', ""));
    }
}

/// Every value an identity can hold reaches the policy exactly: encoded by
/// [`Identity::headers`], decoded by [`Caller::from_headers`].
#[test]
fn identity_values_round_trip_exactly() {
    let hostile = [
        "admin",
        "contractors,admins",
        "cn=x,ou=y,dc=corp",
        "admins\u{a0}",
        "\u{3000}admins",
        "admins\u{2028}",
        "%41dmin",
        "a%2Cb",
        "jos\u{e9} ",
        " lead",
        "\u{202e}nimda",
    ];
    let identity = crate::identity::Identity {
        subject: "oidc:x,y %".into(),
        user: Some(hostile[3].into()),
        email: Some("mallory@evil.test @corp.test".into()),
        groups: hostile.iter().map(|g| g.to_string()).collect(),
        client_id: "https://app.example/c,1".into(),
        scopes: vec!["mcp:tools".into(), "a%b".into()],
        resource: "http://gw/everything/mcp".into(),
        jti: "j".into(),
        expires_at: 1,
    };
    let headers = identity.headers();
    for (_, v) in &headers {
        assert!(
            v.bytes().all(|b| b.is_ascii_graphic() || b == b' '),
            "{v:?}"
        );
    }
    let get = |h: &str| {
        headers
            .iter()
            .find(|(k, _)| *k == h)
            .map(|(_, v)| v.as_ref())
    };
    let c = Caller::from_headers(get).unwrap();
    assert_eq!(c.subject.as_deref(), Some(identity.subject.as_str()));
    assert_eq!(c.user.as_deref(), identity.user.as_deref());
    assert_eq!(c.email.as_deref(), identity.email.as_deref());
    assert_eq!(c.client_id.as_deref(), Some(identity.client_id.as_str()));
    assert_eq!(c.groups.iter().collect::<Vec<_>>(), identity.groups);
    assert_eq!(c.scopes.iter().collect::<Vec<_>>(), identity.scopes);
    assert!(!c.groups.contains("admins") && !c.groups.contains("contractors"));
}

#[test]
fn comprehension_variables_shadow_the_condition_variables() {
    let p = Policy::from_json(
        json!({
            "servers": [{"name": "s", "path_prefix": "/"}],
            "rules": [
                {"name": "shadow", "effect": "allow", "methods": ["tools/call"],
                 "condition": "groups.exists(name, name == \"acme\") && name != \"acme\" && scopes.all(user, user != user + \"x\")"},
                {"name": "entry", "effect": "deny", "methods": ["tools/call"],
                 "condition": "[name].exists(user, user == \"acme\") || user == \"mallory\""}
            ]
        })
        .to_string()
        .as_bytes(),
    )
    .unwrap();
    let t = table();
    for caller in &index_callers(&t) {
        for name in ["acme", "echo", ""] {
            let req = Request {
                caller,
                server: "s",
                method: "tools/call",
                name: Some(name),
                arguments: None,
            };
            let d = p.evaluate(&req);
            assert_eq!(d, walk_every_rule(&p, &req), "{caller:?} {name}");
            let mut view = p.list_view(caller, "s", ListKind::Tools);
            assert_eq!(view.may_see(name), d.allowed, "{caller:?} {name}");
        }
    }
}
