//! The handler-test harness: one Redis per test binary (a unique key prefix per test), the real
//! router driven with `oneshot`, and helpers that register clients and mint codes directly in
//! the store (the login flow itself is tested in `flow*.rs`).

use std::sync::OnceLock;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Request, StatusCode, header};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use mcpgw_core::claims::Scopes;
use mcpgw_sidecar::config::Config;
use mcpgw_sidecar::store::{CodeGrant, User};
use mcpgw_sidecar::{AppState, router};
use mcpgw_testkit::{Redis, unique};
use serde_json::Value;
use sha2::{Digest, Sha256};
use tower::ServiceExt;

pub const ISSUER: &str = "http://127.0.0.1:8080";
pub const EVERYTHING: &str = "http://127.0.0.1:8080/everything/mcp";
pub const MEMORY: &str = "http://127.0.0.1:8080/memory/mcp";
pub const REDIRECT: &str = "http://127.0.0.1:33418/callback";

pub fn redis() -> &'static Redis {
    static REDIS: OnceLock<Redis> = OnceLock::new();
    REDIS.get_or_init(Redis::start)
}

/// The configuration every test starts from; `extra` is appended (top-level keys go first).
pub fn config_text(redis_url: &str, top: &str, extra: &str) -> String {
    format!(
        r#"
issuer = "{ISSUER}"
redis_url = "{redis_url}"
key_prefix = "{prefix}:"
{top}
[allow]
users = ["alice"]
groups = ["engineering"]

[[resources]]
canonical_url = "{EVERYTHING}"
path_prefix = "/everything/mcp"

[[resources]]
canonical_url = "{MEMORY}"
path_prefix = "/memory/mcp"
scopes_required = ["memory"]
{extra}
"#,
        prefix = unique("sidecar")
    )
}

pub struct App {
    pub state: AppState,
    pub router: Router,
}

pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub json: Value,
}

impl App {
    /// An app with open registration.
    pub async fn start() -> App {
        App::with_config("", "[registration]\nmode = \"open\"\n").await
    }

    pub async fn with_config(top: &str, extra: &str) -> App {
        let text = config_text(&redis().url(), top, extra);
        App::from_config(Config::from_toml(&text, |_| None).unwrap()).await
    }

    pub async fn from_config(config: Config) -> App {
        let state = AppState::new(config).await.unwrap();
        App {
            router: router(state.clone()),
            state,
        }
    }

    pub async fn send(&self, req: Request<Body>) -> Reply {
        let resp = self.router.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
            .await
            .unwrap();
        let json = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or(Value::String(String::from_utf8_lossy(&bytes).into()))
        };
        Reply {
            status,
            headers,
            json,
        }
    }

    pub async fn get(&self, path: &str) -> Reply {
        self.send(Request::get(path).body(Body::empty()).unwrap())
            .await
    }

    pub async fn post_json(&self, path: &str, body: &Value) -> Reply {
        let req = Request::post(path)
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(body.to_string()))
            .unwrap();
        self.send(req).await
    }

    /// POSTs a form; `auth` is an optional `Authorization` header value.
    pub async fn post_form(&self, path: &str, form: &[(&str, &str)], auth: Option<&str>) -> Reply {
        let body = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(form)
            .finish();
        let mut req =
            Request::post(path).header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
        if let Some(a) = auth {
            req = req.header(header::AUTHORIZATION, a);
        }
        self.send(req.body(Body::from(body)).unwrap()).await
    }

    /// Registers a client with these metadata; panics unless 201.
    pub async fn register(&self, metadata: Value) -> Value {
        let r = self.post_json("/register", &metadata).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.json);
        r.json
    }

    /// Registers a public client with the refresh grant; returns its client_id.
    pub async fn public_client(&self) -> String {
        let c = self
            .register(serde_json::json!({
                "redirect_uris": [REDIRECT],
                "token_endpoint_auth_method": "none",
                "grant_types": ["authorization_code", "refresh_token"],
                "client_name": "test client",
            }))
            .await;
        c["client_id"].as_str().unwrap().to_owned()
    }

    /// Stores a code for `client_id` directly (as the login part does after consent).
    pub async fn code(
        &self,
        client_id: &str,
        verifier: &str,
        resource: &str,
        scope: &str,
    ) -> String {
        self.put_code(&self.code_grant(client_id, verifier, resource, scope))
            .await
    }

    /// What a code for `client_id` stands for, as the login part would store it.
    pub fn code_grant(
        &self,
        client_id: &str,
        verifier: &str,
        resource: &str,
        scope: &str,
    ) -> CodeGrant {
        CodeGrant {
            client_id: client_id.to_owned(),
            redirect_uri: REDIRECT.to_owned(),
            redirect_uri_sent: true,
            code_challenge: challenge(verifier),
            resource: resource.to_owned(),
            scope: Scopes::parse(scope),
            user: alice(),
            issued_at: mcpgw_sidecar::now(),
        }
    }

    /// Stores a code standing for `grant`.
    pub async fn put_code(&self, grant: &CodeGrant) -> String {
        let code = unique("code") + "-0123456789abcdef";
        self.state
            .store
            .put_code(&code, grant, Duration::from_secs(60))
            .await
            .unwrap();
        code
    }

    /// Exchanges a code as a public client.
    pub async fn exchange(&self, client_id: &str, code: &str, verifier: &str) -> Reply {
        self.post_form(
            "/token",
            &[
                ("grant_type", "authorization_code"),
                ("client_id", client_id),
                ("code", code),
                ("redirect_uri", REDIRECT),
                ("code_verifier", verifier),
            ],
            None,
        )
        .await
    }

    /// A fresh public client and its first token response for `resource`.
    pub async fn tokens(&self, resource: &str, scope: &str) -> (String, Value) {
        let client = self.public_client().await;
        let code = self.code(&client, VERIFIER, resource, scope).await;
        let r = self.exchange(&client, &code, VERIFIER).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.json);
        (client, r.json)
    }

    /// Refreshes as a public client.
    pub async fn refresh(&self, client_id: &str, refresh_token: &str) -> Reply {
        self.post_form(
            "/token",
            &[
                ("grant_type", "refresh_token"),
                ("client_id", client_id),
                ("refresh_token", refresh_token),
            ],
            None,
        )
        .await
    }

    /// ForwardAuth as Traefik calls it.
    pub async fn verify(&self, path: &str, token: Option<&str>) -> Reply {
        let mut req = Request::get("/verify")
            .header("x-forwarded-host", "127.0.0.1:8080")
            .header("x-forwarded-uri", path)
            .header("x-forwarded-method", "POST");
        if let Some(t) = token {
            req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
        }
        self.send(req.body(Body::empty()).unwrap()).await
    }
}

pub const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk-verifier";

pub fn challenge(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

pub fn alice() -> User {
    User {
        sub: "oidc:alice".into(),
        login: Some("alice".into()),
        name: Some("Alice Example".into()),
        email: Some("alice@example.test".into()),
        groups: vec!["engineering".into()],
    }
}

/// The claims of a JWT, unverified (the tests check what was signed; /verify checks signatures).
pub fn claims(jwt: &str) -> Value {
    let payload = jwt.split('.').nth(1).unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap()
}

pub fn basic(id: &str, secret: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{id}:{secret}"))
    )
}
