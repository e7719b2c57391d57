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

mod caller;
mod conditions;
mod config;
mod http;
mod lists;
mod rules;

pub use self::caller::*;
use self::conditions::*;
pub use self::config::*;
pub use self::http::*;
pub use self::lists::*;
use self::rules::*;

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

#[cfg(test)]
mod tests;
