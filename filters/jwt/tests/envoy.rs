//! End-to-end tests of the JWT filter in real Envoy (from the project venv), each run against both
//! builds: the proxy-wasm module (`dist/mcpgw_filter_jwt.wasm`, `make wasm`) as `wasm::<case>` and
//! the dynamic module (`dist/libmcpgw_filter_jwt.so`, `make native`) as `native::<case>`, which
//! must behave alike. Keys and tokens are generated here; the
//! key server and the upstream are small HTTP servers in this process. One Envoy serves each group
//! of cases: the request cases share one, key rotation and outages get their own.

#![allow(clippy::unwrap_used, clippy::panic)] // reason: a test fails by panicking

mod common;

use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common::*;
use mcpgw_core::claims::AccessTokenClaims;
use mcpgw_core::jwk::Algorithm;
use mcpgw_testkit::{Envoy, Proc, free_port, scratch_dir, unique, venv_bin, workspace_root};
use serde_json::{Value, json};

/// The plugin configuration of the test gateway listening on `port`, keys from cluster `jwks`.
fn plugin_config(port: u16, refresh_interval: &str) -> Value {
    let base = format!("http://127.0.0.1:{port}");
    let resource = |name: &str, scopes: &[&str]| {
        json!({
            "canonical_url": format!("{base}/{name}/mcp"),
            "host": "127.0.0.1",
            "path_prefix": format!("/{name}/mcp"),
            "scopes_required": scopes,
            "metadata": {
                "authorization_servers": [ISSUER],
                "scopes_supported": ["mcp:read", "mcp:write"],
                "resource_name": name
            }
        })
    };
    json!({
        "issuer": ISSUER,
        "resources": [
            resource("alpha", &["mcp:read"]),
            resource("beta", &[]),
            {
                "canonical_url": "http://solo.test/mcp",
                "host": "solo.test",
                "path_prefix": "/mcp",
                "metadata": { "authorization_servers": [ISSUER], "resource_name": "solo" }
            }
        ],
        "jwks": { "remote": {
            "cluster": "jwks",
            "refresh_interval": refresh_interval,
            "timeout": "2s",
            "unknown_kid_refetch_interval": "1s"
        }}
    })
}

/// An Envoy with two workers running the JWT filter in front of an echo upstream.
struct Gateway {
    port: u16,
    keys: KeyServer,
    envoy: Envoy,
    _echo: HttpServer,
}

impl Gateway {
    /// Starts Envoy; the key server is started first when `keys_up`.
    fn start(build: Build, keys: KeyServer, keys_up: bool, refresh_interval: &str) -> Gateway {
        Gateway::start_edited(build, keys, keys_up, refresh_interval, vec![], &|_| {})
    }

    /// Starts Envoy with `clusters` besides the echo and key server ones, and the plugin
    /// configuration changed by `edit`.
    fn start_edited(
        build: Build,
        mut keys: KeyServer,
        keys_up: bool,
        refresh_interval: &str,
        clusters: Vec<Value>,
        edit: &dyn Fn(&mut Value),
    ) -> Gateway {
        if keys_up {
            keys.start();
        }
        let echo = echo_server();
        let (port, admin) = (free_port(), free_port());
        let mut config = plugin_config(port, refresh_interval);
        edit(&mut config);
        let filters = vec![jwt_filter(build, "mcpgw_jwt", &config), router()];
        let yaml = bootstrap(
            admin,
            vec![listener("public", port, filters, vec![route_to("echo")])],
            [cluster("echo", echo.port), cluster("jwks", keys.port)]
                .into_iter()
                .chain(clusters)
                .collect(),
        );
        let mut envoy = Envoy::start(&yaml, admin, 2);
        envoy.proc.wait_ready(port, Duration::from_secs(10));
        if build == Build::Native {
            // The module is built for this Envoy's ABI, and says which it was built for.
            let abi = mcpgw_native_abi::ABI_VERSION.to_string_lossy();
            let log = envoy.proc.log();
            assert!(
                log.contains(&format!("Dynamic module ABI version {abi} matched"))
                    && log.contains(&format!("built for Envoy's dynamic-module ABI {abi}")),
                "{log}"
            );
        }
        Gateway {
            port,
            keys,
            envoy,
            _echo: echo,
        }
    }

    fn url(&self, name: &str) -> String {
        format!("http://127.0.0.1:{}/{name}/mcp", self.port)
    }

    fn get(&self, path: &str, headers: &[(&str, &str)]) -> Response {
        send(self.port, "GET", path, headers)
    }

    fn get_with_token(&self, path: &str, token: &str) -> Response {
        self.get(path, &[("authorization", &format!("Bearer {token}"))])
    }

    /// Asks until `want` answers (up to `timeout`), returning the last response.
    fn poll(&self, path: &str, token: &str, want: u16, timeout: Duration) -> Response {
        let deadline = Instant::now() + timeout;
        loop {
            let r = self.get_with_token(path, token);
            if r.status == want || Instant::now() >= deadline {
                return r;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// The gateway shared by the request cases, with its signing key `k1` published.
struct Shared {
    gw: Gateway,
    key: Key,
    /// Published too: one key for each other algorithm.
    others: Vec<Key>,
    /// A different key published nowhere, also called `k1`.
    impostor: Key,
}

fn shared(build: Build) -> &'static Shared {
    static WASM: OnceLock<Shared> = OnceLock::new();
    static NATIVE: OnceLock<Shared> = OnceLock::new();
    let shared = match build {
        Build::Wasm => &WASM,
        Build::Native => &NATIVE,
    };
    shared.get_or_init(|| {
        let key = Key::generate(Algorithm::ES256, "k1");
        let others: Vec<Key> = [Algorithm::EdDSA, Algorithm::RS256, Algorithm::PS256]
            .into_iter()
            .map(|alg| Key::generate(alg, alg.as_str()))
            .collect();
        let impostor = Key::generate(Algorithm::ES256, "k1");
        let published: Vec<&Key> = std::iter::once(&key).chain(&others).collect();
        let gw = Gateway::start(build, KeyServer::new(jwks(&published)), true, "300s");
        Shared {
            gw,
            key,
            others,
            impostor,
        }
    })
}

fn token(key: &Key, gw: &Gateway, resource: &str, scope: &str) -> String {
    key.sign(&claims(&gw.url(resource), scope))
}

fn metadata_challenge(gw: &Gateway, resource: &str) -> String {
    format!(
        "Bearer resource_metadata=\"http://127.0.0.1:{}/.well-known/oauth-protected-resource/{resource}/mcp\"",
        gw.port
    )
}

fn missing_token_gets_401_pointing_at_the_resource_metadata(build: Build) {
    let s = shared(build);
    for headers in [vec![], vec![("authorization", "Basic dXNlcjpwYXNz")]] {
        let r = s.gw.get("/alpha/mcp", &headers);
        assert_eq!(r.status, 401, "{r:?}");
        assert_eq!(
            r.header("www-authenticate"),
            Some(metadata_challenge(&s.gw, "alpha").as_str())
        );
        assert_eq!(r.json()["error"], "invalid_token");
    }
}

fn invalid_tokens_get_401_invalid_token(build: Build) {
    let s = shared(build);
    let url = s.gw.url("alpha");
    let valid = || claims(&url, "mcp:read");
    let with = |edit: &dyn Fn(&mut AccessTokenClaims)| {
        let mut c = valid();
        edit(&mut c);
        s.key.sign(&c)
    };
    let unsigned = {
        let token = s.key.sign(&valid());
        let (input, _) = token.rsplit_once('.').unwrap();
        format!("{input}.")
    };
    let cases: Vec<(&str, String, &str)> = vec![
        ("garbage", "not-a-jwt".to_owned(), "malformed token"),
        (
            "bad signature",
            s.impostor.sign(&valid()),
            "invalid signature",
        ),
        ("no signature", unsigned, "invalid signature"),
        (
            "alg none",
            s.key.key.sign_raw(
                r#"{"alg":"none","typ":"at+jwt","kid":"k1"}"#,
                &serde_json::to_string(&valid()).unwrap(),
            ),
            "unsupported algorithm",
        ),
        (
            "expired",
            with(&|c| {
                c.iat = now() - 7200;
                c.nbf = None;
                c.exp = now() - 120;
            }),
            "token expired",
        ),
        (
            "wrong issuer",
            with(&|c| c.iss = "http://evil.test".into()),
            "wrong issuer",
        ),
        (
            "not yet valid",
            with(&|c| c.nbf = Some(now() + 600)),
            "token not yet valid",
        ),
    ];
    for (name, token, description) in cases {
        let r = s.gw.get_with_token("/alpha/mcp", &token);
        assert_eq!(r.status, 401, "{name}: {r:?}");
        let challenge = r.header("www-authenticate").unwrap_or_default();
        assert!(
            challenge.starts_with(&metadata_challenge(&s.gw, "alpha"))
                && challenge.contains("error=\"invalid_token\""),
            "{name}: {challenge}"
        );
        let body = r.json();
        assert_eq!(body["error"], "invalid_token", "{name}");
        assert_eq!(body["error_description"], description, "{name}");
        assert!(!r.body.contains(&token), "{name}: the token is echoed");
    }
}

fn token_for_another_resource_is_refused(build: Build) {
    let s = shared(build);
    let for_beta = token(&s.key, &s.gw, "beta", "mcp:read");
    let r = s.gw.get_with_token("/alpha/mcp", &for_beta);
    assert_eq!(r.status, 401, "{r:?}");
    assert_eq!(
        r.json()["error_description"],
        "token is not for this resource"
    );
    assert!(
        r.header("www-authenticate")
            .unwrap_or_default()
            .contains("error=\"invalid_token\"")
    );
    // The same token opens the resource it was minted for.
    assert_eq!(s.gw.get_with_token("/beta/mcp", &for_beta).status, 200);
}

fn missing_scope_gets_403_insufficient_scope(build: Build) {
    let s = shared(build);
    let write_only = token(&s.key, &s.gw, "alpha", "mcp:write");
    let r = s.gw.get_with_token("/alpha/mcp", &write_only);
    assert_eq!(r.status, 403, "{r:?}");
    assert_eq!(
        r.header("www-authenticate"),
        Some(
            format!(
                "{}, error=\"insufficient_scope\", scope=\"mcp:read\"",
                metadata_challenge(&s.gw, "alpha")
            )
            .as_str()
        )
    );
    assert_eq!(r.json()["error"], "insufficient_scope");
}

fn valid_token_reaches_the_upstream_with_identity_headers_and_without_authorization(build: Build) {
    let s = shared(build);
    let t = token(&s.key, &s.gw, "alpha", "mcp:read mcp:write");
    // The second request is answered from the verified-token cache: same outcome.
    for _ in 0..2 {
        let r = s.gw.get_with_token("/alpha/mcp?x=1", &t);
        assert_eq!(r.status, 200, "{r:?}");
        let seen = r.json();
        assert_eq!(seen["path"], "/alpha/mcp?x=1");
        let h = &seen["headers"];
        assert_eq!(h["x-mcpgw-subject"], "github:4242");
        assert_eq!(h["x-mcpgw-user"], "octocat");
        assert_eq!(h["x-mcpgw-email"], "octocat@example.test");
        assert_eq!(h["x-mcpgw-groups"], "acme,acme/devs");
        assert_eq!(h["x-mcpgw-client-id"], "client-e2e");
        assert_eq!(h["x-mcpgw-scopes"], "mcp:read mcp:write");
        assert_eq!(h["x-mcpgw-resource"], s.gw.url("alpha"));
        assert!(
            h.get("authorization").is_none(),
            "token passed through: {h}"
        );
    }
}

fn tokens_signed_with_every_supported_algorithm_are_accepted(build: Build) {
    let s = shared(build);
    for key in std::iter::once(&s.key).chain(&s.others) {
        let r =
            s.gw.get_with_token("/alpha/mcp", &token(key, &s.gw, "alpha", "mcp:read"));
        assert_eq!(r.status, 200, "{}: {r:?}", key.kid);
        // A signature by another key under the same `kid` is refused.
        let forged = Key::generate(key.key.algorithm(), &key.kid);
        let r =
            s.gw.get_with_token("/alpha/mcp", &token(&forged, &s.gw, "alpha", "mcp:read"));
        assert_eq!(r.status, 401, "{}: {r:?}", key.kid);
        assert_eq!(r.json()["error_description"], "invalid signature");
    }
}

fn client_sent_identity_headers_are_stripped(build: Build) {
    let s = shared(build);
    let t = token(&s.key, &s.gw, "alpha", "mcp:read");
    let auth = format!("Bearer {t}");
    let spoofed = [
        ("authorization", auth.as_str()),
        ("x-mcpgw-subject", "github:1"),
        ("X-Mcpgw-User", "admin"),
        ("x-mcpgw-groups", "root"),
        ("x-mcpgw-anything", "forged"),
    ];
    let h = s.gw.get("/alpha/mcp", &spoofed).json()["headers"].clone();
    assert_eq!(h["x-mcpgw-subject"], "github:4242");
    assert_eq!(h["x-mcpgw-user"], "octocat");
    assert_eq!(h["x-mcpgw-groups"], "acme,acme/devs");
    assert!(h.get("x-mcpgw-anything").is_none(), "{h}");
    // On an unprotected path no identity is set, and none can be smuggled in.
    let r = s.gw.get("/public", &spoofed[1..]);
    assert_eq!(r.status, 200, "{r:?}");
    let h = &r.json()["headers"];
    let leaked: Vec<&String> = h
        .as_object()
        .unwrap()
        .keys()
        .filter(|k| k.starts_with("x-mcpgw-"))
        .collect();
    assert!(leaked.is_empty(), "{leaked:?}");
}

fn protected_resource_metadata_is_served_at_path_inserted_and_root_uris(build: Build) {
    let s = shared(build);
    let r =
        s.gw.get("/.well-known/oauth-protected-resource/alpha/mcp", &[]);
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(
        r.json(),
        json!({
            "resource": s.gw.url("alpha"),
            "authorization_servers": [ISSUER],
            "scopes_supported": ["mcp:read", "mcp:write"],
            "bearer_methods_supported": ["header"],
            "resource_name": "alpha"
        })
    );
    assert_eq!(r.header("access-control-allow-origin"), Some("*"));
    // The root URI answers for the only resource of a host.
    let r = s.gw.get(
        "/.well-known/oauth-protected-resource",
        &[("host", "solo.test")],
    );
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.json()["resource"], "http://solo.test/mcp");
    assert_eq!(r.json()["resource_name"], "solo");
}

fn cors_preflight_passes_without_a_token(build: Build) {
    let s = shared(build);
    let preflight = [
        ("origin", "http://app.test"),
        ("access-control-request-method", "POST"),
        (
            "access-control-request-headers",
            "authorization, content-type",
        ),
    ];
    let r = send(s.gw.port, "OPTIONS", "/alpha/mcp", &preflight);
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.json()["method"], "OPTIONS");
    // A plain OPTIONS is not a preflight: it needs a token like any other request.
    let r = send(s.gw.port, "OPTIONS", "/alpha/mcp", &preflight[..1]);
    assert_eq!(r.status, 401, "{r:?}");
}

fn rotated_keys_are_fetched_without_restart_and_survive_a_key_server_outage(build: Build) {
    let old = Key::generate(Algorithm::ES256, "old");
    let new = Key::generate(Algorithm::ES256, "new");
    let mut gw = Gateway::start(build, KeyServer::new(jwks(&[&old])), true, "300s");
    let old_token = token(&old, &gw, "beta", "");
    let new_token = token(&new, &gw, "beta", "");
    assert_eq!(gw.get_with_token("/beta/mcp", &old_token).status, 200);
    let r = gw.get_with_token("/beta/mcp", &new_token);
    assert_eq!(r.status, 401, "{r:?}");
    assert_eq!(r.json()["error_description"], "unknown signing key");

    // Rotation at the key server: the new key replaces the old one. An unknown `kid` makes the
    // filter refetch (at most once per `unknown_kid_refetch_interval`, 1 s here).
    gw.keys.publish(jwks(&[&new]));
    std::thread::sleep(Duration::from_millis(1100));
    for _ in 0..6 {
        let r = gw.get_with_token("/beta/mcp", &new_token);
        assert_eq!(r.status, 200, "{r:?}\n{}", gw.envoy.proc.log());
    }
    // The withdrawn key stops working on every worker (each picks up the shared keys within 1 s).
    let r = gw.poll("/beta/mcp", &old_token, 401, Duration::from_secs(3));
    assert_eq!(r.status, 401, "{r:?}");
    // That answer came from a worker that has the new keys; the other has them within a tick.
    std::thread::sleep(Duration::from_millis(1100));
    for _ in 0..4 {
        assert_eq!(gw.get_with_token("/beta/mcp", &old_token).status, 401);
    }

    // The key server goes down; a token with an unknown `kid` makes the filter try it (once the
    // refetch interval has passed) and fail.
    gw.keys.stop();
    std::thread::sleep(Duration::from_millis(1100));
    let stranger = Key::generate(Algorithm::ES256, "stranger");
    let r = gw.get_with_token("/beta/mcp", &token(&stranger, &gw, "beta", ""));
    assert_eq!(r.status, 401, "{r:?}");
    let log = gw.envoy.proc.log();
    assert!(log.contains("jwks fetch answered status 503"), "{log}");
    for _ in 0..6 {
        assert_eq!(gw.get_with_token("/beta/mcp", &new_token).status, 200);
    }
}

fn without_keys_requests_fail_closed_until_the_key_server_answers(build: Build) {
    let key = Key::generate(Algorithm::EdDSA, "ed");
    // The key server is down when Envoy starts; the filter refreshes every second.
    let mut gw = Gateway::start(build, KeyServer::new(jwks(&[&key])), false, "1s");
    let t = token(&key, &gw, "beta", "");
    let r = gw.get_with_token("/beta/mcp", &t);
    assert_eq!(r.status, 503, "{r:?}");
    assert_eq!(r.json()["error"], "temporarily_unavailable");
    assert_eq!(r.header("www-authenticate"), None);

    gw.keys.start();
    let r = gw.poll("/beta/mcp", &t, 200, Duration::from_secs(5));
    assert_eq!(r.status, 200, "{r:?}");

    // Down again: the periodic refreshes fail and the fetched keys keep serving.
    gw.keys.stop();
    std::thread::sleep(Duration::from_millis(2500));
    for _ in 0..6 {
        assert_eq!(gw.get_with_token("/beta/mcp", &t).status, 200);
    }
    let log = gw.envoy.proc.log();
    assert!(log.contains("jwks fetch answered status 503"), "{log}");
}

#[test]
fn native_requests_on_every_worker_wait_for_the_key_fetch_in_flight() {
    // The dynamic module shares one fetch across workers: requests arriving while it is in flight
    // wait for it on whichever worker they run (the proxy-wasm module waits on its own thread's).
    let key = Key::generate(Algorithm::ES256, "slow");
    let mut keys = KeyServer::new(jwks(&[&key]));
    keys.delay = Duration::from_millis(1500);
    let gw = Gateway::start(Build::Native, keys, true, "300s");
    let t = token(&key, &gw, "beta", "");
    let statuses: Vec<u16> = std::thread::scope(|scope| {
        let requests: Vec<_> = (0..6)
            .map(|_| scope.spawn(|| gw.get_with_token("/beta/mcp", &t).status))
            .collect();
        requests.into_iter().map(|r| r.join().unwrap()).collect()
    });
    assert_eq!(statuses, [200; 6], "{}", gw.envoy.proc.log());
}

/// The revocation feed's answer listing the tokens of `claims`.
fn feed(claims: &[&AccessTokenClaims]) -> String {
    let revoked: Vec<Value> = claims
        .iter()
        .map(|c| json!({ "jti": c.jti, "exp": c.exp }))
        .collect();
    json!({ "revoked": revoked }).to_string()
}

/// Sends `token` to `/beta/mcp` in rounds of six (both workers fetch the feed for themselves)
/// until a round started within `within` answers `want` six times; returns one answer. A denial
/// takes Envoy's delayed close (1 s) to end, so only the start of a round is bounded.
fn settles(gw: &Gateway, token: &str, want: u16, within: Duration) -> Response {
    let deadline = Instant::now() + within;
    loop {
        let started = Instant::now();
        assert!(
            started < deadline,
            "not {want} within {within:?}\n{}",
            gw.envoy.proc.log()
        );
        let mut answers = (0..6).map(|_| gw.get_with_token("/beta/mcp", token));
        if let Some(first) = answers.next().filter(|r| r.status == want)
            && answers.all(|r| r.status == want)
        {
            return first;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn revoked_tokens_are_refused_within_the_feed_interval_and_until_they_expire(build: Build) {
    let key = Key::generate(Algorithm::ES256, "k1");
    let mut revoked = KeyServer::new(feed(&[]));
    revoked.start();
    let gw = Gateway::start_edited(
        build,
        KeyServer::new(jwks(&[&key])),
        true,
        "300s",
        vec![cluster("revocation", revoked.port)],
        &|c| {
            c["revocation"] =
                json!({ "cluster": "revocation", "refresh_interval": "1s", "timeout": "1s" });
        },
    );
    let claims_a = claims(&gw.url("beta"), "");
    let claims_b = claims(&gw.url("beta"), "");
    let (a, b) = (key.sign(&claims_a), key.sign(&claims_b));
    // Both pass (and are now in the workers' token caches).
    settles(&gw, &a, 200, Duration::from_secs(5));
    settles(&gw, &b, 200, Duration::from_secs(1));

    // `a` is revoked: every worker refuses it within the interval (1 s, ticks of 1 s, the fetch),
    // from core's revoked denial; `b`, not listed, still passes.
    revoked.publish(feed(&[&claims_a]));
    let r = settles(&gw, &a, 401, Duration::from_secs(3));
    assert_eq!(
        r.header("www-authenticate"),
        Some(
            format!(
                "{}, error=\"invalid_token\", error_description=\"token revoked\"",
                metadata_challenge(&gw, "beta")
            )
            .as_str()
        )
    );
    assert_eq!(
        r.json(),
        json!({ "error": "invalid_token", "error_description": "token revoked" })
    );
    settles(&gw, &b, 200, Duration::from_secs(1));

    // The feed goes down: the known list keeps applying, and each thread warns once, not per tick.
    revoked.stop();
    let warning = "revocation feed answered status 503";
    let deadline = Instant::now() + Duration::from_secs(5);
    while !gw.envoy.proc.log().contains(warning) {
        assert!(
            Instant::now() < deadline,
            "no warning:\n{}",
            gw.envoy.proc.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(1500));
    let warned = gw.envoy.proc.log().matches(warning).count();
    std::thread::sleep(Duration::from_millis(2500));
    let log = gw.envoy.proc.log();
    assert_eq!(log.matches(warning).count(), warned, "{log}");
    settles(&gw, &a, 401, Duration::from_secs(1));
    settles(&gw, &b, 200, Duration::from_secs(1));

    // Back with a list that lacks `a` (a sidecar whose Redis lost its data): `b` joins, and `a`
    // stays refused until it expires.
    revoked.publish(feed(&[&claims_b]));
    revoked.start();
    settles(&gw, &b, 401, Duration::from_secs(3));
    settles(&gw, &a, 401, Duration::from_secs(1));
    revoked.publish(feed(&[]));
    std::thread::sleep(Duration::from_millis(2500));
    settles(&gw, &a, 401, Duration::from_secs(1));
    settles(&gw, &b, 401, Duration::from_secs(1));
    assert!(
        gw.envoy
            .proc
            .log()
            .contains("revocation feed answers again")
    );
}

fn inline_keys_verify_and_the_token_is_forwarded_only_when_configured(build: Build) {
    let key = Key::generate(Algorithm::ES256, "inline");
    let inline: Value = serde_json::from_str(&jwks(&[&key])).unwrap();
    // No key server at all: the keys are in the configuration.
    let gw = Gateway::start_edited(
        build,
        KeyServer::new(String::new()),
        false,
        "300s",
        vec![],
        &|c| {
            c["jwks"] = json!({ "inline": inline });
            c["forward_authorization"] = true.into();
        },
    );
    let t = token(&key, &gw, "alpha", "mcp:read");
    let r = gw.get_with_token("/alpha/mcp", &t);
    assert_eq!(r.status, 200, "{r:?}");
    let h = &r.json()["headers"];
    assert_eq!(h["authorization"], format!("Bearer {t}"));
    assert_eq!(h["x-mcpgw-subject"], "github:4242");
    assert_eq!(gw.get("/alpha/mcp", &[]).status, 401);
}

/// Runs Envoy on `bootstrap` and returns its exit code and log once it exits (within 30 s).
fn run_to_exit(bootstrap: &str) -> (Option<i32>, String) {
    let path = scratch_dir().join(format!("{}.yaml", unique("envoy-bad")));
    std::fs::write(&path, bootstrap).unwrap();
    let mut proc = Proc::spawn("envoy-bad", Envoy::command(&path, 1));
    let code = proc.wait_exit(Duration::from_secs(30));
    let log = proc.log();
    (
        code.unwrap_or_else(|| panic!("envoy kept running:\n{log}")),
        log,
    )
}

fn bad_plugin_configuration_is_rejected_by_envoy_naming_the_field(build: Build) {
    let good = plugin_config(8080, "300s");
    let with = |edit: &dyn Fn(&mut Value)| {
        let mut c = good.clone();
        edit(&mut c);
        c
    };
    let cases = [
        (
            with(&|c| c["issuer_url"] = ISSUER.into()),
            "unknown field `issuer_url`",
        ),
        (
            with(&|c| c["jwks"]["remote"]["timeout"] = "soon".into()),
            "jwks.remote.timeout: must be a duration",
        ),
        (
            with(&|c| c["resources"][1]["canonical_url"] = "beta".into()),
            "resources[1].canonical_url",
        ),
    ];
    for (config, field) in cases {
        let (admin, port) = (free_port(), free_port());
        let yaml = bootstrap(
            admin,
            vec![listener(
                "public",
                port,
                vec![jwt_filter(build, "bad", &config), router()],
                vec![route_to("echo")],
            )],
            vec![cluster("echo", 9), cluster("jwks", 9)],
        );
        let (code, log) = run_to_exit(&yaml);
        assert_ne!(code, Some(0), "{field}: envoy accepted the configuration");
        let line = log
            .lines()
            .find(|l| l.contains("mcpgw jwt filter") && l.contains(field));
        assert!(
            line.is_some_and(|l| l.contains("[error]")),
            "{field}:\n{log}"
        );
    }
}

#[test]
fn shipped_envoy_configurations_validate() {
    let root = workspace_root();
    let mut files: Vec<_> = std::fs::read_dir(root.join("envoy"))
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("jwt") && n.ends_with(".yaml"))
        })
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no envoy/jwt*.yaml");
    wasm_path();
    for file in files {
        let out = Command::new(venv_bin("envoy"))
            .current_dir(&root)
            .args(["--mode", "validate", "--use-dynamic-base-id", "-c"])
            .arg(&file)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{} does not validate:\n{}{}",
            file.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// Each case above, once per build: `wasm::<case>` and `native::<case>`.
macro_rules! for_each_build {
    ($($case:ident),* $(,)?) => {
        mod wasm {
            $( #[test] fn $case() { super::$case(super::Build::Wasm) } )*
        }
        mod native {
            $( #[test] fn $case() { super::$case(super::Build::Native) } )*
        }
    };
}

for_each_build!(
    missing_token_gets_401_pointing_at_the_resource_metadata,
    invalid_tokens_get_401_invalid_token,
    token_for_another_resource_is_refused,
    missing_scope_gets_403_insufficient_scope,
    valid_token_reaches_the_upstream_with_identity_headers_and_without_authorization,
    tokens_signed_with_every_supported_algorithm_are_accepted,
    client_sent_identity_headers_are_stripped,
    protected_resource_metadata_is_served_at_path_inserted_and_root_uris,
    cors_preflight_passes_without_a_token,
    rotated_keys_are_fetched_without_restart_and_survive_a_key_server_outage,
    without_keys_requests_fail_closed_until_the_key_server_answers,
    revoked_tokens_are_refused_within_the_feed_interval_and_until_they_expire,
    inline_keys_verify_and_the_token_is_forwarded_only_when_configured,
    bad_plugin_configuration_is_rejected_by_envoy_naming_the_field,
);
