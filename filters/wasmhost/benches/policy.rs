//! `make bench` (bench-policy): what a policy decision costs, for a 50-rule policy.
//!
//! 1. The module's size.
//! 2. Through the wasmtime host: wasm instructions (fuel) and wall time per request for an
//!    allowed call, a denied call, and a `tools/list` whose 50-entry answer is filtered.
//! 3. Through real Envoy, side by side in one run: the same upstream behind Envoy with the JWT
//!    filter only, and with the JWT filter + the policy filter; wrk measures requests/s and p50
//!    at 1 and 8 connections, and each Envoy's CPU per request (schedstat, all threads: the
//!    steadiest of the three on a shared machine); the report gives the ratio, the p50 the
//!    policy filter adds (target: under 20 µs) and the CPU it adds.
//!
//! `MCPGW_BENCH_SECONDS` sets each wrk run's length (default 5).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // reason: a benchmark aborts on failure, like a test

#[path = "../tests/support/mod.rs"]
mod support;

use std::process::Command;
use std::time::Instant;

use mcpgw_testkit::{Envoy, bench_run, bench_setting, free_port, scratch_dir, unique};
use mcpgw_wasmhost::{Plugin, Shared, Vm};
use serde_json::{Value, json};
use support::*;

/// A 50-rule policy shaped like a real one: protocol methods for everyone, 40 team rules over
/// tool-name globs and groups, deny rules (two with CEL conditions that every call evaluates),
/// and the rule the benchmark caller matches, last.
fn policy_50() -> Value {
    let mut rules = vec![json!({"name": "protocol", "effect": "allow",
        "methods": ["initialize", "ping", "notifications/*", "tools/list"]})];
    for i in 0..40 {
        rules.push(json!({"name": format!("team-{i}"), "effect": "allow", "servers": ["everything"],
            "methods": ["tools/call"], "names": [format!("team{i}_*")], "when": {"groups": [format!("acme/team-{i}")]}}));
    }
    for i in 0..5 {
        rules.push(json!({"name": format!("danger-{i}"), "effect": "deny", "methods": ["tools/call"], "names": [format!("danger{i}_*")]}));
    }
    rules.push(
        json!({"name": "admin-tools", "effect": "deny", "methods": ["tools/call"],
        "condition": "name.startsWith(\"admin_\") && !(\"acme/admins\" in groups)"}),
    );
    rules.push(json!({"name": "small-arguments", "effect": "deny", "methods": ["tools/call"], "condition": "size(arguments) > 16"}));
    rules.push(json!({"name": "no-env", "effect": "deny", "methods": ["tools/call"], "names": ["printEnv"]}));
    rules.push(json!({"name": "echo", "effect": "allow", "servers": ["everything"], "methods": ["tools/call"],
        "names": ["echo", "add"], "when": {"scopes": ["mcp:tools"], "groups": ["acme"]}}));
    assert_eq!(rules.len(), 50);
    json!({"servers": [{"name": "everything", "path_prefix": "/everything/"}, {"name": "memory", "path_prefix": "/memory/"}], "rules": rules})
}

fn call(tool: &str) -> String {
    json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": tool, "arguments": {"message": "hello"}}}).to_string()
}

const IDENTITY: [(&str, &str); 5] = [
    ("x-mcpgw-subject", "github:1"),
    ("x-mcpgw-user", "alice"),
    ("x-mcpgw-groups", "acme,acme/team-39"),
    ("x-mcpgw-scopes", "mcp:tools openid"),
    ("x-mcpgw-client-id", "client-a"),
];

/// Mean fuel and wall time per request of `rounds` runs of `run`.
fn measure(vm: &mut Vm, rounds: u32, mut run: impl FnMut(&mut Vm)) -> (u64, f64) {
    run(vm);
    vm.take_fuel();
    let start = Instant::now();
    for _ in 0..rounds {
        run(vm);
    }
    let micros = start.elapsed().as_secs_f64() * 1e6 / f64::from(rounds);
    (vm.take_fuel() / u64::from(rounds), micros)
}

fn wasmtime_costs(module: &std::path::Path) {
    let plugin = Plugin::load(module).unwrap();
    let mut vm = Vm::start(
        &plugin,
        &Shared::default(),
        policy_50().to_string().as_bytes(),
    )
    .unwrap();
    assert!(vm.configured, "{:?}", vm.logs());
    let headers = |body: &str| {
        let mut h: Vec<(String, String)> = [
            (":method", "POST"),
            (":path", "/everything/mcp"),
            (":authority", "gw"),
            ("content-type", "application/json"),
        ]
        .iter()
        .chain(IDENTITY.iter())
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
        h.push(("content-length".to_owned(), body.len().to_string()));
        h
    };
    let decide = |tool: &'static str, want: Option<u32>| {
        let body = call(tool);
        let h = headers(&body);
        move |vm: &mut Vm| {
            let h: Vec<(&str, &str)> = h.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            let ex = vm.request(&h, body.as_bytes()).unwrap();
            assert_eq!(ex.local.as_ref().map(|l| l.status), want);
            vm.finish(ex.context_id).unwrap();
        }
    };
    let list_body = json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list"}).to_string();
    let tools: Vec<Value> = (0..50)
        .map(|i| json!({"name": format!("team{}_tool", i % 45), "inputSchema": {"type": "object"}}))
        .collect();
    let answer = json!({"jsonrpc": "2.0", "id": 2, "result": {"tools": tools}}).to_string();
    let list_headers = headers(&list_body);
    let list = |vm: &mut Vm| {
        let h: Vec<(&str, &str)> = list_headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let ex = vm.request(&h, list_body.as_bytes()).unwrap();
        let r = vm
            .respond(
                &ex,
                &[(":status", "200"), ("content-type", "application/json")],
                answer.as_bytes(),
            )
            .unwrap();
        assert!(r.local.is_none() && r.body.len() < answer.len());
    };
    println!(
        "  wasmtime host, 50-rule policy (instructions = wasmtime fuel, ~1 per wasm instruction):"
    );
    for (label, (fuel, micros)) in [
        (
            "allowed tools/call (matches the last rule)",
            measure(&mut vm, 2000, decide("echo", None)),
        ),
        (
            "denied tools/call (deny rule)",
            measure(&mut vm, 2000, decide("printEnv", Some(403))),
        ),
        (
            "tools/list + filter a 50-tool answer",
            measure(&mut vm, 500, list),
        ),
    ] {
        println!("    {label:<46} {fuel:>9} instructions/request  {micros:>7.1} µs/request");
    }
}

/// One wrk run: requests/s, p50 (µs), and the µs of CPU the gateway's Envoy (`pid`, all its
/// threads) spent per request.
fn wrk(pid: u32, port: u16, token: &str, connections: u32, seconds: u64) -> Run {
    let cpu_before = cpu_ns(pid);
    let script = scratch_dir().join(format!("{}.lua", unique("policy-wrk")));
    let lua = format!(
        "wrk.method = \"POST\"\nwrk.body = [[{}]]\nwrk.headers[\"Content-Type\"] = \"application/json\"\n\
         wrk.headers[\"Accept\"] = \"application/json, text/event-stream\"\nwrk.headers[\"Authorization\"] = \"Bearer {token}\"\n",
        call("echo")
    );
    std::fs::write(&script, lua).unwrap();
    let out = Command::new("wrk")
        .args([
            "-t1",
            &format!("-c{connections}"),
            &format!("-d{seconds}s"),
            "--latency",
            "-s",
        ])
        .arg(&script)
        .arg(format!("http://127.0.0.1:{port}/everything/mcp"))
        .output()
        .expect("wrk is not installed (make bench installs it)");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!text.contains("Non-2xx"), "requests failed:\n{text}");
    let rps = text
        .lines()
        .find_map(|l| l.strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse().ok());
    let p50 = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("50%"))
        .map(|v| micros(v.trim()));
    let requests = text
        .lines()
        .find_map(|l| l.trim().split_once(" requests in"))
        .and_then(|(n, _)| n.trim().parse::<f64>().ok());
    match (rps, p50, requests) {
        (Some(rps), Some(p50), Some(requests)) => Run {
            rps,
            p50,
            cpu_us: (cpu_ns(pid) - cpu_before) as f64 / 1e3 / requests,
        },
        _ => panic!("cannot read wrk's output:\n{text}"),
    }
}

/// A wrk run's figures.
#[derive(Clone, Copy)]
struct Run {
    rps: f64,
    p50: f64,
    cpu_us: f64,
}

/// CPU time (ns) that process `pid` has run, all threads: the kernel's schedstat, which counts
/// the time itself rather than sampling it.
fn cpu_ns(pid: u32) -> u64 {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).expect("/proc is readable");
    tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}

/// wrk's latency (`123.45us`, `1.20ms`, `1.00s`) in µs.
fn micros(v: &str) -> f64 {
    let (num, scale) = if let Some(n) = v.strip_suffix("us") {
        (n, 1.0)
    } else if let Some(n) = v.strip_suffix("ms") {
        (n, 1e3)
    } else {
        (v.trim_end_matches('s'), 1e6)
    };
    num.parse::<f64>().unwrap_or(f64::NAN) * scale
}

fn envoy_costs(seconds: u64, rounds: usize) {
    let issuer = Issuer::new();
    let upstream = Upstream::start("everything");
    let start = |with_policy: bool| {
        let (port, admin) = (free_port(), free_port());
        let mut filters = vec![wasm_filter(
            "jwt",
            "mcpgw_filter_jwt.wasm",
            &jwt_config(port, &issuer, &["everything", "memory"]),
        )];
        if with_policy {
            filters.push(wasm_filter(
                "policy",
                "mcpgw_filter_policy.wasm",
                &policy_50(),
            ));
        }
        let yaml = bootstrap(admin, port, filters, &[("everything", upstream.port)], "");
        (port, Envoy::start(&yaml, admin, 1))
    };
    // Both gateways run side by side and are measured round-robin, each keeping the median of
    // its rounds: load elsewhere on the machine then skews a round of each, not one whole row.
    let gateways: Vec<(u16, Envoy, String)> = [false, true]
        .into_iter()
        .map(|with_policy| {
            let (port, envoy) = start(with_policy);
            let token = issuer.token(
                "github:1",
                "alice",
                &["acme", "acme/team-39"],
                "mcp:tools",
                &canonical(port, "everything"),
            );
            let r = send(
                port,
                "POST",
                "/everything/mcp",
                &[
                    ("authorization", &format!("Bearer {token}")),
                    ("content-type", "application/json"),
                ],
                call("echo").as_bytes(),
            );
            assert_eq!(r.status, 200, "{r:?}");
            (port, envoy, token)
        })
        .collect();
    let measure = |connections: u32| -> Vec<Run> {
        for (port, envoy, token) in &gateways {
            wrk(envoy.proc.pid(), *port, token, connections, 1);
        }
        let mut runs: Vec<Vec<Run>> = vec![Vec::new(); gateways.len()];
        for _ in 0..rounds {
            for ((port, envoy, token), runs) in gateways.iter().zip(&mut runs) {
                runs.push(wrk(envoy.proc.pid(), *port, token, connections, seconds));
            }
        }
        runs.iter()
            .map(|runs| {
                let median = |pick: fn(&Run) -> f64| {
                    let mut v: Vec<f64> = runs.iter().map(pick).collect();
                    v.sort_by(f64::total_cmp);
                    v[v.len() / 2]
                };
                Run {
                    rps: median(|r| r.rps),
                    p50: median(|r| r.p50),
                    cpu_us: median(|r| r.cpu_us),
                }
            })
            .collect()
    };
    // [JWT only, JWT + policy], at 1 and at 8 connections.
    let (one, eight) = (measure(1), measure(8));
    drop(gateways);
    println!(
        "  Envoy 1.40, 1 worker, JWT filter in front, tools/call echo, wrk: median of {rounds} round-robin rounds of {seconds}s per row\n  \
         (cpu: µs of Envoy's CPU per request, all its threads, from the kernel's schedstat):"
    );
    println!(
        "    {:<26} {:>12} {:>10} {:>8} {:>12} {:>10} {:>8}",
        "", "req/s (c=1)", "p50 (c=1)", "cpu", "req/s (c=8)", "p50 (c=8)", "cpu"
    );
    for (label, (a, b)) in ["JWT only", "JWT + policy (50 rules)"]
        .iter()
        .zip(one.iter().zip(&eight))
    {
        println!(
            "    {label:<26} {:>12.0} {:>8.0}µs {:>6.1}µs {:>12.0} {:>8.0}µs {:>6.1}µs",
            a.rps, a.p50, a.cpu_us, b.rps, b.p50, b.cpu_us
        );
    }
    if let ([jwt1, pol1], [jwt8, pol8]) = (one.as_slice(), eight.as_slice()) {
        println!(
            "    policy filter: req/s ratio {:.2} (c=1) {:.2} (c=8); added p50 {:.0} µs (c=1) {:.0} µs (c=8); \
             added Envoy CPU per request {:.1} µs (c=1) {:.1} µs (c=8); target < 20 µs p50",
            pol1.rps / jwt1.rps,
            pol8.rps / jwt8.rps,
            pol1.p50 - jwt1.p50,
            pol8.p50 - jwt8.p50,
            pol1.cpu_us - jwt1.cpu_us,
            pol8.cpu_us - jwt8.cpu_us,
        );
    }
}

fn main() {
    let module = wasm("mcpgw_filter_policy.wasm");
    let size = std::fs::metadata(&module).map(|m| m.len()).unwrap_or(0);
    println!("  module: {} {size} bytes", module.display());
    wasmtime_costs(&module);
    if !bench_run() {
        return;
    }
    envoy_costs(
        bench_setting("MCPGW_BENCH_SECONDS", 3),
        bench_setting("MCPGW_BENCH_ROUNDS", 3),
    );
}
