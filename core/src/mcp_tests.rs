use serde_json::json;

use super::*;

fn pending(id: i64, kind: ListKind) -> Vec<PendingList> {
    vec![PendingList {
        id: json!(id),
        kind,
    }]
}

fn keep_echo(_: ListKind, name: &str) -> bool {
    name == "echo"
}

#[test]
fn parses_requests_notifications_responses_and_batches() {
    let l = Limits::default();
    let b = parse_body(br#"{"jsonrpc":"2.0","id":"a","method":"tools/call","params":{"name":"echo","arguments":{"m":1}}}"#, &l).unwrap();
    let m = &b.messages()[0];
    assert_eq!(
        (
            m.kind.clone(),
            m.id.clone(),
            m.method.as_deref(),
            m.name.as_deref()
        ),
        (
            Kind::Request,
            Some(json!("a")),
            Some("tools/call"),
            Some("echo")
        )
    );
    assert_eq!(m.arguments, Some(json!({"m": 1})));
    let b = parse_body(br#"[{"jsonrpc":"2.0","method":"notifications/initialized"},{"jsonrpc":"2.0","id":3,"result":{}}]"#, &l).unwrap();
    let kinds: Vec<Kind> = b.messages().iter().map(|m| m.kind.clone()).collect();
    assert_eq!(kinds, vec![Kind::Notification, Kind::Response]);
}

#[test]
fn refuses_malformed_messages_with_the_right_error() {
    let l = Limits {
        max_body_bytes: 64,
        max_depth: 3,
        max_batch: 2,
    };
    let cases: [(&[u8], ParseError); 8] = [
        (b"{", ParseError::NotJson),
        (b"[1,2,3]", ParseError::BatchTooLarge(2)),
        (b"[]", ParseError::Invalid("empty batch")),
        (b"[[[[1]]]]", ParseError::TooDeep(3)),
        (
            br#"{"jsonrpc":"1.0","id":1,"method":"x"}"#,
            ParseError::Invalid("`jsonrpc` must be \"2.0\""),
        ),
        (
            br#"{"jsonrpc":"2.0","id":{},"method":"x"}"#,
            ParseError::Invalid("`id` must be a string or a number"),
        ),
        (
            br#"{"jsonrpc":"2.0","id":1,"method":"x","params":[]}"#,
            ParseError::Invalid("`params` must be an object"),
        ),
        (&[b' '; 65], ParseError::TooLarge(64)),
    ];
    for (body, want) in cases {
        assert_eq!(
            parse_body(body, &l),
            Err(want),
            "{}",
            String::from_utf8_lossy(body)
        );
    }
}

#[test]
fn brackets_inside_strings_do_not_count_as_depth() {
    let l = Limits {
        max_depth: 2,
        ..Limits::default()
    };
    let body = br#"{"jsonrpc":"2.0","id":1,"method":"ping","params":{"x":"[[[[\"{{{{"}}"#;
    assert!(parse_body(body, &l).is_ok());
}

#[test]
fn header_check_follows_the_revision() {
    let body = parse_body(
        br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo"}}"#,
        &Limits::default(),
    )
    .unwrap();
    let h = |v: Option<&str>, m: Option<&str>, n: Option<&str>| McpHeaders {
        protocol_version: v.map(str::to_owned),
        method: m.map(str::to_owned),
        name: n.map(str::to_owned),
    };
    let new = Some(STATELESS_REVISION);
    let cases = [
        (h(None, None, None), Ok(())),
        (h(Some("2025-06-18"), None, None), Ok(())),
        (h(new, Some("tools/call"), Some("echo")), Ok(())),
        (
            h(new, None, Some("echo")),
            Err(HeaderMismatch::MissingMethod),
        ),
        (
            h(new, Some("tools/call"), None),
            Err(HeaderMismatch::MissingName),
        ),
        (
            h(None, Some("tools/list"), None),
            Err(HeaderMismatch::Method),
        ),
        (h(None, None, Some("add")), Err(HeaderMismatch::Name)),
    ];
    for (headers, want) in cases {
        assert_eq!(headers.check(&body), want, "{headers:?}");
    }
}

#[test]
fn filters_a_json_list_response_by_id() {
    let body = br#"{"jsonrpc":"2.0","id":4,"result":{"tools":[{"name":"echo"},{"name":"printEnv"},{"title":"nameless"}],"nextCursor":"c"}}"#;
    let (out, removed) =
        filter_json_response(body, &pending(4, ListKind::Tools), &mut keep_echo).unwrap();
    assert_eq!(removed, 2);
    let v: Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(
        v["result"],
        json!({"tools": [{"name": "echo"}], "nextCursor": "c"})
    );
    let (_, removed) =
        filter_json_response(body, &pending(5, ListKind::Tools), &mut keep_echo).unwrap();
    assert_eq!(removed, 0, "another id is not the list response");
    assert_eq!(
        filter_json_response(b"<html>", &[], &mut keep_echo),
        Err(FilterError::NotJson)
    );
}

#[test]
fn filters_the_list_event_of_an_sse_stream_and_keeps_the_others() {
    let body = "id: 1\nevent: message\ndata: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/progress\",\"params\":{}}\n\n\
                event: message\ndata: {\"jsonrpc\":\"2.0\",\"id\":9,\"result\":{\"tools\":[{\"name\":\"printEnv\"},{\"name\":\"echo\"}]}}\r\n\r\n";
    let (out, removed) = filter_sse_response(
        body.as_bytes(),
        &pending(9, ListKind::Tools),
        &mut keep_echo,
    )
    .unwrap();
    assert_eq!(removed, 1);
    let out = String::from_utf8(out).unwrap();
    let events: Vec<&str> = out.split_terminator("\n\n").collect();
    assert_eq!(
        events[0],
        "id: 1\nevent: message\ndata: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/progress\",\"params\":{}}"
    );
    assert!(out.ends_with("\r\n\r\n"));
    let data = out
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .nth(1)
        .unwrap();
    let v: Value = serde_json::from_str(data).unwrap();
    assert_eq!(v["result"]["tools"], json!([{"name": "echo"}]));
}
