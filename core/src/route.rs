//! Which configured MCP server a request is for: the one rule every host applies, the JWT filter
//! ([`crate::resource::Resources::find`]), the policy filter ([`crate::policy::Policy::server_index`])
//! and the sidecar's `/verify`, so they can never pick different servers for one request.
//!
//! A server matches when its host matches (any host when it names none) and its path prefix
//! matches on a segment boundary; among the matches the longest prefix wins, and on a tie the one
//! naming a host. The path is matched as the host received it: Envoy normalises it first
//! (`normalize_path`, `merge_slashes`, escaped slashes refused; see envoy/gateway.yaml).

/// Where one server is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route<'a> {
    /// The `Host`/`:authority` to match, case-insensitive; with a port it must match exactly,
    /// without one any port matches. `None`: any host.
    pub host: Option<&'a str>,
    /// The path prefix (`/everything/mcp` matches `/everything/mcp`, `/everything/mcp/x` and
    /// `/everything/mcp?q`, not `/everything/mcpx`; a trailing `/` is ignored).
    pub path_prefix: &'a str,
}

impl Route<'_> {
    /// Whether a request for `host` (absent: none sent) and `path` (with or without a query)
    /// matches.
    pub fn matches(&self, host: Option<&str>, path: &str) -> bool {
        self.matches_host(host) && self.matches_path(path)
    }

    /// Whether `host` (absent: none sent) matches, whatever the path.
    pub fn matches_host(&self, host: Option<&str>) -> bool {
        let Some(want) = self.host else { return true };
        let Some(got) = host else { return false };
        if want.contains(':') {
            return want.eq_ignore_ascii_case(got);
        }
        let got_host = match got.rsplit_once(':') {
            // `[::1]:8080` or `name:8080`; a bare IPv6 literal keeps its colons.
            Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) && !h.is_empty() => h,
            _ => got,
        };
        want.eq_ignore_ascii_case(got_host)
    }

    fn matches_path(&self, path: &str) -> bool {
        let prefix = self.path_prefix.trim_end_matches('/');
        match path.strip_prefix(prefix) {
            Some(rest) => rest.is_empty() || rest.starts_with(['/', '?', '#']),
            None => false,
        }
    }

    /// How specific the route is: a longer prefix, then naming a host, wins.
    fn rank(&self) -> (usize, bool) {
        (
            self.path_prefix.trim_end_matches('/').len(),
            self.host.is_some(),
        )
    }
}

/// The place, among `routes`, of the server a request for `host` and `path` is for.
pub fn find<'a>(
    routes: impl IntoIterator<Item = Route<'a>>,
    host: Option<&str>,
    path: &str,
) -> Option<usize> {
    routes
        .into_iter()
        .enumerate()
        .filter(|(_, r)| r.matches(host, path))
        .max_by_key(|(_, r)| r.rank())
        .map(|(i, _)| i)
}

/// Whether a request is a CORS preflight, which carries no credentials (Fetch spec) and so passes
/// the token and policy checks to the CORS filter or the upstream: method exactly `OPTIONS`
/// (methods are case-sensitive) with an `Access-Control-Request-Method` header.
pub fn is_cors_preflight(method: &str, access_control_request_method: Option<&str>) -> bool {
    method == "OPTIONS" && access_control_request_method.is_some()
}

/// Whether two routes answer exactly the same requests (a configuration error).
pub fn same(a: Route<'_>, b: Route<'_>) -> bool {
    a.host.map(str::to_ascii_lowercase) == b.host.map(str::to_ascii_lowercase)
        && a.path_prefix.trim_end_matches('/') == b.path_prefix.trim_end_matches('/')
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROUTES: [Route<'static>; 5] = [
        Route {
            host: None,
            path_prefix: "/everything/mcp",
        },
        Route {
            host: None,
            path_prefix: "/memory/mcp/",
        },
        Route {
            host: Some("Tools.Example"),
            path_prefix: "/everything/mcp",
        },
        Route {
            host: Some("api.example:8443"),
            path_prefix: "/",
        },
        Route {
            host: None,
            path_prefix: "/everything/mcp/admin",
        },
    ];

    /// Every path form through the one matcher: segment boundaries, trailing slashes, queries,
    /// case, and what a client might send hoping another component reads it differently.
    #[test]
    fn every_path_form_finds_one_server_or_none() {
        let cases: &[(Option<&str>, &str, Option<usize>)] = &[
            (None, "/everything/mcp", Some(0)),
            (None, "/everything/mcp/", Some(0)),
            (None, "/everything/mcp?session=1", Some(0)),
            (None, "/everything/mcp#x", Some(0)),
            (None, "/everything/mcp/x/y", Some(0)),
            (None, "/everything/mcpx", None),
            (None, "/everything/mc", None),
            (None, "/everything", None),
            (None, "/Everything/mcp", None),
            (None, "/EVERYTHING/MCP", None),
            (None, "/everything/mcp%2fadmin", None),
            (None, "//everything/mcp", None),
            (None, "/everything//mcp", None),
            (None, "/x/../everything/mcp", None),
            (None, "/everything/mcp/admin", Some(4)),
            (None, "/everything/mcp/admin/x", Some(4)),
            (None, "/everything/mcp/administrator", Some(0)),
            (None, "/memory/mcp", Some(1)),
            (None, "/memory/mcp/", Some(1)),
            (None, "/memory/mcpx", None),
            (None, "", None),
            (Some("tools.example"), "/everything/mcp", Some(2)),
            (Some("TOOLS.EXAMPLE:8080"), "/everything/mcp", Some(2)),
            (Some("tools.example.evil"), "/everything/mcp", Some(0)),
            (Some("api.example:8443"), "/anything", Some(3)),
            (Some("API.example:8443"), "/everything/mcp", Some(0)),
            (Some("api.example:443"), "/anything", None),
            (Some("api.example"), "/anything", None),
        ];
        for &(host, path, want) in cases {
            assert_eq!(find(ROUTES, host, path), want, "{host:?} {path:?}");
        }
    }

    #[test]
    fn routes_differing_only_in_case_of_host_or_trailing_slash_are_the_same() {
        let a = Route {
            host: Some("A.example"),
            path_prefix: "/x/",
        };
        assert!(same(
            a,
            Route {
                host: Some("a.example"),
                path_prefix: "/x"
            }
        ));
        assert!(!same(
            a,
            Route {
                host: None,
                path_prefix: "/x"
            }
        ));
        assert!(!same(
            a,
            Route {
                host: Some("a.example"),
                path_prefix: "/y"
            }
        ));
    }
}
