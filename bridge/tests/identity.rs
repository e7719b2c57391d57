//! Who may use a session: only the caller (subject and client id from the gateway's identity
//! headers) that opened it. Everyone else, for every method and for a `Last-Event-ID` resume, gets
//! exactly the answer for an unknown session. Requests without a subject, or with an identity
//! header spelled with `_`, are refused.

mod common;

use common::*;
use serde_json::json;

/// A session of `alice` with one finished SSE stream (event ids `1-0`.. exist in its buffer).
async fn alice_session(b: &Bridge) -> (Client, String) {
    let mut alice = b.client().await;
    alice.act_as("oidc:alice", "alice-client");
    let s = alice.initialize(VERSION).await;
    let slow = request(
        7,
        "debug/progress",
        json!({"steps": 2, "delay_ms": 1, "_meta": {"progressToken": 1}}),
    );
    let r = alice.post(&s, &slow).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.message()["result"]["done"], true);
    (alice, s)
}

#[tokio::test]
async fn another_caller_finds_no_session_for_any_method_or_resume() {
    let b = Bridge::echo(&[], &[]);
    let (mut alice, s) = alice_session(&b).await;
    let unknown = {
        let mut c = b.client().await;
        c.act_as("oidc:alice", "alice-client");
        c.post(
            "0123456789abcdef0123456789abcdef",
            &request(1, "tools/list", json!({})),
        )
        .await
    };
    assert_eq!(unknown.status, 404);

    for (subject, client_id) in [
        ("oidc:bob", "bob-client"),
        ("oidc:bob", "alice-client"),
        ("oidc:alice", "bob-client"),
    ] {
        let mut other = b.client().await;
        other.act_as(subject, client_id);
        let call = other
            .post(
                &s,
                &request(2, "tools/call", json!({"name": "echo", "arguments": {}})),
            )
            .await;
        let note = other
            .post(
                &s,
                &json!({"jsonrpc": "2.0", "method": "notifications/roots/list_changed"}),
            )
            .await;
        let get = other.get(&s, &[]).await;
        let resume = other.get(&s, &[("last-event-id", "1-0")]).await;
        let delete = other.call("DELETE", &session_headers(&s), None).await;
        for (what, r) in [
            ("POST", &call),
            ("notification", &note),
            ("GET", &get),
            ("resume", &resume),
            ("DELETE", &delete),
        ] {
            assert_eq!(r.status, 404, "{subject}/{client_id} {what}");
            assert_eq!(
                r.body, unknown.body,
                "{subject}/{client_id} {what}: must look like an unknown session"
            );
        }
    }
    // alice's session is untouched: her GET stream can be opened and her calls answered.
    let r = alice
        .post(
            &s,
            &request(
                3,
                "tools/call",
                json!({"name": "echo", "arguments": {"a": 1}}),
            ),
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["result"]["content"][0]["text"], r#"{"a":1}"#);
    let resume = alice.get(&s, &[("last-event-id", "1-0")]).await;
    assert_eq!(resume.status, 200);
    assert_eq!(
        resume.events().last().map(|m| m["id"].clone()),
        Some(json!(7))
    );
}

#[tokio::test]
async fn requests_without_a_subject_are_refused() {
    let b = Bridge::echo(&[], &[]);
    let mut c = b.client().await;
    c.identity = None;
    let r = c
        .call("POST", &base_headers(), Some(&initialize_msg(VERSION)))
        .await;
    assert_eq!(r.status, 403);
    assert!(
        r.error_message().contains("x-mcpgw-subject"),
        "{}",
        r.error_message()
    );
    let mut h = base_headers();
    h.push(("x-mcpgw-subject", ""));
    assert_eq!(
        c.call("POST", &h, Some(&initialize_msg(VERSION)))
            .await
            .status,
        403
    );
    h.pop();
    h.push(("x-mcpgw-subject", "oidc:a"));
    h.push(("x-mcpgw-subject", "oidc:b"));
    assert_eq!(
        c.call("POST", &h, Some(&initialize_msg(VERSION)))
            .await
            .status,
        400
    );
}

#[tokio::test]
async fn underscore_identity_headers_are_refused() {
    let b = Bridge::echo(&[], &[]);
    let mut c = b.client().await;
    for name in ["x_mcpgw_subject", "X_Mcpgw_User", "x-mcpgw_groups"] {
        let mut h = base_headers();
        h.push((name, "admins"));
        let r = c.call("POST", &h, Some(&initialize_msg(VERSION))).await;
        assert_eq!(r.status, 400, "{name}");
        assert!(r.error_message().contains("`_`"), "{}", r.error_message());
    }
}
