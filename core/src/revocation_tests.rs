//! Table-driven tests of the revocation list applied to core's decisions, with keys generated
//! here.

use serde_json::{Value, json};

use super::*;
use crate::auth::{TokenCache, VerifyOptions, authenticate};
use crate::jwk::{Algorithm, Jwks, KeySet};
use crate::resource::ProtectedResourceMetadata;
use crate::signing::SigningKey;

const ISS: &str = "http://127.0.0.1:8080";
const AUD: &str = "http://127.0.0.1:8080/everything/mcp";
const NOW: u64 = 1_800_000_000;
const CHALLENGE: &str = "Bearer resource_metadata=\"http://127.0.0.1:8080/.well-known/oauth-protected-resource/everything/mcp\", error=\"invalid_token\", error_description=\"token revoked\"";

fn resource(scopes: &[&str]) -> Resource {
    Resource {
        canonical_url: AUD.into(),
        host: None,
        path_prefix: "/everything/mcp".into(),
        scopes_required: scopes.iter().map(|s| (*s).to_owned()).collect(),
        metadata: ProtectedResourceMetadata::default(),
    }
}

fn token(key: &SigningKey, jti: &str) -> String {
    let header = json!({ "alg": "ES256", "typ": "at+jwt", "kid": "es" });
    let claims = json!({
        "iss": ISS, "sub": "github:1", "aud": AUD, "client_id": "c1", "scope": "mcp:read",
        "exp": NOW + 300, "iat": NOW - 10, "jti": jti,
    });
    key.sign_raw(&header.to_string(), &claims.to_string())
}

fn listed(jtis: &[&str]) -> RevokedTokens {
    RevokedTokens::from_json(json!({ "revoked": jtis }).to_string().as_bytes()).unwrap()
}

#[test]
fn listed_tokens_are_denied_after_every_other_check() {
    let key = SigningKey::generate(Algorithm::ES256).unwrap();
    let (keys, _) = KeySet::from_jwks(&Jwks {
        keys: vec![key.public_jwk("es")],
    });
    let options = VerifyOptions::new(ISS);
    let list = listed(&["revoked-1", "revoked-2"]);
    // (case, authorization, scopes required, expected reason: None = allowed)
    type Case<'a> = (&'a str, Option<String>, &'a [&'a str], Option<DenyReason>);
    let cases: Vec<Case> = vec![
        (
            "listed",
            Some(format!("Bearer {}", token(&key, "revoked-2"))),
            &[],
            Some(DenyReason::Revoked),
        ),
        (
            "not listed",
            Some(format!("Bearer {}", token(&key, "live"))),
            &[],
            None,
        ),
        (
            "listed, but lacking a scope: the scope answer stands",
            Some(format!("Bearer {}", token(&key, "revoked-1"))),
            &["mcp:admin"],
            Some(DenyReason::InsufficientScope),
        ),
        ("no token", None, &[], Some(DenyReason::MissingToken)),
    ];
    let mut cache = TokenCache::new(16);
    for (case, authorization, scopes, want) in cases {
        let resource = resource(scopes);
        // Twice through the cache: the second decision comes from it and is checked alike.
        for round in 0..2 {
            let decision = authenticate(
                authorization.as_deref(),
                &resource,
                &keys,
                &options,
                NOW,
                Some(&mut cache),
            );
            match (list.check(decision, &resource), &want) {
                (Decision::Allow(id), None) => assert_eq!(id.jti, "live", "{case}"),
                (Decision::Deny(d), Some(reason)) => {
                    assert_eq!(&d.reason, reason, "{case} {round}")
                }
                (d, _) => panic!("{case} (round {round}): {d:?}"),
            }
        }
    }
    assert_eq!(cache.len(), 3);
}

#[test]
fn the_revoked_denial_is_a_401_invalid_token_from_the_one_builder() {
    let d = deny(DenyReason::Revoked, &resource(&[]));
    assert_eq!(d.status, 401);
    assert_eq!(d.www_authenticate.as_deref(), Some(CHALLENGE));
    let body: Value = serde_json::from_str(&d.body).unwrap();
    assert_eq!(
        body,
        json!({ "error": "invalid_token", "error_description": "token revoked" })
    );
}

#[test]
fn reads_the_feed_and_refuses_anything_else() {
    let list = listed(&["a", "b", "a"]);
    assert_eq!(list.len(), 2);
    assert!(list.contains("a") && list.contains("b") && !list.contains("c"));
    assert!(listed(&[]).is_empty());
    for bad in [&b"not json"[..], b"{}", b"{\"revoked\": \"a\"}", b"[\"a\"]"] {
        assert!(RevokedTokens::from_json(bad).is_err(), "{bad:?}");
    }
    let feed = RevokedFeed {
        revoked: vec!["x".into()],
    };
    let wire = serde_json::to_string(&feed).unwrap();
    assert_eq!(wire, r#"{"revoked":["x"]}"#);
}
