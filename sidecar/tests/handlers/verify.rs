//! `/verify` (Traefik ForwardAuth), `/revoke` and `/introspect`.

use axum::http::{StatusCode, header};
use mcpgw_core::identity;
use serde_json::json;

use crate::common::*;

#[tokio::test]
async fn verify_allows_a_valid_token_with_the_identity_headers() {
    let app = App::start().await;
    let (client, t) = app.tokens(MEMORY, "memory").await;
    let r = app
        .verify("/memory/mcp?x=1", t["access_token"].as_str())
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let h = |name: &str| r.headers[name].to_str().unwrap().to_owned();
    assert_eq!(h(identity::SUBJECT), "oidc:alice");
    assert_eq!(h(identity::USER), "alice");
    assert_eq!(h(identity::EMAIL), "alice@example.test");
    assert_eq!(h(identity::GROUPS), "engineering");
    assert_eq!(h(identity::CLIENT_ID), client);
    assert_eq!(h(identity::SCOPES), "memory");
    assert_eq!(h(identity::RESOURCE), MEMORY);
}

#[tokio::test]
async fn verify_refuses_a_token_for_resource_a_at_resource_b() {
    let app = App::start().await;
    let (_, t) = app.tokens(EVERYTHING, "memory").await;
    let r = app.verify("/memory/mcp", t["access_token"].as_str()).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        r.headers[header::WWW_AUTHENTICATE],
        "Bearer resource_metadata=\"http://127.0.0.1:8080/.well-known/oauth-protected-resource/memory/mcp\", error=\"invalid_token\", error_description=\"token is not for this resource\""
    );
    assert_eq!(r.json["error"], "invalid_token");
    assert!(r.headers.get(identity::SUBJECT).is_none());
}

#[tokio::test]
async fn verify_answers_like_the_filter_for_missing_bad_and_underscoped_tokens() {
    let app = App::start().await;
    let r = app.verify("/everything/mcp", None).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        r.headers[header::WWW_AUTHENTICATE],
        "Bearer resource_metadata=\"http://127.0.0.1:8080/.well-known/oauth-protected-resource/everything/mcp\""
    );
    let r = app.verify("/everything/mcp", Some("not.a.jwt")).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert!(
        r.headers[header::WWW_AUTHENTICATE]
            .to_str()
            .unwrap()
            .contains("error=\"invalid_token\"")
    );
    // A token for the memory server without the scope it requires.
    let (_, t) = app.tokens(MEMORY, "").await;
    let r = app.verify("/memory/mcp", t["access_token"].as_str()).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert!(
        r.headers[header::WWW_AUTHENTICATE]
            .to_str()
            .unwrap()
            .contains("error=\"insufficient_scope\", scope=\"memory\"")
    );
    // A path that is no configured resource.
    let (_, t) = app.tokens(EVERYTHING, "").await;
    assert_eq!(
        app.verify("/other/mcp", t["access_token"].as_str())
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        app.verify("/everything/mcpx", t["access_token"].as_str())
            .await
            .status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn verify_refuses_tokens_of_another_issuer_key() {
    let app = App::start().await;
    let other = App::start().await;
    let (_, t) = other.tokens(EVERYTHING, "").await;
    // Same issuer name, but signed by another deployment's key.
    let r = app
        .verify("/everything/mcp", t["access_token"].as_str())
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn revoking_an_access_token_stops_verify_and_introspection() {
    let app = App::start().await;
    let confidential = app
        .register(json!({ "redirect_uris": [REDIRECT], "token_endpoint_auth_method": "client_secret_post", "grant_types": ["authorization_code", "refresh_token"] }))
        .await;
    let (id, secret) = (
        confidential["client_id"].as_str().unwrap(),
        confidential["client_secret"].as_str().unwrap(),
    );
    let code = app.code(id, VERIFIER, EVERYTHING, "").await;
    let t = app
        .post_form(
            "/token",
            &[
                ("grant_type", "authorization_code"),
                ("client_id", id),
                ("client_secret", secret),
                ("code", &code),
                ("redirect_uri", REDIRECT),
                ("code_verifier", VERIFIER),
            ],
            None,
        )
        .await
        .json;
    let access = t["access_token"].as_str().unwrap();
    let introspect = |token: &str| {
        let token = token.to_owned();
        let app = &app;
        async move {
            app.post_form(
                "/introspect",
                &[
                    ("token", &token),
                    ("client_id", id),
                    ("client_secret", secret),
                ],
                None,
            )
            .await
        }
    };
    let r = introspect(access).await;
    assert_eq!(r.json["active"], true);
    assert_eq!(r.json["sub"], "oidc:alice");
    assert_eq!(r.json["aud"], EVERYTHING);
    assert_eq!(r.json["client_id"], id);
    let r = introspect(t["refresh_token"].as_str().unwrap()).await;
    assert_eq!(r.json["active"], true);
    assert_eq!(r.json["token_type"], "refresh_token");

    let r = app
        .post_form(
            "/revoke",
            &[
                ("token", access),
                ("client_id", id),
                ("client_secret", secret),
            ],
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(introspect(access).await.json, json!({ "active": false }));
    assert_eq!(
        app.verify("/everything/mcp", Some(access)).await.status,
        StatusCode::UNAUTHORIZED
    );
    // Unknown tokens: 200 at /revoke (RFC 7009 §2.2), inactive at /introspect.
    let r = app
        .post_form(
            "/revoke",
            &[
                ("token", "garbage"),
                ("client_id", id),
                ("client_secret", secret),
            ],
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(introspect("garbage").await.json, json!({ "active": false }));
}

#[tokio::test]
async fn revoking_a_refresh_token_revokes_its_family_but_only_for_its_client() {
    let app = App::start().await;
    let (client, t) = app.tokens(EVERYTHING, "").await;
    let (access, refresh) = (
        t["access_token"].as_str().unwrap(),
        t["refresh_token"].as_str().unwrap(),
    );
    let other = app.public_client().await;
    let r = app
        .post_form(
            "/revoke",
            &[("token", refresh), ("client_id", &other)],
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        app.verify("/everything/mcp", Some(access)).await.status,
        StatusCode::OK
    );
    app.post_form(
        "/revoke",
        &[
            ("token", refresh),
            ("client_id", &client),
            ("token_type_hint", "refresh_token"),
        ],
        None,
    )
    .await;
    assert_eq!(
        app.verify("/everything/mcp", Some(access)).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        app.refresh(&client, refresh).await.json["error"],
        "invalid_grant"
    );
}

#[tokio::test]
async fn introspection_requires_an_authenticated_confidential_client() {
    let app = App::start().await;
    let (client, t) = app.tokens(EVERYTHING, "").await;
    let token = t["access_token"].as_str().unwrap();
    let r = app
        .post_form(
            "/introspect",
            &[("token", token), ("client_id", &client)],
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(r.json["error"], "invalid_client");
    let r = app
        .post_form("/introspect", &[("token", token)], None)
        .await;
    assert_eq!(r.json["error"], "invalid_client");
}

#[tokio::test]
async fn verify_lets_a_cors_preflight_through_without_identity() {
    let app = App::start().await;
    let preflight = |method: &str, acrm: bool| {
        let mut req = axum::http::Request::get("/verify")
            .header("x-forwarded-host", "127.0.0.1:8080")
            .header("x-forwarded-uri", "/everything/mcp")
            .header("x-forwarded-method", method);
        if acrm {
            req = req.header("access-control-request-method", "POST");
        }
        req.body(axum::body::Body::empty()).unwrap()
    };
    let r = app.send(preflight("OPTIONS", true)).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.headers.get(identity::SUBJECT).is_none());
    // Not a preflight: a plain OPTIONS, or a POST claiming the CORS header, needs a token.
    assert_eq!(
        app.send(preflight("OPTIONS", false)).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        app.send(preflight("POST", true)).await.status,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn introspection_answers_only_about_the_callers_tokens_or_to_a_resource_server() {
    let app = App::with_config(
        "",
        "[registration]\nmode = \"open\"\n[introspection]\nresource_servers = [\"rs\"]\n",
    )
    .await;
    let (_, t) = app.tokens(EVERYTHING, "").await;
    let snoop = app
        .register(json!({ "redirect_uris": [REDIRECT], "client_name": "snoop" }))
        .await;
    let (id, secret) = (
        snoop["client_id"].as_str().unwrap(),
        snoop["client_secret"].as_str().unwrap(),
    );
    for token in [&t["access_token"], &t["refresh_token"]] {
        let r = app
            .post_form(
                "/introspect",
                &[("token", token.as_str().unwrap())],
                Some(&basic(id, secret)),
            )
            .await;
        assert_eq!(r.json, json!({ "active": false }), "another client's token");
    }
    // A client configured as a resource server may introspect anyone's.
    let rs = mcpgw_sidecar::store::Client {
        client_id: "rs".into(),
        ..app.state.store.get_client(id).await.unwrap().unwrap()
    };
    app.state
        .store
        .put_client(&rs, std::time::Duration::from_secs(60))
        .await
        .unwrap();
    let r = app
        .post_form(
            "/introspect",
            &[("token", t["access_token"].as_str().unwrap())],
            Some(&basic("rs", secret)),
        )
        .await;
    assert_eq!(r.json["active"], true, "{}", r.json);
    assert_eq!(r.json["sub"], "oidc:alice");
}

#[tokio::test]
async fn verify_refuses_two_authorization_headers_as_envoy_does() {
    let app = App::start().await;
    let (_, t) = app.tokens(EVERYTHING, "").await;
    let token = t["access_token"].as_str().unwrap();
    for second in [token, "junk"] {
        let req = axum::http::Request::get("/verify")
            .header("x-forwarded-host", "127.0.0.1:8080")
            .header("x-forwarded-uri", "/everything/mcp")
            .header("x-forwarded-method", "POST")
            .header(header::AUTHORIZATION, format!("Bearer {token}"))
            .header(header::AUTHORIZATION, format!("Bearer {second}"))
            .body(axum::body::Body::empty())
            .unwrap();
        let r = app.send(req).await;
        // Envoy joins the two values with a comma; no token survives that: 401 malformed.
        assert_eq!(r.status, StatusCode::UNAUTHORIZED);
        assert_eq!(r.json["error"], "invalid_token");
        assert_eq!(r.json["error_description"], "malformed token");
        assert!(r.headers.get(identity::SUBJECT).is_none());
    }
}
