//! Protected resources (the MCP servers behind the gateway) and how a request is matched to one:
//! by [`crate::route`], the one server matcher of every filter and `/verify`. Also the RFC
//! 9728 protected-resource-metadata document and its well-known URLs.

use serde::{Deserialize, Serialize};

use crate::route::{self, Route};
use serde_json::{Map, Value};

/// The RFC 9728 well-known path segment.
pub const WELL_KNOWN_PREFIX: &str = "/.well-known/oauth-protected-resource";

/// RFC 9728 §2 protected resource metadata. `resource` is filled from the canonical URL when the
/// configuration leaves it out.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ProtectedResourceMetadata {
    /// The resource identifier (the canonical URL).
    #[serde(default)]
    pub resource: String,
    /// Issuer URLs of the authorization servers that can issue tokens for this resource.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub authorization_servers: Vec<String>,
    /// Scopes used in authorization requests for this resource.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scopes_supported: Vec<String>,
    /// How tokens may be presented; defaults to `["header"]`.
    #[serde(default = "default_bearer_methods")]
    pub bearer_methods_supported: Vec<String>,
    /// A human-readable name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_name: Option<String>,
    /// A URL of human-readable documentation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_documentation: Option<String>,
    /// Any other RFC 9728 field, passed through as given.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// Default for [`ProtectedResourceMetadata::bearer_methods_supported`]: the header only (no query
/// or body tokens, RFC 6750 §2.1).
fn default_bearer_methods() -> Vec<String> {
    vec!["header".to_owned()]
}

/// One protected MCP resource.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Resource {
    /// The canonical URL (RFC 8707): the audience its tokens must carry,
    /// e.g. `http://127.0.0.1:8080/everything/mcp`.
    pub canonical_url: String,
    /// The `Host` (`:authority`) to match, case-insensitive; with a port it must match exactly,
    /// without one any port matches. Unset: any host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// The path prefix to match on a segment boundary (`/everything/mcp` matches
    /// `/everything/mcp`, `/everything/mcp/x` and `/everything/mcp?q`, not `/everything/mcpx`).
    pub path_prefix: String,
    /// Scopes a token must carry (all of them) to call this resource.
    #[serde(default)]
    pub scopes_required: Vec<String>,
    /// The RFC 9728 metadata document served for this resource.
    #[serde(default)]
    pub metadata: ProtectedResourceMetadata,
}

/// A problem with a resource definition.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResourceError {
    /// The canonical URL is not an absolute http(s) URL without a fragment.
    #[error(
        "resources[{0}].canonical_url: must be an absolute http or https URL without a fragment"
    )]
    BadCanonicalUrl(usize),
    /// The path prefix does not start with `/`.
    #[error("resources[{0}].path_prefix: must start with `/`")]
    BadPathPrefix(usize),
    /// Two resources match the same host and path prefix.
    #[error("resources[{0}]: same host and path_prefix as an earlier resource")]
    Duplicate(usize),
}

impl Resource {
    /// The origin (`scheme://authority`) and path of the canonical URL.
    fn split_canonical(&self) -> Option<(&str, &str)> {
        let after_scheme = self
            .canonical_url
            .strip_prefix("https://")
            .or_else(|| self.canonical_url.strip_prefix("http://"))?;
        let origin_len = self.canonical_url.len() - after_scheme.len();
        let path_start = after_scheme.find('/').unwrap_or(after_scheme.len());
        if path_start == 0 || self.canonical_url.contains('#') {
            return None;
        }
        Some(self.canonical_url.split_at(origin_len + path_start))
    }

    /// The path of the RFC 9728 metadata document for this resource (the path-inserted form,
    /// §3.1): `/.well-known/oauth-protected-resource/everything/mcp`.
    pub fn metadata_path(&self) -> String {
        let path = self.split_canonical().map_or("", |(_, p)| p);
        format!("{WELL_KNOWN_PREFIX}{}", path.trim_end_matches('/'))
    }

    /// The absolute URL of the metadata document, for `WWW-Authenticate: Bearer resource_metadata`.
    pub fn metadata_url(&self) -> String {
        let origin = self.split_canonical().map_or("", |(o, _)| o);
        format!("{origin}{}", self.metadata_path())
    }

    /// The metadata document, with `resource` set to the canonical URL when left out.
    pub fn metadata_document(&self) -> ProtectedResourceMetadata {
        let mut doc = self.metadata.clone();
        if doc.resource.is_empty() {
            doc.resource = self.canonical_url.clone();
        }
        doc
    }

    /// Where the resource is reached ([`crate::route`]).
    pub fn route(&self) -> Route<'_> {
        Route {
            host: self.host.as_deref(),
            path_prefix: &self.path_prefix,
        }
    }
}

/// The configured resources, validated.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Resources(Vec<Resource>);

impl Resources {
    /// Validates the resources: absolute canonical URLs, `/`-rooted prefixes, no duplicates.
    pub fn new(list: Vec<Resource>) -> Result<Resources, ResourceError> {
        for (i, r) in list.iter().enumerate() {
            if r.split_canonical().is_none() {
                return Err(ResourceError::BadCanonicalUrl(i));
            }
            if !r.path_prefix.starts_with('/') {
                return Err(ResourceError::BadPathPrefix(i));
            }
            let dup = list[..i].iter().any(|o| route::same(o.route(), r.route()));
            if dup {
                return Err(ResourceError::Duplicate(i));
            }
        }
        Ok(Resources(list))
    }

    /// All resources, in configuration order.
    pub fn iter(&self) -> impl Iterator<Item = &Resource> {
        self.0.iter()
    }

    /// The resource a request for `host` (the `Host`/`:authority` value) and `path` (with or
    /// without a query) belongs to: among those whose host matches, the longest path prefix wins;
    /// a resource with a host beats one without on a tie.
    pub fn find(&self, host: Option<&str>, path: &str) -> Option<&Resource> {
        route::find(self.0.iter().map(Resource::route), host, path).and_then(|i| self.0.get(i))
    }

    /// The resource whose RFC 9728 metadata lives at `path` (query ignored), for requests to
    /// `host`: the path-inserted URI of a resource, or the root well-known URI, which answers for
    /// the resource at `/` or, failing that, the only resource for that host.
    pub fn find_metadata(&self, host: Option<&str>, path: &str) -> Option<&Resource> {
        let path = path.split(['?', '#']).next().unwrap_or(path);
        let path = path.trim_end_matches('/');
        if !path.starts_with(WELL_KNOWN_PREFIX) {
            return None;
        }
        let for_host = || self.0.iter().filter(move |r| r.route().matches_host(host));
        if let Some(r) = for_host().find(|r| r.metadata_path() == path) {
            return Some(r);
        }
        if path == WELL_KNOWN_PREFIX {
            let mut candidates = for_host();
            let first = candidates.next()?;
            return match candidates.next() {
                None => Some(first),
                Some(_) => None,
            };
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn res(url: &str, host: Option<&str>, prefix: &str) -> Resource {
        Resource {
            canonical_url: url.into(),
            host: host.map(Into::into),
            path_prefix: prefix.into(),
            scopes_required: vec![],
            metadata: ProtectedResourceMetadata::default(),
        }
    }

    #[test]
    fn matching_uses_host_and_longest_segment_prefix() {
        let set = Resources::new(vec![
            res("http://gw/a/mcp", None, "/a/mcp"),
            res("http://gw/a", None, "/a"),
            res("http://other/a/mcp", Some("other.example"), "/a/mcp"),
        ])
        .unwrap();
        let cases: &[(Option<&str>, &str, Option<&str>)] = &[
            (Some("gw:8080"), "/a/mcp", Some("http://gw/a/mcp")),
            (Some("gw:8080"), "/a/mcp/x?y", Some("http://gw/a/mcp")),
            (Some("gw:8080"), "/a/mcp?y", Some("http://gw/a/mcp")),
            (Some("gw:8080"), "/a/mcpx", Some("http://gw/a")),
            (Some("gw:8080"), "/ab", None),
            (
                Some("OTHER.example:443"),
                "/a/mcp",
                Some("http://other/a/mcp"),
            ),
            (None, "/a/mcp", Some("http://gw/a/mcp")),
            (Some("gw"), "/b", None),
        ];
        for (host, path, want) in cases {
            let got = set.find(*host, path).map(|r| r.canonical_url.as_str());
            assert_eq!(got, *want, "host {host:?} path {path}");
        }
    }

    #[test]
    fn metadata_urls_are_path_inserted() {
        let r = res(
            "http://127.0.0.1:8080/everything/mcp",
            None,
            "/everything/mcp",
        );
        assert_eq!(
            r.metadata_url(),
            "http://127.0.0.1:8080/.well-known/oauth-protected-resource/everything/mcp"
        );
        let set = Resources::new(vec![r]).unwrap();
        for path in [
            "/.well-known/oauth-protected-resource/everything/mcp",
            "/.well-known/oauth-protected-resource",
        ] {
            let doc = set.find_metadata(None, path).unwrap().metadata_document();
            assert_eq!(doc.resource, "http://127.0.0.1:8080/everything/mcp");
        }
        assert!(
            set.find_metadata(None, "/.well-known/oauth-protected-resource/x")
                .is_none()
        );
    }

    #[test]
    fn rejects_bad_resource_definitions() {
        let cases = [
            (
                res("ftp://x/a", None, "/a"),
                ResourceError::BadCanonicalUrl(0),
            ),
            (
                res("http://x/a#f", None, "/a"),
                ResourceError::BadCanonicalUrl(0),
            ),
            (
                res("http://x/a", None, "a"),
                ResourceError::BadPathPrefix(0),
            ),
        ];
        for (r, want) in cases {
            assert_eq!(Resources::new(vec![r]), Err(want));
        }
        let dup = Resources::new(vec![
            res("http://x/a", None, "/a"),
            res("http://x/b", None, "/a/"),
        ]);
        assert_eq!(dup, Err(ResourceError::Duplicate(1)));
    }
}
