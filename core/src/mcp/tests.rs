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
    fn h<'a>(v: Option<&'a str>, m: Option<&'a str>, n: Option<&'a str>) -> McpHeaders<'a> {
        McpHeaders {
            protocol_version: v,
            method: m,
            name: n,
        }
    }
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
fn the_common_bodies_are_read_without_serde() {
    for body in [
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"message":"hello","n":[1,-2,true,null,{}]}}}"#,
        r#"{"jsonrpc":"2.0","id":"a","method":"tools/list","params":{"_meta":{"progressToken":0.5}}}"#,
        r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#,
        r#"{"jsonrpc":"2.0","id":3,"result":{"content":[]}}"#,
    ] {
        assert!(plain_message(body.as_bytes(), 64).is_some(), "{body}");
    }
    for body in [
        r#"[{"jsonrpc":"2.0","method":"notifications/initialized"}]"#,
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"e\u0063ho"}}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"n":0.5}}}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":"ping","x":1e3}"#,
    ] {
        assert!(plain_message(body.as_bytes(), 64).is_none(), "{body}");
    }
    assert!(plain_message(&nested(64), 64).is_some());
    assert!(plain_message(&nested(65), 64).is_none());
}

/// A `tools/call` whose `arguments` nest objects and arrays to `depth` in all.
fn nested(depth: usize) -> Vec<u8> {
    let inner = depth.saturating_sub(3);
    let open: String = (0..inner)
        .map(|i| if i % 2 == 0 { "{\"k\":" } else { "[" })
        .collect();
    let close: String = (0..inner)
        .rev()
        .map(|i| if i % 2 == 0 { "}" } else { "]" })
        .collect();
    format!(
        r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"name":"a","arguments":{{"x":{open}1{close}}}}}}}"#
    )
    .into_bytes()
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
        "{\n\t\"jsonrpc\":\"2.0\",\r\n\"id\":0,\"method\":\"ping\"}\n",
        r#"{"jsonrpc":"2.0","id":-7,"method":"tools/call","params":{"name":"a","arguments":{"a":-0,"b":[-0.5,0.25,1e2],"c":{"d":{}},"c":[]}}}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a","arguments":{"n":-0}}}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a","arguments":{"n":0.5}}}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a","arguments":{"n":1E2}}}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a","arguments":{"n":123456789012345678,"m":-123456789012345678}}}"#,
        r#"{"jsonrpc":"2.0","id":1234567890123456789,"method":"ping"}"#,
        r#"{"jsonrpc":"2.0","id":99999999999999999999999,"method":"ping","x":-99999999999999999999999.5}"#,
        r#"{"jsonrpc":"2.0","id":01,"method":"ping"}"#,
        r#"{"jsonrpc":"2.0","id":1.,"method":"ping"}"#,
        r#"{"jsonrpc":"2.0","id":-,"method":"ping"}"#,
        r#"{"jsonrpc":"2.0","id":+1,"method":"ping"}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":"ping","x":[1,2,]}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":"ping","x":[,]}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":"ping","x":{"a" 1}}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":"ping","x":tru}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":"ping","x":nul}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":"ping","x":falsey}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":"ping",,"x":1}"#,
        r#"{"json\u0072pc":"2.0","id":1,"method":"ping"}"#,
        r#"{"jsonrpc":"2.0","id":"1","method":"tools/call","params":{"na\u006de":"a","name":"b"}}"#,
        r#"{"jsonrpc":"2.0","id":"1","method":"tools/call","params":{"name":"b","name":"\u0061"}}"#,
        r#"{"jsonrpc":"2.0","id":"1","method":"tools/call","params":{}}"#,
        r#"{"jsonrpc":"2.0","id":"1","method":"tools/call","params":{"name":"a"},"result":1}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a","arguments":{"é":"ü","":""}}}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":"ping"}{}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":"ping""#,
        r#"{}"#,
        r#"{"#,
        r#"{"a"}"#,
        "",
        "{",
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .chain([
        deep.into_bytes(),
        deep_args.into_bytes(),
        b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"ping\",\"x\":\"\xff\"}".to_vec(),
        b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"ping\",\"x\":\"a\tb\"}".to_vec(),
        b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"ping\",\"x\":\"a\x7fb\"}".to_vec(),
        b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"ping\"} \xff".to_vec(),
        nested(63),
        nested(64),
        nested(65),
        nested(99),
        nested(101),
        nested(127),
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

/// The list filters as they were first written: parse the whole body into a `Value`, filter,
/// serialise it again. The spliced filters must decide the same and say the same.
fn filter_json_via_value(
    body: &[u8],
    pending: &[PendingList],
    keep: &mut dyn FnMut(ListKind, &str) -> bool,
) -> Result<(Vec<u8>, usize), FilterError> {
    let mut value: Value = serde_json::from_slice(body).map_err(|_| FilterError::NotJson)?;
    let removed = match &mut value {
        Value::Array(items) => items
            .iter_mut()
            .map(|m| filter_message(m, pending, keep))
            .sum(),
        msg => filter_message(msg, pending, keep),
    };
    Ok((serde_json::to_vec(&value).unwrap(), removed))
}

/// Keeps names without an `x`, and records which names it was asked about.
fn keep_logged(log: &mut Vec<String>) -> impl FnMut(ListKind, &str) -> bool + '_ {
    |kind, name| {
        log.push(format!("{kind:?}:{name}"));
        !name.contains('x')
    }
}

#[test]
fn spliced_json_lists_read_like_reserialised_ones() {
    let pending = vec![
        PendingList {
            id: json!(1),
            kind: ListKind::Tools,
        },
        PendingList {
            id: json!("p"),
            kind: ListKind::Prompts,
        },
        PendingList {
            id: json!(3),
            kind: ListKind::Resources,
        },
    ];
    let bodies = [
        r#"{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"a"},{"name":"x1","inputSchema":{"type":"object"}},{"name":"b"}],"nextCursor":"c"}}"#,
        "{\n  \"jsonrpc\": \"2.0\",\n  \"id\": 1,\n  \"result\": {\n    \"tools\": [\n      {\"name\": \"x\"},\n      {\"name\": \"a\"}\n    ]\n  }\n}\n",
        r#"[{"jsonrpc":"2.0","id":"p","result":{"prompts":[{"name":"px"},{"name":"p"}]}},{"jsonrpc":"2.0","method":"notifications/x"},{"jsonrpc":"2.0","id":3,"result":{"resources":[{"uri":"file:///x"},{"uri":"file:///a","name":"x"}]}}]"#,
        r#"{"jsonrpc":"2.0","id":1,"result":{"tools":[1,"x",null,{"title":"nameless"},{"name":7},{"name":"\u0061\n"},{"name":"e\u0078"}]}}"#,
        r#"{"jsonrpc":"2.0","id":1,"result":{"tools":{"name":"x"}}}"#,
        r#"{"jsonrpc":"2.0","id":1,"result":[{"tools":[{"name":"x"}]}]}"#,
        r#"{"jsonrpc":"2.0","id":2,"result":{"tools":[{"name":"x"}]}}"#,
        r#"{"jsonrpc":"2.0","id":1.0,"result":{"tools":[{"name":"x"}]}}"#,
        r#"{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"a"}]}}"#,
        r#"{"jsonrpc":"2.0","id":1,"result":{"tools":[]}}"#,
        r#"{"jsonrpc":"2.0","id":1,"error":{"code":1,"message":"x"}}"#,
        r#"{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"a","name":"x"},{"name":"b"}]}}"#,
        r#"{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"x"}]},"result":{"tools":[{"name":"a"}]}}"#,
        r#"{"jsonrpc":"2.0","id":2,"id":1,"result":{"tools":[{"name":"x"}]}}"#,
        r#"{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"x"}],"tools":[{"name":"a"}]}}"#,
        r#"{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"x"}]}} trailing"#,
        r#"{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"x","d":"\ud800"}]}}"#,
        r#"{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"x","d":1e999}]}}"#,
        r#"[]"#,
        r#""text""#,
        "<html>",
        r#"{"jsonrpc":"2.0","i\u0064":1,"res\u0075lt":{"too\u006cs":[{"na\u006de":"x"},{"name":"a"},{"n\u0061me":"\u0078y"}]}}"#,
        r#"{"jsonrpc":"2.0","id":1,"result":{"tools":[{"d":"]}\"\\","name":"x","s":[1,{"a":[]},-2.5e3,true,null]},{"name":"a\\\"]"},{"e":{},"name":"b"},{}]}}"#,
        "[ {\"id\" : \"p\" ,\"result\" :{ \"prompts\" : [ {\"name\":\"x\"} , 5 , {\"name\":\"a\"} ] } } ,\t{\"id\":1,\"result\":{\"tools\":[{\"name\":\"q\"}]}} ]",
        r#"{"result":{"tools":[{"name":"x"}]},"jsonrpc":"2.0","id":1}"#,
        r#"{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"x"}],"nextCursor":null,"tools2":[{"name":"x"}]}}"#,
    ];
    let ambiguous = [bodies[11], bodies[12], bodies[13], bodies[14]];
    for body in bodies {
        let (mut fast_log, mut slow_log) = (Vec::new(), Vec::new());
        let fast = filter_json_response(body.as_bytes(), &pending, &mut keep_logged(&mut fast_log));
        let slow =
            filter_json_via_value(body.as_bytes(), &pending, &mut keep_logged(&mut slow_log));
        let (Ok((fast, fast_removed)), Ok((slow, slow_removed))) = (&fast, &slow) else {
            assert_eq!(fast.err(), slow.err(), "{body}");
            continue;
        };
        assert_eq!(fast_removed, slow_removed, "{body}");
        assert!(
            fast_log.ends_with(&slow_log),
            "{body}: {fast_log:?} {slow_log:?}"
        );
        let parsed: Value = serde_json::from_slice(fast).unwrap();
        assert_eq!(
            parsed,
            serde_json::from_slice::<Value>(slow).unwrap(),
            "{body}"
        );
        if *fast_removed == 0 && !ambiguous.contains(&body) {
            assert_eq!(
                fast,
                body.as_bytes(),
                "nothing hidden, nothing rewritten: {body}"
            );
        }
        if ambiguous.contains(&body) {
            assert_eq!(
                fast, slow,
                "a twice-given member is filtered as a value: {body}"
            );
        }
    }
}

#[test]
fn spliced_sse_lists_read_like_reserialised_ones() {
    let pending = pending(9, ListKind::Tools);
    let events = [
        "event: message\ndata: {\"jsonrpc\":\"2.0\",\"id\":9,\"result\":{\"tools\":[{\"name\":\"x\"},{\"name\":\"a\"}]}}",
        "event: message\ndata: {\"jsonrpc\":\"2.0\",\"id\":9,\ndata: \"result\":{\"tools\":[{\"name\":\"x\"},\ndata: {\"name\":\"a\"}]}}",
        "data: {\"jsonrpc\":\"2.0\",\"id\":9,\"result\":{\"tools\":[{\"name\":\"a\",\"name\":\"x\"},{\"name\":\"b\"}]}}",
        "data: [{\"jsonrpc\":\"2.0\",\"id\":9,\"result\":{\"tools\":[{\"name\":\"x\"}]}}]",
        "data: {\"jsonrpc\":\"2.0\",\"id\":9,\"result\":{\"tools\":[{\"name\":\"a\"}]}}",
        "id: 4\ndata: not json {\"name\":\"x\"}",
        ": a comment",
    ];
    for sep in ["\n\n", "\r\n\r\n"] {
        let body: String = events.iter().map(|e| format!("{e}{sep}")).collect();
        let (mut fast_log, mut slow_log) = (Vec::new(), Vec::new());
        let (fast, fast_removed) =
            filter_sse_response(body.as_bytes(), &pending, &mut keep_logged(&mut fast_log))
                .unwrap();
        let (slow, slow_removed) =
            filter_sse_via_value(body.as_bytes(), &pending, &mut keep_logged(&mut slow_log));
        assert_eq!(fast_removed, slow_removed);
        assert_eq!(fast_removed, 3);
        assert_eq!(fast_log, slow_log);
        let (fast, slow) = (
            String::from_utf8(fast).unwrap(),
            String::from_utf8(slow).unwrap(),
        );
        let (fast_events, slow_events): (Vec<&str>, Vec<&str>) =
            (fast.split(sep).collect(), slow.split(sep).collect());
        assert_eq!(fast_events.len(), slow_events.len());
        for (f, s) in fast_events.iter().zip(&slow_events) {
            let data = |e: &str| -> Option<Value> {
                let d: Vec<&str> = e
                    .lines()
                    .filter_map(|l| l.strip_prefix("data:"))
                    .map(|d| d.strip_prefix(' ').unwrap_or(d))
                    .collect();
                serde_json::from_str(&d.join("\n")).ok()
            };
            let others = |e: &'_ str| -> Vec<String> {
                e.lines()
                    .filter(|l| !l.starts_with("data:"))
                    .map(str::to_owned)
                    .collect()
            };
            assert_eq!(data(f), data(s), "{f:?} / {s:?}");
            assert_eq!(others(f), others(s), "{f:?} / {s:?}");
            if data(s).is_none() {
                assert_eq!(f, s);
            }
        }
    }
}

/// [`filter_sse_response`] as first written (every rewritten event serialised from a value).
fn filter_sse_via_value(
    body: &[u8],
    pending: &[PendingList],
    keep: &mut dyn FnMut(ListKind, &str) -> bool,
) -> (Vec<u8>, usize) {
    let text = std::str::from_utf8(body).unwrap();
    let mut out = String::new();
    let mut removed = 0;
    let mut rest = text;
    while !rest.is_empty() {
        let (event, sep, tail) = split_event(rest);
        let data: Vec<&str> = event
            .lines()
            .filter_map(|l| l.strip_prefix("data:"))
            .map(|d| d.strip_prefix(' ').unwrap_or(d))
            .collect();
        let rewritten = match serde_json::from_str::<Value>(&data.join("\n")) {
            Ok(mut msg) if !data.is_empty() => {
                let n = filter_message(&mut msg, pending, keep);
                removed += n;
                (n > 0).then_some(msg)
            }
            _ => None,
        };
        match rewritten {
            None => out.push_str(event),
            Some(msg) => {
                for line in event.lines().filter(|l| !l.starts_with("data:")) {
                    out.push_str(line);
                    out.push('\n');
                }
                out.push_str("data: ");
                out.push_str(&msg.to_string());
            }
        }
        out.push_str(sep);
        rest = tail;
    }
    (out.into_bytes(), removed)
}

#[test]
fn a_spliced_list_keeps_the_upstreams_text_but_for_the_list() {
    let body = "{\n  \"jsonrpc\": \"2.0\", \"id\": 4,\n  \"result\": {\"tools\": [ {\"name\": \"printEnv\"} ,\n {\"name\": \"echo\", \"b\": 1, \"a\": 2} ], \"z\": 0}\n}\n";
    let (out, removed) = filter_json_response(
        body.as_bytes(),
        &pending(4, ListKind::Tools),
        &mut keep_echo,
    )
    .unwrap();
    assert_eq!(removed, 1);
    assert_eq!(
        String::from_utf8(out).unwrap(),
        "{\n  \"jsonrpc\": \"2.0\", \"id\": 4,\n  \"result\": {\"tools\": [{\"name\": \"echo\", \"b\": 1, \"a\": 2}], \"z\": 0}\n}\n"
    );
}

/// Random JSON text for the splice tests: values of every kind, strings with escapes and
/// brackets, and random whitespace between tokens.
struct JsonGen(rand::rngs::StdRng);

impl JsonGen {
    fn ws(&mut self) -> &'static str {
        use rand::Rng;
        [" ", "", "", "\n  ", "\t", "\r\n"][self.0.gen_range(0..6)]
    }

    fn string(&mut self) -> String {
        use rand::Rng;
        let parts = [
            "a", "x", "]", "}", "{", "[", "\\\"", "\\\\", "\\u0078", "é", ",", ":",
        ];
        let n = self.0.gen_range(0..4);
        let body: String = (0..n)
            .map(|_| parts[self.0.gen_range(0..parts.len())])
            .collect();
        format!("\"{body}\"")
    }

    fn value(&mut self, depth: u32) -> String {
        use rand::Rng;
        match self.0.gen_range(0..if depth > 2 { 4 } else { 6 }) {
            0 => self.string(),
            1 => ["1", "-2.5e3", "0", "12345678901234567890"][self.0.gen_range(0..4)].to_owned(),
            2 => ["true", "false", "null"][self.0.gen_range(0..3)].to_owned(),
            3 => "{}".to_owned(),
            4 => {
                let n = self.0.gen_range(0..3);
                let items: Vec<String> = (0..n).map(|_| self.value(depth + 1)).collect();
                format!("[{}]", items.join(&format!(",{}", self.ws())))
            }
            _ => {
                let n = self.0.gen_range(0..3);
                let members: Vec<(String, String)> = (0..n)
                    .map(|_| (self.string(), self.value(depth + 1)))
                    .collect();
                self.object(members)
            }
        }
    }

    fn object(&mut self, members: Vec<(String, String)>) -> String {
        let members: Vec<String> = members
            .into_iter()
            .map(|(k, v)| format!("{}{k}{}:{}{v}", self.ws(), self.ws(), self.ws()))
            .collect();
        format!("{{{}{}}}", members.join(","), self.ws())
    }

    fn shuffled(&mut self, mut members: Vec<(String, String)>) -> String {
        use rand::seq::SliceRandom;
        members.shuffle(&mut self.0);
        self.object(members)
    }

    fn entry(&mut self) -> String {
        use rand::Rng;
        let name = match self.0.gen_range(0..8) {
            0 => self.value(1),
            1 => return self.value(1),
            _ => ["\"echo\"", "\"x1\"", "\"e\\u0078\"", "\"b\""][self.0.gen_range(0..4)].to_owned(),
        };
        let mut members = vec![("\"name\"".to_owned(), name)];
        for _ in 0..self.0.gen_range(0..3) {
            let k = self.string();
            let v = self.value(1);
            members.push((k, v));
        }
        self.shuffled(members)
    }

    fn message(&mut self) -> String {
        use rand::Rng;
        let n = self.0.gen_range(0..5);
        let entries: Vec<String> = (0..n).map(|_| self.entry()).collect();
        let list = format!(
            "[{}{}]",
            entries.join(&format!(",{}", self.ws())),
            self.ws()
        );
        let field = ["\"tools\"", "\"prompts\"", "\"other\""][self.0.gen_range(0..3)];
        let mut result = vec![(field.to_owned(), list)];
        if self.0.gen_bool(0.3) {
            result.push(("\"nextCursor\"".to_owned(), self.value(1)));
        }
        let result = self.shuffled(result);
        let id = ["1", "\"p\"", "2", "1.0"][self.0.gen_range(0..4)];
        let mut members = vec![
            ("\"jsonrpc\"".to_owned(), "\"2.0\"".to_owned()),
            ("\"id\"".to_owned(), id.to_owned()),
            ("\"result\"".to_owned(), result),
        ];
        if self.0.gen_bool(0.2) {
            members.push(("\"result\"".to_owned(), "{}".to_owned()));
        }
        self.shuffled(members)
    }
}

#[test]
fn spliced_lists_agree_with_reserialised_ones_on_random_documents() {
    use rand::{Rng, SeedableRng};
    let pending = vec![
        PendingList {
            id: json!(1),
            kind: ListKind::Tools,
        },
        PendingList {
            id: json!("p"),
            kind: ListKind::Prompts,
        },
    ];
    let mut g = JsonGen(rand::rngs::StdRng::seed_from_u64(5));
    let (mut spliced, mut via_value) = (0, 0);
    for _ in 0..3000 {
        let body = if g.0.gen_bool(0.3) {
            let n = g.0.gen_range(1..4);
            let ms: Vec<String> = (0..n).map(|_| g.message()).collect();
            format!("[{}]", ms.join(","))
        } else {
            g.message()
        };
        let (mut fast_log, mut slow_log) = (Vec::new(), Vec::new());
        let fast = filter_json_response(body.as_bytes(), &pending, &mut keep_logged(&mut fast_log));
        let slow =
            filter_json_via_value(body.as_bytes(), &pending, &mut keep_logged(&mut slow_log));
        match (&fast, &slow) {
            (Ok((f, fr)), Ok((s, sr))) => {
                assert_eq!(fr, sr, "{body}");
                assert!(fast_log.ends_with(&slow_log), "{body}");
                if *fr > 0 && f != s {
                    spliced += 1;
                } else if *fr > 0 {
                    via_value += 1;
                }
                assert_eq!(
                    serde_json::from_slice::<Value>(f).unwrap(),
                    serde_json::from_slice::<Value>(s).unwrap(),
                    "{body}"
                );
            }
            _ => assert_eq!(fast.err(), slow.err(), "{body}"),
        }
        let sse = format!(
            "event: message\ndata: {}\n\n",
            body.replace(['\n', '\r'], " ")
        );
        let (f, fr) =
            filter_sse_response(sse.as_bytes(), &pending, &mut |_, n| !n.contains('x')).unwrap();
        let (s, sr) = filter_sse_via_value(sse.as_bytes(), &pending, &mut |_, n| !n.contains('x'));
        assert_eq!(fr, sr, "{sse}");
        let data = |b: &[u8]| -> Option<Value> {
            let t = std::str::from_utf8(b).unwrap();
            serde_json::from_str(t.lines().find_map(|l| l.strip_prefix("data: "))?).ok()
        };
        assert_eq!(data(&f), data(&s), "{sse}");
    }
    assert!(spliced > 200 && via_value > 30, "{spliced} {via_value}");
}

/// Resource URIs that an MCP server's WHATWG parse would read as another URI are refused before
/// any rule sees them; the ones it keeps as they are pass.
#[test]
fn resource_uris_are_refused_unless_canonical() {
    let read = |uri: &str| {
        let body =
            json!({"jsonrpc": "2.0", "id": 1, "method": "resources/read", "params": {"uri": uri}});
        parse_body(body.to_string().as_bytes(), &Limits::default())
            .map(|b| b.messages()[0].name.as_deref().map(str::to_owned))
    };
    for uri in [
        "demo://resource/static/document/architecture.md",
        "demo://resource/dynamic/text/1",
        "file:///home/user/notes.txt",
        "https://example.com/a%20b?q=1#f",
        "urn:isbn:0451450523",
    ] {
        assert_eq!(read(uri), Ok(Some(uri.into())), "{uri}");
    }
    let static_doc = "demo://resource/static/document/architecture.md";
    for (uri, canonical) in [
        (
            "demo://resource/dynamic/text/../../static/document/architecture.md",
            static_doc,
        ),
        (
            "demo://resource/static/document/./architecture.md",
            static_doc,
        ),
        (
            "demo://resource/dynamic/text/%2e%2e/%2E%2e/static/document/architecture.md",
            static_doc,
        ),
        (
            "demo://resource/static/document/archi\ttecture.md",
            static_doc,
        ),
        (
            "demo://resource/static/document/architecture.md\n",
            static_doc,
        ),
        (
            "DEMO://resource/static/document/architecture.md",
            static_doc,
        ),
        ("https://EXAMPLE.com/x", "https://example.com/x"),
        ("https://example.com/a b", "https://example.com/a%20b"),
        ("https://example.com:443/x", "https://example.com/x"),
        ("https://example.com\\x", "https://example.com/x"),
    ] {
        assert_eq!(
            read(uri),
            Err(ParseError::NotCanonical(canonical.into())),
            "{uri:?}"
        );
    }
    for uri in ["", "relative/path", "demo", "http://[::1"] {
        assert_eq!(read(uri), Err(ParseError::NotUri), "{uri:?}");
    }
    let e = read("demo://a/./b").unwrap_err();
    assert_eq!((e.http_status(), e.rpc_code()), (400, INVALID_PARAMS));
}

#[test]
fn mcp_name_may_travel_base64_encoded() {
    let body = parse_body(
        "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/call\",\"params\":{\"name\":\"grüß\"}}"
            .as_bytes(),
        &Limits::default(),
    )
    .unwrap();
    let h = |n| McpHeaders {
        protocol_version: Some(STATELESS_REVISION),
        method: Some("tools/call"),
        name: Some(n),
    };
    // base64("grüß") = Z3LDvMOf
    assert_eq!(h("=?base64?Z3LDvMOf?=").check(&body), Ok(()));
    assert_eq!(
        h("=?base64?Z3LDvA==?=").check(&body),
        Err(HeaderMismatch::Name)
    );
    assert_eq!(
        h("=?base64?not base64?=").check(&body),
        Err(HeaderMismatch::Name)
    );
    assert_eq!(h("=?base64?/w==?=").check(&body), Err(HeaderMismatch::Name));
    assert_eq!(decode_name_header("echo").as_deref(), Some("echo"));
    assert_eq!(
        decode_name_header("=?base64?ZWNobw==?=").as_deref(),
        Some("echo")
    );
}
