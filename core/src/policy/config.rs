//! The policy as written: its JSON configuration, before it is validated and compiled.

use super::*;

/// The policy as written (JSON). Every field is documented in README.md ("Policy").
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPolicy {
    /// The MCP servers this Envoy fronts, matched by host and longest path prefix.
    pub servers: Vec<RawServer>,
    /// The rules, in any order (deny wins, then any allow; otherwise deny).
    #[serde(default)]
    pub rules: Vec<RawRule>,
    /// Request size limits; defaults in [`RawLimits`].
    #[serde(default)]
    pub limits: RawLimits,
    /// What happens to a request whose host and path match no server; default `deny`.
    #[serde(default)]
    pub other_paths: OtherPaths,
}

/// The fate of a request for a path no configured server matches.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OtherPaths {
    /// Refuse it (403), like a denied call. The default.
    #[default]
    Deny,
    /// Warning: let it through unchecked and unbuffered. For an Envoy chain that also serves
    /// non-MCP routes (the sidecar's OAuth endpoints, discovery documents).
    Pass,
}

/// One MCP server.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawServer {
    /// The name rules refer to, e.g. `everything`.
    pub name: String,
    /// The `Host`/`:authority` it answers on (port ignored); any host if absent.
    #[serde(default)]
    pub host: Option<String>,
    /// The path prefix, e.g. `/everything/` (must start with `/`).
    pub path_prefix: String,
}

/// Allow or deny.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Effect {
    /// The rule grants access when it matches.
    Allow,
    /// The rule refuses access when it matches, whatever else allows it.
    Deny,
}

/// One rule. Every present field must match; within a list, one entry suffices, except
/// `when.scopes`, where every listed scope is required.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRule {
    /// A name for logs, stats and the access log (default `rules[i]`).
    #[serde(default)]
    pub name: Option<String>,
    /// `allow` or `deny`.
    pub effect: Effect,
    /// Server names (globs with `*`); default all.
    #[serde(default = "any")]
    pub servers: Vec<String>,
    /// MCP methods (globs), e.g. `tools/call`, `notifications/*`; requests without a body are
    /// `http:GET` and `http:DELETE`; a client's JSON-RPC responses are `response`. Default all.
    #[serde(default = "any")]
    pub methods: Vec<String>,
    /// Tool or prompt names, or resource URIs (globs); default all. A rule that lists names
    /// only matches requests that name a target.
    #[serde(default)]
    pub names: Option<Vec<String>>,
    /// Conditions on the caller's identity.
    #[serde(default)]
    pub when: RawWhen,
    /// A CEL expression that must evaluate to `true` (see [`CONDITION_VARIABLES`]).
    #[serde(default)]
    pub condition: Option<String>,
    /// Warning: lets callers without an identity (no `x-mcpgw-subject`) match this rule.
    /// Default false.
    #[serde(default)]
    pub anonymous: bool,
}

pub(super) fn any() -> Vec<String> {
    vec!["*".to_owned()]
}

/// Identity conditions of a rule (all optional).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawWhen {
    /// Subjects (`sub`, e.g. `github:123`); one must match.
    #[serde(default)]
    pub subjects: Option<Vec<String>>,
    /// User names (`preferred_username`); one must match.
    #[serde(default)]
    pub users: Option<Vec<String>>,
    /// Groups (`org`, `org/team`); the caller must be in one of them.
    #[serde(default)]
    pub groups: Option<Vec<String>>,
    /// Scopes; the token must carry every one of them.
    #[serde(default)]
    pub scopes: Option<Vec<String>>,
    /// OAuth client ids; one must match.
    #[serde(default)]
    pub client_ids: Option<Vec<String>>,
}

/// Request limits as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawLimits {
    /// Largest request body in bytes; default 1 MiB.
    pub max_body_bytes: usize,
    /// Deepest JSON nesting; default 64.
    pub max_depth: usize,
    /// Most messages in a batch; default 32.
    pub max_batch: usize,
    /// Largest `*/list` response the filter buffers to filter; default 4 MiB.
    pub max_response_bytes: usize,
}

impl Default for RawLimits {
    fn default() -> Self {
        let l = Limits::default();
        Self {
            max_body_bytes: l.max_body_bytes,
            max_depth: l.max_depth,
            max_batch: l.max_batch,
            max_response_bytes: 4 << 20,
        }
    }
}

/// The variables a rule's `condition` can use.
pub const CONDITION_VARIABLES: &[&str] = &[
    "subject",   // string, "" when anonymous
    "user",      // string
    "email",     // string
    "groups",    // list of strings
    "scopes",    // list of strings
    "client_id", // string
    "server",    // string: the server's name
    "method",    // string
    "name",      // string: tool/prompt name or resource URI, "" if none
    "arguments", // map: `params.arguments` of tools/call and prompts/get, {} if none
];

/// Everything wrong with a policy, one entry per problem, each with its field path.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid policy: {}", .0.join("; "))]
pub struct PolicyError(pub Vec<String>);
