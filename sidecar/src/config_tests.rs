use super::*;

const MINIMAL: &str = r#"
issuer = "https://mcp.example.com/"
redis_url = "redis://127.0.0.1:6379"
[upstream]
kind = "oidc"
issuer = "http://127.0.0.1:9000"
client_id = "mcpgw"
[allow]
groups = ["engineering"]
[[resources]]
canonical_url = "https://mcp.example.com/everything/mcp"
path_prefix = "/everything/mcp"
"#;

fn no_env(_: &str) -> Option<String> {
    None
}

#[test]
fn minimal_config_gets_defaults() {
    let c = Config::from_toml(MINIMAL, no_env).unwrap();
    assert_eq!(c.issuer, "https://mcp.example.com");
    assert_eq!(c.signing_alg, Algorithm::ES256);
    assert_eq!(c.tokens.code, Duration::from_secs(60));
    assert_eq!(c.listen, default_listen());
    assert!(matches!(
        c.registration,
        Registration::RateLimited { limit: 20, .. }
    ));
    assert!(
        c.resource("https://mcp.example.com/everything/mcp")
            .is_some()
    );
}

#[test]
fn environment_overrides_the_file() {
    let env = |k: &str| match k {
        "MCPGW_REDIS_URL" => Some("redis://10.0.0.1:6380".to_owned()),
        "MCPGW_UPSTREAM_CLIENT_SECRET" => Some("s3cret-value".to_owned()),
        "MCPGW_SIGNING_ALG" => Some("EdDSA".to_owned()),
        _ => None,
    };
    let c = Config::from_toml(MINIMAL, env).unwrap();
    assert_eq!(c.redis_url.expose(), "redis://10.0.0.1:6380");
    assert_eq!(c.signing_alg, Algorithm::EdDSA);
    let up = c.upstream.unwrap();
    assert_eq!(up.client_secret.unwrap().expose(), "s3cret-value");
    assert!(!format!("{:?}", c.redis_url).contains("10.0.0.1"));
}

#[test]
fn every_problem_is_named_by_its_field() {
    let text = r#"
issuer = "not a url"
signing_alg = "HS256"
[tokens]
code_lifetime = "0s"
[registration]
mode = "initial_access_token"
[upstream]
kind = "github"
"#;
    let err = Config::from_toml(text, no_env).unwrap_err().to_string();
    for field in [
        "issuer:",
        "redis_url:",
        "signing_alg:",
        "tokens.code_lifetime:",
        "registration.initial_access_token:",
        "upstream.client_id:",
        "upstream.client_secret:",
        "allow:",
    ] {
        assert!(err.contains(field), "{field} missing from {err}");
    }
}

#[test]
fn unknown_keys_are_refused() {
    let err = Config::from_toml(&format!("{MINIMAL}\nbogus = 1\n"), no_env).unwrap_err();
    assert!(err.to_string().contains("bogus"), "{err}");
}

#[test]
fn allow_list_matches_logins_orgs_and_groups() {
    let allow = AllowList {
        everyone: false,
        users: vec!["Alice".into()],
        orgs: vec!["acme/admins".into()],
        groups: vec!["engineering".into()],
    };
    let user = |login: &str, groups: &[&str]| User {
        sub: format!("oidc:{login}"),
        login: Some(login.into()),
        name: None,
        email: None,
        groups: groups.iter().map(|g| (*g).to_owned()).collect(),
    };
    assert!(allow.permits(&user("alice", &[])));
    assert!(allow.permits(&user("bob", &["ACME/admins"])));
    assert!(allow.permits(&user("carol", &["engineering"])));
    assert!(!allow.permits(&user("dave", &["acme", "sales"])));
}

#[test]
fn shipped_kubernetes_config_parses() {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/k8s/base/sidecar.toml");
    let text = std::fs::read_to_string(path).unwrap();
    RawConfig::parse(&text).unwrap();
}
