//! Table-driven tests of every rejection reason, with keys generated here.

use std::sync::OnceLock;

use serde_json::{Value, json};

use super::*;
use crate::identity::UncarriableClaim;
use crate::jwk::{Jwk, Jwks, KeyError};
use crate::resource::{ProtectedResourceMetadata, Resource};
use crate::revocation::{RevokedJti, RevokedTokens};
use crate::signing::SigningKey;

const ISS: &str = "http://127.0.0.1:8080";
const AUD: &str = "http://127.0.0.1:8080/everything/mcp";
const NOW: u64 = 1_800_000_000;

struct Keys {
    es: SigningKey,
    ed: SigningKey,
    rs: SigningKey,
    ps: SigningKey,
    other_es: SigningKey,
}

fn keys() -> &'static Keys {
    static KEYS: OnceLock<Keys> = OnceLock::new();
    KEYS.get_or_init(|| Keys {
        es: SigningKey::generate(Algorithm::ES256).unwrap(),
        ed: SigningKey::generate(Algorithm::EdDSA).unwrap(),
        rs: SigningKey::generate(Algorithm::RS256).unwrap(),
        ps: SigningKey::generate(Algorithm::PS256).unwrap(),
        other_es: SigningKey::generate(Algorithm::ES256).unwrap(),
    })
}

fn key_set() -> KeySet {
    let k = keys();
    let jwks = Jwks {
        keys: vec![
            k.es.public_jwk("es"),
            k.ed.public_jwk("ed"),
            k.rs.public_jwk("rs"),
            k.ps.public_jwk("ps"),
        ],
    };
    let (set, errors) = KeySet::from_jwks(&jwks);
    assert!(errors.is_empty(), "{errors:?}");
    set
}

fn resource(scopes: &[&str]) -> Resource {
    Resource {
        canonical_url: AUD.into(),
        host: None,
        path_prefix: "/everything/mcp".into(),
        scopes_required: scopes.iter().map(|s| (*s).to_owned()).collect(),
        metadata: ProtectedResourceMetadata::default(),
    }
}

fn claims() -> Value {
    json!({
        "iss": ISS, "sub": "github:1", "aud": AUD, "client_id": "c1", "scope": "mcp:read mcp:write",
        "exp": NOW + 300, "iat": NOW - 10, "nbf": NOW - 10, "jti": "j1",
        "preferred_username": "octo", "email": "octo@example.com", "groups": ["org", "org/team"],
    })
}

fn header(alg: &str, kid: &str) -> Value {
    json!({ "alg": alg, "typ": "at+jwt", "kid": kid })
}

fn sign(key: &SigningKey, header: Value, claims: Value) -> String {
    key.sign_raw(&header.to_string(), &claims.to_string())
}

fn es(claims: Value) -> String {
    sign(&keys().es, header("ES256", "es"), claims)
}

fn with(mut v: Value, f: impl FnOnce(&mut serde_json::Map<String, Value>)) -> Value {
    if let Some(m) = v.as_object_mut() {
        f(m);
    }
    v
}

fn decide(authorization: Option<&str>, scopes: &[&str], options: &VerifyOptions) -> Decision {
    authenticate(
        authorization,
        &resource(scopes),
        &key_set(),
        options,
        NOW,
        None,
    )
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

#[test]
fn accepts_valid_tokens_of_every_algorithm() {
    let k = keys();
    let options = VerifyOptions::new(ISS);
    let cases = [
        (&k.es, "ES256", "es"),
        (&k.ed, "EdDSA", "ed"),
        (&k.rs, "RS256", "rs"),
        (&k.ps, "PS256", "ps"),
    ];
    for (key, alg, kid) in cases {
        let token = sign(key, header(alg, kid), claims());
        match decide(Some(&bearer(&token)), &["mcp:read"], &options) {
            Decision::Allow(id) => {
                assert_eq!(id.subject, "github:1", "{alg}");
                assert_eq!(id.resource, AUD);
                assert_eq!(id.groups, ["org", "org/team"]);
            }
            Decision::Deny(d) => panic!("{alg}: {d:?}"),
        }
    }
}

#[test]
fn accepts_scope_array_audience_array_and_application_typ() {
    let options = VerifyOptions::new(ISS);
    let c = with(claims(), |m| {
        m.insert("scope".into(), json!(["mcp:read"]));
        m.insert("aud".into(), json!(["http://other/mcp", AUD]));
    });
    let h = json!({ "alg": "ES256", "typ": "application/at+jwt", "kid": "es" });
    let token = sign(&keys().es, h, c);
    let d = decide(Some(&format!("bearer  {token}")), &["mcp:read"], &options);
    assert!(
        matches!(d, Decision::Allow(ref id) if id.scopes == ["mcp:read"]),
        "{d:?}"
    );
}

#[test]
fn identity_headers_carry_the_claims() {
    let token = es(claims());
    let Decision::Allow(id) = decide(Some(&bearer(&token)), &[], &VerifyOptions::new(ISS)) else {
        panic!("denied")
    };
    let headers = id.headers();
    let get = |n: &str| {
        headers
            .iter()
            .find(|(k, _)| *k == n)
            .map(|(_, v)| v.as_ref())
    };
    assert_eq!(get(crate::identity::SUBJECT), Some("github:1"));
    assert_eq!(get(crate::identity::USER), Some("octo"));
    assert_eq!(get(crate::identity::GROUPS), Some("org,org/team"));
    assert_eq!(get(crate::identity::SCOPES), Some("mcp:read mcp:write"));
    assert_eq!(get(crate::identity::CLIENT_ID), Some("c1"));
    assert_eq!(get(crate::identity::RESOURCE), Some(AUD));
}

/// Every way a presented token is refused, and the reason reported.
#[test]
fn rejects_each_invalid_token_with_its_reason() {
    let k = keys();
    let good = es(claims());
    let (head, rest) = good.split_once('.').unwrap();
    let (payload, sig) = rest.split_once('.').unwrap();
    let tampered_payload = {
        let other = es(with(claims(), |m| {
            m.insert("sub".into(), json!("github:2"));
        }));
        let p = other.split('.').nth(1).unwrap().to_owned();
        format!("{head}.{p}.{sig}")
    };
    let b64 = |s: &str| URL_SAFE_NO_PAD.encode(s);
    let unsigned = |h: Value, c: Value| format!("{}.{}.", b64(&h.to_string()), b64(&c.to_string()));
    let drop_claim = |name: &'static str| {
        es(with(claims(), |m| {
            m.remove(name);
        }))
    };
    let set_claim = |name: &str, v: Value| {
        es(with(claims(), |m| {
            m.insert(name.into(), v);
        }))
    };
    let es_header = |h: Value| sign(&k.es, h, claims());
    let leeway = DEFAULT_LEEWAY_SECS;
    let mut cases: Vec<(&str, String, VerifyError)> = vec![
        (
            "oversized",
            "a".repeat(DEFAULT_MAX_TOKEN_BYTES + 1),
            VerifyError::TokenTooLarge,
        ),
        ("one part", "abc".into(), VerifyError::Malformed),
        (
            "two parts",
            format!("{head}.{payload}"),
            VerifyError::Malformed,
        ),
        ("four parts", format!("{good}.x"), VerifyError::Malformed),
        (
            "header not base64",
            format!("!!.{payload}.{sig}"),
            VerifyError::Malformed,
        ),
        (
            "header not json",
            format!("{}.{payload}.{sig}", b64("nope")),
            VerifyError::Malformed,
        ),
        (
            "signature not base64",
            format!("{head}.{payload}.@@"),
            VerifyError::Malformed,
        ),
        (
            "alg none",
            unsigned(
                json!({"alg": "none", "typ": "at+jwt", "kid": "es"}),
                claims(),
            ),
            VerifyError::UnsupportedAlgorithm,
        ),
        (
            // HMAC with the public key as the secret: the algorithm is never accepted.
            "alg HS256 key confusion",
            unsigned(
                json!({"alg": "HS256", "typ": "at+jwt", "kid": "rs"}),
                claims(),
            ) + "c2ln",
            VerifyError::UnsupportedAlgorithm,
        ),
        (
            "typ JWT",
            es_header(json!({"alg": "ES256", "typ": "JWT", "kid": "es"})),
            VerifyError::WrongTokenType,
        ),
        (
            "typ missing",
            es_header(json!({"alg": "ES256", "kid": "es"})),
            VerifyError::WrongTokenType,
        ),
        (
            "crit header",
            es_header(json!({"alg": "ES256", "typ": "at+jwt", "kid": "es", "crit": ["exp"]})),
            VerifyError::CriticalHeader,
        ),
        (
            "no kid",
            es_header(json!({"alg": "ES256", "typ": "at+jwt"})),
            VerifyError::MissingKeyId,
        ),
        (
            "unknown kid",
            es_header(header("ES256", "nope")),
            VerifyError::UnknownKeyId("nope".into()),
        ),
        (
            "ES256 header on an Ed25519 key",
            sign(&k.ed, header("ES256", "ed"), claims()),
            VerifyError::KeyAlgorithmMismatch,
        ),
        (
            "PS256 on a key pinned to RS256",
            sign(
                &SigningKey::Rsa(Box::new(rsa_private(&k.rs)), Algorithm::PS256),
                header("PS256", "rs"),
                claims(),
            ),
            VerifyError::KeyAlgorithmMismatch,
        ),
        (
            "tampered payload",
            tampered_payload,
            VerifyError::BadSignature,
        ),
        (
            "signed by another key",
            sign(&k.other_es, header("ES256", "es"), claims()),
            VerifyError::BadSignature,
        ),
        (
            "signature truncated",
            format!("{head}.{payload}.{}", &sig[..20]),
            VerifyError::BadSignature,
        ),
        (
            "payload not json",
            sign(&k.es, header("ES256", "es"), json!("text")),
            VerifyError::Malformed,
        ),
        (
            "exp not a number",
            set_claim("exp", json!("soon")),
            VerifyError::Malformed,
        ),
        (
            "other issuer",
            set_claim("iss", json!("http://evil")),
            VerifyError::WrongIssuer,
        ),
        (
            "token for another MCP server (RFC 8707)",
            set_claim("aud", json!("http://127.0.0.1:8080/memory/mcp")),
            VerifyError::WrongAudience,
        ),
        (
            "audience prefix only",
            set_claim("aud", json!("http://127.0.0.1:8080/everything")),
            VerifyError::WrongAudience,
        ),
        (
            "expired beyond leeway",
            set_claim("exp", json!(NOW - leeway)),
            VerifyError::Expired,
        ),
        (
            "nbf beyond leeway",
            set_claim("nbf", json!(NOW + leeway + 1)),
            VerifyError::NotYetValid,
        ),
        (
            "iat in the future",
            set_claim("iat", json!(NOW + leeway + 1)),
            VerifyError::IssuedInFuture,
        ),
        (
            "control character in the login",
            set_claim("preferred_username", json!("ad\u{0}min")),
            VerifyError::Uncarriable(UncarriableClaim::ControlCharacter("preferred_username")),
        ),
        (
            "newline in the email",
            set_claim("email", json!("mallory@evil.test\n@corp.test")),
            VerifyError::Uncarriable(UncarriableClaim::ControlCharacter("email")),
        ),
        (
            "control character in the subject",
            set_claim("sub", json!("oidc:admin\u{0}")),
            VerifyError::Uncarriable(UncarriableClaim::ControlCharacter("sub")),
        ),
        (
            "C1 control in a group",
            set_claim("groups", json!(["eng", "adm\u{85}ins"])),
            VerifyError::Uncarriable(UncarriableClaim::ControlCharacter("groups")),
        ),
        (
            "empty group",
            set_claim("groups", json!(["eng", ""])),
            VerifyError::Uncarriable(UncarriableClaim::EmptyItem("groups")),
        ),
    ];
    // RFC 9068 §2.2: every one of these is required.
    for claim in ["iss", "sub", "aud", "client_id", "exp", "iat", "jti"] {
        let token = drop_claim(claim);
        cases.push((
            "a required claim missing",
            token,
            VerifyError::MissingClaim(claim),
        ));
    }
    let options = VerifyOptions::new(ISS);
    for (name, token, want) in cases {
        let d = decide(Some(&bearer(&token)), &[], &options);
        let Decision::Deny(denial) = d else {
            panic!("{name}: accepted")
        };
        assert_eq!(
            denial.reason,
            DenyReason::InvalidToken(want.clone()),
            "{name}"
        );
        assert_eq!(denial.status, 401, "{name}");
        let challenge = denial.www_authenticate.unwrap();
        assert!(
            challenge.contains("error=\"invalid_token\""),
            "{name}: {challenge}"
        );
        assert!(
            !denial.body.contains(&token[..token.len().min(40)]),
            "{name}: body echoes the token"
        );
    }
}

fn rsa_private(key: &SigningKey) -> rsa::RsaPrivateKey {
    match key {
        SigningKey::Rsa(k, _) => (**k).clone(),
        _ => panic!("not an RSA key"),
    }
}

#[test]
fn leeway_accepts_small_clock_skew() {
    let options = VerifyOptions::new(ISS);
    let c = with(claims(), |m| {
        m.insert("exp".into(), json!(NOW - DEFAULT_LEEWAY_SECS + 1));
        m.insert("nbf".into(), json!(NOW + DEFAULT_LEEWAY_SECS));
        m.insert("iat".into(), json!(NOW + DEFAULT_LEEWAY_SECS));
    });
    assert!(matches!(
        decide(Some(&bearer(&es(c))), &[], &options),
        Decision::Allow(_)
    ));
}

#[test]
fn algorithm_allow_list_is_enforced() {
    let options = VerifyOptions {
        algorithms: vec![Algorithm::ES256],
        ..VerifyOptions::new(ISS)
    };
    let token = sign(&keys().rs, header("RS256", "rs"), claims());
    let d = decide(Some(&bearer(&token)), &[], &options);
    assert!(
        matches!(d, Decision::Deny(ref x) if x.reason == DenyReason::InvalidToken(VerifyError::AlgorithmNotAllowed(Algorithm::RS256))),
        "{d:?}"
    );
}

#[test]
fn size_limit_is_configurable() {
    let token = es(claims());
    let options = VerifyOptions {
        max_token_bytes: token.len() - 1,
        ..VerifyOptions::new(ISS)
    };
    let d = decide(Some(&bearer(&token)), &[], &options);
    assert!(
        matches!(d, Decision::Deny(ref x) if x.reason == DenyReason::InvalidToken(VerifyError::TokenTooLarge))
    );
}

#[test]
fn missing_credentials_get_a_bare_challenge_with_resource_metadata() {
    let options = VerifyOptions::new(ISS);
    for header in [
        None,
        Some("Basic dXNlcjpwYXNz"),
        Some("Bearer "),
        Some("Bearer"),
    ] {
        let Decision::Deny(d) = decide(header, &[], &options) else {
            panic!("{header:?} accepted")
        };
        assert_eq!(d.reason, DenyReason::MissingToken, "{header:?}");
        assert_eq!(d.status, 401);
        assert_eq!(
            d.www_authenticate.as_deref(),
            Some(
                "Bearer resource_metadata=\"http://127.0.0.1:8080/.well-known/oauth-protected-resource/everything/mcp\""
            )
        );
    }
}

#[test]
fn missing_scope_is_403_insufficient_scope_naming_the_scopes() {
    let token = es(claims());
    let Decision::Deny(d) = decide(
        Some(&bearer(&token)),
        &["mcp:read", "mcp:admin"],
        &VerifyOptions::new(ISS),
    ) else {
        panic!("accepted")
    };
    assert_eq!(d.reason, DenyReason::InsufficientScope);
    assert_eq!(d.status, 403);
    let challenge = d.www_authenticate.unwrap();
    assert!(
        challenge.ends_with("error=\"insufficient_scope\", scope=\"mcp:read mcp:admin\""),
        "{challenge}"
    );
    let body: Value = serde_json::from_str(&d.body).unwrap();
    assert_eq!(body["error"], "insufficient_scope");
}

#[test]
fn with_no_keys_every_token_is_refused() {
    let token = es(claims());
    let d = authenticate(
        Some(&bearer(&token)),
        &resource(&[]),
        &KeySet::default(),
        &VerifyOptions::new(ISS),
        NOW,
        None,
    );
    assert!(
        matches!(d, Decision::Deny(ref x) if x.reason == DenyReason::NoKeys && x.status == 503),
        "{d:?}"
    );
}

#[test]
fn cache_skips_nothing_but_the_signature() {
    let options = VerifyOptions::new(ISS);
    let keys = key_set();
    let mut cache = TokenCache::new(2);
    let token = bearer(&es(claims()));
    let r = resource(&[]);
    assert!(matches!(
        authenticate(Some(&token), &r, &keys, &options, NOW, Some(&mut cache)),
        Decision::Allow(_)
    ));
    assert_eq!(cache.len(), 1);
    assert!(matches!(
        authenticate(Some(&token), &r, &keys, &options, NOW, Some(&mut cache)),
        Decision::Allow(_)
    ));
    // Claims are checked again on a hit: another resource, or later than `exp`, is refused.
    let mut other = resource(&[]);
    other.canonical_url = "http://127.0.0.1:8080/memory/mcp".into();
    let d = authenticate(Some(&token), &other, &keys, &options, NOW, Some(&mut cache));
    assert!(
        matches!(d, Decision::Deny(ref x) if x.reason == DenyReason::InvalidToken(VerifyError::WrongAudience))
    );
    let d = authenticate(
        Some(&token),
        &r,
        &keys,
        &options,
        NOW + 400,
        Some(&mut cache),
    );
    assert!(
        matches!(d, Decision::Deny(ref x) if x.reason == DenyReason::InvalidToken(VerifyError::Expired))
    );
    // A key that left the set no longer vouches for a cached token.
    let without_es = KeySet::from_jwks(&Jwks {
        keys: vec![keys_jwk_ed()],
    })
    .0;
    let d = authenticate(
        Some(&token),
        &r,
        &without_es,
        &options,
        NOW,
        Some(&mut cache),
    );
    assert!(
        matches!(d, Decision::Deny(ref x) if x.reason == DenyReason::InvalidToken(VerifyError::UnknownKeyId("es".into())))
    );
    // Bounded: more tokens than capacity never grow it past capacity.
    for i in 0..5 {
        let t = bearer(&es(with(claims(), |m| {
            m.insert("jti".into(), json!(format!("j{i}")));
        })));
        authenticate(Some(&t), &r, &keys, &options, NOW, Some(&mut cache));
    }
    assert_eq!(cache.len(), 2);
}

#[test]
fn only_the_very_same_token_hits_the_cache() {
    let options = VerifyOptions::new(ISS);
    let keys = key_set();
    let mut cache = TokenCache::new(4);
    let token = es(claims());
    let r = resource(&[]);
    let decide = |t: &str, cache: &mut TokenCache| {
        authenticate(Some(&bearer(t)), &r, &keys, &options, NOW, Some(cache))
    };
    assert!(matches!(decide(&token, &mut cache), Decision::Allow(_)));
    // The same signature under another payload, a token one byte longer or shorter, or with one
    // byte changed in its last (padded) word: each is verified, and refused, not served from
    // the cached entry.
    let (signed, signature) = token.rsplit_once('.').unwrap_or_default();
    let (_, payload) = signed.split_once('.').unwrap_or_default();
    let other_payload = token.replacen(payload, &payload.replacen('e', "f", 1), 1);
    let mut last_changed = token.clone();
    let last = last_changed
        .pop()
        .map_or('A', |c| if c == 'A' { 'B' } else { 'A' });
    last_changed.push(last);
    for forged in [
        other_payload,
        format!("{token}A"),
        token[..token.len() - 1].to_owned(),
        last_changed,
    ] {
        assert_ne!(forged, token);
        let d = decide(&forged, &mut cache);
        assert!(
            matches!(d, Decision::Deny(ref x) if matches!(x.reason, DenyReason::InvalidToken(_))),
            "{forged} ({signature}): {d:?}"
        );
    }
    assert_eq!(cache.len(), 1);
}

fn keys_jwk_ed() -> Jwk {
    keys().ed.public_jwk("ed")
}

#[test]
fn unusable_jwks_entries_are_reported_not_used() {
    let es = keys().es.public_jwk("k");
    let weak = SigningKey::generate_rsa(Algorithm::RS256, 1024)
        .unwrap()
        .public_jwk("weak");
    let edit = |f: fn(&mut Jwk)| {
        let mut j = es.clone();
        f(&mut j);
        j
    };
    let cases = [
        (edit(|j| j.kid = None), KeyError::MissingKeyId),
        (
            edit(|j| j.use_ = Some("enc".into())),
            KeyError::NotForSignatures("k".into()),
        ),
        (
            edit(|j| j.crv = Some("P-384".into())),
            KeyError::UnsupportedKeyType("k".into()),
        ),
        (
            edit(|j| j.alg = Some("HS256".into())),
            KeyError::UnsupportedAlgorithm("k".into()),
        ),
        (
            edit(|j| j.alg = Some("RS256".into())),
            KeyError::UnsupportedAlgorithm("k".into()),
        ),
        (
            edit(|j| j.x = Some("AAAA".into())),
            KeyError::InvalidKeyMaterial("k".into()),
        ),
        (
            edit(|j| j.y = j.x.clone()),
            KeyError::InvalidKeyMaterial("k".into()),
        ),
        (weak, KeyError::RsaKeySize("weak".into())),
    ];
    for (jwk, want) in cases {
        let (set, errors) = KeySet::from_jwks(&Jwks { keys: vec![jwk] });
        assert!(set.is_empty());
        assert_eq!(errors, vec![want]);
    }
}

#[test]
fn jwks_round_trips_through_json() {
    let jwks = Jwks {
        keys: vec![
            keys().es.public_jwk("a"),
            keys().ed.public_jwk("b"),
            keys().rs.public_jwk("c"),
        ],
    };
    let json = serde_json::to_vec(&jwks).unwrap();
    let text = String::from_utf8(json.clone()).unwrap();
    assert!(
        text.contains(r#""use":"sig""#) && !text.contains("null"),
        "{text}"
    );
    let (set, errors) = KeySet::from_json(&json).unwrap();
    assert!(errors.is_empty());
    assert_eq!(set.len(), 3);
}

#[test]
fn claims_type_round_trips_through_a_signed_token() {
    let claims = crate::claims::AccessTokenClaims {
        iss: ISS.into(),
        sub: "oidc:alice".into(),
        aud: AUD.into(),
        client_id: "c".into(),
        scope: crate::claims::Scopes::parse("mcp"),
        exp: NOW + 60,
        iat: NOW,
        nbf: Some(NOW),
        jti: "x".into(),
        preferred_username: None,
        name: None,
        email: None,
        groups: vec![],
    };
    let token = keys().ed.sign_access_token("ed", &claims).unwrap();
    let got = verify(
        &token,
        &resource(&[]),
        &key_set(),
        &VerifyOptions::new(ISS),
        NOW,
    )
    .unwrap();
    assert_eq!(got, claims);
}

#[test]
fn revocation_list_denies_listed_tokens_after_every_other_check() {
    let token = |jti: &str| {
        es(with(claims(), |m| {
            m.insert("jti".into(), jti.into());
        }))
    };
    let mut list = RevokedTokens::default();
    let listed = ["revoked-1", "revoked-2"].map(|jti| RevokedJti {
        jti: jti.into(),
        exp: u64::MAX,
    });
    list.absorb(listed, 0, DEFAULT_LEEWAY_SECS);
    // (case, authorization, scopes required, expected reason: None = allowed)
    type Case<'a> = (&'a str, Option<String>, &'a [&'a str], Option<DenyReason>);
    let cases: Vec<Case> = vec![
        (
            "listed",
            Some(bearer(&token("revoked-2"))),
            &[],
            Some(DenyReason::Revoked),
        ),
        ("not listed", Some(bearer(&token("live"))), &[], None),
        (
            "listed, but lacking a scope: the scope answer stands",
            Some(bearer(&token("revoked-1"))),
            &["mcp:admin"],
            Some(DenyReason::InsufficientScope),
        ),
        ("no token", None, &[], Some(DenyReason::MissingToken)),
    ];
    let (keys, options) = (key_set(), VerifyOptions::new(ISS));
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
    assert_eq!(
        d.www_authenticate.as_deref(),
        Some(
            "Bearer resource_metadata=\"http://127.0.0.1:8080/.well-known/oauth-protected-resource/everything/mcp\", error=\"invalid_token\", error_description=\"token revoked\""
        )
    );
    let body: Value = serde_json::from_str(&d.body).unwrap();
    assert_eq!(
        body,
        json!({ "error": "invalid_token", "error_description": "token revoked" })
    );
}
