//! The MCP request model: JSON-RPC 2.0 messages (request, notification, response, batch) as MCP
//! clients send them over streamable HTTP, parsed with size, depth and batch limits, plus the MCP
//! headers (`Mcp-Method`, `Mcp-Name`, `MCP-Protocol-Version`) and their required match against the
//! body (MCP 2026-07-28: an intermediary MUST reject a mismatch with 400 / `HeaderMismatch`).
//!
//! It also rewrites `*/list` responses (JSON bodies and SSE streams) so a caller only sees the
//! entries a predicate keeps. Authorization itself lives in [`crate::policy`].

use std::borrow::Cow;
use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

/// JSON-RPC 2.0 parse error.
pub const PARSE_ERROR: i64 = -32700;
/// JSON-RPC 2.0 invalid request.
pub const INVALID_REQUEST: i64 = -32600;
/// MCP 2026-07-28 `HeaderMismatch`: `Mcp-Method` / `Mcp-Name` disagree with the body.
pub const HEADER_MISMATCH: i64 = -32020;
/// JSON-RPC "invalid params": a resource URI the gateway will not read another way.
pub const INVALID_PARAMS: i64 = -32602;
/// mcpgw: the policy denied the call (JSON-RPC leaves -32000..-32099 to implementations).
pub const FORBIDDEN: i64 = -32003;
/// JSON-RPC 2.0 internal error.
pub const INTERNAL_ERROR: i64 = -32603;

/// The first MCP revision whose requests carry the required `Mcp-Method` / `Mcp-Name` headers.
pub const STATELESS_REVISION: &str = "2026-07-28";

/// Bounds on what a client may send; everything beyond them is refused before parsing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest request body in bytes (413 beyond it).
    pub max_body_bytes: usize,
    /// Deepest nesting of JSON arrays and objects.
    pub max_depth: usize,
    /// Most messages in one JSON-RPC batch.
    pub max_batch: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_body_bytes: 1 << 20,
            max_depth: 64,
            max_batch: 32,
        }
    }
}

/// Why a body is not an acceptable JSON-RPC message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// The body is larger than [`Limits::max_body_bytes`].
    #[error("request body is larger than {0} bytes")]
    TooLarge(usize),
    /// The JSON nests deeper than [`Limits::max_depth`].
    #[error("request body nests deeper than {0} levels")]
    TooDeep(usize),
    /// The body is not JSON.
    #[error("request body is not valid JSON")]
    NotJson,
    /// The body is JSON but not a JSON-RPC 2.0 message (the string says what is wrong).
    #[error("invalid JSON-RPC message: {0}")]
    Invalid(&'static str),
    /// A batch has more than [`Limits::max_batch`] members.
    #[error("batch has more than {0} messages")]
    BatchTooLarge(usize),
    /// A resource URI that an MCP server would read as another URI ([`canonical_uri`]).
    #[error("resource URI is not in canonical form (WHATWG URL): send {0}")]
    NotCanonical(String),
    /// A resource URI that does not parse as a URL.
    #[error("resource URI is not a URL")]
    NotUri,
}

impl ParseError {
    /// The HTTP status this error answers with.
    pub fn http_status(&self) -> u32 {
        match self {
            Self::TooLarge(_) => 413,
            _ => 400,
        }
    }

    /// The JSON-RPC error code this error answers with.
    pub fn rpc_code(&self) -> i64 {
        match self {
            Self::NotJson | Self::TooDeep(_) => PARSE_ERROR,
            Self::NotCanonical(_) | Self::NotUri => INVALID_PARAMS,
            _ => INVALID_REQUEST,
        }
    }
}

/// The kind of one JSON-RPC message.
#[derive(Debug, Clone, PartialEq)]
pub enum Kind {
    /// A request (has `method` and `id`).
    Request,
    /// A notification (has `method`, no `id`).
    Notification,
    /// A response from the client to a server request (has `result` or `error`).
    Response,
}

/// One JSON-RPC message, reduced to what routing and authorization need. `method` and `name`
/// borrow from the body unless they hold escapes.
#[derive(Debug, Clone, PartialEq)]
pub struct Message<'a> {
    /// Request, notification or response.
    pub kind: Kind,
    /// The `id` (requests and responses).
    pub id: Option<Value>,
    /// The `method` (requests and notifications).
    pub method: Option<Cow<'a, str>>,
    /// The target the method acts on: `params.name` for `tools/call` and `prompts/get`,
    /// `params.uri` for `resources/read`, `resources/subscribe`, `resources/unsubscribe`.
    pub name: Option<Cow<'a, str>>,
    /// `params.arguments` of `tools/call` and `prompts/get` (for policy conditions).
    pub arguments: Option<Value>,
}

/// A parsed request body.
#[derive(Debug, Clone, PartialEq)]
pub enum Body<'a> {
    /// One message.
    Single(Message<'a>),
    /// A JSON-RPC batch (MCP 2025-03-26).
    Batch(Vec<Message<'a>>),
}

impl<'a> Body<'a> {
    /// The messages, in order.
    pub fn messages(&self) -> &[Message<'a>] {
        match self {
            Self::Single(m) => std::slice::from_ref(m),
            Self::Batch(ms) => ms,
        }
    }
}

/// The list methods whose results are filtered per caller, and the method that acts on an entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListKind {
    /// `tools/list` → `result.tools[].name`, authorized as `tools/call`.
    Tools,
    /// `prompts/list` → `result.prompts[].name`, authorized as `prompts/get`.
    Prompts,
    /// `resources/list` → `result.resources[].uri`, authorized as `resources/read`.
    Resources,
}

impl ListKind {
    /// The list kind of a method, if it is one of the filtered list methods.
    pub fn of_method(method: &str) -> Option<Self> {
        match method {
            "tools/list" => Some(Self::Tools),
            "prompts/list" => Some(Self::Prompts),
            "resources/list" => Some(Self::Resources),
            _ => None,
        }
    }

    /// The method that an entry of this list is called with.
    pub fn entry_method(self) -> &'static str {
        match self {
            Self::Tools => "tools/call",
            Self::Prompts => "prompts/get",
            Self::Resources => "resources/read",
        }
    }

    fn field(self) -> &'static str {
        match self {
            Self::Tools => "tools",
            Self::Prompts => "prompts",
            Self::Resources => "resources",
        }
    }

    fn key(self) -> &'static str {
        match self {
            Self::Resources => "uri",
            _ => "name",
        }
    }
}

/// Parses a request body under `limits`. It accepts and refuses exactly what parsing the body
/// into a `serde_json::Value` and then reading the message would, without building the tree:
/// only the fields a decision needs are kept (`params.arguments` as a value).
pub fn parse_body<'a>(bytes: &'a [u8], limits: &Limits) -> Result<Body<'a>, ParseError> {
    if bytes.len() > limits.max_body_bytes {
        return Err(ParseError::TooLarge(limits.max_body_bytes));
    }
    if let Some(m) = plain_message(bytes, limits.max_depth) {
        return message(Some(m)).map(Body::Single);
    }
    // serde_json has its own recursion limit (128); ours is checked before any allocation.
    if nesting_depth(bytes) > limits.max_depth {
        return Err(ParseError::TooDeep(limits.max_depth));
    }
    let top: Top<'a> = serde_json::from_slice(bytes).map_err(|_| ParseError::NotJson)?;
    match top {
        Top::Batch(items) => {
            if items.is_empty() {
                return Err(ParseError::Invalid("empty batch"));
            }
            if items.len() > limits.max_batch {
                return Err(ParseError::BatchTooLarge(limits.max_batch));
            }
            items
                .into_iter()
                .map(message)
                .collect::<Result<_, _>>()
                .map(Body::Batch)
        }
        Top::Single(m) => message(m).map(Body::Single),
    }
}

/// The deepest nesting [`plain_message`] reads; deeper bodies go the serde way (its recursion
/// limit is 128).
const PLAIN_MAX_DEPTH: usize = 100;

/// Reads the common body without serde: one message (an object) within `max_depth`, whose
/// strings have no escapes or control characters and whose numbers are plain (no exponent, at
/// most 18 integer digits; `id` and `arguments` numbers integers other than `-0`). `None` for
/// anything else, valid or not, which [`parse_body`]'s serde path then reads: what this accepts
/// it reads as that path would (`parses_exactly_what_a_json_value_parse_accepts` checks both
/// against a `serde_json::Value` parse), in one pass and borrowing every string it keeps.
fn plain_message(bytes: &[u8], max_depth: usize) -> Option<RawMessage<'_>> {
    let text = std::str::from_utf8(bytes).ok()?;
    let mut p = Plain {
        text,
        i: 0,
        max_depth: max_depth.min(PLAIN_MAX_DEPTH),
    };
    p.ws();
    let mut m = RawMessage::default();
    p.object(1, |p, key| {
        match key {
            "jsonrpc" => m.jsonrpc_2 = matches!(p.text_value(2)?, Text::Str(v) if v == "2.0"),
            "id" => m.id = Some(p.value(2)?),
            "method" => m.method = Some(p.text_value(2)?),
            "params" => m.params = Some(p.params()?),
            "result" | "error" => {
                p.skip(2)?;
                m.answers = true;
            }
            _ => p.skip(2)?,
        }
        Some(())
    })?;
    p.ws();
    (p.i == bytes.len()).then_some(m)
}

/// [`plain_message`]'s cursor. Every method returns `None` when the text is not what it reads
/// (invalid, or valid but left to serde).
struct Plain<'a> {
    text: &'a str,
    i: usize,
    max_depth: usize,
}

impl<'a> Plain<'a> {
    fn peek(&self) -> u8 {
        self.text.as_bytes().get(self.i).copied().unwrap_or(0)
    }

    fn ws(&mut self) {
        while matches!(self.peek(), b' ' | b'\n' | b'\r' | b'\t') {
            self.i += 1;
        }
    }

    fn eat(&mut self, b: u8) -> Option<()> {
        (self.peek() == b).then(|| self.i += 1)
    }

    /// A string without escapes or control characters (at its `"`).
    fn string(&mut self) -> Option<&'a str> {
        self.eat(b'"')?;
        let start = self.i;
        let rest = self.text.as_bytes().get(start..)?;
        let n = rest
            .iter()
            .position(|&b| b == b'"' || b == b'\\' || b < 0x20)?;
        if rest[n] != b'"' {
            return None;
        }
        self.i = start + n + 1;
        self.text.get(start..start + n)
    }

    /// A plain number: `-`, at most 18 integer digits without a leading zero, no exponent. With
    /// `fraction` it is only checked (a fraction and `-0` allowed); without, it must be an integer
    /// serde_json reads as one. Its integer value when it has no fraction.
    fn number(&mut self, fraction: bool) -> Option<Option<i64>> {
        let negative = self.eat(b'-').is_some();
        let start = self.i;
        while self.peek().is_ascii_digit() {
            self.i += 1;
        }
        let digits = self.text.get(start..self.i)?;
        if digits.is_empty() || digits.len() > 18 || (digits.len() > 1 && digits.starts_with('0')) {
            return None;
        }
        if self.peek() == b'.' {
            self.i += 1;
            let start = self.i;
            while self.peek().is_ascii_digit() {
                self.i += 1;
            }
            return (fraction && self.i > start).then_some(None);
        }
        if matches!(self.peek(), b'e' | b'E') {
            return None;
        }
        // At most 18 digits: below 2^63.
        let n = digits
            .bytes()
            .fold(0i64, |n, d| n * 10 + i64::from(d - b'0'));
        if negative && n == 0 && !fraction {
            // serde_json reads `-0` as a float.
            return None;
        }
        Some(Some(if negative { -n } else { n }))
    }

    /// An object (at its `{`), `member` reading each value (the cursor at it).
    fn object(
        &mut self,
        depth: usize,
        mut member: impl FnMut(&mut Self, &'a str) -> Option<()>,
    ) -> Option<()> {
        if depth > self.max_depth {
            return None;
        }
        self.eat(b'{')?;
        self.ws();
        if self.eat(b'}').is_some() {
            return Some(());
        }
        loop {
            self.ws();
            let key = self.string()?;
            self.ws();
            self.eat(b':')?;
            self.ws();
            member(self, key)?;
            self.ws();
            if self.eat(b',').is_none() {
                return self.eat(b'}');
            }
        }
    }

    /// An array (at its `[`), `item` reading each element.
    fn array(&mut self, depth: usize, mut item: impl FnMut(&mut Self) -> Option<()>) -> Option<()> {
        if depth > self.max_depth {
            return None;
        }
        self.eat(b'[')?;
        self.ws();
        if self.eat(b']').is_some() {
            return Some(());
        }
        loop {
            self.ws();
            item(self)?;
            self.ws();
            if self.eat(b',').is_none() {
                return self.eat(b']');
            }
        }
    }

    fn literal(&mut self, word: &str) -> Option<()> {
        let end = self.i + word.len();
        (self.text.get(self.i..end) == Some(word)).then(|| self.i = end)
    }

    /// Checks a value at `depth` (its nesting if it is an object or array) and drops it.
    fn skip(&mut self, depth: usize) -> Option<()> {
        match self.peek() {
            b'"' => self.string().map(drop),
            b'{' => self.object(depth, |p, _| p.skip(depth + 1)),
            b'[' => self.array(depth, |p| p.skip(depth + 1)),
            b't' => self.literal("true"),
            b'f' => self.literal("false"),
            b'n' => self.literal("null"),
            _ => self.number(true).map(drop),
        }
    }

    /// A value as [`Text`].
    fn text_value(&mut self, depth: usize) -> Option<Text<'a>> {
        if self.peek() == b'"' {
            return self.string().map(|s| Text::Str(Cow::Borrowed(s)));
        }
        self.skip(depth).map(|()| Text::Other)
    }

    /// A value as a `serde_json::Value` (integers only: fractions go the serde way, whose
    /// float parsing this does not repeat).
    fn value(&mut self, depth: usize) -> Option<Value> {
        Some(match self.peek() {
            b'"' => Value::String(self.string()?.to_owned()),
            b'{' => {
                let mut map = serde_json::Map::new();
                self.object(depth, |p, key| {
                    map.insert(key.to_owned(), p.value(depth + 1)?);
                    Some(())
                })?;
                Value::Object(map)
            }
            b'[' => {
                let mut items = Vec::new();
                self.array(depth, |p| {
                    items.push(p.value(depth + 1)?);
                    Some(())
                })?;
                Value::Array(items)
            }
            b't' => self.literal("true").map(|()| Value::Bool(true))?,
            b'f' => self.literal("false").map(|()| Value::Bool(false))?,
            b'n' => self.literal("null").map(|()| Value::Null)?,
            _ => match self.number(false)?? {
                n if n < 0 => Value::from(n),
                n => Value::from(n.unsigned_abs()),
            },
        })
    }

    /// `params` (at its value): `None` inside when it is not an object.
    fn params(&mut self) -> Option<Option<RawParams<'a>>> {
        if self.peek() != b'{' {
            return self.skip(2).map(|()| None);
        }
        let mut params = RawParams::default();
        self.object(2, |p, key| {
            match key {
                "name" => params.name = Some(p.text_value(3)?),
                "uri" => params.uri = Some(p.text_value(3)?),
                "arguments" => params.arguments = Some(p.value(3)?),
                _ => p.skip(3)?,
            }
            Some(())
        })?;
        Some(Some(params))
    }
}

/// The deepest nesting of arrays and objects in `bytes`, ignoring brackets inside strings.
fn nesting_depth(bytes: &[u8]) -> usize {
    let (mut depth, mut max, mut in_string, mut escaped) = (0usize, 0usize, false, false);
    for &b in bytes {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                max = max.max(depth);
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    max
}

/// Any JSON value, checked as `serde_json::Value` would check it (numbers in range, strings
/// valid, nesting within serde_json's limit) and dropped: nothing is allocated.
struct Checked;

impl<'de> Deserialize<'de> for Checked {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(CheckedVisitor)
    }
}

struct CheckedVisitor;

impl<'de> Visitor<'de> for CheckedVisitor {
    type Value = Checked;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E>(self, _: bool) -> Result<Checked, E> {
        Ok(Checked)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Checked, E> {
        Ok(Checked)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Checked, E> {
        Ok(Checked)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Checked, E> {
        Ok(Checked)
    }
    fn visit_str<E>(self, _: &str) -> Result<Checked, E> {
        Ok(Checked)
    }
    fn visit_unit<E>(self) -> Result<Checked, E> {
        Ok(Checked)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Checked, A::Error> {
        while seq.next_element::<Checked>()?.is_some() {}
        Ok(Checked)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Checked, A::Error> {
        while map.next_key::<Checked>()?.is_some() {
            map.next_value::<Checked>()?;
        }
        Ok(Checked)
    }
}

/// A JSON value that matters only if it is a string: borrowed when it has no escapes.
#[derive(Debug)]
enum Text<'a> {
    Str(Cow<'a, str>),
    Other,
}

impl<'de> Deserialize<'de> for Text<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Text<'de>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Text<'de>, E> {
                Ok(Text::Str(Cow::Borrowed(s)))
            }
            fn visit_str<E>(self, s: &str) -> Result<Text<'de>, E> {
                Ok(Text::Str(Cow::Owned(s.to_owned())))
            }
            fn visit_bool<E>(self, _: bool) -> Result<Text<'de>, E> {
                Ok(Text::Other)
            }
            fn visit_i64<E>(self, _: i64) -> Result<Text<'de>, E> {
                Ok(Text::Other)
            }
            fn visit_u64<E>(self, _: u64) -> Result<Text<'de>, E> {
                Ok(Text::Other)
            }
            fn visit_f64<E>(self, _: f64) -> Result<Text<'de>, E> {
                Ok(Text::Other)
            }
            fn visit_unit<E>(self) -> Result<Text<'de>, E> {
                Ok(Text::Other)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Text<'de>, A::Error> {
                CheckedVisitor.visit_seq(seq).map(|_| Text::Other)
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Text<'de>, A::Error> {
                CheckedVisitor.visit_map(map).map(|_| Text::Other)
            }
        }
        d.deserialize_any(V)
    }
}

/// `params`, as far as a decision reads it. A key given twice counts with its last value, as
/// in a `serde_json::Value`.
#[derive(Debug, Default)]
struct RawParams<'a> {
    name: Option<Text<'a>>,
    uri: Option<Text<'a>>,
    arguments: Option<Value>,
}

/// A message's members, as far as a decision reads them (`None`: absent).
#[derive(Debug, Default)]
struct RawMessage<'a> {
    /// Whether `jsonrpc` is the string `"2.0"`.
    jsonrpc_2: bool,
    id: Option<Value>,
    method: Option<Text<'a>>,
    /// `Some(None)`: `params` is not an object.
    params: Option<Option<RawParams<'a>>>,
    /// Whether `result` or `error` is present.
    answers: bool,
}

/// A body: one message (or a value that is not an object, refused later) or a batch.
enum Top<'a> {
    Single(Option<RawMessage<'a>>),
    Batch(Vec<Option<RawMessage<'a>>>),
}

/// A key of a message or of `params`; anything else is checked and dropped.
fn key<'de, A: MapAccess<'de>>(map: &mut A) -> Result<Option<Cow<'de, str>>, A::Error> {
    Ok(map.next_key::<Text<'de>>()?.map(|k| match k {
        Text::Str(s) => s,
        Text::Other => Cow::Borrowed(""),
    }))
}

/// The arms of a visitor that reads objects only: any other JSON value is `None` (an array is
/// still read through, for its validity and depth).
macro_rules! not_an_object_is_none {
    ($de:lifetime) => {
        fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_unit<E>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_seq<A: SeqAccess<$de>>(self, seq: A) -> Result<Self::Value, A::Error> {
            CheckedVisitor.visit_seq(seq).map(|_| None)
        }
    };
}

/// Reads a JSON value as a message: `None` when it is not an object.
struct MessageVisitor;

impl<'de> Visitor<'de> for MessageVisitor {
    type Value = Option<RawMessage<'de>>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON-RPC message")
    }
    not_an_object_is_none!('de);
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut m = RawMessage::default();
        while let Some(k) = key(&mut map)? {
            match k.as_ref() {
                "jsonrpc" => {
                    m.jsonrpc_2 =
                        matches!(map.next_value::<Text<'de>>()?, Text::Str(v) if v == "2.0");
                }
                "id" => m.id = Some(map.next_value()?),
                "method" => m.method = Some(map.next_value()?),
                "params" => m.params = Some(map.next_value_seed(ParamsSeed)?),
                "result" | "error" => {
                    map.next_value::<Checked>()?;
                    m.answers = true;
                }
                _ => {
                    map.next_value::<Checked>()?;
                }
            }
        }
        Ok(Some(m))
    }
}

/// Reads `params`: `None` when it is not an object.
struct ParamsSeed;

impl<'de> de::DeserializeSeed<'de> for ParamsSeed {
    type Value = Option<RawParams<'de>>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(ParamsSeed)
    }
}

impl<'de> Visitor<'de> for ParamsSeed {
    type Value = Option<RawParams<'de>>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("JSON-RPC params")
    }
    not_an_object_is_none!('de);
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut p = RawParams::default();
        while let Some(k) = key(&mut map)? {
            match k.as_ref() {
                "name" => p.name = Some(map.next_value()?),
                "uri" => p.uri = Some(map.next_value()?),
                "arguments" => p.arguments = Some(map.next_value()?),
                _ => {
                    map.next_value::<Checked>()?;
                }
            }
        }
        Ok(Some(p))
    }
}

impl<'de> Deserialize<'de> for Top<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Top<'de>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON-RPC message or batch")
            }
            fn visit_bool<E>(self, _: bool) -> Result<Top<'de>, E> {
                Ok(Top::Single(None))
            }
            fn visit_i64<E>(self, _: i64) -> Result<Top<'de>, E> {
                Ok(Top::Single(None))
            }
            fn visit_u64<E>(self, _: u64) -> Result<Top<'de>, E> {
                Ok(Top::Single(None))
            }
            fn visit_f64<E>(self, _: f64) -> Result<Top<'de>, E> {
                Ok(Top::Single(None))
            }
            fn visit_str<E>(self, _: &str) -> Result<Top<'de>, E> {
                Ok(Top::Single(None))
            }
            fn visit_unit<E>(self) -> Result<Top<'de>, E> {
                Ok(Top::Single(None))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Top<'de>, A::Error> {
                let mut items = Vec::new();
                while let Some(m) = seq.next_element_seed(MessageSeed)? {
                    items.push(m);
                }
                Ok(Top::Batch(items))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Top<'de>, A::Error> {
                MessageVisitor.visit_map(map).map(Top::Single)
            }
        }
        d.deserialize_any(V)
    }
}

/// Reads a batch member as a message.
struct MessageSeed;

impl<'de> de::DeserializeSeed<'de> for MessageSeed {
    type Value = Option<RawMessage<'de>>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(MessageVisitor)
    }
}

fn message(raw: Option<RawMessage<'_>>) -> Result<Message<'_>, ParseError> {
    let Some(raw) = raw else {
        return Err(ParseError::Invalid("message is not an object"));
    };
    if !raw.jsonrpc_2 {
        return Err(ParseError::Invalid("`jsonrpc` must be \"2.0\""));
    }
    let id = match raw.id {
        None => None,
        Some(id @ (Value::String(_) | Value::Number(_) | Value::Null)) => Some(id),
        Some(_) => return Err(ParseError::Invalid("`id` must be a string or a number")),
    };
    match raw.method {
        Some(Text::Str(method)) => {
            let params = match raw.params {
                None => RawParams::default(),
                Some(Some(p)) => p,
                Some(None) => return Err(ParseError::Invalid("`params` must be an object")),
            };
            let (name, arguments) = target(&method, params)?;
            let kind = if id.is_some() {
                Kind::Request
            } else {
                Kind::Notification
            };
            if id == Some(Value::Null) {
                return Err(ParseError::Invalid("a request `id` must not be null"));
            }
            Ok(Message {
                kind,
                id,
                method: Some(method),
                name,
                arguments,
            })
        }
        Some(Text::Other) => Err(ParseError::Invalid("`method` must be a string")),
        None if raw.answers => Ok(Message {
            kind: Kind::Response,
            id,
            method: None,
            name: None,
            arguments: None,
        }),
        None => Err(ParseError::Invalid(
            "message has neither `method` nor `result`/`error`",
        )),
    }
}

/// The name (or URI) a method acts on, and its arguments, read from `params`.
fn target<'a>(
    method: &str,
    params: RawParams<'a>,
) -> Result<(Option<Cow<'a, str>>, Option<Value>), ParseError> {
    let (named, uri) = match method {
        "tools/call" | "prompts/get" => (params.name, false),
        "resources/read" | "resources/subscribe" | "resources/unsubscribe" => (params.uri, true),
        _ => return Ok((None, None)),
    };
    let Some(Text::Str(name)) = named else {
        return Err(ParseError::Invalid(
            "`params` lacks the string naming the target",
        ));
    };
    if uri {
        canonical_uri(&name)?;
    }
    Ok((Some(name), params.arguments))
}

/// Checks that a resource URI is exactly what the MCP SDKs' servers make of it (both parse it
/// as a WHATWG URL before looking it up: dot segments and `%2e` resolved, tabs and newlines
/// dropped, the scheme lower-cased). Rules then see the URI the server will serve; a URI the parse
/// would change is refused, never rewritten, and the error names the canonical form.
pub fn canonical_uri(uri: &str) -> Result<(), ParseError> {
    let parsed = url::Url::parse(uri).map_err(|_| ParseError::NotUri)?;
    if parsed.as_str() == uri {
        Ok(())
    } else {
        Err(ParseError::NotCanonical(parsed.into()))
    }
}

/// Whether a request with HTTP method `http_method` carries JSON-RPC messages that must be read
/// before it is decided: `POST` exactly (methods are case-sensitive, RFC 9110 §9.1); `GET` and
/// `DELETE` carry none. The policy and every filter ask this one question.
pub fn carries_messages(http_method: &str) -> bool {
    http_method == "POST"
}

/// The MCP request headers, as received (borrowing the header values).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct McpHeaders<'a> {
    /// `MCP-Protocol-Version`.
    pub protocol_version: Option<&'a str>,
    /// `Mcp-Method` (2026-07-28).
    pub method: Option<&'a str>,
    /// `Mcp-Name` (2026-07-28).
    pub name: Option<&'a str>,
}

/// `Mcp-Method` / `Mcp-Name` disagree with the body (400, JSON-RPC [`HEADER_MISMATCH`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeaderMismatch {
    /// A 2026-07-28 request lacks `Mcp-Method`.
    #[error("`Mcp-Method` header is required")]
    MissingMethod,
    /// A 2026-07-28 request for a named target lacks `Mcp-Name`.
    #[error("`Mcp-Name` header is required")]
    MissingName,
    /// `Mcp-Method` differs from the body's method.
    #[error("`Mcp-Method` header does not match the body")]
    Method,
    /// `Mcp-Name` differs from the body's target.
    #[error("`Mcp-Name` header does not match the body")]
    Name,
    /// The headers name one method but the body is a batch.
    #[error("`Mcp-Method` header cannot describe a batch")]
    Batch,
}

impl McpHeaders<'_> {
    /// Whether this request is of a revision that requires `Mcp-Method` / `Mcp-Name`.
    /// Revisions are dates, so they compare as strings.
    pub fn requires_method_headers(&self) -> bool {
        self.protocol_version
            .is_some_and(|v| v >= STATELESS_REVISION)
    }

    /// Checks the headers against the body. Headers present in any revision must match; in
    /// 2026-07-28 and later they must also be present.
    pub fn check(&self, body: &Body) -> Result<(), HeaderMismatch> {
        let required = self.requires_method_headers();
        let msg = match body {
            Body::Batch(_) if required || self.method.is_some() || self.name.is_some() => {
                return Err(HeaderMismatch::Batch);
            }
            Body::Batch(_) => return Ok(()),
            Body::Single(m) => m,
        };
        match (self.method, &msg.method) {
            (Some(h), Some(b)) if h != b.as_ref() => return Err(HeaderMismatch::Method),
            (Some(_), None) => return Err(HeaderMismatch::Method),
            (None, Some(_)) if required => return Err(HeaderMismatch::MissingMethod),
            _ => {}
        }
        match (self.name, &msg.name) {
            (Some(h), Some(b)) if decode_name_header(h).as_deref() != Some(b.as_ref()) => {
                Err(HeaderMismatch::Name)
            }
            (Some(_), None) => Err(HeaderMismatch::Name),
            (None, Some(_)) if required => Err(HeaderMismatch::MissingName),
            _ => Ok(()),
        }
    }
}

/// `Mcp-Name` as the client meant it. A name that is not plain visible ASCII travels as
/// `=?base64?<standard base64 of its UTF-8>?=` (MCP 2026-07-28); anything else is the name itself.
/// `None` when the encoded form does not decode to UTF-8.
pub fn decode_name_header(value: &str) -> Option<Cow<'_, str>> {
    use base64::Engine;
    match value
        .strip_prefix("=?base64?")
        .and_then(|r| r.strip_suffix("?="))
    {
        Some(b64) => base64::engine::general_purpose::STANDARD
            .decode(b64)
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .map(Cow::Owned),
        None => Some(Cow::Borrowed(value)),
    }
}

/// A JSON-RPC error response body. `message` must name nothing secret.
pub fn error_response(id: Option<&Value>, code: i64, message: &str) -> Value {
    serde_json::json!({
        "jsonrpc": "2.0",
        "id": id.cloned().unwrap_or(Value::Null),
        "error": { "code": code, "message": message },
    })
}

/// Appends [`error_response`] as JSON text to `out`, byte for byte what serialising it gives
/// (members in key order, compact), without building the value.
pub fn write_error_response(out: &mut Vec<u8>, id: Option<&Value>, code: i64, message: &str) {
    out.extend_from_slice(b"{\"error\":{\"code\":");
    out.extend_from_slice(code.to_string().as_bytes());
    out.extend_from_slice(b",\"message\":");
    write_json(out, message);
    out.extend_from_slice(b"},\"id\":");
    match id {
        Some(id) => write_json(out, id),
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(b",\"jsonrpc\":\"2.0\"}");
}

/// Appends `v` as compact JSON (serde_json's own formatting).
fn write_json<T: serde::Serialize + ?Sized>(out: &mut Vec<u8>, v: &T) {
    // Writing a string or a JSON value into a Vec cannot fail.
    let _ = serde_json::to_writer(out, v);
}

/// A request awaiting its response: which list it asked for, under which `id`.
#[derive(Debug, Clone, PartialEq)]
pub struct PendingList {
    /// The request `id`.
    pub id: Value,
    /// What the request listed.
    pub kind: ListKind,
}

/// Removes from one JSON-RPC response the list entries `keep` rejects. Returns how many were
/// removed. Responses whose `id` matches no pending list are left alone.
fn filter_message(
    msg: &mut Value,
    pending: &[PendingList],
    keep: &mut dyn FnMut(ListKind, &str) -> bool,
) -> usize {
    let Some(kind) = pending
        .iter()
        .find(|p| msg.get("id") == Some(&p.id))
        .map(|p| p.kind)
    else {
        return 0;
    };
    let Some(entries) = msg
        .get_mut("result")
        .and_then(|r| r.get_mut(kind.field()))
        .and_then(Value::as_array_mut)
    else {
        return 0;
    };
    let before = entries.len();
    // An entry without a name cannot be authorized, so it is not shown.
    entries.retain(|e| {
        e.get(kind.key())
            .and_then(Value::as_str)
            .is_some_and(|n| keep(kind, n))
    });
    before - entries.len()
}

/// Why a list response could not be filtered (the caller fails closed).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FilterError {
    /// The response body is not JSON (or not an SSE stream of JSON events).
    #[error("list response is not JSON")]
    NotJson,
}

/// Filters a JSON response body (one message or a batch array). Returns the rewritten body and
/// the number of entries removed.
pub fn filter_json_response(
    body: &[u8],
    pending: &[PendingList],
    keep: &mut dyn FnMut(ListKind, &str) -> bool,
) -> Result<(Vec<u8>, usize), FilterError> {
    let text = std::str::from_utf8(body).map_err(|_| FilterError::NotJson)?;
    match splice_lists(text, true, pending, keep)? {
        Spliced::Unchanged => return Ok((body.to_vec(), 0)),
        Spliced::Rewritten(out, removed) => return Ok((out.into_bytes(), removed)),
        Spliced::ViaValue => {}
    }
    let mut value: Value = serde_json::from_slice(body).map_err(|_| FilterError::NotJson)?;
    let removed = match &mut value {
        Value::Array(items) => items
            .iter_mut()
            .map(|m| filter_message(m, pending, keep))
            .sum(),
        msg => filter_message(msg, pending, keep),
    };
    let out = serde_json::to_vec(&value).map_err(|_| FilterError::NotJson)?;
    Ok((out, removed))
}

/// Filters an SSE response body (`text/event-stream`): every event whose `data` is a JSON-RPC
/// response to a pending list is rewritten; other events pass unchanged, in order.
pub fn filter_sse_response(
    body: &[u8],
    pending: &[PendingList],
    keep: &mut dyn FnMut(ListKind, &str) -> bool,
) -> Result<(Vec<u8>, usize), FilterError> {
    let text = std::str::from_utf8(body).map_err(|_| FilterError::NotJson)?;
    let mut out = String::with_capacity(text.len());
    let mut removed = 0;
    // Events are separated by a blank line (WHATWG HTML §9.2.6); keep each separator as sent.
    let mut rest = text;
    while !rest.is_empty() {
        let (event, sep, tail) = split_event(rest);
        let data: Vec<&str> = event
            .lines()
            .filter_map(|l| l.strip_prefix("data:"))
            .map(|d| d.strip_prefix(' ').unwrap_or(d))
            .collect();
        let data = data.join("\n");
        // Data over several lines is rewritten as one line, from a parsed value.
        let spliced = if data.is_empty() {
            Ok(Spliced::Unchanged)
        } else if data.contains(['\n', '\r']) {
            Ok(Spliced::ViaValue)
        } else {
            splice_lists(&data, false, pending, keep)
        };
        let rewritten = match spliced {
            // A data line that is not JSON carries no list; pass it as sent.
            Err(_) | Ok(Spliced::Unchanged) => None,
            Ok(Spliced::Rewritten(msg, n)) => {
                removed += n;
                Some(msg)
            }
            Ok(_) => match serde_json::from_str::<Value>(&data) {
                Ok(mut msg) => {
                    let n = filter_message(&mut msg, pending, keep);
                    if n > 0 {
                        removed += n;
                        Some(msg.to_string())
                    } else {
                        None
                    }
                }
                Err(_) => None,
            },
        };
        match rewritten {
            None => out.push_str(event),
            Some(msg) => {
                for line in event.lines().filter(|l| !l.starts_with("data:")) {
                    out.push_str(line);
                    out.push('\n');
                }
                out.push_str("data: ");
                out.push_str(&msg);
            }
        }
        out.push_str(sep);
        rest = tail;
    }
    Ok((out.into_bytes(), removed))
}

/// What [`splice_lists`] made of a document.
#[derive(Debug, PartialEq)]
enum Spliced {
    /// Nothing to remove: the document goes on as sent.
    Unchanged,
    /// The document with the hidden entries cut out, and how many they were.
    Rewritten(String, usize),
    /// Filter it through a parsed value instead: a member the filter reads is given twice in
    /// one object (a value keeps the last, text would keep both), or SSE data spans lines.
    ViaValue,
}

/// Filters the list responses in a JSON document without building it: the document is checked
/// as a whole (it must be what `serde_json::Value` accepts), then walked once as text, and each
/// filtered list is written back from its kept entries. Everything else goes on byte for byte
/// as the upstream sent it. `batch`: a top-level array is a JSON-RPC batch (JSON bodies), not a
/// message (SSE events).
fn splice_lists(
    text: &str,
    batch: bool,
    pending: &[PendingList],
    keep: &mut dyn FnMut(ListKind, &str) -> bool,
) -> Result<Spliced, FilterError> {
    serde_json::from_str::<Checked>(text).map_err(|_| FilterError::NotJson)?;
    let mut s = Splicer {
        c: Cursor { text, i: 0 },
        pending,
        keep,
        out: String::new(),
        copied: 0,
        removed: 0,
    };
    s.c.ws();
    let walked = if batch && s.c.peek() == b'[' {
        s.c.i += 1;
        loop {
            s.c.ws();
            match s.c.peek() {
                b',' => s.c.i += 1,
                b']' | 0 => break Some(()),
                _ => {
                    let at = s.c.i;
                    if s.message().is_none() || s.c.i == at {
                        break None;
                    }
                }
            }
        }
    } else {
        s.message()
    };
    if walked.is_none() {
        return Ok(Spliced::ViaValue);
    }
    if s.removed == 0 {
        return Ok(Spliced::Unchanged);
    }
    s.out.push_str(text.get(s.copied..).unwrap_or_default());
    Ok(Spliced::Rewritten(s.out, s.removed))
}

/// One list to rewrite: its span, and the spans of the entries it keeps.
type Edit = ((usize, usize), Vec<(usize, usize)>, usize);

/// The state of [`splice_lists`]' walk. Its methods return `None` when a member it reads is
/// given twice ([`Spliced::ViaValue`]).
struct Splicer<'a, 'k> {
    c: Cursor<'a>,
    pending: &'k [PendingList],
    keep: &'k mut dyn FnMut(ListKind, &str) -> bool,
    out: String,
    /// How much of the text is in `out` (or replaced there).
    copied: usize,
    removed: usize,
}

impl Splicer<'_, '_> {
    /// Walks one message (at a value) and rewrites its list if it answers a pending list.
    fn message(&mut self) -> Option<()> {
        self.c.ws();
        if self.c.peek() != b'{' {
            self.c.value();
            return Some(());
        }
        self.c.i += 1;
        let (mut id, mut kind, mut result, mut edit) = (false, None, None, None);
        let mut read = false;
        while let Some(key) = self.c.next_key() {
            match key.as_ref() {
                "id" => {
                    if id {
                        return None;
                    }
                    id = true;
                    let (start, end) = self.c.value();
                    kind = self
                        .c
                        .text
                        .get(start..end)
                        .and_then(|t| serde_json::from_str::<Value>(t).ok())
                        .and_then(|v| self.pending.iter().find(|p| p.id == v))
                        .map(|p| p.kind);
                }
                "result" => {
                    if result.is_some() {
                        return None;
                    }
                    self.c.ws();
                    let start = self.c.i;
                    // Usually `id` comes first: the result is read on the way.
                    match kind {
                        Some(k) => {
                            edit = self.result(k)?;
                            read = true;
                        }
                        None => {
                            self.c.value();
                        }
                    }
                    result = Some(start);
                }
                _ => {
                    self.c.value();
                }
            }
        }
        if let (false, Some(k), Some(start)) = (read, kind, result) {
            let end = self.c.i;
            self.c.i = start;
            edit = self.result(k)?;
            self.c.i = end;
        }
        if let Some(((start, end), kept, hidden)) = edit {
            let text = self.c.text;
            self.out
                .push_str(text.get(self.copied..start).unwrap_or_default());
            self.out.push('[');
            for (i, (s, e)) in kept.into_iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                self.out.push_str(text.get(s..e).unwrap_or_default());
            }
            self.out.push(']');
            self.copied = end;
            self.removed += hidden;
        }
        Some(())
    }

    /// Walks a `result` (at its value): the rewrite of its `kind` list, if it hides anything.
    fn result(&mut self, kind: ListKind) -> Option<Option<Edit>> {
        if self.c.peek() != b'{' {
            self.c.value();
            return Some(None);
        }
        self.c.i += 1;
        let mut edit = None;
        let mut seen = false;
        while let Some(key) = self.c.next_key() {
            if key != kind.field() {
                self.c.value();
                continue;
            }
            if seen {
                return None;
            }
            seen = true;
            self.c.ws();
            if self.c.peek() == b'[' {
                edit = self.list(kind)?;
            } else {
                self.c.value();
            }
        }
        Some(edit)
    }

    /// Walks a list (at its `[`), asking `keep` about each entry.
    fn list(&mut self, kind: ListKind) -> Option<Option<Edit>> {
        let start = self.c.i;
        self.c.i += 1;
        let (mut kept, mut total) = (Vec::new(), 0);
        loop {
            self.c.ws();
            match self.c.peek() {
                b',' => self.c.i += 1,
                b']' | 0 => break,
                _ => {
                    total += 1;
                    let from = self.c.i;
                    // An entry without a name cannot be authorized, so it is not shown.
                    if self.entry(kind)? {
                        kept.push((from, self.c.i));
                    }
                    if self.c.i == from {
                        // Not reachable in checked JSON; never loop on it.
                        return None;
                    }
                }
            }
        }
        self.c.i += 1;
        let hidden = total - kept.len();
        Some((hidden > 0).then_some(((start, self.c.i), kept, hidden)))
    }

    /// Walks one entry (at its value): whether it is shown.
    fn entry(&mut self, kind: ListKind) -> Option<bool> {
        if self.c.peek() != b'{' {
            self.c.value();
            return Some(false);
        }
        self.c.i += 1;
        let mut name = None;
        while let Some(key) = self.c.next_key() {
            let (start, end) = self.c.value();
            if key == kind.key() && name.replace((start, end)).is_some() {
                return None;
            }
        }
        let text = self.c.text;
        let shown = match name.and_then(|(s, e)| json_string(text.get(s..e)?)) {
            Some(name) => (self.keep)(kind, &name),
            None => false,
        };
        Some(shown)
    }
}

/// The string a JSON string literal holds; `None` for any other value.
fn json_string(literal: &str) -> Option<Cow<'_, str>> {
    let inner = literal.strip_prefix('"')?.strip_suffix('"')?;
    if inner.contains('\\') {
        serde_json::from_str::<String>(literal).ok().map(Cow::Owned)
    } else {
        Some(Cow::Borrowed(inner))
    }
}

/// A cursor over a JSON document already checked to be valid: it finds where values start and
/// end, and decodes nothing but keys.
struct Cursor<'a> {
    text: &'a str,
    i: usize,
}

impl<'a> Cursor<'a> {
    fn peek(&self) -> u8 {
        self.text.as_bytes().get(self.i).copied().unwrap_or(0)
    }

    fn ws(&mut self) {
        while matches!(self.peek(), b' ' | b'\n' | b'\r' | b'\t') {
            self.i += 1;
        }
    }

    /// At a `"`: skips the string literal.
    fn string(&mut self) {
        let bytes = self.text.as_bytes();
        self.i += 1;
        while let Some(n) = bytes
            .get(self.i..)
            .and_then(|rest| rest.iter().position(|&b| b == b'"' || b == b'\\'))
        {
            self.i += n;
            if self.peek() == b'"' {
                self.i += 1;
                return;
            }
            self.i += 2;
        }
        self.i = bytes.len();
    }

    /// Skips one value (and the whitespace before it); its span.
    fn value(&mut self) -> (usize, usize) {
        self.ws();
        let start = self.i;
        let len = self.text.len();
        match self.peek() {
            b'"' => self.string(),
            b'{' | b'[' => {
                let mut depth = 0usize;
                while self.i < len {
                    match self.peek() {
                        b'"' => {
                            self.string();
                            continue;
                        }
                        b'{' | b'[' => depth += 1,
                        b'}' | b']' => {
                            depth = depth.saturating_sub(1);
                            if depth == 0 {
                                self.i += 1;
                                break;
                            }
                        }
                        _ => {}
                    }
                    self.i += 1;
                }
            }
            _ => {
                while self.i < len
                    && !matches!(
                        self.peek(),
                        b',' | b'}' | b']' | b' ' | b'\n' | b'\r' | b'\t'
                    )
                {
                    self.i += 1;
                }
            }
        }
        (start, self.i)
    }

    /// Inside an object: the next member's key (decoded), the cursor then at its value; `None`
    /// after the closing `}`.
    fn next_key(&mut self) -> Option<Cow<'a, str>> {
        loop {
            self.ws();
            match self.peek() {
                b',' => self.i += 1,
                b'"' => {
                    let start = self.i;
                    self.string();
                    let key = self.text.get(start..self.i).and_then(json_string);
                    self.ws();
                    self.i += 1;
                    return Some(key.unwrap_or_default());
                }
                b'}' => {
                    self.i += 1;
                    return None;
                }
                _ => return None,
            }
        }
    }
}

/// Splits off the first SSE event: (event text without separator, separator, rest).
fn split_event(s: &str) -> (&str, &str, &str) {
    // The earliest separator of any line-ending style ends the event.
    let first = ["\r\n\r\n", "\n\n", "\r\r"]
        .iter()
        .filter_map(|sep| s.find(sep).map(|i| (i, *sep)))
        .min_by_key(|(i, _)| *i);
    match first {
        Some((i, sep)) => (&s[..i], sep, &s[i + sep.len()..]),
        None => (s, "", ""),
    }
}

#[cfg(test)]
#[path = "mcp_tests.rs"]
mod tests;
