//! Client ID Metadata Documents (draft-ietf-oauth-client-id-metadata-document): a `client_id`
//! that is an https URL names a JSON document, served there, that describes the client.
//!
//! Fetching a URL a stranger chose is a server-side request forgery risk, so the fetch is fenced:
//! the URL must be https with a path and without credentials, fragment or dot segments; the host
//! must resolve to public addresses only (no loopback, private, link-local, CGNAT, multicast or
//! documentation ranges) unless `allow_private_addresses` is set, and the connection goes to the
//! address that was checked (no second DNS answer); no redirects; a timeout; a size limit. The
//! document's `client_id` must equal the URL, its redirect URIs are validated like registered
//! ones, and it describes a public client (`token_endpoint_auth_method: none`). The resulting
//! [`Client`] is cached in the store by the caller (`authorize::find_client`).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use serde::Deserialize;
use url::Url;

use crate::config::ClientMetadataConfig;
use crate::register::{Descriptive, check_descriptive, check_redirect_uri};
use crate::store::{Client, TokenEndpointAuthMethod};
use crate::upstream::read_limited;

/// Why a metadata document was refused. Messages never contain the document.
#[derive(Debug, thiserror::Error)]
pub enum DocumentError {
    /// The client_id is not an acceptable document URL.
    #[error("client_id URL not acceptable: {0}")]
    Url(&'static str),
    /// The host resolves to an address we may not fetch from.
    #[error("client_id host resolves to a private or reserved address")]
    PrivateAddress,
    /// DNS or the HTTP fetch failed, or the answer was not 200.
    #[error("fetch failed: {0}")]
    Fetch(String),
    /// The document is not a valid client description.
    #[error("invalid document: {0}")]
    Invalid(String),
}

/// The document as served (the fields we use; others are ignored as the draft allows).
#[derive(Deserialize)]
struct Document {
    client_id: String,
    #[serde(default)]
    redirect_uris: Vec<String>,
    client_name: Option<String>,
    client_uri: Option<String>,
    logo_uri: Option<String>,
    scope: Option<String>,
    #[serde(default)]
    grant_types: Option<Vec<String>>,
    #[serde(default)]
    response_types: Option<Vec<String>>,
    token_endpoint_auth_method: Option<String>,
    tos_uri: Option<String>,
    policy_uri: Option<String>,
    software_id: Option<String>,
    software_version: Option<String>,
    #[serde(default)]
    contacts: Vec<String>,
}

/// The fetcher (configuration only; the cache is the store).
#[derive(Debug)]
pub struct Documents {
    config: ClientMetadataConfig,
}

impl Documents {
    /// A fetcher for `config`.
    pub fn new(config: ClientMetadataConfig) -> Documents {
        Documents { config }
    }

    /// Whether `client_id` should be treated as a metadata document URL: https, or http when
    /// private addresses are allowed (local tests).
    pub fn is_document_url(&self, client_id: &str) -> bool {
        self.config.enabled
            && (client_id.starts_with("https://")
                || (self.config.allow_private_addresses && client_id.starts_with("http://")))
    }

    /// Fetches and validates the document at `client_id`.
    pub async fn fetch(&self, client_id: &str) -> Result<Client, DocumentError> {
        let url = self.check_url(client_id)?;
        let host = url
            .host_str()
            .ok_or(DocumentError::Url("no host"))?
            .to_owned();
        let port = url
            .port_or_known_default()
            .ok_or(DocumentError::Url("no port"))?;
        let address = self.resolve(&host, port).await?;
        let http = reqwest::Client::builder()
            .timeout(self.config.timeout)
            .redirect(reqwest::redirect::Policy::none())
            .resolve(&host, address)
            .no_proxy()
            .user_agent(concat!("mcpgw-sidecar/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| DocumentError::Fetch(e.to_string()))?;
        let response = http
            .get(url.clone())
            .header(reqwest::header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(|e| DocumentError::Fetch(e.without_url().to_string()))?;
        if response.status() != reqwest::StatusCode::OK {
            return Err(DocumentError::Fetch(format!(
                "status {}",
                response.status().as_u16()
            )));
        }
        if response
            .content_length()
            .is_some_and(|n| n > self.config.max_bytes as u64)
        {
            return Err(DocumentError::Invalid("larger than the size limit".into()));
        }
        let body = read_limited(response, self.config.max_bytes)
            .await
            .map_err(|e| DocumentError::Fetch(e.without_url().to_string()))?;
        if body.is_empty() {
            return Err(DocumentError::Invalid(
                "empty or larger than the size limit".into(),
            ));
        }
        let document: Document =
            serde_json::from_slice(&body).map_err(|e| DocumentError::Invalid(e.to_string()))?;
        into_client(document, client_id)
    }

    fn check_url(&self, client_id: &str) -> Result<Url, DocumentError> {
        let url = Url::parse(client_id).map_err(|_| DocumentError::Url("not a URL"))?;
        let plain_http_allowed = self.config.allow_private_addresses && url.scheme() == "http";
        if url.scheme() != "https" && !plain_http_allowed {
            return Err(DocumentError::Url("must be https"));
        }
        if url.fragment().is_some() {
            return Err(DocumentError::Url("has a fragment"));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(DocumentError::Url("has credentials"));
        }
        if url.path() == "/" || url.path().is_empty() {
            return Err(DocumentError::Url("has no path"));
        }
        // The URL parser resolves dot segments: a client_id that changed under parsing had some.
        if url.as_str() != client_id {
            return Err(DocumentError::Url("is not in normal form"));
        }
        Ok(url)
    }

    async fn resolve(&self, host: &str, port: u16) -> Result<SocketAddr, DocumentError> {
        let addresses: Vec<SocketAddr> = tokio::net::lookup_host((host, port))
            .await
            .map_err(|e| DocumentError::Fetch(format!("cannot resolve host: {e}")))?
            .collect();
        let first = *addresses
            .first()
            .ok_or_else(|| DocumentError::Fetch("host has no address".into()))?;
        if !self.config.allow_private_addresses && addresses.iter().any(|a| !is_public(a.ip())) {
            return Err(DocumentError::PrivateAddress);
        }
        Ok(first)
    }
}

/// Whether `ip` is a globally routable unicast address.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public_v4(v4);
            }
            let s = v6.segments();
            // NAT64 (64:ff9b::/96) embeds an IPv4 address.
            if s[0] == 0x64 && s[1] == 0xff9b && s[2..6] == [0, 0, 0, 0] {
                let [a, b] = s[6].to_be_bytes();
                let [c, d] = s[7].to_be_bytes();
                return is_public_v4(Ipv4Addr::new(a, b, c, d));
            }
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (s[0] & 0xfe00) == 0xfc00 // unique local fc00::/7
                || (s[0] & 0xffc0) == 0xfe80 // link local fe80::/10
                || (s[0] == 0x2001 && s[1] == 0x0db8) // documentation
                || v6 == Ipv6Addr::new(0, 0, 0, 0, 0, 0, 0, 1))
        }
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    !(ip.is_private()
        || ip.is_loopback()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_multicast()
        || ip.is_documentation()
        || a == 0
        || (a == 100 && (64..128).contains(&b)) // shared address space (CGNAT)
        || (a == 192 && b == 0 && c == 0) // IETF protocol assignments
        || (a == 198 && (b == 18 || b == 19)) // benchmarking
        || a >= 240) // reserved
}

fn into_client(d: Document, client_id: &str) -> Result<Client, DocumentError> {
    let invalid = |m: &str| Err(DocumentError::Invalid(m.into()));
    if d.client_id != client_id {
        return invalid("client_id does not equal the document's URL");
    }
    if d.redirect_uris.is_empty() {
        return invalid("redirect_uris is empty");
    }
    // The same rules as dynamic registration (OAuth 2.1 §2.3.1, RFC 8252 §7).
    for uri in &d.redirect_uris {
        check_redirect_uri(uri).map_err(|e| DocumentError::Invalid(e.description))?;
    }
    check_descriptive(&Descriptive {
        client_name: &d.client_name,
        client_uri: &d.client_uri,
        logo_uri: &d.logo_uri,
        tos_uri: &d.tos_uri,
        policy_uri: &d.policy_uri,
        software_id: &d.software_id,
        software_version: &d.software_version,
        scope: &d.scope,
        contacts: &d.contacts,
    })
    .map_err(|e| DocumentError::Invalid(e.description))?;
    match d.token_endpoint_auth_method.as_deref() {
        None | Some("none") => {}
        Some(_) => return invalid("only public clients (token_endpoint_auth_method none)"),
    }
    let grant_types = d
        .grant_types
        .unwrap_or_else(|| vec!["authorization_code".into()]);
    if grant_types
        .iter()
        .any(|g| g != "authorization_code" && g != "refresh_token")
    {
        return invalid("grant_types may only be authorization_code and refresh_token");
    }
    Ok(Client {
        client_id: d.client_id,
        client_secret_hash: None,
        registration_access_token_hash: None,
        token_endpoint_auth_method: TokenEndpointAuthMethod::None,
        redirect_uris: d.redirect_uris,
        grant_types,
        response_types: d.response_types.unwrap_or_else(|| vec!["code".into()]),
        client_name: d.client_name,
        client_uri: d.client_uri,
        logo_uri: d.logo_uri,
        scope: d.scope,
        contacts: d.contacts,
        tos_uri: d.tos_uri,
        policy_uri: d.policy_uri,
        software_id: d.software_id,
        software_version: d.software_version,
        client_id_issued_at: crate::now(),
        client_secret_expires_at: 0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn documents(allow_private: bool) -> Documents {
        Documents::new(ClientMetadataConfig {
            enabled: true,
            allow_private_addresses: allow_private,
            max_bytes: 5120,
            timeout: std::time::Duration::from_secs(1),
            cache_ttl: std::time::Duration::from_secs(60),
        })
    }

    #[test]
    fn private_and_reserved_addresses_are_not_public() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "64:ff9b::a00:1",
        ] {
            let parsed: IpAddr = ip.parse().unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST));
            assert!(!is_public(parsed), "{ip} counted as public");
        }
        for ip in ["93.184.215.14", "2606:4700::1111"] {
            let parsed: IpAddr = ip.parse().unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST));
            assert!(is_public(parsed), "{ip} counted as private");
        }
    }

    #[test]
    fn document_urls_must_be_plain_https_with_a_path() {
        let d = documents(false);
        assert!(d.check_url("https://app.example/client.json").is_ok());
        for bad in [
            "http://app.example/client.json",
            "https://app.example/",
            "https://user:pw@app.example/c.json",
            "https://app.example/c.json#x",
            "https://app.example/a/../c.json",
        ] {
            assert!(d.check_url(bad).is_err(), "{bad} accepted");
        }
        assert!(!d.is_document_url("http://127.0.0.1:1/c.json"));
        assert!(documents(true).is_document_url("http://127.0.0.1:1/c.json"));
    }

    #[tokio::test]
    async fn loopback_hosts_are_refused_by_default() {
        let refused = documents(false)
            .fetch("https://localhost/client.json")
            .await;
        assert!(matches!(refused, Err(DocumentError::PrivateAddress)));
    }

    #[test]
    fn documents_must_describe_a_public_client_at_their_own_url() {
        let url = "https://app.example/client.json";
        let doc = |patch: serde_json::Value| {
            let mut base = serde_json::json!({
                "client_id": url, "redirect_uris": ["https://app.example/cb"],
            });
            if let (Some(b), Some(p)) = (base.as_object_mut(), patch.as_object()) {
                b.extend(p.clone());
            }
            serde_json::from_value::<Document>(base).unwrap()
        };
        let client = into_client(doc(serde_json::json!({})), url).unwrap();
        assert_eq!(
            client.token_endpoint_auth_method,
            TokenEndpointAuthMethod::None
        );
        assert_eq!(client.grant_types, vec!["authorization_code"]);
        for bad in [
            serde_json::json!({"client_id": "https://evil.example/client.json"}),
            serde_json::json!({"redirect_uris": []}),
            serde_json::json!({"redirect_uris": ["http://app.example/cb"]}),
            serde_json::json!({"redirect_uris": ["https://app.example/cb#frag"]}),
            serde_json::json!({"token_endpoint_auth_method": "client_secret_basic"}),
            serde_json::json!({"grant_types": ["client_credentials"]}),
            // Display fields follow the registration rules: no control or bidi characters.
            serde_json::json!({"client_name": "Notes\u{0}"}),
            serde_json::json!({"client_name": "Notes \u{202E}exe.txt"}),
            serde_json::json!({"logo_uri": "javascript:alert(1)"}),
            serde_json::json!({"contacts": ["a\u{2067}b"]}),
        ] {
            assert!(
                into_client(doc(bad.clone()), url).is_err(),
                "{bad} accepted"
            );
        }
    }
}
