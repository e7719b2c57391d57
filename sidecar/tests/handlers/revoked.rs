//! `GET /revoked`, the revocation feed the JWT filter fetches: what goes in (revoking an access
//! token, revoking a grant family), what comes out (jtis not past their `exp` and the grace),
//! the denial `/verify` gives a revoked token, byte for byte core's, and both kept when Redis
//! loses its data.

use axum::http::{StatusCode, header};
use mcpgw_core::auth::{DenyReason, deny};
use mcpgw_core::revocation::RevokedJti;
use mcpgw_sidecar::now;
use mcpgw_sidecar::store::REVOKED_GRACE_SECS;
use serde_json::json;

use crate::common::*;

async fn feed(app: &App) -> Vec<String> {
    let r = app.get("/revoked").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.json);
    assert_eq!(r.headers[header::CACHE_CONTROL], "no-store");
    let listed: Vec<RevokedJti> = serde_json::from_value(r.json["revoked"].clone()).unwrap();
    let mut jtis: Vec<String> = listed.into_iter().map(|r| r.jti).collect();
    jtis.sort();
    jtis
}

async fn redis_conn() -> redis::aio::MultiplexedConnection {
    redis::Client::open(redis().url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

/// An access token issued and then revoked by its client.
async fn revoked_token(app: &App) -> String {
    let (client, t) = app.tokens(EVERYTHING, "").await;
    let access = t["access_token"].as_str().unwrap();
    let r = app
        .post_form(
            "/revoke",
            &[("token", access), ("client_id", &client)],
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    access.to_owned()
}

/// The score (`exp`) of `jti` in Redis' `oauth:revoked`.
async fn score(app: &App, jti: String) -> Option<u64> {
    redis::cmd("ZSCORE")
        .arg(app.state.store.revoked_key())
        .arg(jti)
        .query_async(&mut redis_conn().await)
        .await
        .unwrap()
}

fn jti(access_token: &str) -> String {
    claims(access_token)["jti"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn the_feed_lists_revoked_access_tokens_until_they_expire() {
    let app = App::start().await;
    assert_eq!(app.get("/revoked").await.json, json!({ "revoked": [] }));

    // An access token revoked by itself.
    let access = &revoked_token(&app).await;
    assert_eq!(feed(&app).await, vec![jti(access)]);

    // A grant family revoked through its refresh token: its live access token is listed too; a
    // grant nobody revoked is not.
    let (client2, t2) = app.tokens(EVERYTHING, "").await;
    let (_, untouched) = app.tokens(EVERYTHING, "").await;
    let r = app
        .post_form(
            "/revoke",
            &[
                ("token", t2["refresh_token"].as_str().unwrap()),
                ("client_id", &client2),
            ],
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let mut want = vec![jti(access), jti(t2["access_token"].as_str().unwrap())];
    want.sort();
    assert_eq!(feed(&app).await, want);
    assert!(!want.contains(&jti(untouched["access_token"].as_str().unwrap())));

    // Redis holds them in the sorted set, scored by `exp`.
    assert_eq!(
        score(&app, jti(access)).await,
        claims(access)["exp"].as_u64()
    );

    // A token past its `exp` stays listed for the verifiers' leeway, then is pruned.
    let now = now();
    app.state
        .store
        .revoke_token("within-grace", now - 5)
        .await
        .unwrap();
    app.state
        .store
        .revoke_token("long-expired", now - REVOKED_GRACE_SECS - 5)
        .await
        .unwrap();
    let jtis = feed(&app).await;
    assert!(jtis.contains(&"within-grace".to_owned()), "{jtis:?}");
    assert!(!jtis.contains(&"long-expired".to_owned()), "{jtis:?}");
}

#[tokio::test]
async fn verify_refuses_a_revoked_token_with_cores_revoked_denial() {
    let app = App::start().await;
    let access = &revoked_token(&app).await;
    let r = app.verify("/everything/mcp", Some(access)).await;
    let resource = app
        .state
        .config
        .resources
        .find(None, "/everything/mcp")
        .unwrap();
    let want = deny(DenyReason::Revoked, resource);
    assert_eq!(r.status.as_u16(), want.status);
    assert_eq!(
        r.headers[header::WWW_AUTHENTICATE].to_str().ok(),
        want.www_authenticate.as_deref()
    );
    assert_eq!(r.json.to_string(), want.body);
}

#[tokio::test]
async fn a_revoked_token_stays_refused_and_listed_after_redis_lost_it() {
    let app = App::start().await;
    let access = &revoked_token(&app).await;
    let (_, other) = app.tokens(EVERYTHING, "").await;
    let live = other["access_token"].as_str().unwrap();
    // The sidecar sees it listed (the edge's fetch).
    assert_eq!(feed(&app).await, vec![jti(access)]);

    // Redis loses every key of this sidecar.
    let mut redis = redis_conn().await;
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{}*", app.state.config.key_prefix))
        .query_async(&mut redis)
        .await
        .unwrap();
    let _: () = redis::cmd("DEL")
        .arg(&keys)
        .query_async(&mut redis)
        .await
        .unwrap();

    // `/verify` answers as the JWT filter, which keeps what its feed listed: the revoked token
    // stays refused, the other one passes.
    let r = app.verify("/everything/mcp", Some(access)).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(r.json["error_description"], "token revoked");
    assert_eq!(
        app.verify("/everything/mcp", Some(live)).await.status,
        StatusCode::OK
    );
    // The feed lists it still, and Redis has it again, scored by its `exp`.
    assert_eq!(feed(&app).await, vec![jti(access)]);
    assert_eq!(
        score(&app, jti(access)).await,
        claims(access)["exp"].as_u64()
    );
}
