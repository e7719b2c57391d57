//! Discovery metadata, JWKS, key persistence and rotation, health and readiness.

use axum::http::{StatusCode, header};
use mcpgw_core::jwk::{Algorithm, Jwks};
use mcpgw_sidecar::config::Config;
use mcpgw_sidecar::keys::{KeyStorage, keep_replaced_keys, rotate_stored};
use mcpgw_testkit::scratch_dir;

use crate::common::*;

#[tokio::test]
async fn metadata_lists_every_endpoint_and_capability() {
    let app = App::start().await;
    {
        let path = "/.well-known/oauth-authorization-server";
        let r = app.get(path).await;
        assert_eq!(r.status, StatusCode::OK);
        let m = &r.json;
        assert_eq!(m["issuer"], ISSUER);
        for (field, endpoint) in [
            ("authorization_endpoint", "/authorize"),
            ("token_endpoint", "/token"),
            ("registration_endpoint", "/register"),
            ("revocation_endpoint", "/revoke"),
            ("introspection_endpoint", "/introspect"),
            ("jwks_uri", "/.well-known/jwks.json"),
        ] {
            assert_eq!(m[field], format!("{ISSUER}{endpoint}"), "{field}");
        }
        assert_eq!(
            m["code_challenge_methods_supported"],
            serde_json::json!(["S256"])
        );
        assert_eq!(
            m["grant_types_supported"],
            serde_json::json!(["authorization_code", "refresh_token"])
        );
        assert_eq!(m["response_types_supported"], serde_json::json!(["code"]));
        assert_eq!(
            m["token_endpoint_auth_methods_supported"],
            serde_json::json!(["none", "client_secret_basic", "client_secret_post"])
        );
        assert_eq!(m["scopes_supported"], serde_json::json!(["memory"]));
        assert_eq!(m["authorization_response_iss_parameter_supported"], true);
        assert_eq!(m["client_id_metadata_document_supported"], true);
    }
}

#[tokio::test]
async fn no_openid_configuration_while_openid_is_refused() {
    let app = App::start().await;
    assert_eq!(
        app.get("/.well-known/openid-configuration").await.status,
        StatusCode::NOT_FOUND
    );
    let m = app
        .get("/.well-known/oauth-authorization-server")
        .await
        .json;
    assert!(m.get("id_token_signing_alg_values_supported").is_none());
    assert!(m.get("subject_types_supported").is_none());
}

#[tokio::test]
async fn the_resource_metadata_url_of_verifys_401_is_served() {
    let app = App::start().await;
    for (path, resource) in [("/everything/mcp", EVERYTHING), ("/memory/mcp", MEMORY)] {
        let challenge = app.verify(path, None).await.headers[header::WWW_AUTHENTICATE]
            .to_str()
            .unwrap()
            .to_owned();
        let url = challenge
            .split("resource_metadata=\"")
            .nth(1)
            .and_then(|rest| rest.split('"').next())
            .unwrap();
        let r = app.get(url.strip_prefix(ISSUER).unwrap()).await;
        assert_eq!(r.status, StatusCode::OK, "{url}");
        assert_eq!(r.json["resource"], resource);
        assert_eq!(r.headers[header::ACCESS_CONTROL_ALLOW_ORIGIN], "*");
    }
    let r = app
        .get("/.well-known/oauth-protected-resource/nothing/mcp")
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn health_and_readiness() {
    let app = App::start().await;
    assert_eq!(app.get("/health").await.status, StatusCode::OK);
    let r = app.get("/ready").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json["status"], "ready");
}

fn jwks(r: &Reply) -> Jwks {
    serde_json::from_value(r.json.clone()).unwrap()
}

#[tokio::test]
async fn keys_persist_across_restarts_and_rotation_keeps_the_previous_key() {
    let text = config_text(&redis().url(), "", "");
    let first = App::from_config(Config::from_toml(&text, |_| None).unwrap()).await;
    let before = jwks(&first.get("/.well-known/jwks.json").await);
    assert_eq!(before.keys.len(), 1);
    assert_eq!(before.keys[0].alg.as_deref(), Some("ES256"));
    // A restart (a new process state on the same Redis) publishes the same key.
    let second = App::from_config(Config::from_toml(&text, |_| None).unwrap()).await;
    assert_eq!(jwks(&second.get("/.well-known/jwks.json").await), before);

    // A token signed before the rotation still verifies afterwards.
    let (_, old) = second.tokens(EVERYTHING, "").await;
    let old_token = old["access_token"].as_str().unwrap();
    let new_kid = second
        .state
        .keys
        .rotate(mcpgw_sidecar::now())
        .await
        .unwrap();
    let after = jwks(&second.get("/.well-known/jwks.json").await);
    assert_eq!(after.keys.len(), 2);
    assert_eq!(after.keys[0].kid.as_deref(), Some(new_kid.as_str()));
    assert_eq!(after.keys[1], before.keys[0]);
    assert_eq!(
        second
            .verify("/everything/mcp", Some(old_token))
            .await
            .status,
        StatusCode::OK
    );
    let (_, new) = second.tokens(EVERYTHING, "").await;
    let header = new["access_token"]
        .as_str()
        .unwrap()
        .split('.')
        .next()
        .unwrap()
        .to_owned();
    assert!(
        String::from_utf8(
            base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, header)
                .unwrap()
        )
        .unwrap()
        .contains(&new_kid)
    );

    // The other instance adopts the rotated ring on reload. A second rotation keeps every key
    // whose tokens may still be live: the first token still verifies.
    first.state.keys.reload().await.unwrap();
    assert_eq!(jwks(&first.get("/.well-known/jwks.json").await), after);
    first.state.keys.rotate(mcpgw_sidecar::now()).await.unwrap();
    let third = jwks(&first.get("/.well-known/jwks.json").await);
    assert_eq!(third.keys.len(), 3);
    assert_eq!(third.keys[1..], after.keys[..]);
    assert_eq!(
        first
            .verify("/everything/mcp", Some(old_token))
            .await
            .status,
        StatusCode::OK
    );
    // Once the access-token lifetime and the leeway have passed since a key was replaced, the
    // next rotation drops it.
    let later = mcpgw_sidecar::now() + keep_replaced_keys(&first.state.config).as_secs();
    first.state.keys.rotate(later).await.unwrap();
    let fourth = jwks(&first.get("/.well-known/jwks.json").await);
    assert_eq!(fourth.keys.len(), 2);
    assert_eq!(fourth.keys[1], third.keys[0]);
}

#[tokio::test]
async fn eddsa_and_rs256_keys_are_selectable_and_sign_verifiable_tokens() {
    for (alg, kty) in [("EdDSA", "OKP"), ("RS256", "RSA")] {
        let app = App::with_config(&format!("signing_alg = \"{alg}\""), "").await;
        let keys = jwks(&app.get("/.well-known/jwks.json").await);
        assert_eq!(keys.keys[0].kty, kty);
        assert_eq!(keys.keys[0].alg.as_deref(), Some(alg));
        let (_, t) = app.tokens(EVERYTHING, "").await;
        let token = t["access_token"].as_str().unwrap();
        assert_eq!(
            app.verify("/everything/mcp", Some(token)).await.status,
            StatusCode::OK
        );
    }
}

#[tokio::test]
async fn keys_directory_persists_the_ring_in_a_private_file() {
    let dir = scratch_dir().join(mcpgw_testkit::unique("keys"));
    let top = format!("signing_keys_dir = \"{}\"", dir.display());
    let a = App::with_config(&top, "").await;
    let before = jwks(&a.get("/.well-known/jwks.json").await);
    let file = dir.join("keys.json");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    // The rotate-keys command path: rotate the stored ring, then a fresh start sees both keys.
    rotate_stored(
        &KeyStorage::Dir(dir.clone()),
        Algorithm::ES256,
        keep_replaced_keys(&a.state.config),
        mcpgw_sidecar::now(),
    )
    .await
    .unwrap();
    let b = App::with_config(&top, "").await;
    let after = jwks(&b.get("/.well-known/jwks.json").await);
    assert_eq!(after.keys.len(), 2);
    assert_eq!(after.keys[1], before.keys[0]);
}

#[tokio::test]
async fn scheduled_rotation_happens_only_when_the_key_is_old_enough() {
    let app = App::start().await;
    let keys = &app.state.keys;
    let kid = keys.current().kid.clone();
    let every = std::time::Duration::from_secs(3600);
    keys.rotate_if_due(every, mcpgw_sidecar::now() + 60)
        .await
        .unwrap();
    assert_eq!(keys.current().kid, kid);
    keys.rotate_if_due(every, mcpgw_sidecar::now() + 3601)
        .await
        .unwrap();
    assert_ne!(keys.current().kid, kid);
    let published = jwks(&app.get("/.well-known/jwks.json").await);
    assert_eq!(published.keys[1].kid.as_deref(), Some(kid.as_str()));
}
