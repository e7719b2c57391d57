//! CEL conditions: the variables a condition reads, made on first use, and the memory of
//! condition results.

use super::*;

/// The CEL variables of one decision, given to CEL through a resolver: each is made on first
/// use (only those a condition reads), borrowing the request rather than copying it, and kept
/// for the decision's other conditions; no variable map is filled.
pub(super) struct Variables<'a> {
    pub(super) req: Request<'a>,
    pub(super) values: [OnceLock<Box<dyn Val + 'a>>; CONDITION_VARIABLES.len()],
}

impl<'a> Variables<'a> {
    pub(super) fn new(req: Request<'a>) -> Self {
        Self {
            req,
            values: Default::default(),
        }
    }

    /// The value of `v`, made on first use.
    pub(super) fn value(&self, v: Var) -> &(dyn Val + 'a) {
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
pub(super) struct EntryVariables<'v, 'a> {
    pub(super) list: &'v Variables<'a>,
    pub(super) name: &'v str,
}

impl VariableResolver for EntryVariables<'_, '_> {
    fn resolve<'b>(&'b self, variable: &str) -> Option<CowVal<'b, 'b>> {
        match Var::of(variable)? {
            Var::Name => Some(CowVal::Owned(cel_str(self.name))),
            v => Some(CowVal::Borrowed(self.list.value(v))),
        }
    }
}

pub(super) fn cel_str(s: &str) -> Box<dyn Val + '_> {
    Box::new(CelString::from(s))
}

pub(super) fn cel_list<'a>(items: &List<'a>) -> Box<dyn Val + 'a> {
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
pub(super) fn cel_json(v: &Value) -> Box<dyn Val + '_> {
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

/// The most condition results [`ConditionMemo`] keeps; it starts over when full.
pub(super) const MEMO_ENTRIES: usize = 1024;

/// Condition results by rule and the values of the variables the condition reads. A condition
/// is a pure function of them (CEL has no clock, no randomness, no I/O), so a question asked
/// again, typically the same caller calling again, is answered without running CEL. Callers
/// keep conditions that read `arguments` out of it.
#[derive(Debug, Default)]
pub(super) struct ConditionMemo(Mutex<MemoState>);

#[derive(Debug, Default)]
pub(super) struct MemoState {
    pub(super) results: HashMap<Vec<u8>, bool, Fold>,
    /// The key being looked up, built here so a lookup allocates nothing.
    pub(super) key: Vec<u8>,
}

impl ConditionMemo {
    /// The known result of rule `i`'s condition (reading `variables`) for `req`.
    pub(super) fn get(&self, i: usize, variables: u16, req: &Request<'_>) -> Option<bool> {
        let mut memo = self.0.lock().ok()?;
        let MemoState { results, key } = &mut *memo;
        write_memo_key(key, i, variables, req);
        results.get(key.as_slice()).copied()
    }

    pub(super) fn put(&self, i: usize, variables: u16, req: &Request<'_>, result: bool) {
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
    pub(super) fn len(&self) -> usize {
        self.0.lock().map_or(0, |m| m.results.len())
    }
}

/// Writes the [`ConditionMemo`] key of rule `i`'s condition for `req` into `key`: the rule, then
/// the text of each variable the condition reads (length-prefixed, so distinct values give
/// distinct keys).
pub(super) fn write_memo_key(key: &mut Vec<u8>, i: usize, variables: u16, req: &Request<'_>) {
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
pub(super) fn outcome(
    env: &Arc<Env>,
    rule: &Rule,
    c: &Condition,
    vars: &dyn VariableResolver,
) -> bool {
    let mut ctx = Context::with_env(Arc::clone(env));
    ctx.set_variable_resolver(vars);
    match c.program.execute(&ctx) {
        Ok(CelValue::Bool(b)) => b,
        _ => rule.effect == Effect::Deny,
    }
}

/// A decision over `candidates`: the first deny rule that `holds` wins, then the first allow
/// rule; otherwise deny. The same answer as walking every rule in policy order.
pub(super) fn decide(
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
pub(super) fn first_holding(
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
