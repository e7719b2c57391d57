//! `make bench` (`cargo bench -p mcpgw-filter-jwt --bench envoy`): requests/s and p50/p99 latency
//! through one real Envoy (one worker) whose listeners differ only in the authentication filter,
//! side by side in one run, measured with `wrk` on loopback:
//!
//! - `none`: no authentication (the floor);
//! - `mcpgw-floor`: our module on a path it does not protect (the VM's fixed cost per request);
//! - `jwt_authn`: Envoy's native JWT filter, without and with its `jwt_cache_config`;
//! - `mcpgw`: our proxy-wasm module (V8), without (`cache_entries: 0`) and with its token cache;
//! - `native`: the same filter as an Envoy dynamic module (`make native`), without and with it.
//!
//! Same keys (inline JWKS on both sides), same tokens, same fixed `direct_response` upstream (so
//! the upstream is never the bottleneck), at 1 and 32 connections; then, without caches, one row
//! per signature algorithm (ES256, EdDSA, RS256). Ratios are ours / native.
//!
//! First, the module's own work: wasm instructions per request through the wasmtime test host
//! (`mcpgw-wasmhost`), for a request it does not protect, one without a token, and a cached token.
//! Then what the proxy-wasm path itself costs (`filters/probe`), and each filter's own cost per
//! cached request measured in chains of ten equal filters (ours, `jwt_authn`, and the probe doing
//! nothing or one header read, and the dynamic module), which puts a filter's few µs well above
//! this machine's noise.
//!
//! Rows that are compared are measured round-robin, several rounds each, and every row keeps its
//! median round: a burst of load elsewhere on the machine then skews one round of every row
//! rather than the whole of one row.

#![allow(clippy::unwrap_used, clippy::panic)] // reason: a benchmark run fails by panicking

#[path = "../tests/common/mod.rs"]
mod common;

use std::fmt::Write as _;
use std::process::Command;

use common::*;
use mcpgw_core::jwk::Algorithm;
use mcpgw_testkit::{Envoy, bench_run, bench_setting, free_port, probe_wasm};
use mcpgw_wasmhost::{Plugin, Shared, Vm};
use serde_json::{Value, json};

const AUDIENCE: &str = "http://127.0.0.1/bench/mcp";
const PATH: &str = "/bench/mcp";

/// Seconds each measurement runs (`MCPGW_BENCH_SECONDS`, default 3).
fn seconds() -> u64 {
    bench_setting("MCPGW_BENCH_SECONDS", 3)
}

/// Rounds of each row (`MCPGW_BENCH_ROUNDS`, default 3); the median round is reported.
fn rounds() -> usize {
    bench_setting("MCPGW_BENCH_ROUNDS", 3)
}

fn fixed_response() -> Value {
    json!({ "match": { "prefix": "/" }, "direct_response": { "status": 200, "body": { "inline_string": "ok" } } })
}

/// Envoy's native `jwt_authn`, checking what ours checks and forwarding the same identity.
fn native_filter(jwks: &str, cache: bool) -> Value {
    let mut provider = json!({
        "issuer": ISSUER,
        "audiences": [AUDIENCE],
        "local_jwks": { "inline_string": jwks },
        "forward": false,
        "claim_to_headers": [
            { "header_name": "x-mcpgw-subject", "claim_name": "sub" },
            { "header_name": "x-mcpgw-client-id", "claim_name": "client_id" },
            { "header_name": "x-mcpgw-scopes", "claim_name": "scope" }
        ]
    });
    if cache {
        provider["jwt_cache_config"] = json!({ "jwt_cache_size": 4096 });
    }
    json!({
        "name": "envoy.filters.http.jwt_authn",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication",
            "providers": { "mcpgw": provider },
            "rules": [{ "match": { "prefix": "/" }, "requires": { "provider_name": "mcpgw" } }]
        }
    })
}

/// Our module's configuration with inline keys; `cache_entries: 0` turns its token cache off.
/// With `protect` false the benchmark path matches no resource: what the module costs before any
/// token work.
fn wasm_config(jwks: &str, cache: bool, protect: bool) -> Value {
    json!({
        "issuer": ISSUER,
        "resources": [{
            "canonical_url": AUDIENCE,
            "path_prefix": if protect { PATH } else { "/elsewhere" },
            "scopes_required": ["mcp"]
        }],
        "jwks": { "inline": serde_json::from_str::<Value>(jwks).unwrap() },
        "cache_entries": if cache { 4096 } else { 0 }
    })
}

/// Wasm instructions (wasmtime fuel) per request of the module's own work, as a report line each.
fn instructions(jwks: &str, token: &str) -> String {
    let plugin = Plugin::load(&wasm_path()).unwrap();
    let config = wasm_config(jwks, true, true).to_string();
    let mut vm = Vm::start(&plugin, &Shared::default(), config.as_bytes()).unwrap();
    assert!(vm.configured, "{:?}", vm.logs());
    let bearer = format!("Bearer {token}");
    let bearer = bearer.as_str();
    let mut report = String::new();
    for (label, headers, status) in [
        (
            "path it does not protect",
            head("/elsewhere", Some(bearer)),
            None,
        ),
        ("no token (401)", head(PATH, None), Some(401)),
        ("cached token (allowed)", head(PATH, Some(bearer)), None),
    ] {
        let run = |vm: &mut Vm| {
            let ex = vm.request(&headers, b"").unwrap();
            assert_eq!(ex.local.as_ref().map(|l| l.status), status, "{label}");
            vm.finish(ex.context_id).unwrap();
        };
        run(&mut vm);
        vm.take_fuel();
        let n = 1000;
        for _ in 0..n {
            run(&mut vm);
        }
        let _ = writeln!(
            report,
            "  {label:<26} {:>7} instructions/request",
            vm.take_fuel() / n
        );
    }
    report
}

/// The request headers wrk sends, with `authorization` when given.
fn head<'a>(path: &'a str, authorization: Option<&'a str>) -> Vec<(&'a str, &'a str)> {
    let mut h = vec![
        (":method", "GET"),
        (":path", path),
        (":authority", "127.0.0.1"),
    ];
    h.extend([("user-agent", "wrk"), ("accept", "*/*")]);
    h.extend(authorization.map(|a| ("authorization", a)));
    h
}

/// The probe's work per listener, and what the report calls it.
const PROBES: [(&str, &str); 3] = [
    (
        "clock 0",
        "two VM entries per request (the least a filter pays)",
    ),
    ("clock 50", "+ 50 host calls returning a value"),
    ("header 50", "+ 50 header reads (host call + VM entry each)"),
];

/// An `http_filters` entry loading the probe module (`$MCPGW_PROBE_WASM`; `make bench-jwt`
/// builds it) with `work`.
fn probe_filter(work: &str) -> Value {
    let module = probe_wasm("MCPGW_PROBE_WASM", "mcpgw_probe.wasm", "bench-jwt");
    json!({
        "name": "mcpgw.probe",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
            "config": {
                "root_id": "probe",
                "vm_config": {
                    "vm_id": work,
                    "runtime": "envoy.wasm.runtime.v8",
                    "code": { "local": { "filename": module } }
                },
                "configuration": {
                    "@type": "type.googleapis.com/google.protobuf.StringValue",
                    "value": work
                }
            }
        }
    })
}

/// The proxy-wasm path's own cost in this Envoy: CPU per request (from req/s at 32
/// connections, one worker) of the probe's listeners over the listener without a filter.
fn probe_costs(probes: &[(&str, u16)], none: u16, rounds: usize, secs: u64) -> String {
    let ports: Vec<u16> = [none]
        .into_iter()
        .chain(probes.iter().map(|p| p.1))
        .collect();
    let measured = round_robin(rounds, &ports, |port| wrk(port, "-", 32, secs));
    let per_request = |m: &Measure| 1e6 / m.rps;
    let mut report = String::from(
        "the proxy-wasm path itself (filters/probe), 32 connections, µs of the worker per request:",
    );
    let floor = per_request(&measured[0]);
    let entries = per_request(&measured[1]);
    for ((_, label), m) in PROBES.iter().zip(&measured[1..]) {
        let _ = write!(
            report,
            "\n  {label:<54} {:>7.0} req/s  {:+6.1} µs over no filter",
            m.rps,
            per_request(m) - floor
        );
    }
    let host_call = (per_request(&measured[2]) - entries) / 50.0;
    let header_read = (per_request(&measured[3]) - entries) / 50.0;
    let _ = write!(
        report,
        "\n  so: a host call ~{host_call:.2} µs; a VM entry (a header read's answer re-enters the VM) \
         ~{:.2} µs; a filter's fixed cost per request (its stream context and two VM entries) ~{:.1} µs",
        header_read - host_call,
        entries - floor,
    );
    report
}

/// How many equal filters the per-filter comparison chains: each one's cost shows ten times over,
/// well above the noise of one filter on a shared machine.
const CHAIN: usize = 10;

/// The per-filter comparison: what each filter in a chain of [`CHAIN`] costs per request (32
/// connections, µs of the worker: the chain's cost over no filter, divided by its length).
fn chain_costs(chains: &[(&str, u16)], none: u16, rounds: usize, secs: u64, token: &str) -> String {
    let ports: Vec<u16> = [none]
        .into_iter()
        .chain(chains.iter().map(|c| c.1))
        .collect();
    let measured = round_robin(rounds, &ports, |port| wrk(port, token, 32, secs));
    let per_filter: Vec<f64> = measured[1..]
        .iter()
        .map(|m| (1e6 / m.rps - 1e6 / measured[0].rps) / CHAIN as f64)
        .collect();
    let mut report = format!(
        "per filter, in chains of {CHAIN} equal filters (32 connections; µs of the worker per request):"
    );
    for ((label, _), cost) in chains.iter().zip(&per_filter) {
        let _ = write!(report, "\n  {label:<58} {cost:>5.1} µs");
    }
    let _ = write!(
        report,
        "\n  so per cached request mcpgw costs x{:.2} of jwt_authn as proxy-wasm and x{:.2} as a \
         dynamic module; the bare proxy-wasm path with one header read alone is x{:.2}",
        per_filter[2] / per_filter[3],
        per_filter[4] / per_filter[3],
        per_filter[1] / per_filter[3],
    );
    report
}

/// One `wrk` measurement.
struct Measure {
    rps: f64,
    p50_us: f64,
    p99_us: f64,
}

fn micros(text: &str) -> f64 {
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (n, unit) = text.split_at(split);
    let n: f64 = n.parse().unwrap_or(f64::NAN);
    match unit {
        "us" => n,
        "ms" => n * 1e3,
        "s" => n * 1e6,
        _ => f64::NAN,
    }
}

/// Measures every listener once per round, round-robin, and returns each one's median round (by
/// req/s).
fn round_robin(rounds: usize, ports: &[u16], measure: impl Fn(u16) -> Measure) -> Vec<Measure> {
    let mut runs: Vec<Vec<Measure>> = ports.iter().map(|_| Vec::new()).collect();
    for _ in 0..rounds.max(1) {
        for (&port, runs) in ports.iter().zip(&mut runs) {
            runs.push(measure(port));
        }
    }
    runs.into_iter()
        .map(|mut runs| {
            runs.sort_by(|a, b| a.rps.total_cmp(&b.rps));
            runs.swap_remove(runs.len() / 2)
        })
        .collect()
}

fn wrk(port: u16, token: &str, connections: u32, seconds: u64) -> Measure {
    let out = Command::new("wrk")
        .args(["-t1", &format!("-c{connections}"), &format!("-d{seconds}s")])
        .args(["--latency", "-H", &format!("authorization: Bearer {token}")])
        .arg(format!("http://127.0.0.1:{port}{PATH}"))
        .output()
        .unwrap_or_else(|e| panic!("cannot run wrk ({e}): `make .cache/wrk.stamp` installs it"));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && !text.contains("Non-2xx") && !text.contains("Socket errors"),
        "wrk failed or saw errors:\n{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let field = |label: &str| {
        text.lines()
            .find_map(|l| l.trim().strip_prefix(label).map(|v| v.trim().to_owned()))
            .unwrap_or_else(|| panic!("no {label:?} in wrk's output:\n{text}"))
    };
    Measure {
        rps: field("Requests/sec:").parse().unwrap_or(f64::NAN),
        p50_us: micros(&field("50%")),
        p99_us: micros(&field("99%")),
    }
}

fn main() {
    if !bench_run() {
        return;
    }
    let secs = seconds();
    let rounds = rounds();
    let keys = [
        Key::generate(Algorithm::ES256, "es256"),
        Key::generate(Algorithm::EdDSA, "eddsa"),
        Key::generate(Algorithm::RS256, "rs256"),
    ];
    let jwks_doc = jwks(&keys.iter().collect::<Vec<_>>());
    let tokens: Vec<(&str, String)> = keys
        .iter()
        .map(|k| {
            let mut c = claims(AUDIENCE, "mcp");
            c.exp = now() + 86_400;
            (k.key.algorithm().as_str(), k.sign(&c))
        })
        .collect();
    let es256 = &tokens[0].1;

    let variants: [(&str, Option<Value>); 8] = [
        ("none", None),
        (
            "mcpgw-floor",
            Some(jwt_filter(
                Build::Wasm,
                "bench_floor",
                &wasm_config(&jwks_doc, true, false),
            )),
        ),
        ("jwt_authn", Some(native_filter(&jwks_doc, false))),
        ("jwt_authn+cache", Some(native_filter(&jwks_doc, true))),
        (
            "mcpgw",
            Some(jwt_filter(
                Build::Wasm,
                "bench_nocache",
                &wasm_config(&jwks_doc, false, true),
            )),
        ),
        (
            "native",
            Some(jwt_filter(
                Build::Native,
                "",
                &wasm_config(&jwks_doc, false, true),
            )),
        ),
        (
            "mcpgw+cache",
            Some(jwt_filter(
                Build::Wasm,
                "bench_cache",
                &wasm_config(&jwks_doc, true, true),
            )),
        ),
        (
            "native+cache",
            Some(jwt_filter(
                Build::Native,
                "",
                &wasm_config(&jwks_doc, true, true),
            )),
        ),
    ];
    let admin = free_port();
    let mut ports = Vec::new();
    let mut listeners = Vec::new();
    for (name, filter) in &variants {
        let port = free_port();
        let filters = filter.iter().cloned().chain([router()]).collect();
        listeners.push(listener(name, port, filters, vec![fixed_response()]));
        ports.push((*name, port, filter.is_some() && *name != "mcpgw-floor"));
    }
    // The probe (filters/probe): what the proxy-wasm path itself costs, beside no filter at all.
    let probes: Vec<(&str, u16)> = PROBES
        .iter()
        .map(|(work, _)| (*work, free_port()))
        .collect();
    for (work, port) in &probes {
        let filters = vec![probe_filter(work), router()];
        listeners.push(listener(work, *port, filters, vec![fixed_response()]));
    }
    // Chains of equal filters (chain_costs): ours and jwt_authn each keep the token for the next.
    let mut chained = wasm_config(&jwks_doc, true, true);
    chained["forward_authorization"] = json!(true);
    let mut native_chained = native_filter(&jwks_doc, true);
    native_chained["typed_config"]["providers"]["mcpgw"]["forward"] = json!(true);
    let chains: Vec<(&str, u16, Value)> = [
        (
            "a proxy-wasm filter doing nothing (probe, two VM entries)",
            probe_filter("clock 0"),
        ),
        (
            "+ one header read (a host call and its VM entry)",
            probe_filter("header 1"),
        ),
        (
            "mcpgw, cached token",
            jwt_filter(Build::Wasm, "bench_chain", &chained),
        ),
        ("jwt_authn, cached token", native_chained),
        (
            "mcpgw dynamic module, cached token",
            jwt_filter(Build::Native, "", &chained),
        ),
    ]
    .into_iter()
    .map(|(label, filter)| (label, free_port(), filter))
    .collect();
    for (i, (_, port, filter)) in chains.iter().enumerate() {
        let filters = std::iter::repeat_n(filter.clone(), CHAIN)
            .chain([router()])
            .collect();
        listeners.push(listener(
            &format!("chain{i}"),
            *port,
            filters,
            vec![fixed_response()],
        ));
    }
    let envoy = Envoy::start(&bootstrap(admin, listeners, vec![]), admin, 1);
    for (label, port, _) in &chains {
        let ok = send(
            *port,
            "GET",
            PATH,
            &[("authorization", &format!("Bearer {es256}"))],
        );
        assert_eq!(ok.status, 200, "{label}: {ok:?}");
    }
    for (label, port, _) in &chains[2..] {
        let denied = send(*port, "GET", PATH, &[]);
        assert_eq!(denied.status, 401, "{label}: {denied:?}");
    }

    // Every authenticated listener refuses a request without a token and accepts the token.
    for (name, port, auth) in &ports {
        let ok = send(
            *port,
            "GET",
            PATH,
            &[("authorization", &format!("Bearer {es256}"))],
        );
        assert_eq!(ok.status, 200, "{name}: {ok:?}");
        if *auth {
            let denied = send(*port, "GET", PATH, &[]);
            assert_eq!(denied.status, 401, "{name}: {denied:?}");
        }
    }

    let wasm = wasm_path();
    let size = std::fs::metadata(&wasm).map(|m| m.len()).unwrap_or(0);
    let native = native_path();
    let native_size = std::fs::metadata(&native).map(|m| m.len()).unwrap_or(0);
    let mut report = String::new();
    let _ = writeln!(
        report,
        "the module's own work, through the wasmtime host (ES256 token):\n{}",
        instructions(&jwks_doc, es256)
    );
    let _ = writeln!(
        report,
        "mcpgw JWT filter vs Envoy jwt_authn: one Envoy worker, wrk -t1, loopback, fixed response;\nthe median of {rounds} round-robin rounds of {secs}s per row\nmodule {} = {size} bytes ({:.0} KiB)\ndynamic module {} = {native_size} bytes ({:.0} KiB)\n",
        wasm.display(),
        size as f64 / 1024.0,
        native.display(),
        native_size as f64 / 1024.0
    );
    let _ = writeln!(
        report,
        "{:<18} {:>5} {:>10} {:>10} {:>10}",
        "ES256 token", "conns", "req/s", "p50 µs", "p99 µs"
    );
    let mut results = std::collections::HashMap::new();
    for connections in [1, 32] {
        for (_, port, _) in &ports {
            wrk(*port, es256, connections, 1); // warm-up
        }
        let listeners: Vec<u16> = ports.iter().map(|p| p.1).collect();
        let measured = round_robin(rounds, &listeners, |port| {
            wrk(port, es256, connections, secs)
        });
        for ((name, _, _), m) in ports.iter().zip(measured) {
            let _ = writeln!(
                report,
                "{name:<18} {connections:>5} {:>10.0} {:>10.0} {:>10.0}",
                m.rps, m.p50_us, m.p99_us
            );
            results.insert((*name, connections), m);
        }
    }
    let _ = writeln!(
        report,
        "\nratios (ours / native; >1 req/s is better, <1 p50 is better)"
    );
    for connections in [1, 32] {
        let r = |n: &'static str| &results[&(n, connections)];
        for (ours, native) in [
            ("mcpgw", "jwt_authn"),
            ("mcpgw+cache", "jwt_authn"),
            ("mcpgw+cache", "jwt_authn+cache"),
            ("native", "jwt_authn"),
            ("native+cache", "jwt_authn+cache"),
        ] {
            let _ = writeln!(
                report,
                "  c={connections:<2} {ours:<12} vs {native:<16} req/s x{:.2}  p50 x{:.2}",
                r(ours).rps / r(native).rps,
                r(ours).p50_us / r(native).p50_us
            );
        }
        let _ = writeln!(
            report,
            "  c={connections:<2} p50 added over no auth: native+cache {:+.0} µs, mcpgw+cache {:+.0} µs, jwt_authn+cache {:+.0} µs, native {:+.0} µs, mcpgw {:+.0} µs, jwt_authn {:+.0} µs",
            r("native+cache").p50_us - r("none").p50_us,
            r("mcpgw+cache").p50_us - r("none").p50_us,
            r("jwt_authn+cache").p50_us - r("none").p50_us,
            r("native").p50_us - r("none").p50_us,
            r("mcpgw").p50_us - r("none").p50_us,
            r("jwt_authn").p50_us - r("none").p50_us,
        );
    }

    let _ = writeln!(
        report,
        "\n{}",
        probe_costs(&probes, ports[0].1, rounds, secs)
    );
    let chain_ports: Vec<(&str, u16)> = chains.iter().map(|(l, p, _)| (*l, *p)).collect();
    let _ = writeln!(
        report,
        "\n{}",
        chain_costs(&chain_ports, ports[0].1, rounds, secs, es256)
    );
    let _ = writeln!(
        report,
        "\nper algorithm, no caches, 1 connection (p50 over no auth = one signature check + claims)"
    );
    let floor = results[&("none", 1)].p50_us;
    let port_of = |n: &str| ports.iter().find(|p| p.0 == n).map(|p| p.1).unwrap();
    for (alg, token) in &tokens {
        let [authn, ours, module]: [Measure; 3] = round_robin(
            rounds,
            &[port_of("jwt_authn"), port_of("mcpgw"), port_of("native")],
            |port| wrk(port, token, 1, secs),
        )
        .try_into()
        .ok()
        .unwrap();
        let _ = writeln!(
            report,
            "  {alg:<6} jwt_authn {:>7.0} req/s p50 {:>6.0} µs (+{:.0}) | mcpgw {:>7.0} req/s p50 {:>6.0} µs (+{:.0}) | native {:>7.0} req/s p50 {:>6.0} µs (+{:.0}) | req/s vs jwt_authn: mcpgw x{:.2}, native x{:.2}",
            authn.rps,
            authn.p50_us,
            authn.p50_us - floor,
            ours.rps,
            ours.p50_us,
            ours.p50_us - floor,
            module.rps,
            module.p50_us,
            module.p50_us - floor,
            ours.rps / authn.rps,
            module.rps / authn.rps
        );
    }
    drop(envoy);
    print!("{report}");
    let out = mcpgw_testkit::workspace_root().join("target/bench-jwt.txt");
    if std::fs::write(&out, &report).is_ok() {
        println!("(also written to {})", out.display());
    }
}
