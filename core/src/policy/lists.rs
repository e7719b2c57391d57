//! `*/list` responses: which entries a caller may see.

use super::*;

/// [`Policy::may_see`] for the entries of one list response (see [`Policy::list_view`]). A
/// condition that does not read `name` has the same result for every entry, so it runs once;
/// deny rules are only looked at for entries an allow rule shows.
#[derive(Debug)]
pub struct ListView<'a> {
    pub(super) policy: &'a Policy,
    /// The question, `name` aside.
    pub(super) probe: Request<'a>,
    /// The deny and the allow rules that match the caller, server and method.
    pub(super) candidates: (Vec<usize>, Vec<usize>),
    /// Per rule: the result of a condition that does not read `name`, once known.
    pub(super) memo: Vec<Option<bool>>,
    /// The CEL variables, kept from entry to entry (`name` is each entry's).
    pub(super) vars: Option<Variables<'a>>,
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
