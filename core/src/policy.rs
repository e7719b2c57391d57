//! The MCP authorization policy: who may call which MCP server, and which methods, tools,
//! prompts and resources in it. Deny by default; allow and deny rules over the caller's identity
//! (as the JWT filter established it) and the request (server, method, name); a deny rule that
//! matches always wins; optional CEL conditions for what the fields cannot say
//! (filters/policy/README.md says why CEL, with the measurements).
//!
//! Configuration goes `RawPolicy` (serde, JSON) → [`Policy`] (validated, compiled) and
//! [`Policy::evaluate`] decides. Parsing bodies and headers is [`crate::mcp`]'s job.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::sync::{Arc, Mutex, OnceLock};

use cel::common::types::{
    CelBool, CelDouble, CelInt, CelList, CelMap, CelMapKey, CelNull, CelString, CelUInt,
};
use cel::common::value::{CowVal, Val};
use cel::context::VariableResolver;
use cel::{Context, Env, Program, Value as CelValue};
use serde::Deserialize;
use serde_json::Value;

use crate::hash::Fold;
use crate::identity;
use crate::mcp::{self, Body, Kind, Limits, ListKind, McpHeaders, PendingList};
use crate::route::{self, Route};

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

fn any() -> Vec<String> {
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

/// The caller, as the JWT filter established it (`x-mcpgw-*` headers, [`crate::identity`]),
/// decoded ([`identity::decode`]) and borrowing the header values where no escape was needed.
/// Unlike [`crate::identity::Identity`] every field may be absent: a route without the JWT filter
/// has an anonymous caller.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Caller<'a> {
    /// `x-mcpgw-subject`.
    pub subject: Option<Cow<'a, str>>,
    /// `x-mcpgw-user`: the token's `preferred_username`.
    pub user: Option<Cow<'a, str>>,
    /// `x-mcpgw-email`: the token's `email`, which the sidecar sets only when verified.
    pub email: Option<Cow<'a, str>>,
    /// `x-mcpgw-groups`.
    pub groups: List<'a>,
    /// `x-mcpgw-scopes`.
    pub scopes: List<'a>,
    /// `x-mcpgw-client-id`.
    pub client_id: Option<Cow<'a, str>>,
}

/// The `x-mcpgw-*` headers [`Caller::from_values`] reads, in its order.
pub const CALLER_HEADERS: [&str; 6] = [
    identity::SUBJECT,
    identity::USER,
    identity::EMAIL,
    identity::GROUPS,
    identity::SCOPES,
    identity::CLIENT_ID,
];

/// An identity header holds what the JWT filter cannot have written: the request is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("malformed identity header {0}")]
pub struct MalformedIdentity(pub &'static str);

impl<'a> Caller<'a> {
    /// Builds the caller from the `x-mcpgw-*` header values (`get` returns a header's value).
    pub fn from_headers(get: impl Fn(&str) -> Option<&'a str>) -> Result<Self, MalformedIdentity> {
        Self::from_values(CALLER_HEADERS.map(get))
    }

    /// Builds the caller from the values of the [`CALLER_HEADERS`], in that order.
    pub fn from_values(values: [Option<&'a str>; 6]) -> Result<Self, MalformedIdentity> {
        let [subject, user, email, groups, scopes, client_id] = values;
        let one = |i: usize, v: Option<&'a str>| match v.filter(|s| !s.is_empty()) {
            None => Ok(None),
            Some(v) => identity::decode(v)
                .map(Some)
                .ok_or(MalformedIdentity(CALLER_HEADERS[i])),
        };
        let list = |i: usize, v: Option<&'a str>, separator| {
            List::new(v.unwrap_or_default(), separator).ok_or(MalformedIdentity(CALLER_HEADERS[i]))
        };
        Ok(Self {
            subject: one(0, subject)?,
            user: one(1, user)?,
            email: one(2, email)?,
            groups: list(3, groups, b',')?,
            scopes: list(4, scopes, b' ')?,
            client_id: one(5, client_id)?,
        })
    }
}

/// A list header value, read in place: items separated by one ASCII character, each
/// [`identity::decode`]d. Nothing is trimmed or dropped: an item is exactly what the token holds.
#[derive(Clone, Copy, Default)]
pub struct List<'a> {
    raw: &'a str,
    separator: u8,
}

impl<'a> List<'a> {
    /// The list in `raw`, items separated by `separator` (ASCII); `None` if an item is not a
    /// value [`identity::encode`] writes.
    pub fn new(raw: &'a str, separator: u8) -> Option<Self> {
        let list = Self { raw, separator };
        list.raw_items()
            .all(|item| identity::decode(item).is_some())
            .then_some(list)
    }

    fn raw_items(&self) -> impl Iterator<Item = &'a str> + use<'a> {
        let raw = self.raw;
        let separator = char::from(self.separator);
        (!raw.is_empty())
            .then(|| raw.split(separator))
            .into_iter()
            .flatten()
    }

    /// The items, in order.
    pub fn iter(&self) -> impl Iterator<Item = Cow<'a, str>> + use<'a> {
        // `new` checked that every item decodes.
        self.raw_items().filter_map(identity::decode)
    }

    /// Whether `item` is one of the items.
    pub fn contains(&self, item: &str) -> bool {
        self.iter().any(|x| x == item)
    }
}

impl fmt::Debug for List<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

/// Lists are equal when they hold the same items.
impl PartialEq for List<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.iter().eq(other.iter())
    }
}

impl Eq for List<'_> {}

/// One authorization question.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// The caller.
    pub caller: &'a Caller<'a>,
    /// The server's name (from [`Policy::server_for`]).
    pub server: &'a str,
    /// The MCP method (or `http:GET`, `http:DELETE`, `response`).
    pub method: &'a str,
    /// The tool/prompt name or resource URI.
    pub name: Option<&'a str>,
    /// `params.arguments`.
    pub arguments: Option<&'a Value>,
}

/// The answer: allowed or not, and which rule decided (`None`: nothing allowed it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    /// Whether the request may proceed.
    pub allowed: bool,
    /// The index of the deciding rule.
    pub rule: Option<usize>,
}

/// A `*` glob, compiled.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Glob(Vec<String>);

impl Glob {
    fn new(pattern: &str) -> Self {
        Self(pattern.split('*').map(str::to_owned).collect())
    }

    fn is_literal(&self) -> bool {
        self.0.len() == 1
    }

    fn matches(&self, s: &str) -> bool {
        let parts = &self.0;
        let [first, middle @ .., last] = parts.as_slice() else {
            return parts.first().is_some_and(|p| p == s);
        };
        let Some(mut rest) = s.strip_prefix(first.as_str()) else {
            return false;
        };
        for part in middle {
            match rest.find(part.as_str()) {
                Some(i) => rest = &rest[i + part.len()..],
                None => return false,
            }
        }
        rest.len() >= last.len() && rest.ends_with(last.as_str())
    }
}

/// [`Rule::name_starts`]: the first bytes of the names `globs` can match (the empty name has
/// none and is left to the globs).
fn name_starts(globs: Option<&[Glob]>) -> [u64; 4] {
    let mut bits = [0u64; 4];
    for g in globs.unwrap_or_default() {
        match g.0.first().and_then(|p| p.as_bytes().first()) {
            Some(&b) => bits[usize::from(b) / 64] |= 1 << (b % 64),
            None => bits = [u64::MAX; 4],
        }
    }
    bits
}

fn any_match(globs: &[Glob], s: &str) -> bool {
    globs.iter().any(|g| g.matches(s))
}

struct Condition {
    source: String,
    program: Program,
    /// The variables the program reads: bit `i` is [`CONDITION_VARIABLES`]`[i]`.
    variables: u16,
}

/// [`CONDITION_VARIABLES`] by name, in bit order ([`Condition::variables`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Var {
    Subject,
    User,
    Email,
    Groups,
    Scopes,
    ClientId,
    Server,
    Method,
    Name,
    Arguments,
}

impl Var {
    const ALL: [Var; 10] = [
        Var::Subject,
        Var::User,
        Var::Email,
        Var::Groups,
        Var::Scopes,
        Var::ClientId,
        Var::Server,
        Var::Method,
        Var::Name,
        Var::Arguments,
    ];

    fn bit(self) -> u16 {
        1 << self as u16
    }

    /// The variable named `name` ([`CONDITION_VARIABLES`]); `None` for any other name.
    fn of(name: &str) -> Option<Var> {
        let i = CONDITION_VARIABLES.iter().position(|v| *v == name)?;
        Self::ALL.get(i).copied()
    }
}

impl fmt::Debug for Condition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Condition").field(&self.source).finish()
    }
}

#[derive(Debug)]
struct Rule {
    name: String,
    effect: Effect,
    servers: Vec<Glob>,
    methods: Vec<Glob>,
    names: Option<Vec<Glob>>,
    /// The bytes a name `names` can match may start with (bit per byte value); all set when a
    /// pattern starts with `*`. A cheap first test before the globs.
    name_starts: [u64; 4],
    subjects: Option<BTreeSet<String>>,
    users: Option<BTreeSet<String>>,
    groups: Option<BTreeSet<String>>,
    scopes: Vec<String>,
    client_ids: Option<BTreeSet<String>>,
    condition: Option<Condition>,
    anonymous: bool,
}

fn in_set(set: &Option<BTreeSet<String>>, v: Option<&str>) -> bool {
    set.as_ref()
        .is_none_or(|s| v.is_some_and(|v| s.contains(v)))
}

/// What an index lookup left to check at decision time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Unchecked {
    /// The rule's `servers` (the server is not a configured one).
    server: bool,
    /// The rule's `methods` (the method is not one any rule names literally).
    method: bool,
}

impl Rule {
    /// Whether the caller-only fields match: identity required, subjects, users, client ids,
    /// groups, scopes.
    fn matches_caller(&self, id: &Caller<'_>) -> bool {
        self.matches_identity(id)
            && self
                .groups
                .as_ref()
                .is_none_or(|g| id.groups.iter().any(|x| g.contains(x.as_ref())))
            && self.scopes.iter().all(|s| id.scopes.contains(s))
    }

    /// [`Rule::matches_caller`] with the caller's groups and scopes already split, for a
    /// caller that many rules are matched against.
    fn matches_split_caller(
        &self,
        id: &Caller<'_>,
        groups: &[Cow<'_, str>],
        scopes: &[Cow<'_, str>],
    ) -> bool {
        self.matches_identity(id)
            && self
                .groups
                .as_ref()
                .is_none_or(|g| groups.iter().any(|x| g.contains(x.as_ref())))
            && self.scopes.iter().all(|s| scopes.iter().any(|x| x == s))
    }

    /// The caller-only fields but groups and scopes.
    fn matches_identity(&self, id: &Caller<'_>) -> bool {
        (self.anonymous || id.subject.is_some())
            && in_set(&self.subjects, id.subject.as_deref())
            && in_set(&self.users, id.user.as_deref())
            && in_set(&self.client_ids, id.client_id.as_deref())
    }

    /// Whether `names` matches the request's target.
    fn matches_name(&self, name: Option<&str>) -> bool {
        self.names.as_ref().is_none_or(|n| {
            name.is_some_and(|s| {
                let could = s
                    .as_bytes()
                    .first()
                    .is_none_or(|&b| self.name_starts[usize::from(b / 64)] & (1 << (b % 64)) != 0);
                could && any_match(n, s)
            })
        })
    }

    /// Whether everything but the condition matches, given what the index already checked.
    fn matches_fields(&self, req: &Request<'_>, unchecked: Unchecked) -> bool {
        (!unchecked.server || any_match(&self.servers, req.server))
            && (!unchecked.method || any_match(&self.methods, req.method))
            && self.matches_name(req.name)
            && self.matches_caller(req.caller)
    }
}

/// Per target name: the rules whose `names` can match it, a bit per rule, by the name's first
/// byte ([`Rule::name_starts`]). A decision tests a rule's bit before its fields.
#[derive(Debug, Clone, PartialEq, Eq)]
struct NameIndex {
    /// Words per row.
    words: usize,
    /// Rows 0 to 255: names starting with that byte; [`NameIndex::UNNAMED`]: no name;
    /// [`NameIndex::EMPTY`]: the empty name.
    rows: Vec<u64>,
}

impl NameIndex {
    const UNNAMED: usize = 256;
    const EMPTY: usize = 257;

    fn new(rules: &[Rule]) -> Self {
        let words = words_for(rules.len());
        let mut rows = vec![0u64; (Self::EMPTY + 1) * words];
        for (i, r) in rules.iter().enumerate() {
            for row in 0..=Self::EMPTY {
                let may = r.names.is_none()
                    || row == Self::EMPTY
                    || (row < Self::UNNAMED && r.name_starts[row / 64] & (1 << (row % 64)) != 0);
                if may {
                    rows[row * words + i / 64] |= 1 << (i % 64);
                }
            }
        }
        Self { words, rows }
    }

    /// The rules whose `names` can match `name`.
    fn row(&self, name: Option<&str>) -> &[u64] {
        let row = match name {
            None => Self::UNNAMED,
            Some(s) => s
                .as_bytes()
                .first()
                .map_or(Self::EMPTY, |&b| usize::from(b)),
        };
        self.rows
            .get(row * self.words..(row + 1) * self.words)
            .unwrap_or_default()
    }
}

/// The rules a lookup can reach, in policy order, deny rules apart from allow rules; also as
/// bit sets (a bit per rule, [`NameIndex`]'s layout), which a decision walks.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Candidates {
    deny: Vec<usize>,
    allow: Vec<usize>,
    deny_bits: Vec<u64>,
    allow_bits: Vec<u64>,
}

impl Candidates {
    fn of(rules: &[Rule], keep: impl Fn(&Rule) -> bool) -> Self {
        let (mut deny, mut allow) = (Vec::new(), Vec::new());
        for (i, r) in rules.iter().enumerate().filter(|(_, r)| keep(r)) {
            match r.effect {
                Effect::Deny => deny.push(i),
                Effect::Allow => allow.push(i),
            }
        }
        Self::new(deny, allow, rules.len())
    }

    /// The candidates `deny` and `allow` among `rules` rules.
    fn new(deny: Vec<usize>, allow: Vec<usize>, rules: usize) -> Self {
        let bits = |ids: &[usize]| {
            let mut set = vec![0u64; words_for(rules)];
            for &i in ids {
                if let Some(w) = set.get_mut(i / 64) {
                    *w |= 1 << (i % 64);
                }
            }
            set
        };
        Self {
            deny_bits: bits(&deny),
            allow_bits: bits(&allow),
            deny,
            allow,
        }
    }
}

/// The words of a bit set over `rules` rules.
fn words_for(rules: usize) -> usize {
    rules.div_ceil(64).max(1)
}

/// The rules of one configured server.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ServerRules {
    /// For each method some rule names literally: the rules whose `servers` and `methods`
    /// match (both checked here, once).
    by_method: BTreeMap<String, Candidates>,
    /// For any other method: the rules whose `servers` match and whose `methods` hold a glob
    /// (a rule with literal methods only cannot match it); `methods` is checked per request.
    other_methods: Candidates,
}

/// The rules pre-sorted by server and method when the policy loads, so a decision only looks
/// at the rules that can match it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct RuleIndex {
    /// Server name → its rules.
    servers: BTreeMap<String, ServerRules>,
    /// Every rule, for a server that is not configured (only [`Policy::evaluate`] callers can
    /// ask about one).
    all: Candidates,
}

impl RuleIndex {
    fn new(servers: &[Server], rules: &[Rule]) -> Self {
        let literal_methods: BTreeSet<&str> = rules
            .iter()
            .flat_map(|r| r.methods.iter())
            .filter(|g| g.is_literal())
            .map(|g| g.0[0].as_str())
            .collect();
        let servers = servers
            .iter()
            .map(|s| {
                let on_server = |r: &Rule| any_match(&r.servers, &s.name);
                let by_method = literal_methods
                    .iter()
                    .map(|m| {
                        let c = Candidates::of(rules, |r| on_server(r) && any_match(&r.methods, m));
                        ((*m).to_owned(), c)
                    })
                    .collect();
                let other_methods = Candidates::of(rules, |r| {
                    on_server(r) && r.methods.iter().any(|g| !g.is_literal())
                });
                (
                    s.name.clone(),
                    ServerRules {
                        by_method,
                        other_methods,
                    },
                )
            })
            .collect();
        Self {
            servers,
            all: Candidates::of(rules, |_| true),
        }
    }

    /// The rules that can match a request for `server` and `method`, and what is left to check.
    fn lookup(&self, server: &str, method: &str) -> (&Candidates, Unchecked) {
        match self.servers.get(server) {
            Some(s) => match s.by_method.get(method) {
                Some(c) => (
                    c,
                    Unchecked {
                        server: false,
                        method: false,
                    },
                ),
                None => (
                    &s.other_methods,
                    Unchecked {
                        server: false,
                        method: true,
                    },
                ),
            },
            None => (
                &self.all,
                Unchecked {
                    server: true,
                    method: true,
                },
            ),
        }
    }
}

/// The CEL variables of one decision, given to CEL through a resolver: each is made on first
/// use (only those a condition reads), borrowing the request rather than copying it, and kept
/// for the decision's other conditions; no variable map is filled.
struct Variables<'a> {
    req: Request<'a>,
    values: [OnceLock<Box<dyn Val + 'a>>; CONDITION_VARIABLES.len()],
}

impl<'a> Variables<'a> {
    fn new(req: Request<'a>) -> Self {
        Self {
            req,
            values: Default::default(),
        }
    }

    /// The value of `v`, made on first use.
    fn value(&self, v: Var) -> &(dyn Val + 'a) {
        self.values[v as usize]
            .get_or_init(|| {
                let (req, id) = (&self.req, self.req.caller);
                let text = |v: Option<&'a str>| cel_str(v.unwrap_or_default());
                match v {
                    Var::Subject => text(id.subject.as_deref()),
                    Var::User => text(id.user.as_deref()),
                    Var::Email => text(id.email.as_deref()),
                    Var::ClientId => text(id.client_id.as_deref()),
                    Var::Groups => cel_list(&id.groups),
                    Var::Scopes => cel_list(&id.scopes),
                    Var::Server => cel_str(req.server),
                    Var::Method => cel_str(req.method),
                    Var::Name => cel_str(req.name.unwrap_or_default()),
                    Var::Arguments => match req.arguments {
                        Some(a @ Value::Object(_)) => cel_json(a),
                        _ => Box::new(CelMap::from(HashMap::new())),
                    },
                }
            })
            .as_ref()
    }
}

impl VariableResolver for Variables<'_> {
    fn resolve<'b>(&'b self, variable: &str) -> Option<CowVal<'b, 'b>> {
        Some(CowVal::Borrowed(self.value(Var::of(variable)?)))
    }
}

/// A list entry's variables: its `name`, the list's other variables.
struct EntryVariables<'v, 'a> {
    list: &'v Variables<'a>,
    name: &'v str,
}

impl VariableResolver for EntryVariables<'_, '_> {
    fn resolve<'b>(&'b self, variable: &str) -> Option<CowVal<'b, 'b>> {
        match Var::of(variable)? {
            Var::Name => Some(CowVal::Owned(cel_str(self.name))),
            v => Some(CowVal::Borrowed(self.list.value(v))),
        }
    }
}

fn cel_str(s: &str) -> Box<dyn Val + '_> {
    Box::new(CelString::from(s))
}

fn cel_list<'a>(items: &List<'a>) -> Box<dyn Val + 'a> {
    let items: Vec<Box<dyn Val + 'a>> = items
        .iter()
        .map(|item| -> Box<dyn Val + 'a> {
            match item {
                Cow::Borrowed(s) => cel_str(s),
                Cow::Owned(s) => Box::new(CelString::from(s)),
            }
        })
        .collect();
    Box::new(CelList::from(items))
}

/// A JSON value as CEL sees it, as `cel::to_value` converts it: non-negative integers are
/// `uint`, negative ones `int`, other numbers `double`.
fn cel_json(v: &Value) -> Box<dyn Val + '_> {
    match v {
        Value::Null => Box::new(CelNull),
        Value::Bool(b) => Box::new(CelBool::from(*b)),
        Value::Number(n) => match (n.as_u64(), n.as_i64()) {
            (Some(u), _) => Box::new(CelUInt::from(u)),
            (None, Some(i)) => Box::new(CelInt::from(i)),
            (None, None) => Box::new(CelDouble::from(n.as_f64().unwrap_or_default())),
        },
        Value::String(s) => cel_str(s),
        Value::Array(items) => {
            let items: Vec<Box<dyn Val + '_>> = items.iter().map(cel_json).collect();
            Box::new(CelList::from(items))
        }
        Value::Object(map) => {
            let map: HashMap<CelMapKey<'_>, Box<dyn Val + '_>> = map
                .iter()
                .map(|(k, v)| (CelMapKey::from(k.as_str()), cel_json(v)))
                .collect();
            Box::new(CelMap::from(map))
        }
    }
}

/// A server, compiled.
#[derive(Debug, Clone)]
struct Server {
    name: String,
    host: Option<String>,
    path_prefix: String,
}

impl Server {
    fn route(&self) -> Route<'_> {
        Route {
            host: self.host.as_deref(),
            path_prefix: &self.path_prefix,
        }
    }
}

/// A validated, compiled policy.
pub struct Policy {
    servers: Vec<Server>,
    rules: Vec<Rule>,
    /// Request limits.
    pub limits: Limits,
    /// Largest `*/list` response body the filter buffers.
    pub max_response_bytes: usize,
    /// Requests matching no server: refused or passed.
    pub other_paths: OtherPaths,
    /// The rules by server and method.
    index: RuleIndex,
    /// The rules by the target names they can match.
    names: NameIndex,
    /// The CEL standard environment, built once; each decision binds its variables in a
    /// context over it.
    cel_env: Arc<Env>,
    /// Results of conditions already evaluated.
    memo: ConditionMemo,
}

impl fmt::Debug for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Policy")
            .field("servers", &self.servers)
            .field("rules", &self.rules)
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

fn strings_in(
    items: Option<Vec<String>>,
    path: &str,
    errors: &mut Vec<String>,
) -> Option<BTreeSet<String>> {
    let items = items?;
    if items.is_empty() {
        errors.push(format!("{path}: must not be empty (omit it to match any)"));
    }
    Some(items.into_iter().collect())
}

fn globs_in(items: &[String], path: &str, errors: &mut Vec<String>) -> Vec<Glob> {
    if items.is_empty() {
        errors.push(format!("{path}: must not be empty (omit it to match any)"));
    }
    items
        .iter()
        .enumerate()
        .filter_map(|(i, p)| {
            if p.is_empty() {
                errors.push(format!("{path}[{i}]: must not be empty"));
                None
            } else {
                Some(Glob::new(p))
            }
        })
        .collect()
}

impl TryFrom<RawPolicy> for Policy {
    type Error = PolicyError;

    fn try_from(raw: RawPolicy) -> Result<Self, PolicyError> {
        let mut errors = Vec::new();
        if raw.servers.is_empty() {
            errors.push("servers: at least one server is required".to_owned());
        }
        let mut names = BTreeSet::new();
        for (i, s) in raw.servers.iter().enumerate() {
            if s.name.is_empty() || s.name.contains('*') {
                errors.push(format!(
                    "servers[{i}].name: must be non-empty and contain no `*`"
                ));
            }
            if !names.insert(s.name.as_str()) {
                errors.push(format!("servers[{i}].name: `{}` is defined twice", s.name));
            }
            if !s.path_prefix.starts_with('/') {
                errors.push(format!("servers[{i}].path_prefix: must start with `/`"));
            }
        }
        let servers: Vec<Server> = raw
            .servers
            .iter()
            .map(|s| Server {
                name: s.name.clone(),
                host: s.host.clone(),
                path_prefix: s.path_prefix.clone(),
            })
            .collect();
        for (i, s) in servers.iter().enumerate() {
            if servers[..i]
                .iter()
                .any(|o| route::same(o.route(), s.route()))
            {
                errors.push(format!(
                    "servers[{i}]: same host and path_prefix as an earlier server"
                ));
            }
        }
        let rules: Vec<Rule> = raw
            .rules
            .into_iter()
            .enumerate()
            .map(|(i, r)| compile_rule(i, r, &names, &mut errors))
            .collect();
        let l = &raw.limits;
        for (field, v) in [
            ("max_body_bytes", l.max_body_bytes),
            ("max_depth", l.max_depth),
            ("max_batch", l.max_batch),
            ("max_response_bytes", l.max_response_bytes),
        ] {
            if v == 0 {
                errors.push(format!("limits.{field}: must be positive"));
            }
        }
        if !errors.is_empty() {
            return Err(PolicyError(errors));
        }
        Ok(Self {
            index: RuleIndex::new(&servers, &rules),
            names: NameIndex::new(&rules),
            servers,
            rules,
            limits: Limits {
                max_body_bytes: l.max_body_bytes,
                max_depth: l.max_depth,
                max_batch: l.max_batch,
            },
            max_response_bytes: l.max_response_bytes,
            other_paths: raw.other_paths,
            cel_env: Arc::new(Env::stdlib()),
            memo: ConditionMemo::default(),
        })
    }
}

fn compile_rule(i: usize, r: RawRule, servers: &BTreeSet<&str>, errors: &mut Vec<String>) -> Rule {
    let at = format!("rules[{i}]");
    let server_globs = globs_in(&r.servers, &format!("{at}.servers"), errors);
    for (j, g) in server_globs.iter().enumerate() {
        if g.is_literal() && !servers.contains(r.servers[j].as_str()) {
            errors.push(format!(
                "{at}.servers[{j}]: no server is named `{}`",
                r.servers[j]
            ));
        }
    }
    let condition = r
        .condition
        .and_then(|source| match Program::compile(&source) {
            Ok(program) => {
                let refs = program.references();
                let mut variables = 0;
                for v in refs.variables() {
                    match Var::of(v) {
                        Some(var) => variables |= var.bit(),
                        None => errors.push(format!("{at}.condition: unknown variable `{v}`")),
                    }
                }
                Some(Condition {
                    source,
                    program,
                    variables,
                })
            }
            Err(e) => {
                errors.push(format!("{at}.condition: {e}"));
                None
            }
        });
    let names = r
        .names
        .as_deref()
        .map(|n| globs_in(n, &format!("{at}.names"), errors));
    let w = r.when;
    Rule {
        name: r.name.unwrap_or_else(|| at.clone()),
        effect: r.effect,
        methods: globs_in(&r.methods, &format!("{at}.methods"), errors),
        name_starts: name_starts(names.as_deref()),
        names,
        servers: server_globs,
        subjects: strings_in(w.subjects, &format!("{at}.when.subjects"), errors),
        users: strings_in(w.users, &format!("{at}.when.users"), errors),
        groups: strings_in(w.groups, &format!("{at}.when.groups"), errors),
        scopes: strings_in(w.scopes, &format!("{at}.when.scopes"), errors)
            .map(|s| s.into_iter().collect())
            .unwrap_or_default(),
        client_ids: strings_in(w.client_ids, &format!("{at}.when.client_ids"), errors),
        condition,
        anonymous: r.anonymous,
    }
}

impl Policy {
    /// Parses and validates a JSON policy.
    pub fn from_json(json: &[u8]) -> Result<Self, PolicyError> {
        let raw: RawPolicy =
            serde_json::from_slice(json).map_err(|e| PolicyError(vec![format!("policy: {e}")]))?;
        Self::try_from(raw)
    }

    /// The server a request is for: the host must match (if the server names one) and the
    /// longest matching path prefix wins.
    pub fn server_for(&self, host: Option<&str>, path: &str) -> Option<&str> {
        self.server_index(host, path)
            .and_then(|i| self.server_name(i))
    }

    /// [`Policy::server_for`] as the server's place in the policy, for a caller that keeps it
    /// ([`Policy::server_name`] reads the name).
    pub fn server_index(&self, host: Option<&str>, path: &str) -> Option<usize> {
        route::find(self.servers.iter().map(Server::route), host, path)
    }

    /// The name of the server at place `i` ([`Policy::server_index`]).
    pub fn server_name(&self, i: usize) -> Option<&str> {
        self.servers.get(i).map(|s| s.name.as_str())
    }

    /// Whether a request for `server` ([`Policy::server_for`]) is outside every server and
    /// configured to pass unchecked ([`OtherPaths::Pass`]).
    pub fn passes_unchecked(&self, server: Option<&str>) -> bool {
        self.other_paths == OtherPaths::Pass && server.is_none()
    }

    /// The name of rule `i` (for logs, stats and the access log).
    pub fn rule_name(&self, i: usize) -> &str {
        self.rules.get(i).map_or("", |r| r.name.as_str())
    }

    /// The number of rules.
    pub fn rule_count(&self) -> usize {
        self.rules.len()
    }

    /// Decides one request: a matching deny rule wins, then any matching allow rule; otherwise
    /// deny. A condition that fails to evaluate to a boolean counts as matching for a deny rule
    /// and as not matching for an allow rule (fail closed).
    pub fn evaluate(&self, req: &Request<'_>) -> Decision {
        let (candidates, unchecked) = self.index.lookup(req.server, req.method);
        let named = self.names.row(req.name);
        let mut vars = None;
        decide(candidates, named, |i: usize| {
            self.rules[i].matches_fields(req, unchecked) && self.condition_holds(i, req, &mut vars)
        })
    }

    /// Whether a rule's condition (if any) counts as matching (fail closed, see
    /// [`Policy::evaluate`]); the variables are bound on first use.
    fn condition_holds<'a>(
        &self,
        i: usize,
        req: &Request<'a>,
        vars: &mut Option<Variables<'a>>,
    ) -> bool {
        let rule = &self.rules[i];
        let Some(c) = &rule.condition else {
            return true;
        };
        // Conditions over `arguments` are not kept (the key would be the whole argument tree).
        let kept = c.variables & Var::Arguments.bit() == 0;
        if kept && let Some(known) = self.memo.get(i, c.variables, req) {
            return known;
        }
        let vars = vars.get_or_insert_with(|| Variables::new(*req));
        let result = outcome(&self.cel_env, rule, c, vars);
        if kept {
            self.memo.put(i, c.variables, req, result);
        }
        result
    }

    /// The `*/list` entries `caller` may see on `server`, for filtering one list response:
    /// the rules are narrowed to this caller once, not per entry.
    pub fn list_view<'a>(
        &'a self,
        caller: &'a Caller<'a>,
        server: &'a str,
        kind: ListKind,
    ) -> ListView<'a> {
        let method = kind.entry_method();
        let (candidates, unchecked) = self.index.lookup(server, method);
        let probe = Request {
            caller,
            server,
            method,
            name: None,
            arguments: None,
        };
        let groups: Vec<Cow<'_, str>> = caller.groups.iter().collect();
        let scopes: Vec<Cow<'_, str>> = caller.scopes.iter().collect();
        let narrow = |ids: &[usize]| -> Vec<usize> {
            ids.iter()
                .copied()
                .filter(|&i| {
                    let r = &self.rules[i];
                    (!unchecked.server || any_match(&r.servers, server))
                        && (!unchecked.method || any_match(&r.methods, method))
                        && r.matches_split_caller(caller, &groups, &scopes)
                })
                .collect()
        };
        let candidates = (narrow(&candidates.deny), narrow(&candidates.allow));
        ListView {
            policy: self,
            probe,
            memo: vec![None; self.rules.len()],
            candidates,
            vars: None,
        }
    }
}

/// The most condition results [`ConditionMemo`] keeps; it starts over when full.
const MEMO_ENTRIES: usize = 1024;

/// Condition results by rule and the values of the variables the condition reads. A condition
/// is a pure function of them (CEL has no clock, no randomness, no I/O), so a question asked
/// again, typically the same caller calling again, is answered without running CEL. Callers
/// keep conditions that read `arguments` out of it.
#[derive(Debug, Default)]
struct ConditionMemo(Mutex<MemoState>);

#[derive(Debug, Default)]
struct MemoState {
    results: HashMap<Vec<u8>, bool, Fold>,
    /// The key being looked up, built here so a lookup allocates nothing.
    key: Vec<u8>,
}

impl ConditionMemo {
    /// The known result of rule `i`'s condition (reading `variables`) for `req`.
    fn get(&self, i: usize, variables: u16, req: &Request<'_>) -> Option<bool> {
        let mut memo = self.0.lock().ok()?;
        let MemoState { results, key } = &mut *memo;
        write_memo_key(key, i, variables, req);
        results.get(key.as_slice()).copied()
    }

    fn put(&self, i: usize, variables: u16, req: &Request<'_>, result: bool) {
        if let Ok(mut memo) = self.0.lock() {
            let MemoState { results, key } = &mut *memo;
            if results.len() >= MEMO_ENTRIES {
                results.clear();
            }
            write_memo_key(key, i, variables, req);
            results.insert(key.clone(), result);
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.0.lock().map_or(0, |m| m.results.len())
    }
}

/// Writes the [`ConditionMemo`] key of rule `i`'s condition for `req` into `key`: the rule, then
/// the text of each variable the condition reads (length-prefixed, so distinct values give
/// distinct keys).
fn write_memo_key(key: &mut Vec<u8>, i: usize, variables: u16, req: &Request<'_>) {
    let push = |key: &mut Vec<u8>, s: &str| {
        key.extend_from_slice(&s.len().to_le_bytes());
        key.extend_from_slice(s.as_bytes());
    };
    key.clear();
    key.extend_from_slice(&i.to_le_bytes());
    let id = req.caller;
    for v in Var::ALL {
        if variables & v.bit() == 0 {
            continue;
        }
        let single = match v {
            Var::Subject => id.subject.as_deref(),
            Var::User => id.user.as_deref(),
            Var::Email => id.email.as_deref(),
            Var::ClientId => id.client_id.as_deref(),
            Var::Server => Some(req.server),
            Var::Method => Some(req.method),
            // A list as written: the same text is the same list (a list written another way
            // only misses the memory).
            Var::Groups => Some(id.groups.raw),
            Var::Scopes => Some(id.scopes.raw),
            Var::Name | Var::Arguments => req.name,
        };
        push(key, single.unwrap_or_default());
    }
}

/// Runs a rule's condition over bound variables: `true` counts as matching, and so does
/// anything but a boolean for a deny rule (fail closed).
fn outcome(env: &Arc<Env>, rule: &Rule, c: &Condition, vars: &dyn VariableResolver) -> bool {
    let mut ctx = Context::with_env(Arc::clone(env));
    ctx.set_variable_resolver(vars);
    match c.program.execute(&ctx) {
        Ok(CelValue::Bool(b)) => b,
        _ => rule.effect == Effect::Deny,
    }
}

/// A decision over `candidates`: the first deny rule that `holds` wins, then the first allow
/// rule; otherwise deny. The same answer as walking every rule in policy order.
fn decide(
    candidates: &Candidates,
    named: &[u64],
    mut holds: impl FnMut(usize) -> bool,
) -> Decision {
    if let Some(i) = first_holding(&candidates.deny_bits, named, &mut holds) {
        return Decision {
            allowed: false,
            rule: Some(i),
        };
    }
    let allow = first_holding(&candidates.allow_bits, named, &mut holds);
    Decision {
        allowed: allow.is_some(),
        rule: allow,
    }
}

/// The first rule in both bit sets, in policy order, that `holds`.
fn first_holding(
    set: &[u64],
    named: &[u64],
    holds: &mut impl FnMut(usize) -> bool,
) -> Option<usize> {
    for (k, (&a, &b)) in set.iter().zip(named).enumerate() {
        let mut word = a & b;
        while word != 0 {
            let i = k * 64 + word.trailing_zeros() as usize;
            if holds(i) {
                return Some(i);
            }
            word &= word - 1;
        }
    }
    None
}

/// [`Policy::may_see`] for the entries of one list response (see [`Policy::list_view`]). A
/// condition that does not read `name` has the same result for every entry, so it runs once;
/// deny rules are only looked at for entries an allow rule shows.
#[derive(Debug)]
pub struct ListView<'a> {
    policy: &'a Policy,
    /// The question, `name` aside.
    probe: Request<'a>,
    /// The deny and the allow rules that match the caller, server and method.
    candidates: (Vec<usize>, Vec<usize>),
    /// Per rule: the result of a condition that does not read `name`, once known.
    memo: Vec<Option<bool>>,
    /// The CEL variables, kept from entry to entry (`name` is each entry's).
    vars: Option<Variables<'a>>,
}

impl fmt::Debug for Variables<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let made: Vec<&str> = CONDITION_VARIABLES
            .iter()
            .zip(&self.values)
            .filter(|(_, v)| v.get().is_some())
            .map(|(n, _)| *n)
            .collect();
        f.debug_struct("Variables")
            .field("made", &made)
            .finish_non_exhaustive()
    }
}

impl ListView<'_> {
    /// Whether the caller may see the entry `name`: the same answer as [`Policy::may_see`].
    pub fn may_see(&mut self, name: &str) -> bool {
        let Self {
            policy,
            probe,
            candidates,
            memo,
            vars,
        } = self;
        let name_bit = Var::Name.bit();
        let mut holds = |i: usize| {
            let rule = &policy.rules[i];
            if !rule.matches_name(Some(name)) {
                return false;
            }
            let Some(c) = &rule.condition else {
                return true;
            };
            if c.variables & name_bit == 0
                && let Some(known) = memo[i]
            {
                return known;
            }
            let list = vars.get_or_insert_with(|| Variables::new(*probe));
            let entry = EntryVariables { list, name };
            let result = outcome(&policy.cel_env, rule, c, &entry);
            if c.variables & name_bit == 0 {
                memo[i] = Some(result);
            }
            result
        };
        // Only the answer counts here, not which rule gave it: an entry no allow rule matches
        // is hidden whatever the deny rules say, so they (and their conditions) are skipped.
        let (deny, allow) = candidates;
        allow.iter().any(|&i| holds(i)) && !deny.iter().any(|&i| holds(i))
    }
}

/// One HTTP request as the policy filter sees it (after the JWT filter).
#[derive(Debug, Clone, Copy)]
pub struct HttpRequest<'a> {
    /// The server `:authority` and `:path` are for ([`Policy::server_for`]).
    pub server: Option<&'a str>,
    /// `:method`.
    pub http_method: &'a str,
    /// The MCP headers.
    pub mcp: &'a McpHeaders<'a>,
    /// The caller.
    pub caller: &'a Caller<'a>,
    /// The request body (empty for GET and DELETE).
    pub body: &'a [u8],
}

/// Why a request was refused; also the suffix of the filter's counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The policy denied it (403).
    Denied,
    /// No configured server matches host and path (403).
    UnknownServer,
    /// `Mcp-Method` / `Mcp-Name` disagree with the body (400, -32020).
    HeaderMismatch,
    /// The body is not an acceptable JSON-RPC message (400).
    Invalid,
    /// The body is over the size limit (413).
    TooLarge,
    /// An identity header is not one the JWT filter writes ([`MalformedIdentity`], 403).
    BadIdentity,
}

impl Refusal {
    /// The stat / access-log name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Denied => "denied",
            Self::UnknownServer => "unknown_server",
            Self::HeaderMismatch => "header_mismatch",
            Self::Invalid => "invalid",
            Self::TooLarge => "too_large",
            Self::BadIdentity => "bad_identity",
        }
    }
}

/// The policy filter's answer to one HTTP request, borrowing the policy and the request.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome<'a> {
    /// The matched server's name.
    pub server: Option<&'a str>,
    /// The (first) MCP method, or `http:<METHOD>` for a request without a body.
    pub method: Cow<'a, str>,
    /// The (first) target name.
    pub name: Option<Cow<'a, str>>,
    /// The deciding rule's name (the denying one, or the allowing one of the first message).
    pub rule: Option<&'a str>,
    /// `None`: pass the request on. Otherwise refuse it with this response.
    pub refusal: Option<(Refusal, u32, Vec<u8>)>,
    /// `*/list` requests whose responses must be filtered.
    pub pending_lists: Vec<PendingList>,
}

impl Outcome<'_> {
    fn refuse_unparsable(self, e: &mcp::ParseError) -> Self {
        let why = if e.http_status() == 413 {
            Refusal::TooLarge
        } else {
            Refusal::Invalid
        };
        self.refuse(why, e.http_status(), None, e.rpc_code(), &e.to_string())
    }

    /// Refuses with a single JSON-RPC error.
    fn refuse(self, why: Refusal, status: u32, id: Option<&Value>, code: i64, msg: &str) -> Self {
        let mut body = Vec::with_capacity(96);
        mcp::write_error_response(&mut body, id, code, msg);
        self.refuse_with(why, status, body)
    }

    fn refuse_with(mut self, why: Refusal, status: u32, body: Vec<u8>) -> Self {
        self.refusal = Some((why, status, body));
        self
    }
}

impl Policy {
    /// Decides a whole HTTP request: server, headers against body, every message of a batch
    /// (one denied member refuses the batch, each member with an `id` gets an error).
    pub fn authorize<'a>(&'a self, req: &HttpRequest<'a>) -> Outcome<'a> {
        let bodiless = !mcp::carries_messages(req.http_method);
        let mut out = Self::outcome_for(req.server, req.http_method);
        let body = if bodiless {
            None
        } else {
            match mcp::parse_body(req.body, &self.limits) {
                Ok(b) => Some(b),
                Err(e) => return out.refuse_unparsable(&e),
            }
        };
        if let Some(first) = body.as_ref().and_then(|b| b.messages().first()) {
            out.method = first.method.clone().unwrap_or(Cow::Borrowed("response"));
            out.name = first.name.clone();
        }
        if let Some(b) = &body
            && let Err(e) = req.mcp.check(b)
        {
            let id = match b {
                Body::Single(m) => m.id.as_ref(),
                Body::Batch(_) => None,
            };
            return out.refuse(
                Refusal::HeaderMismatch,
                400,
                id,
                mcp::HEADER_MISMATCH,
                &e.to_string(),
            );
        }
        let Some(server) = out.server else {
            return out.refuse(
                Refusal::UnknownServer,
                403,
                None,
                mcp::FORBIDDEN,
                FORBIDDEN_MESSAGE,
            );
        };
        let ask = |method: &str, name: Option<&str>, arguments: Option<&Value>| {
            self.evaluate(&Request {
                caller: req.caller,
                server,
                method,
                name,
                arguments,
            })
        };
        let Some(body) = body else {
            let d = ask(&out.method, None, None);
            out.rule = d.rule.map(|i| self.rule_name(i));
            if !d.allowed {
                return out.refuse(
                    Refusal::Denied,
                    403,
                    None,
                    mcp::FORBIDDEN,
                    FORBIDDEN_MESSAGE,
                );
            }
            return out;
        };
        let mut denied = None;
        // Every decision is kept only for a batch (its refusal answers each member).
        let (mut first, mut decisions) = (None, Vec::new());
        for m in body.messages() {
            let method = m.method.as_deref().unwrap_or("response");
            let d = ask(method, m.name.as_deref(), m.arguments.as_ref());
            if !d.allowed && denied.is_none() {
                denied = Some(d);
            }
            first.get_or_insert(d);
            if matches!(body, Body::Batch(_)) {
                decisions.push(d);
            }
        }
        let first = denied.or(first);
        out.rule = first.and_then(|d| d.rule).map(|i| self.rule_name(i));
        if denied.is_some() {
            let id = match &body {
                Body::Single(m) => m.id.as_ref(),
                Body::Batch(ms) => {
                    let mut errors = Vec::with_capacity(96 * ms.len());
                    for (m, d) in ms.iter().zip(&decisions) {
                        if m.kind != Kind::Request {
                            continue;
                        }
                        let msg = if d.allowed {
                            BATCH_REFUSED_MESSAGE
                        } else {
                            FORBIDDEN_MESSAGE
                        };
                        errors.push(if errors.is_empty() { b'[' } else { b',' });
                        mcp::write_error_response(&mut errors, m.id.as_ref(), mcp::FORBIDDEN, msg);
                    }
                    if !errors.is_empty() {
                        errors.push(b']');
                        return out.refuse_with(Refusal::Denied, 403, errors);
                    }
                    None
                }
            };
            return out.refuse(Refusal::Denied, 403, id, mcp::FORBIDDEN, FORBIDDEN_MESSAGE);
        }
        out.pending_lists = body
            .messages()
            .iter()
            .filter_map(|m| {
                let kind = ListKind::of_method(m.method.as_deref()?)?;
                Some(PendingList {
                    id: m.id.clone()?,
                    kind,
                })
            })
            .collect();
        out
    }

    /// Refuses a request whose declared body size (`Content-Length`) is over the limit, before
    /// its body is read (413).
    /// `server` is the request's ([`Policy::server_for`]).
    pub fn refuse_oversized<'a>(&self, server: Option<&'a str>, http_method: &str) -> Outcome<'a> {
        Self::outcome_for(server, http_method)
            .refuse_unparsable(&mcp::ParseError::TooLarge(self.limits.max_body_bytes))
    }

    /// Refuses a request whose identity headers do not decode (fail closed, 403).
    /// `server` is the request's ([`Policy::server_for`]).
    pub fn refuse_malformed<'a>(
        &self,
        server: Option<&'a str>,
        http_method: &str,
        e: MalformedIdentity,
    ) -> Outcome<'a> {
        Self::outcome_for(server, http_method).refuse(
            Refusal::BadIdentity,
            403,
            None,
            mcp::FORBIDDEN,
            &e.to_string(),
        )
    }

    fn outcome_for<'a>(server: Option<&'a str>, http_method: &str) -> Outcome<'a> {
        Outcome {
            server,
            method: http_method_name(http_method),
            name: None,
            rule: None,
            refusal: None,
            pending_lists: Vec::new(),
        }
    }

    /// Whether a caller may see one `*/list` entry: the same question as calling it.
    pub fn may_see(&self, caller: &Caller<'_>, server: &str, kind: ListKind, name: &str) -> bool {
        self.evaluate(&Request {
            caller,
            server,
            method: kind.entry_method(),
            name: Some(name),
            arguments: None,
        })
        .allowed
    }
}

/// `http:<METHOD>`, the method of a request without a body; the usual ones are not built.
fn http_method_name(http_method: &str) -> Cow<'static, str> {
    const KNOWN: [&str; 7] = [
        "http:GET",
        "http:POST",
        "http:DELETE",
        "http:PUT",
        "http:PATCH",
        "http:HEAD",
        "http:OPTIONS",
    ];
    match KNOWN
        .iter()
        .find(|k| k["http:".len()..].eq_ignore_ascii_case(http_method))
    {
        Some(k) => Cow::Borrowed(k),
        None => Cow::Owned(format!("http:{}", http_method.to_ascii_uppercase())),
    }
}

/// The request header the filter sets to the matched server's name, for Envoy's router (one
/// Envoy can route many MCP servers by it) and for the upstream.
pub const SERVER_HEADER: &str = "x-mcpgw-server";

/// The error message of a denial: it names nothing (not the rule, not what would be allowed).
pub const FORBIDDEN_MESSAGE: &str = "forbidden by policy";
/// The error message for the allowed members of a batch that another member got refused.
pub const BATCH_REFUSED_MESSAGE: &str = "batch refused: another message in it is forbidden";

#[cfg(test)]
#[path = "policy_tests.rs"]
mod tests;
