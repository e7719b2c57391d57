//! The streamable-HTTP transport rules, checked against the built bridge over the echo child:
//! session and protocol-version headers, Origin, Accept, 202 for notifications and responses,
//! the 2026-07-28 header checks, the session maximum, and DELETE.

mod common;

use std::time::Duration;

use common::*;
use serde_json::json;

#[tokio::test]
async fn answers_a_request_in_a_session_with_json() {
    let b = Bridge::echo(&[], &[]);
    let mut c = b.client().await;
    let s = c.initialize(VERSION).await;
    assert!(s.len() >= 16 && s.bytes().all(|x| (0x21..=0x7e).contains(&x)));
    let r = c
        .post(
            &s,
            &request(
                7,
                "tools/call",
                json!({"name": "echo", "arguments": {"x": 1}}),
            ),
        )
        .await;
    assert_eq!(r.status, 200);
    assert!(
        r.header("content-type")
            .is_some_and(|c| c.starts_with("application/json"))
    );
    let v = r.json();
    assert_eq!(v["id"], 7);
    assert_eq!(v["result"]["content"][0]["text"], r#"{"x":1}"#);
}

#[tokio::test]
async fn unknown_session_is_404() {
    let b = Bridge::echo(&[], &[]);
    let mut c = b.client().await;
    let r = c
        .post("0123456789abcdef", &request(1, "tools/list", json!({})))
        .await;
    assert_eq!(r.status, 404);
    assert_eq!(c.get("nope", &[]).await.status, 404);
}

#[tokio::test]
async fn missing_session_is_400() {
    let b = Bridge::echo(&[], &[]);
    let mut c = b.client().await;
    let mut h = base_headers();
    h.push(("mcp-protocol-version", VERSION));
    let r = c
        .call("POST", &h, Some(&request(1, "tools/list", json!({}))))
        .await;
    assert_eq!(r.status, 400);
    assert!(r.error_message().contains("Mcp-Session-Id"));
}

#[tokio::test]
async fn unsupported_protocol_version_is_400() {
    let b = Bridge::echo(&[], &[]);
    let mut c = b.client().await;
    let s = c.initialize(VERSION).await;
    let mut h = base_headers();
    h.push(("mcp-session-id", &s));
    h.push(("mcp-protocol-version", "1999-01-01"));
    let r = c
        .call("POST", &h, Some(&request(1, "tools/list", json!({}))))
        .await;
    assert_eq!(r.status, 400);
    assert!(r.error_message().contains("1999-01-01"));
    // Without the header the session still answers (absent means 2025-03-26).
    let mut h = base_headers();
    h.push(("mcp-session-id", &s));
    let ok = c
        .call("POST", &h, Some(&request(2, "tools/list", json!({}))))
        .await;
    assert_eq!(ok.status, 200);
}

#[tokio::test]
async fn foreign_origin_is_403_unless_allowed() {
    let b = Bridge::echo(&["--allowed-origins", "https://app.example"], &[]);
    let mut c = b.client().await;
    let init = initialize_msg(VERSION);
    for (origin, status) in [
        ("https://evil.example", 403),
        ("http://localhost.evil.example", 403),
        ("http://localhost:6274", 200),
        ("http://127.0.0.1", 200),
        ("https://app.example", 200),
    ] {
        let mut h = base_headers();
        h.push(("origin", origin));
        let r = c.call("POST", &h, Some(&init)).await;
        assert_eq!(r.status, status, "origin {origin}");
    }
    let s = c.initialize(VERSION).await;
    let get = c.get(&s, &[("origin", "https://evil.example")]).await;
    assert_eq!(get.status, 403);
}

#[tokio::test]
async fn accept_must_list_both_types_for_post_and_sse_for_get() {
    let b = Bridge::echo(&[], &[]);
    let mut c = b.client().await;
    let init = initialize_msg(VERSION);
    for accept in ["application/json", "text/event-stream", "text/html"] {
        let r = c
            .call(
                "POST",
                &[("accept", accept), ("content-type", "application/json")],
                Some(&init),
            )
            .await;
        assert_eq!(r.status, 406, "accept {accept}");
    }
    let r = c
        .call(
            "POST",
            &[("accept", "*/*"), ("content-type", "application/json")],
            Some(&init),
        )
        .await;
    assert_eq!(r.status, 200);
    let s = c.initialize(VERSION).await;
    let get = c
        .call(
            "GET",
            &[("accept", "application/json"), ("mcp-session-id", &s)],
            None,
        )
        .await;
    assert_eq!(get.status, 406);
    let ct = c
        .call(
            "POST",
            &[
                ("accept", "application/json, text/event-stream"),
                ("content-type", "text/plain"),
            ],
            Some(&init),
        )
        .await;
    assert_eq!(ct.status, 415);
}

#[tokio::test]
async fn bad_bodies_get_json_rpc_errors() {
    let b = Bridge::echo(&["--max-body", "1024"], &[]);
    let mut c = b.client().await;
    let s = c.initialize(VERSION).await;
    let h = session_headers(&s);
    let not_json = read(c.send("POST", "/mcp", &h, None).await).await;
    assert_eq!(not_json.status, 400);
    assert_eq!(not_json.json()["error"]["code"], -32700);
    let not_rpc = c.call("POST", &h, Some(&json!({"hello": 1}))).await;
    assert_eq!(not_rpc.status, 400);
    assert_eq!(not_rpc.json()["error"]["code"], -32600);
    let big = request(
        1,
        "tools/call",
        json!({"name": "echo", "arguments": {"x": "y".repeat(4096)}}),
    );
    assert_eq!(c.call("POST", &h, Some(&big)).await.status, 413);
    // The session survives all of it.
    assert_eq!(
        c.post(&s, &request(2, "tools/list", json!({})))
            .await
            .status,
        200
    );
}

#[tokio::test]
async fn notifications_and_responses_get_202() {
    let b = Bridge::echo(&[], &[]);
    let mut c = b.client().await;
    let s = c.initialize(VERSION).await;
    let note = json!({"jsonrpc": "2.0", "method": "notifications/roots/list_changed"});
    let r = c.post(&s, &note).await;
    assert_eq!(r.status, 202);
    assert!(r.body.is_empty());
    let resp = json!({"jsonrpc": "2.0", "id": 5, "result": {}});
    assert_eq!(c.post(&s, &resp).await.status, 202);
}

#[tokio::test]
async fn modern_header_mismatch_is_400_with_32020() {
    let b = Bridge::echo(&[], &[]);
    let mut c = b.client().await;
    let call = modern_request(3, "tools/call", json!({"name": "echo", "arguments": {}}));
    let ok = c
        .call(
            "POST",
            &modern_headers("tools/call", Some("echo")),
            Some(&call),
        )
        .await;
    assert_eq!(ok.status, 200, "{}", String::from_utf8_lossy(&ok.body));
    assert_eq!(ok.json()["result"]["resultType"], "complete");
    for (method, name) in [
        ("tools/list", Some("echo")),
        ("tools/call", Some("other")),
        ("tools/call", None),
    ] {
        let r = c
            .call("POST", &modern_headers(method, name), Some(&call))
            .await;
        assert_eq!(r.status, 400, "{method} {name:?}");
        assert_eq!(r.json()["error"]["code"], -32020);
        assert_eq!(r.json()["id"], 3);
    }
    // Mcp-Method missing altogether.
    let mut h = base_headers();
    h.push(("mcp-protocol-version", MODERN));
    let r = c.call("POST", &h, Some(&call)).await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error"]["code"], -32020);
    // A non-ASCII tool name travels base64-encoded in Mcp-Name.
    let call = modern_request(4, "tools/call", json!({"name": "échø", "arguments": {}}));
    let r = c
        .call(
            "POST",
            &modern_headers("tools/call", Some("=?base64?w6ljaMO4?=")),
            Some(&call),
        )
        .await;
    assert_eq!(r.status, 200);
}

#[tokio::test]
async fn modern_discover_and_unsupported_version() {
    let b = Bridge::echo(&[], &[]);
    let mut c = b.client().await;
    let d = c
        .call(
            "POST",
            &modern_headers("server/discover", None),
            Some(&modern_request(1, "server/discover", json!({}))),
        )
        .await;
    assert_eq!(d.status, 200);
    let v = d.json();
    assert_eq!(v["result"]["supportedVersions"], json!([MODERN]));
    assert_eq!(
        v["result"]["_meta"]["io.modelcontextprotocol/serverInfo"]["name"],
        "mcpgw-echo-child"
    );
    let mut future = modern_request(2, "tools/list", json!({}));
    future["params"]["_meta"]["io.modelcontextprotocol/protocolVersion"] = json!("2099-01-01");
    let mut h = base_headers();
    h.push(("mcp-protocol-version", "2099-01-01"));
    h.push(("mcp-method", "tools/list"));
    let r = c.call("POST", &h, Some(&future)).await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error"]["code"], -32022);
    assert_eq!(r.json()["error"]["data"]["supported"], json!([MODERN]));
}

#[tokio::test]
async fn sessions_beyond_the_maximum_get_503_with_retry_after() {
    let b = Bridge::echo(&["--max-sessions", "2", "--retry-after", "7"], &[]);
    let mut c = b.client().await;
    let first = c.initialize(VERSION).await;
    c.initialize(VERSION).await;
    let r = c
        .call("POST", &base_headers(), Some(&initialize_msg(VERSION)))
        .await;
    assert_eq!(r.status, 503);
    assert_eq!(r.header("retry-after"), Some("7"));
    assert_eq!(r.json()["id"], 0);
    // Ending a session frees its place.
    let del = c.call("DELETE", &session_headers(&first), None).await;
    assert_eq!(del.status, 200);
    c.initialize(VERSION).await;
}

#[tokio::test]
async fn delete_ends_the_session_and_its_child() {
    let b = Bridge::echo(&[], &[]);
    let mut c = b.client().await;
    let s = c.initialize(VERSION).await;
    let pid = child_pid(&mut c, &s).await;
    assert!(pid > 0 && is_alive(pid));
    assert!(children_of(b.proc.pid()).contains(&pid));
    let del = c.call("DELETE", &session_headers(&s), None).await;
    assert_eq!(del.status, 200);
    assert!(
        eventually(Duration::from_secs(10), || !is_alive(pid)).await,
        "the child outlived its session"
    );
    // Reaped, not a zombie: gone from the bridge's children.
    assert!(
        eventually(Duration::from_secs(10), || !children_of(b.proc.pid())
            .contains(&pid))
        .await
    );
    assert_eq!(
        c.post(&s, &request(1, "tools/list", json!({})))
            .await
            .status,
        404
    );
    assert_eq!(
        c.call("DELETE", &session_headers(&s), None).await.status,
        404
    );
}

#[tokio::test]
async fn health_and_readiness() {
    let b = Bridge::echo(&[], &[]);
    assert_eq!(
        mcpgw_testkit::http_get(b.port, "/health").as_deref(),
        Some("ok")
    );
    assert_eq!(
        mcpgw_testkit::http_get(b.port, "/ready").as_deref(),
        Some("ready")
    );
}

#[tokio::test]
async fn readiness_fails_when_the_command_cannot_start() {
    let port = mcpgw_testkit::free_port();
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_mcpgw-bridge"));
    cmd.args([
        "--listen",
        &format!("127.0.0.1:{port}"),
        "--",
        "/nonexistent/mcp-server",
    ]);
    let mut p = mcpgw_testkit::Proc::spawn("bridge-bad-command", cmd);
    p.wait_ready(port, Duration::from_secs(10));
    assert_eq!(
        mcpgw_testkit::http_get(port, "/health").as_deref(),
        Some("ok")
    );
    assert_eq!(mcpgw_testkit::http_get(port, "/ready"), None);
    let mut c = Client::connect(port).await;
    let r = c
        .call("POST", &base_headers(), Some(&initialize_msg(VERSION)))
        .await;
    assert_eq!(r.status, 502);
    assert_eq!(r.json()["id"], 0);
}

#[tokio::test]
async fn large_messages_round_trip_intact_under_concurrency() {
    let b = Bridge::echo(&[], &[]);
    let mut c = b.client().await;
    let s = c.initialize(VERSION).await;
    on_connections(&b, &s, 4, |mut c, s, conn| async move {
        for i in 0..10u64 {
            let id = conn * 100 + i;
            // Far beyond PIPE_BUF in both directions, mixed with small calls.
            let blob = format!("{id}:").repeat(20_000);
            let v = c
                .post(&s, &request(id, "ping", json!({"blob": blob})))
                .await
                .json();
            assert_eq!(v["id"], id);
            assert_eq!(v["result"]["blob"], blob);
            let small = c
                .post(&s, &request(id + 50, "ping", json!({"n": id})))
                .await;
            assert_eq!(small.json()["result"]["n"], id);
        }
    })
    .await;
}

#[tokio::test]
async fn shared_mode_serves_every_session_from_one_child() {
    let b = Bridge::echo(&["--isolation", "shared"], &[]);
    let mut c = b.client().await;
    let one = c.initialize(VERSION).await;
    let two = c.initialize(VERSION).await;
    assert_ne!(one, two);
    let pid = child_pid(&mut c, &one).await;
    assert_eq!(child_pid(&mut c, &two).await, pid);
    // Ending one session leaves the shared child to the others.
    assert_eq!(
        c.call("DELETE", &session_headers(&one), None).await.status,
        200
    );
    assert_eq!(
        c.post(&one, &request(1, "ping", json!({}))).await.status,
        404
    );
    assert_eq!(
        c.post(&two, &request(2, "ping", json!({}))).await.status,
        200
    );
    assert!(is_alive(pid));
}
