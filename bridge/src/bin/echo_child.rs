//! A trivial stdio JSON-RPC child for benchmarks and fault tests: answers `initialize` like an MCP
//! server and echoes every other request's params back as its result. Behaviour switches (for
//! fault tests) come from the environment:
//! `ECHO_STDERR_FLOOD=<bytes>` writes that much to stderr per request;
//! `ECHO_SILENT_METHOD=<method>` never answers that method.

use std::io::{BufRead, Write};

use serde_json::{Value, json};

fn main() {
    let flood: usize = std::env::var("ECHO_STDERR_FLOOD")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let silent = std::env::var("ECHO_SILENT_METHOD").unwrap_or_default();
    let noise = vec![b'x'; flood.min(1 << 20)];
    let stdin = std::io::stdin();
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let mut err = std::io::stderr().lock();
    for line in stdin.lock().lines() {
        let Ok(line) = line else { return };
        let Ok(msg) = serde_json::from_str::<Value>(&line) else {
            continue;
        };
        let (Some(id), Some(method)) = (msg.get("id"), msg.get("method").and_then(Value::as_str))
        else {
            continue;
        };
        if flood > 0 {
            let _ = err.write_all(&noise);
            let _ = err.write_all(b"\n");
        }
        if method == silent {
            continue;
        }
        let result = match method {
            "initialize" => json!({
                "protocolVersion": msg.pointer("/params/protocolVersion").cloned().unwrap_or(json!("2025-06-18")),
                "capabilities": {"tools": {}},
                "serverInfo": {"name": "mcpgw-echo-child", "version": "0"},
            }),
            "tools/list" => json!({"tools": [{"name": "echo", "inputSchema": {"type": "object"}}]}),
            "tools/call" => json!({"content": [{"type": "text",
                "text": msg.pointer("/params/arguments").map(Value::to_string).unwrap_or_default()}]}),
            _ => msg.get("params").cloned().unwrap_or(json!({})),
        };
        let reply = json!({"jsonrpc": "2.0", "id": id, "result": result});
        if serde_json::to_writer(&mut out, &reply).is_err()
            || out.write_all(b"\n").is_err()
            || out.flush().is_err()
        {
            return;
        }
    }
}
