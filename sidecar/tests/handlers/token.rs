//! The token endpoint: code exchange, refresh rotation, client authentication, and the attacks
//! it must refuse (PKCE, code replay, code theft, refresh reuse).

use axum::http::{StatusCode, header};
use serde_json::json;

use crate::common::*;

#[tokio::test]
async fn exchanges_a_code_for_a_signed_access_token_and_a_refresh_token() {
    let app = App::start().await;
    let client = app.public_client().await;
    let code = app.code(&client, VERIFIER, MEMORY, "memory").await;
    let r = app.exchange(&client, &code, VERIFIER).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.json);
    assert_eq!(r.headers[header::CACHE_CONTROL], "no-store");
    assert_eq!(r.json["token_type"], "Bearer");
    assert_eq!(r.json["expires_in"], 600);
    assert_eq!(r.json["scope"], "memory");
    assert!(r.json["refresh_token"].as_str().unwrap().len() >= 43);
    let c = claims(r.json["access_token"].as_str().unwrap());
    assert_eq!(c["iss"], ISSUER);
    assert_eq!(c["sub"], "oidc:alice");
    assert_eq!(c["aud"], MEMORY);
    assert_eq!(c["client_id"], client.as_str());
    assert_eq!(c["scope"], "memory");
    assert_eq!(c["preferred_username"], "alice");
    assert_eq!(c["name"], "Alice Example");
    assert_eq!(c["email"], "alice@example.test");
    assert_eq!(c["groups"], json!(["engineering"]));
    assert_eq!(c["exp"].as_u64().unwrap() - c["iat"].as_u64().unwrap(), 600);
    assert_eq!(c["nbf"], c["iat"]);
    assert!(c["jti"].as_str().unwrap().len() >= 20);
    // The token is what core (the filter's verifier) accepts for the resource.
    assert_eq!(
        app.verify("/memory/mcp", r.json["access_token"].as_str())
            .await
            .status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn refuses_missing_plain_or_wrong_pkce_verifiers() {
    let app = App::start().await;
    let client = app.public_client().await;
    // Missing verifier.
    let code = app.code(&client, VERIFIER, EVERYTHING, "").await;
    let r = app
        .post_form(
            "/token",
            &[
                ("grant_type", "authorization_code"),
                ("client_id", &client),
                ("code", &code),
                ("redirect_uri", REDIRECT),
            ],
            None,
        )
        .await;
    assert_eq!(
        (r.status, r.json["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_request"))
    );
    // `plain`: the challenge itself presented as the verifier.
    let code = app.code(&client, VERIFIER, EVERYTHING, "").await;
    let r = app.exchange(&client, &code, &challenge(VERIFIER)).await;
    assert_eq!(r.json["error"], "invalid_grant");
    // Wrong verifier.
    let code = app.code(&client, VERIFIER, EVERYTHING, "").await;
    let r = app
        .exchange(
            &client,
            &code,
            "a-completely-different-verifier-of-enough-length-0123",
        )
        .await;
    assert_eq!(r.json["error"], "invalid_grant");
    // A failed attempt burns the code: the right verifier no longer works.
    let r = app.exchange(&client, &code, VERIFIER).await;
    assert_eq!(r.json["error"], "invalid_grant");
}

#[tokio::test]
async fn a_replayed_code_is_refused_and_revokes_what_it_issued() {
    let app = App::start().await;
    let client = app.public_client().await;
    let code = app.code(&client, VERIFIER, EVERYTHING, "").await;
    let first = app.exchange(&client, &code, VERIFIER).await;
    assert_eq!(first.status, StatusCode::OK);
    let access = first.json["access_token"].as_str().unwrap();
    assert_eq!(
        app.verify("/everything/mcp", Some(access)).await.status,
        StatusCode::OK
    );
    let replay = app.exchange(&client, &code, VERIFIER).await;
    assert_eq!(replay.status, StatusCode::BAD_REQUEST);
    assert_eq!(replay.json["error"], "invalid_grant");
    let denied = app.verify("/everything/mcp", Some(access)).await;
    assert_eq!(denied.status, StatusCode::UNAUTHORIZED);
    assert!(
        denied.headers[header::WWW_AUTHENTICATE]
            .to_str()
            .unwrap()
            .contains("revoked")
    );
    let r = app
        .refresh(&client, first.json["refresh_token"].as_str().unwrap())
        .await;
    assert_eq!(r.json["error"], "invalid_grant");
}

#[tokio::test]
async fn a_code_redeemed_by_another_client_is_refused() {
    let app = App::start().await;
    let victim = app.public_client().await;
    let attacker = app.public_client().await;
    let code = app.code(&victim, VERIFIER, EVERYTHING, "").await;
    let r = app.exchange(&attacker, &code, VERIFIER).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.json["error"], "invalid_grant");
    assert!(r.json.get("access_token").is_none());
}

#[tokio::test]
async fn the_redirect_uri_and_resource_must_match_the_code() {
    let app = App::start().await;
    let client = app.public_client().await;
    let code = app.code(&client, VERIFIER, EVERYTHING, "").await;
    let r = app
        .post_form(
            "/token",
            &[
                ("grant_type", "authorization_code"),
                ("client_id", &client),
                ("code", &code),
                ("redirect_uri", "http://127.0.0.1:33418/callback/../evil"),
                ("code_verifier", VERIFIER),
            ],
            None,
        )
        .await;
    assert_eq!(r.json["error"], "invalid_grant");
    let code = app.code(&client, VERIFIER, EVERYTHING, "").await;
    let r = app
        .post_form(
            "/token",
            &[
                ("grant_type", "authorization_code"),
                ("client_id", &client),
                ("code", &code),
                ("redirect_uri", REDIRECT),
                ("code_verifier", VERIFIER),
                ("resource", MEMORY),
            ],
            None,
        )
        .await;
    assert_eq!(r.json["error"], "invalid_target");
}

#[tokio::test]
async fn refresh_rotates_and_a_reused_refresh_token_revokes_the_family() {
    let app = App::start().await;
    let (client, first) = app.tokens(EVERYTHING, "").await;
    let rt1 = first["refresh_token"].as_str().unwrap();
    let second = app.refresh(&client, rt1).await;
    assert_eq!(second.status, StatusCode::OK, "{}", second.json);
    let rt2 = second.json["refresh_token"].as_str().unwrap();
    assert_ne!(rt1, rt2);
    let access2 = second.json["access_token"].as_str().unwrap();
    assert_eq!(claims(access2)["aud"], EVERYTHING);
    assert_eq!(
        app.verify("/everything/mcp", Some(access2)).await.status,
        StatusCode::OK
    );

    // The old refresh token is replayed (stolen): refused, and the whole family dies.
    let reuse = app.refresh(&client, rt1).await;
    assert_eq!(reuse.json["error"], "invalid_grant");
    assert_eq!(
        app.verify("/everything/mcp", Some(access2)).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        app.refresh(&client, rt2).await.json["error"],
        "invalid_grant"
    );
}

#[tokio::test]
async fn a_refresh_token_is_bound_to_its_client() {
    let app = App::start().await;
    let (_, t) = app.tokens(EVERYTHING, "").await;
    let other = app.public_client().await;
    let r = app
        .refresh(&other, t["refresh_token"].as_str().unwrap())
        .await;
    assert_eq!(r.json["error"], "invalid_grant");
}

#[tokio::test]
async fn refresh_checks_the_allow_list_again() {
    let app = App::start().await;
    let (client, t) = app.tokens(EVERYTHING, "").await;
    // Same Redis and prefix, but alice is no longer on the allow-list.
    let mut config = (*app.state.config).clone();
    config.allow.users.clear();
    config.allow.groups = vec!["sales".into()];
    let stricter = App::from_config(config).await;
    let r = stricter
        .refresh(&client, t["refresh_token"].as_str().unwrap())
        .await;
    assert_eq!(r.json["error"], "invalid_grant");
    assert_eq!(
        stricter
            .verify("/everything/mcp", t["access_token"].as_str())
            .await
            .status,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn refresh_may_narrow_but_not_widen_the_scope() {
    let app = App::start().await;
    let (client, t) = app.tokens(MEMORY, "memory offline_access").await;
    let form = |rt: &str, scope: &'static str| {
        vec![
            ("grant_type", "refresh_token".to_owned()),
            ("client_id", client.clone()),
            ("refresh_token", rt.to_owned()),
            ("scope", scope.to_owned()),
        ]
    };
    let wide = form(t["refresh_token"].as_str().unwrap(), "memory admin");
    let wide: Vec<(&str, &str)> = wide.iter().map(|(k, v)| (*k, v.as_str())).collect();
    assert_eq!(
        app.post_form("/token", &wide, None).await.json["error"],
        "invalid_scope"
    );
}

#[tokio::test]
async fn confidential_clients_authenticate_as_registered() {
    let app = App::start().await;
    let basic_client = app
        .register(json!({ "redirect_uris": [REDIRECT], "token_endpoint_auth_method": "client_secret_basic" }))
        .await;
    let post_client = app
        .register(json!({ "redirect_uris": [REDIRECT], "token_endpoint_auth_method": "client_secret_post" }))
        .await;
    let (bid, bsecret) = (
        basic_client["client_id"].as_str().unwrap(),
        basic_client["client_secret"].as_str().unwrap(),
    );
    let (pid, psecret) = (
        post_client["client_id"].as_str().unwrap(),
        post_client["client_secret"].as_str().unwrap(),
    );
    let grant = |code: &str| {
        vec![
            ("grant_type", "authorization_code".to_owned()),
            ("code", code.to_owned()),
            ("redirect_uri", REDIRECT.to_owned()),
            ("code_verifier", VERIFIER.to_owned()),
        ]
    };
    let call = |form: Vec<(&'static str, String)>, auth: Option<String>| {
        let app = &app;
        async move {
            let pairs: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
            app.post_form("/token", &pairs, auth.as_deref()).await
        }
    };
    // Basic with the right secret works; no refresh token (grant not registered).
    let code = app.code(bid, VERIFIER, EVERYTHING, "").await;
    let r = call(grant(&code), Some(basic(bid, bsecret))).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.json);
    assert!(r.json.get("refresh_token").is_none());
    // Wrong secret, no secret, or the unregistered method: invalid_client with a Basic challenge.
    for (extra, auth) in [
        (vec![], Some(basic(bid, "wrong-secret"))),
        (vec![("client_id", bid.to_owned())], None),
        (
            vec![
                ("client_id", bid.to_owned()),
                ("client_secret", bsecret.to_owned()),
            ],
            None,
        ),
    ] {
        let code = app.code(bid, VERIFIER, EVERYTHING, "").await;
        let mut form = grant(&code);
        form.extend(extra);
        let r = call(form, auth).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED);
        assert_eq!(r.json["error"], "invalid_client");
        assert!(
            r.headers[header::WWW_AUTHENTICATE]
                .to_str()
                .unwrap()
                .starts_with("Basic")
        );
    }
    // client_secret_post.
    let code = app.code(pid, VERIFIER, EVERYTHING, "").await;
    let mut form = grant(&code);
    form.extend([
        ("client_id", pid.to_owned()),
        ("client_secret", psecret.to_owned()),
    ]);
    assert_eq!(call(form, None).await.status, StatusCode::OK);
}

#[tokio::test]
async fn malformed_requests_get_rfc_6749_errors() {
    let app = App::start().await;
    let client = app.public_client().await;
    let r = app
        .post_form("/token", &[("client_id", &client)], None)
        .await;
    assert_eq!(
        (r.status, r.json["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_request"))
    );
    let r = app
        .post_form(
            "/token",
            &[("grant_type", "client_credentials"), ("client_id", &client)],
            None,
        )
        .await;
    assert_eq!(r.json["error"], "unsupported_grant_type");
    // A client registered without the refresh grant may not use it.
    let no_refresh = app
        .register(json!({ "redirect_uris": [REDIRECT], "token_endpoint_auth_method": "none" }))
        .await;
    let id = no_refresh["client_id"].as_str().unwrap();
    let r = app
        .post_form(
            "/token",
            &[
                ("grant_type", "refresh_token"),
                ("client_id", id),
                ("refresh_token", "x"),
            ],
            None,
        )
        .await;
    assert_eq!(r.json["error"], "unauthorized_client");
    let r = app
        .post_form(
            "/token",
            &[("grant_type", "password"), ("client_id", "nobody")],
            None,
        )
        .await;
    assert_eq!(r.json["error"], "invalid_client");
    let r = app
        .post_form(
            "/token",
            &[
                ("grant_type", "authorization_code"),
                ("grant_type", "refresh_token"),
                ("client_id", &client),
            ],
            None,
        )
        .await;
    assert_eq!(r.json["error"], "invalid_request");
    let r = app
        .post_json("/token", &json!({"grant_type": "authorization_code"}))
        .await;
    assert_eq!(r.json["error"], "invalid_request");
    assert_eq!(r.headers[header::CACHE_CONTROL], "no-store");
}

#[tokio::test]
async fn another_client_replaying_a_code_revokes_nothing() {
    let app = App::start().await;
    let victim = app.public_client().await;
    let attacker = app.public_client().await;
    let code = app.code(&victim, VERIFIER, EVERYTHING, "").await;
    // Before the victim redeems it: refused, and the code stays the victim's.
    let early = app.exchange(&attacker, &code, "garbage").await;
    assert_eq!(early.json["error"], "invalid_grant");
    let first = app.exchange(&victim, &code, VERIFIER).await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.json);
    let access = first.json["access_token"].as_str().unwrap();
    // After: a replay by another client with a garbage verifier is refused and revokes nothing.
    let replay = app.exchange(&attacker, &code, "garbage").await;
    assert_eq!(replay.json["error"], "invalid_grant");
    assert_eq!(
        app.verify("/everything/mcp", Some(access)).await.status,
        StatusCode::OK
    );
    let r = app
        .refresh(&victim, first.json["refresh_token"].as_str().unwrap())
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.json);
}

#[tokio::test]
async fn a_confidential_clients_code_replayed_without_its_secret_revokes_nothing() {
    let app = App::start().await;
    let c = app
        .register(json!({"redirect_uris": [REDIRECT], "client_name": "conf"}))
        .await;
    let (id, secret) = (
        c["client_id"].as_str().unwrap(),
        c["client_secret"].as_str().unwrap(),
    );
    let code = app.code(id, VERIFIER, EVERYTHING, "").await;
    let form = [
        ("grant_type", "authorization_code"),
        ("code", code.as_str()),
        ("redirect_uri", REDIRECT),
        ("code_verifier", VERIFIER),
    ];
    let first = app
        .post_form("/token", &form, Some(&basic(id, secret)))
        .await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.json);
    let access = first.json["access_token"].as_str().unwrap();
    let replay = app
        .post_form("/token", &form, Some(&basic(id, "not-the-secret")))
        .await;
    assert_eq!(replay.json["error"], "invalid_client");
    assert_eq!(
        app.verify("/everything/mcp", Some(access)).await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn a_refused_refresh_leaves_the_refresh_token_usable() {
    let app = App::start().await;
    let (client, t) = app.tokens(MEMORY, "memory").await;
    let rt = t["refresh_token"].as_str().unwrap();
    for (name, value, error) in [
        ("scope", "memory admin", "invalid_scope"),
        ("resource", EVERYTHING, "invalid_target"),
    ] {
        let r = app
            .post_form(
                "/token",
                &[
                    ("grant_type", "refresh_token"),
                    ("client_id", &client),
                    ("refresh_token", rt),
                    (name, value),
                ],
                None,
            )
            .await;
        assert_eq!(r.json["error"], error);
    }
    // Another client presenting it changes nothing either.
    let other = app.public_client().await;
    assert_eq!(app.refresh(&other, rt).await.json["error"], "invalid_grant");
    let r = app.refresh(&client, rt).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.json);
    assert_eq!(
        app.verify("/memory/mcp", r.json["access_token"].as_str())
            .await
            .status,
        StatusCode::OK
    );
    // Another client presenting the rotated token does not revoke the grant.
    assert_eq!(app.refresh(&other, rt).await.json["error"], "invalid_grant");
    let rt2 = r.json["refresh_token"].as_str().unwrap();
    assert_eq!(app.refresh(&client, rt2).await.status, StatusCode::OK);
}

#[tokio::test]
async fn token_needs_no_redirect_uri_when_the_authorization_request_had_none() {
    let app = App::start().await;
    let client = app.public_client().await;
    let mut grant = app.code_grant(&client, VERIFIER, EVERYTHING, "");
    grant.redirect_uri_sent = false;
    let code = app.put_code(&grant).await;
    let form = [
        ("grant_type", "authorization_code"),
        ("client_id", client.as_str()),
        ("code", code.as_str()),
        ("code_verifier", VERIFIER),
    ];
    let r = app.post_form("/token", &form, None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.json);
    // When it had one, /token must repeat it.
    let code = app.code(&client, VERIFIER, EVERYTHING, "").await;
    let form = [
        ("grant_type", "authorization_code"),
        ("client_id", client.as_str()),
        ("code", code.as_str()),
        ("code_verifier", VERIFIER),
    ];
    assert_eq!(
        app.post_form("/token", &form, None).await.json["error"],
        "invalid_grant"
    );
}

#[tokio::test]
async fn register_authorize_and_token_are_rate_limited_per_address_and_client() {
    let app = App::with_config(
        "",
        "[registration]\nmode = \"open\"\n[rate_limit]\nper_address = 3\nper_client = 2\nwindow = \"1m\"\n",
    )
    .await;
    let request = |method: &str, path: &str, from: &str, body: String| {
        let content_type = if path == "/register" {
            "application/json"
        } else {
            "application/x-www-form-urlencoded"
        };
        axum::http::Request::builder()
            .method(method)
            .uri(path)
            .header(header::CONTENT_TYPE, content_type)
            .header("x-forwarded-for", from)
            .body(axum::body::Body::from(body))
            .unwrap()
    };
    let limited = |r: &Reply| {
        assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS, "{}", r.json);
        assert_eq!(r.json["error"], "slow_down");
        let retry: u64 = r.headers[header::RETRY_AFTER]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!((1..=60).contains(&retry), "{retry}");
        assert_eq!(r.headers[header::CACHE_CONTROL], "no-store");
    };
    let registration = json!({"redirect_uris": [REDIRECT], "token_endpoint_auth_method": "none"});
    for _ in 0..3 {
        let r = app
            .send(request(
                "POST",
                "/register",
                "203.0.113.1",
                registration.to_string(),
            ))
            .await;
        assert_eq!(r.status, StatusCode::CREATED);
    }
    limited(
        &app.send(request(
            "POST",
            "/register",
            "203.0.113.1",
            registration.to_string(),
        ))
        .await,
    );
    // Per address: a fourth token request from one address, whatever it asks.
    let form =
        |client: &str| format!("grant_type=refresh_token&refresh_token=x&client_id={client}");
    for i in 0..3 {
        let r = app
            .send(request(
                "POST",
                "/token",
                "203.0.113.2",
                form(&format!("c{i}")),
            ))
            .await;
        assert_eq!(r.json["error"], "invalid_client");
    }
    limited(
        &app.send(request("POST", "/token", "203.0.113.2", form("c9")))
            .await,
    );
    // Per client: a third request for one client, from anywhere.
    for from in ["203.0.113.3", "203.0.113.4"] {
        let r = app.send(request("POST", "/token", from, form("one"))).await;
        assert_eq!(r.json["error"], "invalid_client");
    }
    limited(
        &app.send(request("POST", "/token", "203.0.113.5", form("one")))
            .await,
    );
    // /authorize, answered in JSON too when limited.
    for i in 0..3 {
        let r = app
            .send(request(
                "GET",
                &format!("/authorize?client_id=x{i}"),
                "203.0.113.6",
                String::new(),
            ))
            .await;
        assert_ne!(r.status, StatusCode::TOO_MANY_REQUESTS);
    }
    limited(
        &app.send(request(
            "GET",
            "/authorize?client_id=y",
            "203.0.113.6",
            String::new(),
        ))
        .await,
    );
}
