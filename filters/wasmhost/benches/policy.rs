//! `make bench` (bench-policy): what a policy decision costs, for a 50-rule policy.
//!
//! 1. The module's size.
//! 2. Through the wasmtime host: wasm instructions (fuel) and wall time per request for an
//!    allowed call, a denied call, and a `tools/list` whose 50-entry answer is filtered.
//! 3. Through real Envoy, side by side in one run: the same upstream behind Envoy with the JWT
//!    filter only, with the JWT filter + the policy filter, and with the JWT filter + a probe
//!    that has the policy filter's callbacks and host calls but decides nothing (the least such
//!    a filter pays in this Envoy); wrk measures requests/s and p50 at 1 and 8 connections, and
//!    each Envoy's CPU per request (schedstat, all threads: the steadiest of the three on a
//!    shared machine); the report gives the ratio, the p50 and CPU each adds (target: under
//!    20 µs p50), and each one's own cost in chains of ten copies.
//!
//! `MCPGW_BENCH_SECONDS` sets each wrk run's length (default 3), `MCPGW_BENCH_ROUNDS` the rounds
//! (default 3).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // reason: a benchmark aborts on failure, like a test

#[path = "../tests/support/mod.rs"]
mod support;

use std::process::Command;
use std::time::Instant;

use mcpgw_testkit::{Envoy, bench_run, bench_setting, free_port, probe_wasm, scratch_dir, unique};
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

/// `make bench-policy`'s probe (`$MCPGW_POLICY_FLOOR_WASM`, built from
/// `filters/probe/examples/policy_floor.rs`): the policy filter's callbacks, with `calls` also its
/// host calls, deciding nothing.
fn probe_filter(work: &str) -> Value {
    let module = probe_wasm(
        "MCPGW_POLICY_FLOOR_WASM",
        "examples/policy_floor.wasm",
        "bench-policy",
    );
    wasm_filter_from("probe", &module, work)
}

/// Ten copies of `filter` in one VM: a filter's own cost per request, shown ten times over.
fn ten(filter: impl Fn() -> Value) -> Vec<Value> {
    (0..10)
        .map(|i| {
            let mut f = filter();
            f["name"] = json!(format!("mcpgw.chain{i}"));
            f
        })
        .collect()
}

/// What runs behind the JWT filter in each gateway the benchmark measures, and its label.
fn gateways() -> Vec<(&'static str, Vec<Value>)> {
    let policy = || wasm_filter("policy", "mcpgw_filter_policy.wasm", &policy_50());
    vec![
        ("JWT only", vec![]),
        ("JWT + policy (50 rules)", vec![policy()]),
        ("JWT + probe: policy's calls", vec![probe_filter("calls")]),
        ("JWT + probe: callbacks", vec![probe_filter("enter")]),
        ("JWT + 10 x policy", ten(policy)),
        ("JWT + 10 x probe: calls", ten(|| probe_filter("calls"))),
        ("JWT + 10 x probe: callbacks", ten(|| probe_filter("enter"))),
    ]
}

/// The median of `pick` over `runs`.
fn median(runs: &[Run], pick: fn(&Run) -> f64) -> f64 {
    let mut v: Vec<f64> = runs.iter().map(pick).collect();
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn envoy_costs(seconds: u64, rounds: usize) {
    let issuer = Issuer::new();
    let upstream = Upstream::start("everything");
    let rows = gateways();
    let start = |behind_jwt: &[Value]| {
        let (port, admin) = (free_port(), free_port());
        let mut filters = vec![wasm_filter(
            "jwt",
            "mcpgw_filter_jwt.wasm",
            &jwt_config(port, &issuer, &["everything", "memory"]),
        )];
        filters.extend_from_slice(behind_jwt);
        let yaml = bootstrap(admin, port, filters, &[("everything", upstream.port)], "");
        let envoy = Envoy::start(&yaml, admin, 1);
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
    };
    // runs[connections][row]. Every round starts each gateway afresh and measures them
    // round-robin, in an order that turns with the round: one process's memory layout moves a
    // single filter's figures by 10-20 µs, and load elsewhere on the machine skews a round of
    // each row, not one whole row.
    let mut runs = [vec![Vec::new(); rows.len()], vec![Vec::new(); rows.len()]];
    for round in 0..rounds {
        let gateways: Vec<_> = rows.iter().map(|(_, filters)| start(filters)).collect();
        let mut order: Vec<usize> = (0..rows.len()).collect();
        order.rotate_left(round % rows.len());
        for (runs, connections) in runs.iter_mut().zip([1, 8]) {
            for &i in &order {
                let (port, envoy, token) = &gateways[i];
                wrk(envoy.proc.pid(), *port, token, connections, 2);
                runs[i].push(wrk(envoy.proc.pid(), *port, token, connections, seconds));
            }
        }
    }
    let [one, eight] = runs.map(|rows| {
        rows.iter()
            .map(|runs| Run {
                rps: median(runs, |r| r.rps),
                p50: median(runs, |r| r.p50),
                cpu_us: median(runs, |r| r.cpu_us),
            })
            .collect::<Vec<_>>()
    });
    println!(
        "  Envoy 1.40, 1 worker, JWT filter in front, tools/call echo, wrk: median of {rounds} rounds of {seconds}s per row,\n  \
         each round with every gateway started afresh (cpu: µs of Envoy's CPU per request, all its threads, from the\n  \
         kernel's schedstat); the probe (filters/probe/examples/policy_floor.rs) has the policy filter's callbacks and,\n  \
         with `calls`, its host calls on an allowed request, and decides nothing:"
    );
    println!(
        "    {:<30} {:>12} {:>10} {:>8} {:>12} {:>10} {:>8}",
        "", "req/s (c=1)", "p50 (c=1)", "cpu", "req/s (c=8)", "p50 (c=8)", "cpu"
    );
    for ((label, _), (a, b)) in rows.iter().zip(one.iter().zip(&eight)) {
        println!(
            "    {label:<30} {:>12.0} {:>8.0}µs {:>6.1}µs {:>12.0} {:>8.0}µs {:>6.1}µs",
            a.rps, a.p50, a.cpu_us, b.rps, b.p50, b.cpu_us
        );
    }
    let added =
        |runs: &[Run], i: usize| (runs[i].p50 - runs[0].p50, runs[i].cpu_us - runs[0].cpu_us);
    for (i, what) in [
        (1, "policy filter"),
        (
            2,
            "probe, the policy filter's callbacks and host calls (the floor)",
        ),
        (3, "probe, the policy filter's callbacks only"),
    ] {
        let ((p1, c1), (p8, c8)) = (added(&one, i), added(&eight, i));
        println!(
            "    {what}: added p50 {p1:.0} µs (c=1) {p8:.0} µs (c=8); added Envoy CPU per request {c1:.1} µs (c=1) {c8:.1} µs (c=8)"
        );
    }
    println!(
        "    policy filter: req/s ratio {:.2} (c=1) {:.2} (c=8); target < 20 µs added p50",
        one[1].rps / one[0].rps,
        eight[1].rps / eight[0].rps,
    );
    let per_filter = |i: usize| (one[i].cpu_us - one[0].cpu_us) / 10.0;
    println!(
        "    per filter in chains of ten (added Envoy CPU / 10, c=1): policy {:.1} µs, probe with its calls {:.1} µs, \
         probe with its callbacks {:.1} µs: the decision itself {:.1} µs",
        per_filter(4),
        per_filter(5),
        per_filter(6),
        per_filter(4) - per_filter(5),
    );
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
