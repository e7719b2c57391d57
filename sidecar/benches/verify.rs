//! `make bench` (`cargo bench -p mcpgw-sidecar --bench verify`): the sidecar's `/verify`
//! (Traefik ForwardAuth) against the seeds' own auth service (PyPI `mcp-oauth-dynamicclient`
//! 0.2.0, `mcp-oauth-server` as its package runs it: one uvicorn process), side by side in one
//! run on the same Redis, measured with `wrk` on loopback: requests/s and p50/p99 at 1 and 32
//! connections, and the ratio. Then the sidecar's `/token` (authorization-code exchange, each
//! request a fresh code) and `/register` rates, with the seeds' `/register` beside ours.
//!
//! Both services verify a real token of their own: ours from a code exchange, theirs minted by
//! its `AuthManager.create_jwt_token` (benches/seeds_auth.py). Both check the token's
//! `oauth:token:{jti}` key in Redis on every request; ours also decides a forwarded `tools/call`
//! body with its `[policy]`, as Envoy's policy filter would. Logs at `warn` on both sides.

#![allow(clippy::unwrap_used, clippy::panic)] // reason: a benchmark run fails by panicking

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use mcpgw_core::claims::Scopes;
use mcpgw_sidecar::store::{CodeGrant, Store, User};
use mcpgw_testkit::{
    Proc, Redis, bench_run, bench_setting, free_port, scratch_dir, unique, workspace_root,
};
use sha2::{Digest, Sha256};

const RESOURCE: &str = "http://127.0.0.1:8080/everything/mcp";
const REDIRECT: &str = "http://127.0.0.1:33418/callback";
const VERIFIER: &str = "bench-verifier-0123456789abcdefghijklmnopqrstuvwxyz";
/// p99 target at 32 connections, from the issue.
const P99_TARGET_US: f64 = 5000.0;
/// Requests/s target as a multiple of the seeds' service.
const RATIO_TARGET: f64 = 30.0;

/// Seconds each measurement runs (`MCPGW_BENCH_SECONDS`, default 5).
fn seconds() -> u64 {
    bench_setting("MCPGW_BENCH_SECONDS", 5)
}

#[derive(Debug, Clone, Copy)]
struct Measure {
    rps: f64,
    p50_us: f64,
    p99_us: f64,
    errors: u64,
}

/// wrk prints latencies like `812.00us`, `1.23ms`, `1.02s`.
fn micros(v: &str) -> f64 {
    let (num, factor) = if let Some(n) = v.strip_suffix("us") {
        (n, 1.0)
    } else if let Some(n) = v.strip_suffix("ms") {
        (n, 1e3)
    } else if let Some(n) = v.strip_suffix('s') {
        (n, 1e6)
    } else {
        (v, f64::NAN)
    };
    num.parse::<f64>().map_or(f64::NAN, |n| n * factor)
}

/// Runs wrk against `url` with `headers` (and a Lua `script`, if any).
fn wrk(
    url: &str,
    headers: &[String],
    connections: u32,
    secs: u64,
    script: Option<(&PathBuf, &[&str])>,
) -> Measure {
    let threads = connections.min(2);
    let mut cmd = Command::new("wrk");
    cmd.args([
        format!("-t{threads}"),
        format!("-c{connections}"),
        format!("-d{secs}s"),
        "--latency".into(),
    ]);
    for h in headers {
        cmd.arg("-H").arg(h);
    }
    if let Some((path, _)) = script {
        cmd.arg("-s").arg(path);
    }
    cmd.arg(url);
    if let Some((_, args)) = script {
        cmd.arg("--").args(args);
    }
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run wrk ({e}): `make .cache/wrk.stamp` installs it"));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "wrk failed:\n{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let field = |label: &str| {
        text.lines()
            .find_map(|l| l.trim().strip_prefix(label).map(|v| v.trim().to_owned()))
    };
    let errors = field("Non-2xx or 3xx responses:").map_or(0, |v| v.parse().unwrap_or(u64::MAX))
        + field("Socket errors:").map_or(0, |_| 1);
    Measure {
        rps: field("Requests/sec:")
            .and_then(|v| v.parse().ok())
            .unwrap_or(f64::NAN),
        p50_us: field("50%").map_or(f64::NAN, |v| micros(&v)),
        p99_us: field("99%").map_or(f64::NAN, |v| micros(&v)),
        errors,
    }
}

fn bench_venv(name: &str) -> PathBuf {
    workspace_root().join(".venv-bench/bin").join(name)
}

/// The seeds' settings: every one is mandatory (DESIGN.md).
fn seeds_env(cmd: &mut Command, redis_url: &str, key_b64: &str) {
    cmd.envs([
        ("GITHUB_CLIENT_ID", "bench"),
        ("GITHUB_CLIENT_SECRET", "bench-secret"),
        ("JWT_SECRET", "bench-jwt-secret-0123456789abcdef"),
        ("JWT_ALGORITHM", "RS256"),
        ("JWT_PRIVATE_KEY_B64", key_b64),
        ("BASE_DOMAIN", "127.0.0.1"),
        ("REDIS_URL", redis_url),
        ("REDIS_PASSWORD", ""),
        ("ACCESS_TOKEN_LIFETIME", "3600"),
        ("REFRESH_TOKEN_LIFETIME", "86400"),
        ("SESSION_TIMEOUT", "300"),
        ("CLIENT_LIFETIME", "0"),
        ("ALLOWED_GITHUB_USERS", "*"),
        ("MCP_PROTOCOL_VERSION", "2025-06-18"),
        ("LOG_LEVEL", "WARNING"),
    ]);
}

fn seeds_helper(arg: &str, redis_url: &str, key_b64: &str) -> String {
    let mut cmd = Command::new(bench_venv("python"));
    cmd.arg(workspace_root().join("sidecar/benches/seeds_auth.py"))
        .arg(arg);
    seeds_env(&mut cmd, redis_url, key_b64);
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "seeds_auth.py {arg}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

fn user() -> User {
    User {
        sub: "oidc:alice".into(),
        login: Some("alice".into()),
        name: Some("Alice Example".into()),
        email: Some("alice@example.test".into()),
        groups: vec!["engineering".into()],
    }
}

async fn put_codes(store: &Store, client_id: &str, names: impl Iterator<Item = String>) {
    let grant = CodeGrant {
        client_id: client_id.to_owned(),
        redirect_uri: REDIRECT.to_owned(),
        redirect_uri_sent: true,
        code_challenge: URL_SAFE_NO_PAD.encode(Sha256::digest(VERIFIER.as_bytes())),
        resource: RESOURCE.to_owned(),
        scope: Scopes::default(),
        user: user(),
        issued_at: mcpgw_sidecar::now(),
    };
    let mut set = tokio::task::JoinSet::new();
    for name in names {
        let (store, grant) = (store.clone(), grant.clone());
        set.spawn(async move {
            store
                .put_code(&name, &grant, Duration::from_secs(600))
                .await
                .unwrap()
        });
        if set.len() >= 256 {
            set.join_next().await;
        }
    }
    while set.join_next().await.is_some() {}
}

fn row(out: &mut String, name: &str, c: u32, m: Measure) {
    let _ = writeln!(
        out,
        "  {name:<34} c={c:<3} {:>9.0} req/s   p50 {:>8.0} us   p99 {:>8.0} us{}",
        m.rps,
        m.p50_us,
        m.p99_us,
        if m.errors > 0 {
            format!("   ({} errors)", m.errors)
        } else {
            String::new()
        }
    );
}

#[tokio::main]
async fn main() {
    if !bench_run() {
        return;
    }
    let secs = seconds();
    let redis = Redis::start();
    let redis_url = redis.url();
    let prefix = format!("{}:", unique("bench"));

    // Ours.
    let port = free_port();
    let config = scratch_dir().join(format!("{}.toml", unique("bench-sidecar")));
    std::fs::write(
        &config,
        format!(
            "issuer = \"http://127.0.0.1:8080\"\nredis_url = \"{redis_url}\"\nkey_prefix = \"{prefix}\"\n\
             [registration]\nmode = \"open\"\n[allow]\nusers = [\"alice\"]\n\
             [rate_limit]\nper_address = 0\nper_client = 0\n\
             [[resources]]\ncanonical_url = \"{RESOURCE}\"\npath_prefix = \"/everything/mcp\"\n\
             [policy]\nservers = [{{ name = \"everything\", path_prefix = \"/everything/mcp\" }}]\n\
             rules = [{{ name = \"alice\", effect = \"allow\", servers = [\"everything\"], when = {{ users = [\"alice\"] }} }}]\n"
        ),
    )
    .unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_mcpgw-sidecar"));
    cmd.arg("--config")
        .arg(&config)
        .arg("--listen")
        .arg(format!("127.0.0.1:{port}"))
        .env("MCPGW_LOG", "warn");
    let mut ours = Proc::spawn("bench-sidecar", cmd);
    ours.wait_ready(port, Duration::from_secs(20));

    // The seeds' service, on the same Redis.
    let key_b64 = seeds_helper("key", &redis_url, "");
    let seeds_port = free_port();
    let mut cmd = Command::new(bench_venv("mcp-oauth-server"));
    cmd.args(["--host", "127.0.0.1", "--port", &seeds_port.to_string()]);
    seeds_env(&mut cmd, &redis_url, &key_b64);
    let mut seeds = Proc::spawn("bench-seeds-auth", cmd);
    seeds.wait_ready(seeds_port, Duration::from_secs(30));
    let seeds_token = seeds_helper("token", &redis_url, &key_b64);

    // Our token: a registered client and a real code exchange.
    let http = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}");
    let register_body = serde_json::json!({
        "redirect_uris": [REDIRECT], "token_endpoint_auth_method": "none", "client_name": "bench",
    });
    let client: serde_json::Value = http
        .post(format!("{base}/register"))
        .json(&register_body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let client_id = client["client_id"].as_str().unwrap().to_owned();
    let store = Store::connect(&redis_url, &prefix).await.unwrap();
    put_codes(
        &store,
        &client_id,
        std::iter::once("bench-first".to_owned()),
    )
    .await;
    let form = [
        ("grant_type", "authorization_code"),
        ("client_id", &client_id),
        ("code", "bench-first"),
        ("redirect_uri", REDIRECT),
        ("code_verifier", VERIFIER),
    ];
    let tokens: serde_json::Value = http
        .post(format!("{base}/token"))
        .form(&form)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let our_token = tokens["access_token"].as_str().unwrap().to_owned();

    let ours_verify = format!("{base}/verify");
    let seeds_verify = format!("http://127.0.0.1:{seeds_port}/verify");
    let ours_headers = vec![
        format!("Authorization: Bearer {our_token}"),
        "X-Forwarded-Host: 127.0.0.1:8080".to_owned(),
        "X-Forwarded-Uri: /everything/mcp".to_owned(),
        "X-Forwarded-Method: POST".to_owned(),
    ];
    let seeds_headers = vec![format!("Authorization: Bearer {seeds_token}")];
    // Ours gets what Traefik forwards (forwardBody): a tools/call body, decided by the policy.
    let call_lua = scratch_dir().join(format!("{}.lua", unique("bench-verify")));
    std::fs::write(&call_lua, VERIFY_LUA).unwrap();
    let ours_script: Option<(&PathBuf, &[&str])> = Some((&call_lua, &[]));
    // Both accept their token (and nothing else counts as a measurement).
    for (url, headers, script) in [
        (&ours_verify, &ours_headers, ours_script),
        (&seeds_verify, &seeds_headers, None),
    ] {
        let m = wrk(url, headers, 1, 1, script);
        assert_eq!(m.errors, 0, "{url} refuses its token");
    }

    let mut out = String::new();
    let _ = writeln!(
        out,
        "==> /verify (ForwardAuth), {secs}s per row, wrk on loopback, same Redis"
    );
    let mut verdict = Vec::new();
    for c in [1u32, 32] {
        let theirs = wrk(&seeds_verify, &seeds_headers, c, secs, None);
        let ours_m = wrk(&ours_verify, &ours_headers, c, secs, ours_script);
        row(&mut out, "seeds mcp-oauth-dynamicclient 0.2.0", c, theirs);
        row(&mut out, "mcpgw-sidecar", c, ours_m);
        let ratio = ours_m.rps / theirs.rps;
        let _ = writeln!(
            out,
            "  {:<34} c={c:<3} {ratio:>8.1}x requests/s, p99 {:.1}x lower",
            "ratio ours/seeds",
            theirs.p99_us / ours_m.p99_us
        );
        // The issue's targets are at 32 connections; 1 connection is reported for latency.
        if c == 32 {
            let met = |ok: bool| if ok { "met" } else { "MISSED" };
            verdict.push(format!(
                "{ratio:.1}x the requests/s at 32 connections (target {RATIO_TARGET}x) {}",
                met(ratio >= RATIO_TARGET)
            ));
            verdict.push(format!(
                "p99 at 32 connections {:.2} ms (target < {} ms) {}",
                ours_m.p99_us / 1000.0,
                P99_TARGET_US / 1000.0,
                met(ours_m.p99_us < P99_TARGET_US)
            ));
        }
    }

    // /token: every request redeems a fresh code (pre-stored; the Lua script numbers them).
    let token_secs = secs.min(3);
    let per_thread = 30_000usize;
    // Run 1 (c=1) uses one wrk thread, run 32 two.
    let names = [(1, 0), (32, 0), (32, 1)]
        .into_iter()
        .flat_map(|(run, t)| (1..=per_thread).map(move |i| format!("bench-{run}-{t}-{i}")));
    put_codes(&store, &client_id, names).await;
    let lua = scratch_dir().join(format!("{}.lua", unique("bench-token")));
    std::fs::write(&lua, TOKEN_LUA).unwrap();
    let _ = writeln!(
        out,
        "==> /token (authorization_code exchange: PKCE, sign ES256, 6 Redis writes), {token_secs}s"
    );
    for c in [1u32, 32] {
        let run = c.to_string();
        let args = [client_id.as_str(), REDIRECT, VERIFIER, run.as_str()];
        let m = wrk(
            &format!("{base}/token"),
            &[],
            c,
            token_secs,
            Some((&lua, &args)),
        );
        row(&mut out, "mcpgw-sidecar /token", c, m);
    }
    let reg_lua = scratch_dir().join(format!("{}.lua", unique("bench-register")));
    std::fs::write(&reg_lua, format!("wrk.method = \"POST\"\nwrk.headers[\"Content-Type\"] = \"application/json\"\nwrk.body = '{register_body}'\n")).unwrap();
    let _ = writeln!(
        out,
        "==> /register (open registration, public client), {token_secs}s"
    );
    for c in [1u32, 32] {
        let theirs = wrk(
            &format!("http://127.0.0.1:{seeds_port}/register"),
            &[],
            c,
            token_secs,
            Some((&reg_lua, &[])),
        );
        let ours_m = wrk(
            &format!("{base}/register"),
            &[],
            c,
            token_secs,
            Some((&reg_lua, &[])),
        );
        row(&mut out, "seeds /register", c, theirs);
        row(&mut out, "mcpgw-sidecar /register", c, ours_m);
        let _ = writeln!(
            out,
            "  {:<34} c={c:<3} {:>8.1}x requests/s",
            "ratio ours/seeds",
            ours_m.rps / theirs.rps
        );
    }
    let _ = writeln!(out, "==> targets: {}", verdict.join("; "));
    print!("{out}");
    ours.stop();
    seeds.stop();
    drop(redis);
}

/// wrk script: each thread redeems its own numbered codes `bench-<run>-<thread>-<n>`.
/// The request Traefik's ForwardAuth sends for an MCP `tools/call`: a GET with the body.
const VERIFY_LUA: &str = r#"wrk.method = "GET"
wrk.body = '{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"echo","arguments":{"message":"hi"}}}'
"#;

const TOKEN_LUA: &str = r#"
local next_id = 0
function setup(thread)
  thread:set("id", next_id)
  next_id = next_id + 1
end
function init(args)
  client, redirect, verifier, run = args[1], args[2], args[3], args[4]
  n = 0
end
local function enc(s)
  return (s:gsub("[^%w%-%._~]", function(c) return string.format("%%%02X", string.byte(c)) end))
end
function request()
  n = n + 1
  local body = "grant_type=authorization_code&client_id=" .. enc(client) .. "&code=bench-" .. run .. "-" .. id .. "-" .. n
    .. "&redirect_uri=" .. enc(redirect) .. "&code_verifier=" .. enc(verifier)
  return wrk.format("POST", "/token", { ["Content-Type"] = "application/x-www-form-urlencoded" }, body)
end
"#;
