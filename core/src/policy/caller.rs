//! Who is calling: the identity headers the JWT filter set, decoded exactly.

use super::*;

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

    /// The caller an identity makes: the values the JWT filter forwards for it
    /// ([`identity::Identity::headers`], encoded exactly), read as the policy filter reads them,
    /// so that a shell holding the identity itself (the sidecar's `/verify`) asks the policy
    /// exactly what the policy filter asks behind the JWT filter.
    pub fn from_identity(
        forwarded: &'a [(&'static str, Cow<'a, str>)],
    ) -> Result<Self, MalformedIdentity> {
        Self::from_headers(|name| {
            forwarded
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| v.as_ref())
        })
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
    pub(super) raw: &'a str,
    pub(super) separator: u8,
    /// No item holds an escape (the usual list): items are borrowed as they stand.
    plain: bool,
}

impl<'a> List<'a> {
    /// The list in `raw`, items separated by `separator` (ASCII); `None` if an item is not a
    /// value [`identity::encode`] writes.
    pub fn new(raw: &'a str, separator: u8) -> Option<Self> {
        let plain = identity::is_plain(raw, Some(separator));
        let list = Self {
            raw,
            separator,
            plain,
        };
        (plain
            || list
                .raw_items()
                .all(|item| identity::decode(item).is_some()))
        .then_some(list)
    }

    /// The items as written, split at each separator byte (an ASCII separator splits only at
    /// char boundaries; a byte search is cheaper than `str::split` in the filter).
    pub(super) fn raw_items(&self) -> impl Iterator<Item = &'a str> + use<'a> {
        let separator = self.separator;
        let mut rest = (!self.raw.is_empty()).then_some(self.raw);
        std::iter::from_fn(move || {
            let text = rest?;
            let (item, tail) = match text.bytes().position(|b| b == separator) {
                Some(i) => (text.get(..i)?, text.get(i + 1..)),
                None => (text, None),
            };
            rest = tail;
            Some(item)
        })
    }

    /// The items, in order.
    pub fn iter(&self) -> impl Iterator<Item = Cow<'a, str>> + use<'a> {
        let plain = self.plain;
        // `new` checked that every item decodes.
        self.raw_items().filter_map(move |item| {
            if plain {
                Some(Cow::Borrowed(item))
            } else {
                identity::decode(item)
            }
        })
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
