//! The login flow through the sidecar's router, served on a loopback port, against a real Redis,
//! the real OpenID provider (npm `oidc-provider`, tests/oidc) and the GitHub stand-in
//! (tests/github_standin): `/authorize` → upstream login form → `/oauth/callback` → consent page
//! → redirect with `code`, `state` and `iss`. Then the attacks `/authorize` must refuse.
//!
//! The test plays the browser with a small cookie jar and follows redirects itself, so every hop
//! is visible and nothing is followed to the client's redirect URI.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // reason: a test fails by panicking

use std::collections::{BTreeMap, HashMap};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use mcpgw_sidecar::config::Config;
use mcpgw_sidecar::store::{Client, CodeGrant, TokenEndpointAuthMethod, hash};
use mcpgw_sidecar::{AppState, router};
use mcpgw_testkit::{Proc, Redis, free_port, unique, workspace_root};
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;
use url::Url;

const REDIRECT_URI: &str = "http://127.0.0.1:9/callback";
const VERIFIER: &str = "a-test-verifier-that-is-long-enough-for-rfc-7636-section-4-1";

fn redis() -> &'static Redis {
    static REDIS: OnceLock<Redis> = OnceLock::new();
    REDIS.get_or_init(Redis::start)
}

fn challenge(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

/// Which upstream login the sidecar under test uses.
enum Login {
    /// The real OpenID provider, started for the test; the sidecar is a confidential client.
    Oidc,
    /// The same, with the sidecar as a public client (PKCE, no secret).
    OidcPublic,
    /// The GitHub stand-in, started for the test.
    Github,
    /// An OpenID provider address nobody listens on (for tests that never reach the login).
    Unreachable,
}

/// A sidecar serving the real router on a loopback port, with its upstream provider.
struct Sidecar {
    issuer: String,
    resource: String,
    state: AppState,
    upstream: Option<Proc>,
    /// The upstream's port and environment (to restart it).
    upstream_port: u16,
    upstream_env: Vec<(&'static str, String)>,
}

fn node(script: &str, port: u16, env: &[(&str, String)]) -> Proc {
    let mut cmd = Command::new("node");
    cmd.arg(workspace_root().join(script))
        .env("PORT", port.to_string());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut proc = Proc::spawn(script.split('/').nth(1).unwrap_or("node"), cmd);
    proc.wait_ready(port, Duration::from_secs(20));
    proc
}

impl Sidecar {
    async fn start(login: Login) -> Sidecar {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let issuer = format!("http://127.0.0.1:{port}");
        let callback = format!("{issuer}/oauth/callback");
        let upstream_port = free_port();
        let upstream_url = format!("http://127.0.0.1:{upstream_port}");
        let oidc_env = |secret: &str| {
            vec![
                ("OIDC_CLIENT_ID", "mcpgw-test".to_owned()),
                ("OIDC_CLIENT_SECRET", secret.to_owned()),
                ("OIDC_REDIRECT_URIS", callback.clone()),
            ]
        };
        let github_env = vec![
            ("GITHUB_CLIENT_ID", "gh-test".to_owned()),
            ("GITHUB_CLIENT_SECRET", "gh-secret".to_owned()),
        ];
        let (upstream_toml, proc, upstream_env) = match login {
            Login::Oidc | Login::OidcPublic => {
                let secret = if matches!(login, Login::Oidc) {
                    "test-secret"
                } else {
                    ""
                };
                let secret_toml = if secret.is_empty() {
                    String::new()
                } else {
                    format!("client_secret = \"{secret}\"\n")
                };
                (
                    format!(
                        "kind = \"oidc\"\nissuer = \"{upstream_url}\"\nclient_id = \"mcpgw-test\"\n\
                         {secret_toml}scopes = [\"openid\", \"profile\", \"email\"]"
                    ),
                    Some(node(
                        "tests/oidc/server.mjs",
                        upstream_port,
                        &oidc_env(secret),
                    )),
                    oidc_env(secret),
                )
            }
            Login::Github => (
                format!(
                    "kind = \"github\"\nclient_id = \"gh-test\"\nclient_secret = \"gh-secret\"\n\
                     github_url = \"{upstream_url}\"\ngithub_api_url = \"{upstream_url}\""
                ),
                Some(node(
                    "tests/github_standin/server.mjs",
                    upstream_port,
                    &github_env,
                )),
                github_env.clone(),
            ),
            Login::Unreachable => (
                format!(
                    "kind = \"oidc\"\nissuer = \"{upstream_url}\"\nclient_id = \"x\"\nclient_secret = \"y\""
                ),
                None,
                Vec::new(),
            ),
        };
        let resource = format!("{issuer}/everything/mcp");
        let toml = format!(
            r#"
issuer = "{issuer}"
redis_url = "{redis}"
key_prefix = "{prefix}:"
log_format = "text"

[registration]
mode = "open"

[upstream]
{upstream_toml}

[allow]
users = ["restricted"]
groups = ["engineering"]
orgs = ["acme/platform"]

[client_metadata]
allow_private_addresses = true

[[resources]]
canonical_url = "{resource}"
path_prefix = "/everything/mcp"
scopes_required = ["mcp:tools"]
[resources.metadata]
resource_name = "Everything <server>"

[[resources]]
canonical_url = "{issuer}/memory/mcp"
path_prefix = "/memory/mcp"
"#,
            redis = redis().url(),
            prefix = unique("flow"),
        );
        let config = match Config::from_toml(&toml, |_| None) {
            Ok(c) => c,
            Err(e) => panic!("{e}"),
        };
        let state = AppState::new(config).await.unwrap();
        let app = router(state.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Sidecar {
            issuer,
            resource,
            state,
            upstream: proc,
            upstream_port,
            upstream_env,
        }
    }

    /// Restarts the OpenID provider on its port: it signs with a new key under the same `kid`
    /// (tests/oidc makes its key at start), and its sessions are gone.
    fn restart_oidc(&mut self) {
        if let Some(mut old) = self.upstream.take() {
            old.stop();
        }
        self.upstream = Some(node(
            "tests/oidc/server.mjs",
            self.upstream_port,
            &self.upstream_env,
        ));
    }

    /// Registers a public client with `REDIRECT_URI` (through the store: registration is not
    /// what these tests are about).
    async fn client(&self, name: &str) -> String {
        let client_id = unique("client");
        let client = Client {
            client_id: client_id.clone(),
            client_secret_hash: None,
            registration_access_token_hash: None,
            token_endpoint_auth_method: TokenEndpointAuthMethod::None,
            redirect_uris: vec![REDIRECT_URI.into()],
            grant_types: vec!["authorization_code".into(), "refresh_token".into()],
            response_types: vec!["code".into()],
            client_name: Some(name.into()),
            client_uri: None,
            logo_uri: None,
            scope: None,
            contacts: vec![],
            tos_uri: None,
            policy_uri: None,
            software_id: None,
            software_version: None,
            client_id_issued_at: 0,
            client_secret_expires_at: 0,
        };
        self.state
            .store
            .put_client(&client, Duration::from_secs(600))
            .await
            .unwrap();
        client_id
    }

    /// An `/authorize` URL with PKCE S256, `resource`, a scope and `state`; `overrides` replace
    /// or (with an empty value) remove parameters.
    fn authorize_url(&self, client_id: &str, overrides: &[(&str, &str)]) -> String {
        let challenge = challenge(VERIFIER);
        let mut params: Vec<(&str, &str)> = vec![
            ("response_type", "code"),
            ("client_id", client_id),
            ("redirect_uri", REDIRECT_URI),
            ("code_challenge", &challenge),
            ("code_challenge_method", "S256"),
            ("resource", &self.resource),
            ("scope", "mcp:tools"),
            ("state", "client-state-123"),
        ];
        for (k, v) in overrides {
            params.retain(|(name, _)| name != k);
            if !v.is_empty() {
                params.push((k, v));
            }
        }
        let mut url = Url::parse(&format!("{}/authorize", self.issuer)).unwrap();
        url.query_pairs_mut().extend_pairs(params);
        url.into()
    }
}

impl Sidecar {
    /// A fresh browser that opened a valid authorization request and followed it to the
    /// upstream provider's first page.
    async fn open_login(&self, client_id: &str) -> (Browser, Answer) {
        let mut browser = Browser::new();
        let page = browser
            .follow(&self.authorize_url(client_id, &[]), None)
            .await;
        (browser, page)
    }

    /// The TTLs (seconds) of the pending logins (`oauth:state:*`) under this sidecar's prefix.
    async fn pending_logins(&self) -> Vec<i64> {
        let mut redis = redis::Client::open(redis().url())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap();
        let pattern = format!("{}oauth:state:*", self.state.config.key_prefix);
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(&pattern)
            .query_async(&mut redis)
            .await
            .unwrap();
        let mut ttls = Vec::new();
        for key in keys {
            ttls.push(
                redis::cmd("TTL")
                    .arg(&key)
                    .query_async(&mut redis)
                    .await
                    .unwrap(),
            );
        }
        ttls
    }

    /// The stored grant of an authorization code (codes are stored under their hash).
    async fn grant(&self, code: &str) -> CodeGrant {
        self.state
            .store
            .get_json("code", &hash(code))
            .await
            .unwrap()
            .expect("the code is stored under its hash")
    }

    /// Signs alice in on the provider's form shown on `page` and stops at the redirect to the
    /// sidecar's callback, returning its URL.
    async fn until_callback(&self, browser: &mut Browser, page: &Answer) -> String {
        let action = attr_after(&page.body, "<form", "action");
        let target = Url::parse(&page.url).unwrap().join(&action).unwrap();
        let mut answer = browser
            .send(
                target.as_str(),
                Some(&[("login", "alice"), ("password", "alice-password")]),
            )
            .await;
        while let Some(next) = answer.location.clone() {
            if next.starts_with(&format!("{}/oauth/callback", self.issuer)) {
                return next;
            }
            answer = browser.send(&next, None).await;
        }
        panic!("no redirect to the callback: {answer:?}")
    }
}

/// One HTTP answer, as the browser sees it.
#[derive(Debug)]
struct Answer {
    url: String,
    status: u16,
    location: Option<String>,
    headers: reqwest::header::HeaderMap,
    body: String,
}

/// A browser: cookies per origin, sent only under their `Path` (RFC 6265 §5.1.4), redirects
/// followed by hand.
struct Browser {
    http: reqwest::Client,
    /// Per origin, per cookie name and path: its value (RFC 6265 §5.3: a cookie is replaced only
    /// by one of the same name and path).
    jar: HashMap<String, BTreeMap<(String, String), String>>,
}

impl Browser {
    fn new() -> Browser {
        Browser {
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            jar: HashMap::new(),
        }
    }

    async fn send(&mut self, url: &str, form: Option<&[(&str, &str)]>) -> Answer {
        let parsed = Url::parse(url).unwrap();
        let origin = parsed.origin().ascii_serialization();
        let mut request = match form {
            Some(form) => self.http.post(url).form(form),
            None => self.http.get(url),
        };
        let path_matches = |cookie_path: &str| {
            let path = parsed.path();
            path == cookie_path
                || path.starts_with(cookie_path)
                    && (cookie_path.ends_with('/') || path[cookie_path.len()..].starts_with('/'))
        };
        if let Some(cookies) = self.jar.get(&origin) {
            let header: Vec<String> = cookies
                .iter()
                .filter(|((_, path), _)| path_matches(path))
                .map(|((k, _), v)| format!("{k}={v}"))
                .collect();
            request = request.header("cookie", header.join("; "));
        }
        let response = request.send().await.unwrap();
        for value in response.headers().get_all("set-cookie") {
            let mut parts = value.to_str().unwrap().split(';');
            let pair = parts.next().unwrap_or("");
            // The default path is the request path's directory.
            let default_path = match parsed.path().rfind('/') {
                Some(0) | None => "/".to_owned(),
                Some(i) => parsed.path()[..i].to_owned(),
            };
            let path = parts
                .filter_map(|a| a.trim().split_once('='))
                .find(|(k, _)| k.eq_ignore_ascii_case("path"))
                .map_or(default_path, |(_, v)| v.to_owned());
            if let Some((k, v)) = pair.split_once('=') {
                self.jar
                    .entry(origin.clone())
                    .or_default()
                    .insert((k.trim().into(), path), v.trim().into());
            }
        }
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let location = headers
            .get("location")
            .map(|l| parsed.join(l.to_str().unwrap()).unwrap().to_string());
        let body = response.text().await.unwrap();
        Answer {
            url: url.into(),
            status,
            location,
            headers,
            body,
        }
    }

    /// Follows redirects from `url` until a page (non-redirect) or a redirect to the client.
    async fn follow(&mut self, url: &str, form: Option<&[(&str, &str)]>) -> Answer {
        let mut answer = self.send(url, form).await;
        for _ in 0..20 {
            match &answer.location {
                Some(next) if !next.starts_with(REDIRECT_URI) => {
                    let next = next.clone();
                    answer = self.send(&next, None).await;
                }
                _ => return answer,
            }
        }
        panic!("redirect loop at {}", answer.url)
    }
}

/// The value of the first `attr="…"` after `marker` in `html`.
fn attr_after(html: &str, marker: &str, attr: &str) -> String {
    let start = html
        .find(marker)
        .unwrap_or_else(|| panic!("no `{marker}` in:\n{html}"));
    let rest = &html[start..];
    let at = rest.find(&format!("{attr}=\"")).unwrap() + attr.len() + 2;
    rest[at..at + rest[at..].find('"').unwrap()].to_owned()
}

/// Query parameters of a URL.
fn query(url: &str) -> HashMap<String, String> {
    Url::parse(url)
        .unwrap()
        .query_pairs()
        .into_owned()
        .collect()
}

/// Fills in the OpenID provider's login form and follows on.
async fn oidc_login(browser: &mut Browser, page: &Answer, login: &str, password: &str) -> Answer {
    assert_eq!(page.status, 200, "expected the login form: {page:?}");
    let action = attr_after(&page.body, "<form", "action");
    let target = Url::parse(&page.url).unwrap().join(&action).unwrap();
    browser
        .follow(
            target.as_str(),
            Some(&[("login", login), ("password", password)]),
        )
        .await
}

/// Approves (or denies) the consent page and returns the redirect to the client.
async fn answer_consent(browser: &mut Browser, page: &Answer, decision: &str) -> Answer {
    assert_eq!(page.status, 200, "expected the consent page: {page:?}");
    let consent = attr_after(&page.body, "name=\"consent\"", "value");
    let csrf = attr_after(&page.body, "name=\"csrf\"", "value");
    let action = attr_after(&page.body, "<form", "action");
    let target = Url::parse(&page.url).unwrap().join(&action).unwrap();
    browser
        .send(
            target.as_str(),
            Some(&[
                ("consent", &consent),
                ("csrf", &csrf),
                ("decision", decision),
            ]),
        )
        .await
}

fn assert_html_page(answer: &Answer, status: u16) {
    assert_eq!(answer.status, status, "{answer:?}");
    assert!(answer.location.is_none(), "must not redirect: {answer:?}");
    assert!(
        answer.headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    assert_eq!(answer.headers["x-frame-options"], "DENY");
}

/// The redirect to the client, with its query.
fn client_redirect(answer: &Answer) -> HashMap<String, String> {
    let location = answer
        .location
        .as_deref()
        .unwrap_or_else(|| panic!("no redirect: {answer:?}"));
    assert!(location.starts_with(REDIRECT_URI), "{location}");
    query(location)
}

#[tokio::test]
async fn oidc_login_consent_and_code_bound_to_client_resource_and_user() {
    let sidecar = Sidecar::start(Login::Oidc).await;
    let client_id = sidecar.client("<script>alert('name')</script> Notes").await;
    let (mut browser, login_page) = sidecar.open_login(&client_id).await;
    assert!(login_page.url.contains("/interaction/"), "{login_page:?}");
    // The pending login waits in Redis under `oauth:state:*` with a lifetime (default 10 min).
    let pending = sidecar.pending_logins().await;
    assert_eq!(pending.len(), 1, "{pending:?}");
    assert!((1..=600).contains(&pending[0]), "ttl {pending:?}");
    let consent = oidc_login(&mut browser, &login_page, "alice", "alice-password").await;
    // Taken once by the callback.
    assert!(sidecar.pending_logins().await.is_empty());

    // The consent page names the client (escaped), where the code goes, the resource and scopes.
    assert_html_page(&consent, 200);
    assert!(
        consent.headers["content-security-policy"]
            .to_str()
            .unwrap()
            .contains("frame-ancestors 'none'")
    );
    let body = &consent.body;
    assert!(body.contains("&lt;script&gt;alert(&#39;name&#39;)&lt;/script&gt; Notes"));
    assert!(!body.contains("<script>"));
    assert!(body.contains("127.0.0.1:9"));
    assert!(body.contains(&sidecar.resource));
    assert!(body.contains("Everything &lt;server&gt;"));
    assert!(body.contains("mcp:tools"));
    assert!(body.contains("alice"));

    let done = answer_consent(&mut browser, &consent, "approve").await;
    let params = client_redirect(&done);
    assert_eq!(params["state"], "client-state-123");
    assert_eq!(params["iss"], sidecar.issuer);
    let code = &params["code"];

    // The code is stored hashed, bound to the client, redirect URI, challenge, resource and user.
    let grant = sidecar.grant(code).await;
    assert_eq!(grant.client_id, client_id);
    assert_eq!(grant.redirect_uri, REDIRECT_URI);
    assert_eq!(grant.code_challenge, challenge(VERIFIER));
    assert_eq!(grant.resource, sidecar.resource);
    assert_eq!(grant.scope.0, vec!["mcp:tools".to_string()]);
    assert_eq!(grant.user.sub, "oidc:alice");
    assert_eq!(grant.user.login.as_deref(), Some("alice"));
    assert_eq!(grant.user.email.as_deref(), Some("alice@example.test"));
    assert_eq!(grant.user.groups, vec!["engineering".to_string()]);

    // Consent is remembered for this user and client: the next authorization goes straight back
    // (the provider's session is still open, so no login form either).
    let again = browser
        .follow(
            &sidecar.authorize_url(&client_id, &[("state", "second"), ("scope", "")]),
            None,
        )
        .await;
    let params = client_redirect(&again);
    assert_eq!(params["state"], "second");
    // Without `scope` the request gets the resource's required scopes (RFC 6749 §3.3 default).
    let grant = sidecar.grant(&params["code"]).await;
    assert_eq!(grant.scope.0, vec!["mcp:tools".to_string()]);

    // The remembered consent covers that client and resource only: another resource, or another
    // client of the same user, is asked again.
    let memory = format!("{}/memory/mcp", sidecar.issuer);
    let other_resource = browser
        .follow(
            &sidecar.authorize_url(&client_id, &[("resource", &memory), ("scope", "")]),
            None,
        )
        .await;
    assert!(
        other_resource.body.contains("name=\"consent\""),
        "{other_resource:?}"
    );
    let other_client = sidecar.client("Other").await;
    let asked = browser
        .follow(&sidecar.authorize_url(&other_client, &[]), None)
        .await;
    assert!(asked.body.contains("name=\"consent\""), "{asked:?}");
}

#[tokio::test]
async fn user_outside_the_allow_list_is_refused_and_deny_is_honoured() {
    let sidecar = Sidecar::start(Login::Oidc).await;
    let client_id = sidecar.client("Notes").await;

    let (mut bob, page) = sidecar.open_login(&client_id).await;
    let refused = oidc_login(&mut bob, &page, "bob", "bob-password").await;
    let params = client_redirect(&refused);
    assert_eq!(params["error"], "access_denied");
    assert_eq!(params["state"], "client-state-123");
    assert_eq!(params["iss"], sidecar.issuer);
    assert!(!params.contains_key("code"));

    let (mut alice, page) = sidecar.open_login(&client_id).await;
    let consent = oidc_login(&mut alice, &page, "alice", "alice-password").await;
    let denied = answer_consent(&mut alice, &consent, "deny").await;
    assert_eq!(client_redirect(&denied)["error"], "access_denied");
}

#[tokio::test]
async fn wrong_password_shows_the_form_again() {
    let sidecar = Sidecar::start(Login::Oidc).await;
    let client_id = sidecar.client("Notes").await;
    let (mut browser, page) = sidecar.open_login(&client_id).await;
    let again = oidc_login(&mut browser, &page, "alice", "wrong").await;
    assert_eq!(again.status, 401);
    assert!(again.body.contains("name=\"password\""));
}

#[tokio::test]
async fn callback_and_consent_are_bound_to_the_browser_and_single_use() {
    let sidecar = Sidecar::start(Login::Oidc).await;
    let client_id = sidecar.client("Notes").await;
    let (mut browser, page) = sidecar.open_login(&client_id).await;
    // Stop at the redirect to the sidecar's callback and hand it to another browser.
    let callback = sidecar.until_callback(&mut browser, &page).await;
    let mut attacker = Browser::new();
    let stolen = attacker.send(&callback, None).await;
    assert_html_page(&stolen, 403);
    // The other browser's attempt left the login alone: the real browser finishes it, once.
    let consent = browser.send(&callback, None).await;
    assert!(consent.body.contains("name=\"consent\""), "{consent:?}");
    let replay = browser.send(&callback, None).await;
    assert_html_page(&replay, 400);

    // Unknown state.
    let unknown = browser
        .send(
            &format!("{}/oauth/callback?code=x&state=nope", sidecar.issuer),
            None,
        )
        .await;
    assert_html_page(&unknown, 400);

    // A consent form posted with a wrong CSRF token is refused.
    let page = browser
        .follow(&sidecar.authorize_url(&client_id, &[]), None)
        .await;
    assert!(page.body.contains("name=\"consent\""), "{page:?}");
    let consent = attr_after(&page.body, "name=\"consent\"", "value");
    let forged = browser
        .send(
            &format!("{}/oauth/consent", sidecar.issuer),
            Some(&[
                ("consent", consent.as_str()),
                ("csrf", "forged"),
                ("decision", "approve"),
            ]),
        )
        .await;
    assert_html_page(&forged, 403);
}

/// Signs `login` in on the GitHub stand-in's authorize form and follows on (to the consent page
/// or the redirect to the client).
async fn github_login(sidecar: &Sidecar, client_id: &str, login: &str) -> (Browser, Answer) {
    let (mut browser, form) = sidecar.open_login(client_id).await;
    assert_eq!(form.status, 200, "{form:?}");
    assert!(form.url.contains("/login/oauth/authorize"));
    let mut fields: Vec<(String, String)> = vec![("login".into(), login.into())];
    let mut rest = form.body.as_str();
    while let Some(i) = rest.find("type=\"hidden\" name=\"") {
        rest = &rest[i + 20..];
        let name = rest[..rest.find('"').unwrap()].to_owned();
        let value = attr_after(rest, "value", "value");
        fields.push((html_unescape(&name), html_unescape(&value)));
    }
    let pairs: Vec<(&str, &str)> = fields
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let next = browser.follow(&form.url, Some(&pairs)).await;
    (browser, next)
}

/// Approves the consent page and reads the stored grant of the code the client received.
async fn approved_grant(sidecar: &Sidecar, browser: &mut Browser, consent: &Answer) -> CodeGrant {
    let done = answer_consent(browser, consent, "approve").await;
    sidecar.grant(&client_redirect(&done)["code"]).await
}

#[tokio::test]
async fn github_login_through_the_stand_in_with_orgs_teams_and_email() {
    let sidecar = Sidecar::start(Login::Github).await;
    let client_id = sidecar.client("Notes").await;

    let (mut browser, consent) = github_login(&sidecar, &client_id, "octocat").await;
    let grant = approved_grant(&sidecar, &mut browser, &consent).await;
    assert_eq!(grant.user.sub, "github:583231");
    assert_eq!(grant.user.login.as_deref(), Some("octocat"));
    assert_eq!(grant.user.email.as_deref(), Some("octocat@example.test"));
    assert_eq!(grant.user.groups, vec!["acme", "acme/platform"]);

    // mallory belongs to no allowed organisation or team.
    let (_, refused) = github_login(&sidecar, &client_id, "mallory").await;
    assert_eq!(client_redirect(&refused)["error"], "access_denied");

    // A user whose e-mails, organisations and teams GitHub withholds (403) still logs in when
    // allowed by login, with no e-mail and no groups (never more than GitHub vouched for).
    let (mut third, consent) = github_login(&sidecar, &client_id, "restricted").await;
    let grant = approved_grant(&sidecar, &mut third, &consent).await;
    assert_eq!(grant.user.sub, "github:777001");
    assert_eq!(grant.user.email, None);
    assert!(grant.user.groups.is_empty());
}

fn html_unescape(s: &str) -> String {
    s.replace("&#38;", "&")
        .replace("&#34;", "\"")
        .replace("&#39;", "'")
        .replace("&#60;", "<")
        .replace("&#62;", ">")
}

#[tokio::test]
async fn redirect_uri_prefix_and_look_alike_hosts_are_refused_on_a_page() {
    let sidecar = Sidecar::start(Login::Unreachable).await;
    let client_id = sidecar.client("Notes").await;
    let mut browser = Browser::new();
    for bad in [
        "http://127.0.0.1:9/callback/evil",
        "http://127.0.0.1:9/callbackx",
        "http://127.0.0.1:9/callback?x=1",
        "http://127.0.0.1.evil.example:9/callback",
        "http://localhost.evil.example/callback",
        "http://127.0.0.1:90/callback",
        "https://127.0.0.1:9/callback",
    ] {
        let answer = browser
            .send(
                &sidecar.authorize_url(&client_id, &[("redirect_uri", bad)]),
                None,
            )
            .await;
        assert_html_page(&answer, 400);
        assert!(
            answer.body.contains("not registered"),
            "{bad}: {}",
            answer.body
        );
    }
    // An oversized request: a page, nothing stored.
    let huge = "x".repeat(10_000);
    let answer = browser
        .send(
            &sidecar.authorize_url(&client_id, &[("state", &huge)]),
            None,
        )
        .await;
    assert_html_page(&answer, 400);
    // Unknown client and missing client_id: a page too.
    let unknown = browser
        .send(&sidecar.authorize_url("no-such-client", &[]), None)
        .await;
    assert_html_page(&unknown, 400);
    let missing = browser
        .send(&sidecar.authorize_url("", &[("client_id", "")]), None)
        .await;
    assert_html_page(&missing, 400);
}

#[tokio::test]
async fn invalid_requests_before_login_get_a_page_never_a_redirect() {
    let sidecar = Sidecar::start(Login::Unreachable).await;
    let client_id = sidecar.client("Notes").await;
    let mut browser = Browser::new();
    let cases: [(&[(&str, &str)], &str); 7] = [
        (&[("code_challenge", "")], "invalid_request"),
        (
            &[
                ("code_challenge", VERIFIER),
                ("code_challenge_method", "plain"),
            ],
            "invalid_request",
        ),
        (&[("code_challenge_method", "")], "invalid_request"),
        (
            &[("resource", "http://127.0.0.1:1/other/mcp")],
            "invalid_target",
        ),
        (&[("resource", "")], "invalid_target"),
        (&[("scope", "admin")], "invalid_scope"),
        (&[("response_type", "token")], "unsupported_response_type"),
    ];
    for (overrides, error) in cases {
        // RFC 9700 §4.11.2: registration is open, so the registered redirect URI is nobody's
        // word; before the user logs in, no request is redirected to it (open redirector).
        let answer = browser
            .send(&sidecar.authorize_url(&client_id, overrides), None)
            .await;
        assert_html_page(&answer, 400);
        assert!(answer.body.contains(error), "{overrides:?}: {answer:?}");
    }
    // A valid request while the identity provider is unreachable fails closed, on a page.
    let answer = browser
        .send(&sidecar.authorize_url(&client_id, &[]), None)
        .await;
    assert_html_page(&answer, 503);
    assert!(answer.body.contains("temporarily_unavailable"));
}

#[tokio::test]
async fn script_in_every_reflected_field_is_escaped() {
    let sidecar = Sidecar::start(Login::Unreachable).await;
    let client_id = sidecar.client("Notes").await;
    let script = "<script>alert(1)</script>\"'><img src=x onerror=alert(2)>";
    let mut browser = Browser::new();
    let answers = [
        browser
            .send(&sidecar.authorize_url(script, &[]), None)
            .await,
        browser
            .send(
                &sidecar.authorize_url(&client_id, &[("redirect_uri", script)]),
                None,
            )
            .await,
        browser
            .send(
                &format!(
                    "{}/oauth/callback?state={}&code={}&error={}",
                    sidecar.issuer,
                    urlencode(script),
                    urlencode(script),
                    urlencode(script)
                ),
                None,
            )
            .await,
        browser
            .send(
                &format!("{}/oauth/consent", sidecar.issuer),
                Some(&[("consent", script), ("csrf", script), ("decision", script)]),
            )
            .await,
    ];
    let state_on_a_page = browser
        .send(
            &sidecar.authorize_url(&client_id, &[("state", script), ("resource", "x")]),
            None,
        )
        .await;
    for answer in answers.into_iter().chain([state_on_a_page]) {
        assert!(answer.location.is_none(), "{answer:?}");
        assert!(!answer.body.contains("<script>"), "{}", answer.body);
        assert!(!answer.body.contains("<img"), "{}", answer.body);
        assert!(
            answer.headers["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/html")
        );
    }
}

fn urlencode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

#[tokio::test]
async fn client_id_metadata_document_is_fetched_and_its_redirect_uris_enforced() {
    let sidecar = Sidecar::start(Login::Unreachable).await;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let doc_url = format!(
        "http://127.0.0.1:{}/client.json",
        listener.local_addr().unwrap().port()
    );
    let document = serde_json::json!({
        "client_id": doc_url,
        "client_name": "Document client",
        "redirect_uris": [REDIRECT_URI],
        "token_endpoint_auth_method": "none",
    });
    let app = axum::Router::new().route(
        "/client.json",
        axum::routing::get(move || {
            let document = document.clone();
            async move { axum::Json(document) }
        }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await });

    let mut browser = Browser::new();
    let wrong = browser
        .send(
            &sidecar.authorize_url(&doc_url, &[("redirect_uri", "http://127.0.0.1:9/other")]),
            None,
        )
        .await;
    assert_html_page(&wrong, 400);
    // The document was fetched and cached as a public client.
    let cached = sidecar
        .state
        .store
        .get_client(&doc_url)
        .await
        .unwrap()
        .expect("document cached");
    assert_eq!(cached.redirect_uris, vec![REDIRECT_URI.to_string()]);
    assert_eq!(
        cached.token_endpoint_auth_method,
        TokenEndpointAuthMethod::None
    );
    // With its own redirect URI the request is valid; the (unreachable) upstream is the next step.
    let right = browser
        .send(&sidecar.authorize_url(&doc_url, &[("resource", "x")]), None)
        .await;
    assert_html_page(&right, 400);
    assert!(right.body.contains("invalid_target"), "{right:?}");
}

#[tokio::test]
async fn callback_naming_another_issuer_is_refused_as_a_mix_up() {
    let sidecar = Sidecar::start(Login::Oidc).await;
    let client_id = sidecar.client("Notes").await;
    let (mut browser, page) = sidecar.open_login(&client_id).await;
    let callback = sidecar.until_callback(&mut browser, &page).await;
    let mut url = Url::parse(&callback).unwrap();
    let params: Vec<(String, String)> = url
        .query_pairs()
        .into_owned()
        .filter(|(k, _)| k != "iss")
        .collect();
    url.query_pairs_mut()
        .clear()
        .extend_pairs(params)
        .append_pair("iss", "http://127.0.0.1:1");
    let refused = browser.send(url.as_str(), None).await;
    let params = client_redirect(&refused);
    assert_eq!(params["error"], "access_denied");
    assert!(!params.contains_key("code"));
}

#[tokio::test]
async fn oidc_login_as_a_public_client_of_the_provider() {
    let sidecar = Sidecar::start(Login::OidcPublic).await;
    let client_id = sidecar.client("Notes").await;
    let (mut browser, page) = sidecar.open_login(&client_id).await;
    let consent = oidc_login(&mut browser, &page, "alice", "alice-password").await;
    let grant = approved_grant(&sidecar, &mut browser, &consent).await;
    assert_eq!(grant.user.sub, "oidc:alice");
    assert_eq!(grant.user.groups, vec!["engineering".to_string()]);
}

#[tokio::test]
async fn a_provider_key_replaced_under_the_same_kid_is_fetched_again_at_the_next_login() {
    let mut sidecar = Sidecar::start(Login::Oidc).await;
    let client_id = sidecar.client("Notes").await;
    let (mut browser, login_page) = sidecar.open_login(&client_id).await;
    let consent = oidc_login(&mut browser, &login_page, "alice", "alice-password").await;
    assert_html_page(&consent, 200);
    let jwks = |port: u16| async move {
        reqwest::get(format!("http://127.0.0.1:{port}/jwks"))
            .await
            .unwrap()
            .json::<serde_json::Value>()
            .await
            .unwrap()
    };
    let jwks_before = jwks(sidecar.upstream_port).await;

    // The provider restarts with a new key under the same `kid`; the sidecar keeps running.
    sidecar.restart_oidc();
    let jwks_after = jwks(sidecar.upstream_port).await;
    assert_eq!(jwks_after["keys"][0]["kid"], jwks_before["keys"][0]["kid"]);
    assert_ne!(jwks_after["keys"][0]["n"], jwks_before["keys"][0]["n"]);

    // The next login verifies the ID token with the refetched key and reaches the consent page.
    let (mut browser, login_page) = sidecar.open_login(&client_id).await;
    let next = oidc_login(&mut browser, &login_page, "alice", "alice-password").await;
    assert_html_page(&next, 200);
    assert!(
        next.body.contains("name=\"consent\""),
        "login failed after the key change: {next:?}"
    );
}

#[tokio::test]
async fn parallel_logins_in_one_browser_all_finish() {
    let sidecar = Sidecar::start(Login::Oidc).await;
    let clients = [
        sidecar.client("First").await,
        sidecar.client("Second").await,
    ];
    // A client connecting to two servers: both authorizations start before either finishes.
    let mut browser = Browser::new();
    let mut pages = Vec::new();
    for client_id in &clients {
        pages.push(
            browser
                .follow(&sidecar.authorize_url(client_id, &[]), None)
                .await,
        );
    }
    let set_cookie = |page: &Answer| page.headers.get_all("set-cookie").iter().count();
    assert_eq!(set_cookie(&pages[0]), 0, "the provider's page, not ours");
    let mut callbacks = Vec::new();
    for page in &pages {
        callbacks.push(sidecar.until_callback(&mut browser, page).await);
    }
    for callback in callbacks {
        let consent = browser.send(&callback, None).await;
        assert!(consent.body.contains("name=\"consent\""), "{consent:?}");
        let done = answer_consent(&mut browser, &consent, "approve").await;
        assert!(client_redirect(&done).contains_key("code"));
    }
}

#[tokio::test]
async fn the_login_cookie_reaches_authorize_and_binds_every_login_of_the_browser() {
    let sidecar = Sidecar::start(Login::Oidc).await;
    let client_id = sidecar.client("Notes").await;
    let mut browser = Browser::new();
    let first = browser
        .send(&sidecar.authorize_url(&client_id, &[]), None)
        .await;
    let cookie = first.headers["set-cookie"].to_str().unwrap().to_owned();
    assert!(cookie.contains("; Path=/;"), "{cookie}");
    assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Lax"));
    // A second /authorize from the same browser keeps the same binding.
    let second = browser
        .send(&sidecar.authorize_url(&client_id, &[]), None)
        .await;
    let again = second.headers["set-cookie"].to_str().unwrap();
    assert_eq!(
        again.split(';').next(),
        cookie.split(';').next(),
        "one cookie for every login of this browser"
    );
}

#[tokio::test]
async fn consent_is_asked_again_for_another_redirect_uri_or_changed_redirect_uris() {
    let sidecar = Sidecar::start(Login::Oidc).await;
    let client_id = sidecar.client("Notes").await;
    let second = format!("{REDIRECT_URI}-second");
    let mut client = sidecar
        .state
        .store
        .get_client(&client_id)
        .await
        .unwrap()
        .unwrap();
    client.redirect_uris.push(second.clone());
    let store = &sidecar.state.store;
    store
        .put_client(&client, Duration::from_secs(600))
        .await
        .unwrap();
    let (mut browser, page) = sidecar.open_login(&client_id).await;
    let consent = oidc_login(&mut browser, &page, "alice", "alice-password").await;
    let done = answer_consent(&mut browser, &consent, "approve").await;
    assert!(client_redirect(&done).contains_key("code"));
    // Remembered for this redirect URI ...
    let again = browser
        .follow(&sidecar.authorize_url(&client_id, &[]), None)
        .await;
    assert!(client_redirect(&again).contains_key("code"));
    // ... not for the client's other one: the consent page named the host receiving access.
    let other = browser
        .follow(
            &sidecar.authorize_url(&client_id, &[("redirect_uri", &second)]),
            None,
        )
        .await;
    assert!(other.body.contains("name=\"consent\""), "{other:?}");
    // The client changes its redirect URIs (RFC 7592 or its metadata document): asked again,
    // even for the approved one.
    client.redirect_uris = vec![REDIRECT_URI.into(), "https://attacker.example/cb".into()];
    store
        .put_client(&client, Duration::from_secs(600))
        .await
        .unwrap();
    let changed = browser
        .follow(&sidecar.authorize_url(&client_id, &[]), None)
        .await;
    assert!(changed.body.contains("name=\"consent\""), "{changed:?}");
}
