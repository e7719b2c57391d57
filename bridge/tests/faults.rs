//! Fault tests against the built bridge and the echo child: a child killed mid-call, a child that
//! never answers, a child flooding stderr, an over-long line, 10,000 calls in one session, a client
//! that disconnects mid-stream, and SIGTERM with sessions open. Every wait has a generous safety
//! net; no assertion depends on how fast the machine is.

mod common;

use std::time::Duration;

use common::*;
use serde_json::json;

const NET: Duration = Duration::from_secs(20);

#[tokio::test]
async fn a_killed_child_fails_in_flight_requests_at_once_and_ends_its_session() {
    let b = Bridge::echo(&[], &[]);
    let mut c = b.client().await;
    let s = c.initialize(VERSION).await;
    let pid = child_pid(&mut c, &s).await;
    // A request the child is busy with: it reports progress, then works for ten minutes.
    let slow = request(
        1,
        "debug/progress",
        json!({"steps": 2, "delay_ms": 600_000, "_meta": {"progressToken": "p"}}),
    );
    let mut busy = b.client().await;
    let mut sse = Sse::new(
        busy.send("POST", "/mcp", &session_headers(&s), Some(&slow))
            .await,
    );
    let (_, first) = sse.expect(NET).await;
    assert_eq!(first["method"], "notifications/progress");
    assert_eq!(first["params"]["progressToken"], "p");
    // And one more queued behind it on another connection.
    let mut other = b.client().await;
    let queued = {
        let s = s.clone();
        tokio::spawn(async move {
            other
                .post(&s, &request(2, "tools/list", json!({})))
                .await
                .json()
        })
    };
    // kill(1): the workspace forbids unsafe code, so not libc::kill.
    let killed = std::process::Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .map(|s| s.success());
    assert_eq!(killed.ok(), Some(true));
    let (_, last) = sse.expect(NET).await;
    assert_eq!(last["id"], 1);
    assert_eq!(last["error"]["code"], -32000);
    let q = tokio::time::timeout(NET, queued)
        .await
        .unwrap_or_else(|_| panic!("the queued request hung after the child died"))
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(q["error"]["code"].is_i64(), "queued request: {q}");
    assert!(eventually(NET, || !is_alive(pid)).await);
    // The session is gone: clients re-initialise.
    let later = c.post(&s, &request(3, "tools/list", json!({}))).await;
    assert_eq!(later.status, 404);
    let fresh = c.initialize(VERSION).await;
    assert_eq!(
        c.post(&fresh, &request(4, "tools/list", json!({})))
            .await
            .status,
        200
    );
}

#[tokio::test]
async fn a_child_that_never_answers_times_out_when_a_request_timeout_is_set() {
    let b = Bridge::echo(
        &["--request-timeout", "300ms"],
        &[("ECHO_SILENT_METHOD", "hang")],
    );
    let mut c = b.client().await;
    let s = c.initialize(VERSION).await;
    let r = c.post(&s, &request(1, "hang", json!({}))).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["id"], 1);
    assert_eq!(r.json()["error"]["code"], -32001);
    // The session and its child carry on.
    let ok = c.post(&s, &request(2, "tools/list", json!({}))).await;
    assert_eq!(ok.json()["result"]["tools"][0]["name"], "echo");
}

#[tokio::test]
async fn a_child_flooding_stderr_never_blocks() {
    // 200 requests × 32 KiB of stderr each: 100 times the pipe's buffer.
    let b = Bridge::echo(&[], &[("ECHO_STDERR_FLOOD", "32768")]);
    let mut c = b.client().await;
    let s = c.initialize(VERSION).await;
    for i in 0..200u64 {
        let r = tokio::time::timeout(NET, c.post(&s, &request(i, "ping", json!({"i": i}))))
            .await
            .unwrap_or_else(|_| panic!("call {i} blocked behind the child's stderr"));
        assert_eq!(r.json()["result"]["i"], i);
    }
    assert!(
        b.proc.log().contains("xxxxxxxxxxxxxxxx"),
        "child stderr not in the log"
    );
}

#[tokio::test]
async fn an_over_long_line_from_the_child_ends_the_session_with_an_error() {
    let b = Bridge::echo(&["--max-line", "4096"], &[]);
    let mut c = b.client().await;
    let s = c.initialize(VERSION).await;
    let big = request(1, "ping", json!({"blob": "z".repeat(8192)}));
    let r = c.post(&s, &big).await;
    assert_eq!(r.json()["error"]["code"], -32000);
    assert!(eventually(NET, || b.proc.log().contains("longer than the limit")).await);
    assert_eq!(c.post(&s, &request(2, "ping", json!({}))).await.status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_calls_in_one_session() {
    let b = Bridge::echo(&[], &[]);
    let mut c = b.client().await;
    let s = c.initialize(VERSION).await;
    on_connections(&b, &s, 4, |mut c, s, conn| async move {
        for i in 0..2500u64 {
            let id = conn * 10_000 + i;
            let v = c
                .post(&s, &request(id, "ping", json!({"n": id})))
                .await
                .json();
            assert_eq!(v["id"], id);
            assert_eq!(v["result"]["n"], id);
        }
    })
    .await;
    // Nothing is left pending and the session still answers.
    let v = c
        .post(&s, &request(1, "tools/list", json!({})))
        .await
        .json();
    assert_eq!(v["result"]["tools"][0]["name"], "echo");
}

#[tokio::test]
async fn a_client_that_disconnects_mid_stream_resumes_with_last_event_id() {
    let b = Bridge::echo(&[], &[]);
    let mut c = b.client().await;
    let s = c.initialize(VERSION).await;
    let slow = request(
        7,
        "debug/progress",
        json!({"steps": 3, "delay_ms": 100, "_meta": {"progressToken": 42}}),
    );
    let first_id = {
        let mut gone = b.client().await;
        let mut sse = Sse::new(
            gone.send("POST", "/mcp", &session_headers(&s), Some(&slow))
                .await,
        );
        let (id, first) = sse.expect(NET).await;
        assert_eq!(first["params"]["progress"], 1);
        id.unwrap_or_else(|| panic!("SSE events carry ids"))
        // The connection drops here, mid-stream.
    };
    // Other requests in the session are unaffected.
    assert_eq!(c.post(&s, &request(8, "ping", json!({}))).await.status, 200);
    let mut h = vec![
        ("accept", "text/event-stream"),
        ("mcp-session-id", s.as_str()),
    ];
    h.push(("last-event-id", first_id.as_str()));
    let mut resumed = Sse::new(c.send("GET", "/mcp", &h, None).await);
    let mut rest = Vec::new();
    while let Some((_, m)) = tokio::time::timeout(NET, resumed.next())
        .await
        .unwrap_or_else(|_| panic!("resumed stream stalled"))
    {
        let done = m.get("id").is_some();
        rest.push(m);
        if done {
            break;
        }
    }
    let progress: Vec<_> = rest
        .iter()
        .filter_map(|m| m["params"]["progress"].as_u64())
        .collect();
    assert_eq!(progress, [2, 3]);
    let last = rest.last().cloned().unwrap_or_default();
    assert_eq!(last["id"], 7);
    assert_eq!(last["result"]["done"], true);
}

#[tokio::test]
async fn a_dropped_get_stream_can_be_opened_again() {
    let b = Bridge::echo(&[], &[]);
    let mut c = b.client().await;
    let s = c.initialize(VERSION).await;
    let h = [
        ("accept", "text/event-stream"),
        ("mcp-session-id", s.as_str()),
    ];
    {
        let mut gone = b.client().await;
        let _ = Sse::new(gone.send("GET", "/mcp", &h, None).await);
    }
    let mut again = b.client().await;
    let r = again.send("GET", "/mcp", &h, None).await;
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn sigterm_drains_in_flight_requests_and_leaves_no_child_behind() {
    let mut b = Bridge::echo(&[], &[]);
    let mut c = b.client().await;
    let mut sessions = Vec::new();
    for _ in 0..3 {
        sessions.push(c.initialize(VERSION).await);
    }
    let slow = request(
        1,
        "debug/progress",
        json!({"steps": 2, "delay_ms": 300, "_meta": {"progressToken": 1}}),
    );
    let mut busy = b.client().await;
    let mut sse = Sse::new(
        busy.send("POST", "/mcp", &session_headers(&sessions[0]), Some(&slow))
            .await,
    );
    sse.expect(NET).await;
    let children = children_of(b.proc.pid());
    assert!(children.len() >= 3, "children: {children:?}");
    b.proc.signal(libc::SIGTERM);
    // The request in flight finishes with its result.
    let mut last = None;
    while let Some((_, m)) = tokio::time::timeout(NET, sse.next())
        .await
        .unwrap_or_else(|_| panic!("the in-flight request stalled during the drain"))
    {
        last = Some(m);
    }
    assert_eq!(last.unwrap_or_default()["result"]["done"], true);
    let code = b.proc.wait_exit(NET);
    assert_eq!(code, Some(Some(0)), "bridge log:\n{}", b.proc.log());
    for pid in children {
        // Reaped by the bridge before it exited: not even a zombie is left.
        assert!(!exists(pid), "child {pid} outlived the bridge");
    }
}

#[tokio::test]
async fn idle_sessions_close_and_abandoned_requests_do_not_keep_them_open() {
    let b = Bridge::echo(&["--idle-timeout", "1s"], &[("ECHO_SILENT_METHOD", "hang")]);
    let mut c = b.client().await;
    let s = c.initialize(VERSION).await;
    let pid = child_pid(&mut c, &s).await;
    {
        // A request the child never answers, abandoned by its client.
        let mut gone = b.client().await;
        let (h, hang) = (session_headers(&s), request(1, "hang", json!({})));
        let waiting = gone.send("POST", "/mcp", &h, Some(&hang));
        assert!(
            tokio::time::timeout(Duration::from_millis(300), waiting)
                .await
                .is_err()
        );
    }
    // The request was cancelled, so nothing is in flight and the idle session closes.
    assert!(
        eventually(NET, || !is_alive(pid)).await,
        "the idle session's child is still running"
    );
    assert_eq!(c.post(&s, &request(2, "ping", json!({}))).await.status, 404);
}

#[tokio::test]
async fn a_client_that_stops_reading_is_cut_off_and_the_session_carries_on() {
    let b = Bridge::echo(&["--slow-client-timeout", "300ms"], &[]);
    let mut c = b.client().await;
    let s = c.initialize(VERSION).await;
    // About 4 MB of progress events: more than every buffer between the bridge and a client
    // that never reads its stream.
    let flood = request(
        1,
        "debug/progress",
        json!({"steps": 30_000, "_meta": {"progressToken": 1}}),
    );
    let mut stalled = b.client().await;
    let unread = stalled
        .send("POST", "/mcp", &session_headers(&s), Some(&flood))
        .await;
    // The child can only answer this after the flood, so the bridge must keep reading the child
    // while the first client sits on its stream.
    let ping = tokio::time::timeout(NET, c.post(&s, &request(2, "ping", json!({"after": 1}))))
        .await
        .unwrap_or_else(|_| panic!("a client that stopped reading stalled the session"));
    assert_eq!(ping.json()["result"]["after"], 1);
    // The stalled stream was cut: reading it now ends instead of waiting forever.
    let rest = tokio::time::timeout(NET, read(unread))
        .await
        .unwrap_or_else(|_| panic!("the cut-off stream never ended"));
    assert_eq!(rest.status, 200);
    let events = rest.events();
    assert!(
        events.len() < 30_001,
        "the slow client got all {} events",
        events.len()
    );
}
