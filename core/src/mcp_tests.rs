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

/// What parsing the body into a `serde_json::Value` first decides (the reference `parse_body`
/// must agree with): each message as (kind, id, method, name, arguments), or the error.
type Reading = Result<
    Vec<(
        Kind,
        Option<Value>,
        Option<String>,
        Option<String>,
        Option<Value>,
    )>,
    ParseError,
>;

fn read_via_value(bytes: &[u8], limits: &Limits) -> Reading {
    if bytes.len() > limits.max_body_bytes {
        return Err(ParseError::TooLarge(limits.max_body_bytes));
    }
    if nesting_depth(bytes) > limits.max_depth {
        return Err(ParseError::TooDeep(limits.max_depth));
    }
    let value: Value = serde_json::from_slice(bytes).map_err(|_| ParseError::NotJson)?;
    let one = |value: Value| {
        let Value::Object(mut obj) = value else {
            return Err(ParseError::Invalid("message is not an object"));
        };
        if obj.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
            return Err(ParseError::Invalid("`jsonrpc` must be \"2.0\""));
        }
        let id = match obj.remove("id") {
            None => None,
            Some(id @ (Value::String(_) | Value::Number(_) | Value::Null)) => Some(id),
            Some(_) => return Err(ParseError::Invalid("`id` must be a string or a number")),
        };
        match obj.remove("method") {
            Some(Value::String(method)) => {
                let mut params = match obj.remove("params") {
                    None => serde_json::Map::new(),
                    Some(Value::Object(p)) => p,
                    Some(_) => return Err(ParseError::Invalid("`params` must be an object")),
                };
                let key = match method.as_str() {
                    "tools/call" | "prompts/get" => Some("name"),
                    "resources/read" | "resources/subscribe" | "resources/unsubscribe" => {
                        Some("uri")
                    }
                    _ => None,
                };
                let (name, arguments) = match key {
                    None => (None, None),
                    Some(key) => {
                        let Some(Value::String(name)) = params.remove(key) else {
                            return Err(ParseError::Invalid(
                                "`params` lacks the string naming the target",
                            ));
                        };
                        (Some(name), params.remove("arguments"))
                    }
                };
                let kind = if id.is_some() {
                    Kind::Request
                } else {
                    Kind::Notification
                };
                if id == Some(Value::Null) {
                    return Err(ParseError::Invalid("a request `id` must not be null"));
                }
                Ok((kind, id, Some(method), name, arguments))
            }
            Some(_) => Err(ParseError::Invalid("`method` must be a string")),
            None if obj.contains_key("result") || obj.contains_key("error") => {
                Ok((Kind::Response, id, None, None, None))
            }
            None => Err(ParseError::Invalid(
                "message has neither `method` nor `result`/`error`",
            )),
        }
    };
    match value {
        Value::Array(items) => {
            if items.is_empty() {
                return Err(ParseError::Invalid("empty batch"));
            }
            if items.len() > limits.max_batch {
                return Err(ParseError::BatchTooLarge(limits.max_batch));
            }
            items.into_iter().map(one).collect()
        }
        other => one(other).map(|m| vec![m]),
    }
}

fn read(bytes: &[u8], limits: &Limits) -> Reading {
    parse_body(bytes, limits).map(|b| {
        b.messages()
            .iter()
            .map(|m| {
                (
                    m.kind.clone(),
                    m.id.clone(),
                    m.method.as_deref().map(str::to_owned),
                    m.name.as_deref().map(str::to_owned),
                    m.arguments.clone(),
                )
            })
            .collect()
    })
}

#[test]
fn parses_exactly_what_a_json_value_parse_accepts() {
    let deep = format!("{}1{}", "[".repeat(130), "]".repeat(130));
    let deep_args = format!(
        r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"name":"a","x":{}1{}}}}}"#,
        "[".repeat(127),
        "]".repeat(127)
    );
    let bodies: Vec<Vec<u8>> = [
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"m":[1,-2,3.5,null,true,"x"]}}}"#,
        r#"{"jsonrpc":"2.0","id":"a\"b","method":"tools\/call","params":{"name":"ec\u0068o"}}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":"x","method":"tools/call","params":{"name":"a","name":"b","arguments":1,"arguments":{"k":2}}}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a"},"params":[]}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a","x":"\ud800"}}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a","x":1e400}}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a","x":-1e400}}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":"ping","params":{"_meta":{"a":[{"b":"\ud83d\ude00"}]}}}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":"ping"} x"#,
        r#"{"jsonrpc":"2.0","id":1,"method":"ping",}"#,
        r#"{"jsonrpc":"2.0","jsonrpc":"1.0","id":1,"method":"ping"}"#,
        r#"{"jsonrpc":"1.0","jsonrpc":"2.0","id":1,"method":"ping"}"#,
        r#"{"jsonrpc":2.0,"id":1,"method":"ping"}"#,
        r#"{"jsonrpc":"2.0","id":null,"method":"ping"}"#,
        r#"{"jsonrpc":"2.0","id":null,"result":{}}"#,
        r#"{"jsonrpc":"2.0","id":[1],"method":"ping"}"#,
        r#"{"jsonrpc":"2.0","id":{},"id":7,"method":"ping"}"#,
        r#"{"jsonrpc":"2.0","id":1.5e3,"method":"ping"}"#,
        r#"{"jsonrpc":"2.0","id":18446744073709551616,"method":"ping"}"#,
        r#"{"jsonrpc":"2.0","method":null}"#,
        r#"{"jsonrpc":"2.0","method":"notifications/x","params":null}"#,
        r#"{"jsonrpc":"2.0","id":3,"error":null}"#,
        r#"{"jsonrpc":"2.0","id":3}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":"resources/read","params":{"uri":"file:///a","arguments":[1]}}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":"resources/read","params":{"name":"file:///a"}}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":"prompts/get","params":{"name":5}}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"name":5,"arguments":{}}}"#,
        r#"[{"jsonrpc":"2.0","method":"notifications/initialized"},{"jsonrpc":"2.0","id":3,"result":{}}]"#,
        r#"[{"jsonrpc":"2.0","id":1,"method":"ping"},1,{"jsonrpc":"2.0","id":2,"method":"ping"}]"#,
        r#"[{"jsonrpc":"2.0","id":1,"method":"ping"},{"jsonrpc":"1.0","id":2,"method":"ping"}]"#,
        r#"[[{"jsonrpc":"2.0","id":1,"method":"ping"}]]"#,
        r#"[{"jsonrpc":"2.0","id":1,"method":"ping"},{"bad"]"#,
        r#"[1,2,3,4,5,6,7,8,9]"#,
        r#"[]"#,
        r#""just a string""#,
        r#"42"#,
        r#"null"#,
        r#"true"#,
        r#"{"a":1,"a":{"b":"\u00e9"},"jsonrpc":"2.0","result":1}"#,
        r#"  {"jsonrpc" : "2.0" , "id" : -0 , "method" : "ping" }  "#,
        "",
        "{",
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .chain([
        deep.into_bytes(),
        deep_args.into_bytes(),
        b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"ping\",\"x\":\"\xff\"}".to_vec(),
        b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/call\",\"params\":{\"name\":\"\xc3\xa9\"}}"
            .to_vec(),
    ])
    .collect();
    let limits = Limits {
        max_body_bytes: 1 << 20,
        max_depth: 1000,
        max_batch: 8,
    };
    for body in &bodies {
        let text = String::from_utf8_lossy(body);
        for l in [limits, Limits::default()] {
            assert_eq!(read(body, &l), read_via_value(body, &l), "{text}");
        }
    }
}

#[test]
fn writes_error_responses_as_serialising_the_value_would() {
    let ids = [
        None,
        Some(json!(1)),
        Some(json!(-7)),
        Some(json!(1.5)),
        Some(json!("a\"b\\c\u{1}é")),
        Some(Value::Null),
    ];
    for id in &ids {
        for (code, message) in [
            (FORBIDDEN, "forbidden by policy"),
            (PARSE_ERROR, "quote \" backslash \\ tab \t é"),
        ] {
            let mut out = Vec::new();
            write_error_response(&mut out, id.as_ref(), code, message);
            assert_eq!(
                String::from_utf8(out).unwrap(),
                error_response(id.as_ref(), code, message).to_string()
            );
        }
    }
}
