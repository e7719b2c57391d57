//! Dynamic client registration (RFC 7591) and management (RFC 7592).

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use serde_json::{Value, json};

use crate::common::*;

fn with_redirect(uri: &str) -> Value {
    json!({ "redirect_uris": [uri], "token_endpoint_auth_method": "none" })
}

#[tokio::test]
async fn registers_public_and_confidential_clients() {
    let app = App::start().await;
    let public = app.register(with_redirect(REDIRECT)).await;
    assert!(public.get("client_secret").is_none());
    assert_eq!(public["token_endpoint_auth_method"], "none");
    assert_eq!(public["grant_types"], json!(["authorization_code"]));
    let id = public["client_id"].as_str().unwrap();
    assert_eq!(
        public["registration_client_uri"],
        format!("{ISSUER}/register/{id}")
    );
    assert!(public["registration_access_token"].as_str().unwrap().len() >= 32);

    // RFC 7591 §2: without a method, a client is confidential with client_secret_basic.
    let confidential = app
        .register(json!({ "redirect_uris": ["https://app.example.com/cb"] }))
        .await;
    assert_eq!(
        confidential["token_endpoint_auth_method"],
        "client_secret_basic"
    );
    let secret = confidential["client_secret"].as_str().unwrap();
    assert!(secret.len() >= 32);
    assert!(confidential["client_secret_expires_at"].as_u64().unwrap() > 0);
    // Secrets are stored hashed only.
    let stored = app
        .state
        .store
        .get_client(confidential["client_id"].as_str().unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        stored.client_secret_hash.as_deref(),
        Some(mcpgw_sidecar::store::hash(secret).as_str())
    );
    let raw = serde_json::to_string(&stored).unwrap();
    assert!(!raw.contains(secret));
    assert!(!raw.contains(confidential["registration_access_token"].as_str().unwrap()));
}

#[tokio::test]
async fn accepts_the_redirect_uris_oauth_2_1_allows() {
    let app = App::start().await;
    for uri in [
        "https://app.example.com/callback",
        "http://localhost:51234/cb",
        "http://127.0.0.1/cb",
        "http://[::1]:8000/oauth/callback",
        "com.example.app:/oauth2redirect",
        "cursor.app://callback",
    ] {
        let c = app.register(with_redirect(uri)).await;
        assert_eq!(c["redirect_uris"], json!([uri]));
    }
}

#[tokio::test]
async fn refuses_prefix_and_look_alike_redirect_uris_at_registration() {
    let app = App::start().await;
    for uri in [
        "http://localhost.evil.example/cb",
        "http://127.0.0.1.evil.example/cb",
        "http://localhost@evil.example/cb",
        "http://evil.example/cb",
        "https://app.example.com/cb#fragment",
        "https://*.example.com/cb",
        "javascript:alert(1)",
        "data:text/html,<script>alert(1)</script>",
        "file:///etc/passwd",
        "myapp:/cb",
        "/relative/cb",
        "https://user:pass@app.example.com/cb",
    ] {
        let r = app.post_json("/register", &with_redirect(uri)).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{uri} accepted");
        assert_eq!(r.json["error"], "invalid_redirect_uri", "{uri}");
    }
}

#[tokio::test]
async fn refuses_bad_metadata_with_rfc_7591_errors() {
    let app = App::start().await;
    for (body, error) in [
        (
            json!({ "token_endpoint_auth_method": "none" }),
            "invalid_redirect_uri",
        ),
        (
            json!({ "redirect_uris": [REDIRECT], "grant_types": ["implicit"] }),
            "invalid_client_metadata",
        ),
        (
            json!({ "redirect_uris": [REDIRECT], "grant_types": ["client_credentials"] }),
            "invalid_client_metadata",
        ),
        (
            json!({ "redirect_uris": [REDIRECT], "response_types": ["token"] }),
            "invalid_client_metadata",
        ),
        (
            json!({ "redirect_uris": [REDIRECT], "token_endpoint_auth_method": "private_key_jwt" }),
            "invalid_client_metadata",
        ),
        (
            json!({ "redirect_uris": [REDIRECT], "client_uri": "javascript:alert(1)" }),
            "invalid_client_metadata",
        ),
        (
            json!({ "redirect_uris": "not a list" }),
            "invalid_client_metadata",
        ),
        (
            json!({ "redirect_uris": [REDIRECT], "client_name": "x".repeat(1000) }),
            "invalid_client_metadata",
        ),
        // Bidirectional overrides and invisible formatting reorder the consent page's text.
        (
            json!({ "redirect_uris": [REDIRECT], "client_name": "Notes \u{202E}exe.txt" }),
            "invalid_client_metadata",
        ),
        (
            json!({ "redirect_uris": [REDIRECT], "client_name": "a\u{2066}b\u{2069}" }),
            "invalid_client_metadata",
        ),
        (
            json!({ "redirect_uris": [REDIRECT], "contacts": ["x\u{200F}@example.com"] }),
            "invalid_client_metadata",
        ),
    ] {
        let r = app.post_json("/register", &body).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(r.json["error"], error, "{body}");
        assert_eq!(r.headers[header::CACHE_CONTROL], "no-store");
    }
    let r = app
        .send(
            Request::post("/register")
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from("{not json"))
                .unwrap(),
        )
        .await;
    assert_eq!(r.json["error"], "invalid_client_metadata");
    // Only application/json: a cross-site form can post text/plain or a form.
    for content_type in [
        "text/plain",
        "application/x-www-form-urlencoded",
        "application/jsonp",
    ] {
        let r = app
            .send(
                Request::post("/register")
                    .header(header::CONTENT_TYPE, content_type)
                    .body(Body::from(with_redirect(REDIRECT).to_string()))
                    .unwrap(),
            )
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{content_type}");
        assert_eq!(r.json["error"], "invalid_client_metadata");
    }
    let r = app
        .send(
            Request::post("/register")
                .header(header::CONTENT_TYPE, "Application/JSON; charset=utf-8")
                .body(Body::from(with_redirect(REDIRECT).to_string()))
                .unwrap(),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
}

async fn manage(app: &App, method: &str, id: &str, token: &str, body: Option<Value>) -> Reply {
    let req = Request::builder()
        .method(method)
        .uri(format!("/register/{id}"))
        .header(header::AUTHORIZATION, format!("Bearer {token}"))
        .header(header::CONTENT_TYPE, "application/json");
    app.send(
        req.body(body.map_or(Body::empty(), |b| Body::from(b.to_string())))
            .unwrap(),
    )
    .await
}

#[tokio::test]
async fn reads_updates_and_deletes_with_the_registration_access_token() {
    let app = App::start().await;
    let c = app.register(with_redirect(REDIRECT)).await;
    let id = c["client_id"].as_str().unwrap();
    let token = c["registration_access_token"].as_str().unwrap();

    let r = manage(&app, "GET", id, token, None).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json["redirect_uris"], json!([REDIRECT]));
    assert!(r.json.get("registration_access_token").is_none());

    let update = json!({ "client_id": id, "redirect_uris": ["http://localhost:9999/cb"], "token_endpoint_auth_method": "none", "client_name": "renamed" });
    let r = manage(&app, "PUT", id, token, Some(update)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.json);
    assert_eq!(r.json["client_name"], "renamed");
    assert_eq!(
        app.state
            .store
            .get_client(id)
            .await
            .unwrap()
            .unwrap()
            .redirect_uris,
        ["http://localhost:9999/cb"]
    );

    let r = manage(
        &app,
        "PUT",
        id,
        token,
        Some(json!({ "client_id": "other", "redirect_uris": [REDIRECT] })),
    )
    .await;
    assert_eq!(r.json["error"], "invalid_client_metadata");

    let r = manage(&app, "DELETE", id, token, None).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert!(app.state.store.get_client(id).await.unwrap().is_none());
    assert_eq!(
        manage(&app, "GET", id, token, None).await.status,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn refuses_a_wrong_registration_access_token() {
    let app = App::start().await;
    let a = app.register(with_redirect(REDIRECT)).await;
    let b = app.register(with_redirect(REDIRECT)).await;
    let id = a["client_id"].as_str().unwrap();
    let wrong = b["registration_access_token"].as_str().unwrap();
    for method in ["GET", "PUT", "DELETE"] {
        let body = (method == "PUT")
            .then(|| json!({ "client_id": id, "redirect_uris": ["https://evil.example/cb"] }));
        let r = manage(&app, method, id, wrong, body).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{method}");
        assert_eq!(r.json["error"], "invalid_token");
        assert!(
            r.headers[header::WWW_AUTHENTICATE]
                .to_str()
                .unwrap()
                .starts_with("Bearer")
        );
    }
    let r = app
        .send(
            Request::get(format!("/register/{id}"))
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    // Nothing changed.
    assert!(
        app.state
            .store
            .get_client(id)
            .await
            .unwrap()
            .unwrap()
            .has_redirect_uri(REDIRECT)
    );
}

#[tokio::test]
async fn deleting_a_client_revokes_its_tokens() {
    let app = App::start().await;
    let c = app
        .register(json!({ "redirect_uris": [REDIRECT], "token_endpoint_auth_method": "none", "grant_types": ["authorization_code", "refresh_token"] }))
        .await;
    let id = c["client_id"].as_str().unwrap();
    let code = app.code(id, VERIFIER, EVERYTHING, "").await;
    let t = app.exchange(id, &code, VERIFIER).await.json;
    let access = t["access_token"].as_str().unwrap();
    assert_eq!(
        app.verify("/everything/mcp", Some(access)).await.status,
        StatusCode::OK
    );
    let r = manage(
        &app,
        "DELETE",
        id,
        c["registration_access_token"].as_str().unwrap(),
        None,
    )
    .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert_eq!(
        app.verify("/everything/mcp", Some(access)).await.status,
        StatusCode::UNAUTHORIZED
    );
    let r = app.refresh(id, t["refresh_token"].as_str().unwrap()).await;
    assert_eq!(r.json["error"], "invalid_client");
}

#[tokio::test]
async fn initial_access_token_mode_requires_the_token() {
    let app = App::with_config(
        "",
        "[registration]\nmode = \"initial_access_token\"\ninitial_access_token = \"0123456789abcdef-initial\"\n",
    )
    .await;
    assert_eq!(
        app.get("/.well-known/oauth-authorization-server")
            .await
            .json["registration_endpoint_auth_required"],
        true
    );
    let r = app.post_json("/register", &with_redirect(REDIRECT)).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let req = |token: &str| {
        Request::post("/register")
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::AUTHORIZATION, format!("Bearer {token}"))
            .body(Body::from(with_redirect(REDIRECT).to_string()))
            .unwrap()
    };
    assert_eq!(
        app.send(req("0123456789abcdef-wrong!!")).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        app.send(req("0123456789abcdef-initial")).await.status,
        StatusCode::CREATED
    );
}

#[tokio::test]
async fn rate_limited_mode_throttles_per_address() {
    let app = App::with_config(
        "",
        "[registration]\nmode = \"rate_limited\"\nrate_limit = 2\nrate_window = \"1h\"\n",
    )
    .await;
    let from = |addr: &str| {
        Request::post("/register")
            .header(header::CONTENT_TYPE, "application/json")
            .header("x-forwarded-for", format!("198.51.100.1, {addr}"))
            .body(Body::from(with_redirect(REDIRECT).to_string()))
            .unwrap()
    };
    assert_eq!(
        app.send(from("203.0.113.5")).await.status,
        StatusCode::CREATED
    );
    assert_eq!(
        app.send(from("203.0.113.5")).await.status,
        StatusCode::CREATED
    );
    let r = app.send(from("203.0.113.5")).await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(r.json["error"], "slow_down");
    assert!(r.headers.contains_key(header::RETRY_AFTER));
    assert_eq!(
        app.send(from("203.0.113.6")).await.status,
        StatusCode::CREATED
    );
}

#[tokio::test]
async fn over_limit_bodies_get_413_with_an_oauth_error() {
    let app = App::start().await;
    let big = "x".repeat(mcpgw_sidecar::MAX_BODY_BYTES + 1);
    for (path, content_type, body) in [
        (
            "/register",
            "application/json",
            format!("{{\"client_name\":\"{big}\"}}"),
        ),
        (
            "/token",
            "application/x-www-form-urlencoded",
            format!("grant_type={big}"),
        ),
        (
            "/introspect",
            "application/x-www-form-urlencoded",
            format!("token={big}"),
        ),
    ] {
        let r = app
            .send(
                Request::post(path)
                    .header(header::CONTENT_TYPE, content_type)
                    .body(Body::from(body))
                    .unwrap(),
            )
            .await;
        assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE, "{path}");
        assert_eq!(r.json["error"], "invalid_request", "{path}");
    }
}
