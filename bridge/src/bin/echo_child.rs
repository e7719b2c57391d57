//! A trivial stdio JSON-RPC child for benchmarks and fault tests: answers `initialize` like an MCP
//! server and echoes every other request's params back as its result. Methods that help tests:
//! `debug/pid` answers with the child's process id; `debug/env` with its environment and working
//! directory; `debug/progress` sends `params.steps`
//! progress notifications (to the request's progress token), waits `params.delay_ms` between
//! them, then answers. Behaviour switches (for fault tests) come from the environment:
//! `ECHO_STDERR_FLOOD=<bytes>` writes that much to stderr per request;
//! `ECHO_SILENT_METHOD=<method>` never answers that method.

use std::io::{BufRead, Write};
use std::time::Duration;

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
            "debug/pid" => json!({"pid": std::process::id()}),
            "debug/env" => json!({
                "env": std::env::vars().map(|(k, v)| (k, Value::String(v))).collect::<serde_json::Map<String, Value>>(),
                "cwd": std::env::current_dir().map(|d| d.display().to_string()).unwrap_or_default(),
            }),
            "debug/progress" => {
                if progress(&mut out, &msg).is_err() {
                    return;
                }
                json!({"done": true})
            }
            _ => msg.get("params").cloned().unwrap_or(json!({})),
        };
        let reply = json!({"jsonrpc": "2.0", "id": id, "result": result});
        if write_line(&mut out, &reply).is_err() {
            return;
        }
    }
}

fn write_line(out: &mut impl Write, msg: &Value) -> std::io::Result<()> {
    serde_json::to_writer(&mut *out, msg)?;
    out.write_all(b"\n")?;
    out.flush()
}

/// `debug/progress`: `steps` notifications for the request's progress token, `delay_ms` apart.
fn progress(out: &mut impl Write, msg: &Value) -> std::io::Result<()> {
    let steps = msg
        .pointer("/params/steps")
        .and_then(Value::as_u64)
        .unwrap_or(1);
    let delay = Duration::from_millis(
        msg.pointer("/params/delay_ms")
            .and_then(Value::as_u64)
            .unwrap_or(0),
    );
    let token = msg
        .pointer("/params/_meta/progressToken")
        .cloned()
        .unwrap_or(Value::Null);
    for step in 1..=steps {
        let note = json!({"jsonrpc": "2.0", "method": "notifications/progress",
            "params": {"progressToken": token, "progress": step, "total": steps}});
        write_line(out, &note)?;
        std::thread::sleep(delay);
    }
    Ok(())
}
