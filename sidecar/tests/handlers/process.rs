//! The `mcpgw-sidecar` binary itself: configuration errors at start, JSON logs without secrets,
//! failing fast while Redis is down or hung and reconnecting after, the key ring written back when
//! Redis lost it, graceful shutdown on SIGTERM.

use std::process::Command;
use std::time::Duration;

use mcpgw_sidecar::store::Store;
use mcpgw_testkit::{Proc, free_port, scratch_dir, unique};

use crate::common::*;

const SIGTERM: i32 = 15;
const SIGSTOP: i32 = 19;
const SIGCONT: i32 = 18;

fn sidecar(config: &str, port: u16, args: &[&str]) -> Proc {
    let path = scratch_dir().join(format!("{}.toml", unique("sidecar-config")));
    std::fs::write(&path, config).unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_mcpgw-sidecar"));
    cmd.arg("--config")
        .arg(&path)
        .arg("--listen")
        .arg(format!("127.0.0.1:{port}"));
    cmd.args(args).env("MCPGW_LOG", "debug");
    Proc::spawn("sidecar", cmd)
}

fn redis_on(port: u16) -> Proc {
    let mut cmd = Command::new("redis-server");
    cmd.args([
        "--port",
        &port.to_string(),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
    ]);
    let mut p = Proc::spawn("redis", cmd);
    p.wait_ready(port, Duration::from_secs(10));
    p
}

#[test]
fn a_bad_configuration_stops_the_start_naming_each_field() {
    let mut p = sidecar(
        "issuer = \"ftp://x\"\nredis_url = \"redis://127.0.0.1:1\"\n[tokens]\naccess_token_lifetime = \"soon\"\n",
        free_port(),
        &[],
    );
    assert_eq!(p.wait_exit(Duration::from_secs(10)), Some(Some(2)));
    let log = p.log();
    assert!(
        log.contains("access_token_lifetime") && log.contains("not a duration"),
        "{log}"
    );
    let mut p = sidecar(
        "issuer = \"ftp://x\"\nredis_url = \"redis://127.0.0.1:1\"\n",
        free_port(),
        &["check-config"],
    );
    assert_eq!(p.wait_exit(Duration::from_secs(10)), Some(Some(2)));
    assert!(
        p.log()
            .contains("issuer: must be an absolute http or https URL"),
        "{}",
        p.log()
    );
}

/// A sidecar process on a Redis of its own, and what a test drives it with.
struct Running {
    redis_url: String,
    config: String,
    prefix: String,
    port: u16,
    base: String,
    http: reqwest::Client,
}

impl Running {
    fn new(redis_port: u16) -> Running {
        let redis_url = format!("redis://127.0.0.1:{redis_port}");
        let config = config_text(&redis_url, "", "[registration]\nmode = \"open\"\n");
        let prefix = config
            .lines()
            .find_map(|l| l.strip_prefix("key_prefix = "))
            .unwrap()
            .trim_matches('"')
            .to_owned();
        let port = free_port();
        Running {
            redis_url,
            config,
            prefix,
            port,
            base: format!("http://127.0.0.1:{port}"),
            http: reqwest::Client::new(),
        }
    }

    fn start(&self) -> Proc {
        let mut p = sidecar(&self.config, self.port, &[]);
        p.wait_ready(self.port, Duration::from_secs(20));
        p
    }

    /// A whole token exchange through the process: the client registered, the code it redeemed,
    /// the token answer.
    async fn tokens(&self) -> (serde_json::Value, String, serde_json::Value) {
        let (http, base) = (&self.http, &self.base);
        let client: serde_json::Value = http
            .post(format!("{base}/register"))
            .json(&serde_json::json!({"redirect_uris": [REDIRECT], "token_endpoint_auth_method": "none", "grant_types": ["authorization_code", "refresh_token"]}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let client_id = client["client_id"].as_str().unwrap();
        let store = Store::connect(&self.redis_url, &self.prefix).await.unwrap();
        let code = unique("code") + "-secret-code-value";
        let grant = mcpgw_sidecar::store::CodeGrant {
            client_id: client_id.to_owned(),
            redirect_uri: REDIRECT.to_owned(),
            redirect_uri_sent: true,
            code_challenge: challenge(VERIFIER),
            resource: EVERYTHING.to_owned(),
            scope: Default::default(),
            user: alice(),
            issued_at: mcpgw_sidecar::now(),
        };
        store
            .put_code(&code, &grant, Duration::from_secs(60))
            .await
            .unwrap();
        let form = [
            ("grant_type", "authorization_code"),
            ("client_id", client_id),
            ("code", &code),
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
        (client, code, tokens)
    }

    /// `/verify`'s status for `token` at the `everything` resource.
    async fn verify(&self, token: &str) -> u16 {
        self.http
            .get(format!("{}/verify", self.base))
            .header("x-forwarded-host", "127.0.0.1:8080")
            .header("x-forwarded-uri", "/everything/mcp")
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    }
}

/// Every OAuth request answers 503 `temporarily_unavailable` within half a second, again and
/// again (Redis is down or hung).
async fn fails_fast(running: &Running, client_id: &str) {
    let (http, base) = (&running.http, &running.base);
    for _ in 0..3 {
        for request in [
            http.post(format!("{base}/register")).json(
                &serde_json::json!({"redirect_uris": [REDIRECT], "token_endpoint_auth_method": "none"}),
            ),
            http.post(format!("{base}/token")).form(&[
                ("grant_type", "refresh_token"),
                ("client_id", client_id),
                ("refresh_token", "any"),
            ]),
        ] {
            let started = std::time::Instant::now();
            let r = request.send().await.unwrap();
            let took = started.elapsed();
            assert_eq!(r.status(), 503);
            let body: serde_json::Value = r.json().await.unwrap();
            assert_eq!(body["error"], "temporarily_unavailable");
            assert!(took < Duration::from_millis(500), "took {took:?}");
        }
    }
}

#[tokio::test]
async fn serves_logs_json_without_secrets_survives_a_redis_restart_and_stops_gracefully() {
    let redis_port = free_port();
    let mut redis = redis_on(redis_port);
    let running = Running::new(redis_port);
    let mut p = running.start();
    let (http, base) = (running.http.clone(), running.base.clone());
    let (client, code, tokens) = running.tokens().await;
    let access = tokens["access_token"].as_str().unwrap().to_owned();
    let verify = |token: String| {
        let running = &running;
        async move { running.verify(&token).await }
    };
    assert_eq!(verify(access.clone()).await, 200);
    // Query strings (codes at /oauth/callback) never reach the request spans.
    let status = http
        .get(format!("{base}/health?code={code}"))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 200);

    // Redis hangs (SIGSTOP): OAuth requests fail fast; it resumes: they work again.
    redis.signal(SIGSTOP);
    fails_fast(&running, client["client_id"].as_str().unwrap()).await;
    redis.signal(SIGCONT);
    let mut ok = false;
    for _ in 0..50 {
        if verify(access.clone()).await == 200 {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ok, "no recovery after Redis resumed:\n{}", p.log());

    // Redis goes away: not ready, /verify fails closed; it comes back: everything works again.
    redis.stop();
    let ready = || {
        let http = http.clone();
        let base = base.clone();
        async move {
            http.get(format!("{base}/ready"))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    assert_eq!(ready().await, 503);
    let why: serde_json::Value = http
        .get(format!("{base}/ready"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(why["status"], "redis unreachable");
    assert!(
        why["error"].as_str().is_some_and(|e| !e.is_empty()),
        "{why}"
    );
    assert_eq!(verify(access.clone()).await, 503);
    let feed = http.get(format!("{base}/revoked")).send().await.unwrap();
    assert_eq!(feed.status(), 503);
    let feed: serde_json::Value = feed.json().await.unwrap();
    assert_eq!(feed["error"], "temporarily_unavailable");
    // Every OAuth request answers 503 with OAuth JSON within half a second, again and again.
    fails_fast(&running, client["client_id"].as_str().unwrap()).await;
    let _redis = redis_on(redis_port);
    let mut ok = false;
    for _ in 0..50 {
        if ready().await == 200 {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ok, "no reconnect after the Redis restart:\n{}", p.log());

    p.signal(SIGTERM);
    assert_eq!(p.wait_exit(Duration::from_secs(10)), Some(Some(0)));
    let log = p.log();
    for secret in [
        code.as_str(),
        VERIFIER,
        access.as_str(),
        tokens["refresh_token"].as_str().unwrap(),
        client["registration_access_token"].as_str().unwrap(),
    ] {
        assert!(!log.contains(secret), "a secret reached the log");
    }
    let lines: Vec<&str> = log.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(lines.iter().any(|l| l.contains("issued an access token")));
    for line in lines {
        serde_json::from_str::<serde_json::Value>(line)
            .unwrap_or_else(|_| panic!("not JSON: {line}"));
    }
}

#[tokio::test]
async fn the_key_ring_is_written_back_when_redis_lost_it_so_tokens_outlive_a_restart() {
    let redis_port = free_port();
    let _redis = redis_on(redis_port);
    let running = Running::new(redis_port);
    let mut p = running.start();
    let (_, _, tokens) = running.tokens().await;
    let access = tokens["access_token"].as_str().unwrap();
    assert_eq!(running.verify(access).await, 200);
    let jwks = |running: &Running| {
        let (http, base) = (running.http.clone(), running.base.clone());
        async move {
            http.get(format!("{base}/.well-known/jwks.json"))
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap()
        }
    };
    let before = jwks(&running).await;

    // Redis loses everything; the running sidecar notices and writes its ring back.
    let mut redis = redis::Client::open(running.redis_url.as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let _: () = redis::cmd("FLUSHALL")
        .query_async(&mut redis)
        .await
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !p.log().contains("wrote it back") {
        assert!(
            std::time::Instant::now() < deadline,
            "no write-back:\n{}",
            p.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // A restart loads the same ring: the token issued before still verifies.
    p.signal(SIGTERM);
    assert_eq!(p.wait_exit(Duration::from_secs(10)), Some(Some(0)));
    // (A new HTTP client: the old one's pooled connection went with the old process.)
    let running = Running {
        http: reqwest::Client::new(),
        ..running
    };
    let _p = running.start();
    assert_eq!(jwks(&running).await, before);
    assert_eq!(running.verify(access).await, 200);
}

#[tokio::test]
async fn a_client_slow_to_send_its_request_head_is_cut() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let port = free_port();
    let config = config_text(&redis().url(), "", "");
    let mut p = sidecar(&config, port, &[]);
    p.wait_ready(port, Duration::from_secs(20));
    let started = std::time::Instant::now();
    let mut slow = Vec::new();
    for _ in 0..20 {
        let mut tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap();
        tcp.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: ")
            .await
            .unwrap();
        slow.push(tcp);
    }
    for tcp in &mut slow {
        let mut rest = Vec::new();
        let closed =
            tokio::time::timeout(Duration::from_secs(30), tcp.read_to_end(&mut rest)).await;
        assert!(closed.is_ok(), "a slow-header connection was held open");
    }
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_secs(5) && waited < Duration::from_secs(20),
        "{waited:?}"
    );
    // The sidecar still answers.
    let r = reqwest::get(format!("http://127.0.0.1:{port}/health"))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}
