//! Compiled rules and the indexes a decision walks: globs, the first-byte name index, the
//! candidate rules per server and method as bit sets.

use super::*;

/// A `*` glob, compiled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Glob(Vec<String>);

impl Glob {
    pub(super) fn new(pattern: &str) -> Self {
        Self(pattern.split('*').map(str::to_owned).collect())
    }

    pub(super) fn is_literal(&self) -> bool {
        self.0.len() == 1
    }

    pub(super) fn matches(&self, s: &str) -> bool {
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
pub(super) fn name_starts(globs: Option<&[Glob]>) -> [u64; 4] {
    let mut bits = [0u64; 4];
    for g in globs.unwrap_or_default() {
        match g.0.first().and_then(|p| p.as_bytes().first()) {
            Some(&b) => bits[usize::from(b) / 64] |= 1 << (b % 64),
            None => bits = [u64::MAX; 4],
        }
    }
    bits
}

pub(super) fn any_match(globs: &[Glob], s: &str) -> bool {
    globs.iter().any(|g| g.matches(s))
}

pub(super) struct Condition {
    pub(super) source: String,
    pub(super) program: Program,
    /// The variables the program reads: bit `i` is [`CONDITION_VARIABLES`]`[i]`.
    pub(super) variables: u16,
}

/// [`CONDITION_VARIABLES`] by name, in bit order ([`Condition::variables`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Var {
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
    pub(super) const ALL: [Var; 10] = [
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

    pub(super) fn bit(self) -> u16 {
        1 << self as u16
    }

    /// The variable named `name` ([`CONDITION_VARIABLES`]); `None` for any other name.
    pub(super) fn of(name: &str) -> Option<Var> {
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
pub(super) struct Rule {
    pub(super) name: String,
    pub(super) effect: Effect,
    pub(super) servers: Vec<Glob>,
    pub(super) methods: Vec<Glob>,
    pub(super) names: Option<Vec<Glob>>,
    /// The bytes a name `names` can match may start with (bit per byte value); all set when a
    /// pattern starts with `*`. A cheap first test before the globs.
    pub(super) name_starts: [u64; 4],
    pub(super) subjects: Option<BTreeSet<String>>,
    pub(super) users: Option<BTreeSet<String>>,
    pub(super) groups: Option<BTreeSet<String>>,
    pub(super) scopes: Vec<String>,
    pub(super) client_ids: Option<BTreeSet<String>>,
    pub(super) condition: Option<Condition>,
    pub(super) anonymous: bool,
}

pub(super) fn in_set(set: &Option<BTreeSet<String>>, v: Option<&str>) -> bool {
    set.as_ref()
        .is_none_or(|s| v.is_some_and(|v| s.contains(v)))
}

/// What an index lookup left to check at decision time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Unchecked {
    /// The rule's `servers` (the server is not a configured one).
    pub(super) server: bool,
    /// The rule's `methods` (the method is not one any rule names literally).
    pub(super) method: bool,
}

impl Rule {
    /// Whether the caller-only fields match: identity required, subjects, users, client ids,
    /// groups, scopes.
    pub(super) fn matches_caller(&self, id: &Caller<'_>) -> bool {
        self.matches_identity(id)
            && self
                .groups
                .as_ref()
                .is_none_or(|g| id.groups.iter().any(|x| g.contains(x.as_ref())))
            && self.scopes.iter().all(|s| id.scopes.contains(s))
    }

    /// [`Rule::matches_caller`] with the caller's groups and scopes already split, for a
    /// caller that many rules are matched against.
    pub(super) fn matches_split_caller(
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
    pub(super) fn matches_identity(&self, id: &Caller<'_>) -> bool {
        (self.anonymous || id.subject.is_some())
            && in_set(&self.subjects, id.subject.as_deref())
            && in_set(&self.users, id.user.as_deref())
            && in_set(&self.client_ids, id.client_id.as_deref())
    }

    /// Whether `names` matches the request's target.
    pub(super) fn matches_name(&self, name: Option<&str>) -> bool {
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
    pub(super) fn matches_fields(&self, req: &Request<'_>, unchecked: Unchecked) -> bool {
        (!unchecked.server || any_match(&self.servers, req.server))
            && (!unchecked.method || any_match(&self.methods, req.method))
            && self.matches_name(req.name)
            && self.matches_caller(req.caller)
    }
}

/// Per target name: the rules whose `names` can match it, a bit per rule, by the name's first
/// byte ([`Rule::name_starts`]). A decision tests a rule's bit before its fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct NameIndex {
    /// Words per row.
    pub(super) words: usize,
    /// Rows 0 to 255: names starting with that byte; [`NameIndex::UNNAMED`]: no name;
    /// [`NameIndex::EMPTY`]: the empty name.
    pub(super) rows: Vec<u64>,
}

impl NameIndex {
    const UNNAMED: usize = 256;
    const EMPTY: usize = 257;

    pub(super) fn new(rules: &[Rule]) -> Self {
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
    pub(super) fn row(&self, name: Option<&str>) -> &[u64] {
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
pub(super) struct Candidates {
    pub(super) deny: Vec<usize>,
    pub(super) allow: Vec<usize>,
    pub(super) deny_bits: Vec<u64>,
    pub(super) allow_bits: Vec<u64>,
}

impl Candidates {
    pub(super) fn of(rules: &[Rule], keep: impl Fn(&Rule) -> bool) -> Self {
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
    pub(super) fn new(deny: Vec<usize>, allow: Vec<usize>, rules: usize) -> Self {
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
pub(super) fn words_for(rules: usize) -> usize {
    rules.div_ceil(64).max(1)
}

/// The rules of one configured server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct ServerRules {
    /// For each method some rule names literally: the rules whose `servers` and `methods`
    /// match (both checked here, once).
    pub(super) by_method: BTreeMap<String, Candidates>,
    /// For any other method: the rules whose `servers` match and whose `methods` hold a glob
    /// (a rule with literal methods only cannot match it); `methods` is checked per request.
    pub(super) other_methods: Candidates,
}

/// The rules pre-sorted by server and method when the policy loads, so a decision only looks
/// at the rules that can match it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct RuleIndex {
    /// Server name → its rules.
    pub(super) servers: BTreeMap<String, ServerRules>,
    /// Every rule, for a server that is not configured (only [`Policy::evaluate`] callers can
    /// ask about one).
    pub(super) all: Candidates,
}

impl RuleIndex {
    pub(super) fn new(servers: &[Server], rules: &[Rule]) -> Self {
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
    pub(super) fn lookup(&self, server: &str, method: &str) -> (&Candidates, Unchecked) {
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
