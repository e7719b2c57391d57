//! Reading a request body: the JSON-RPC messages, under the size, depth and batch limits, with
//! only what a decision needs kept (a fast reader for the common bodies, serde for the rest).

use super::*;

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
pub(super) const PLAIN_MAX_DEPTH: usize = 100;

/// Reads the common body without serde: one message (an object) within `max_depth`, whose
/// strings have no escapes or control characters and whose numbers are plain (no exponent, at
/// most 18 integer digits; `id` and `arguments` numbers integers other than `-0`). `None` for
/// anything else, valid or not, which [`parse_body`]'s serde path then reads: what this accepts
/// it reads as that path would (`parses_exactly_what_a_json_value_parse_accepts` checks both
/// against a `serde_json::Value` parse), in one pass and borrowing every string it keeps.
pub(super) fn plain_message(bytes: &[u8], max_depth: usize) -> Option<RawMessage<'_>> {
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
pub(super) struct Plain<'a> {
    pub(super) text: &'a str,
    pub(super) i: usize,
    pub(super) max_depth: usize,
}

impl<'a> Plain<'a> {
    pub(super) fn peek(&self) -> u8 {
        self.text.as_bytes().get(self.i).copied().unwrap_or(0)
    }

    pub(super) fn ws(&mut self) {
        while matches!(self.peek(), b' ' | b'\n' | b'\r' | b'\t') {
            self.i += 1;
        }
    }

    pub(super) fn eat(&mut self, b: u8) -> Option<()> {
        (self.peek() == b).then(|| self.i += 1)
    }

    /// A string without escapes or control characters (at its `"`).
    pub(super) fn string(&mut self) -> Option<&'a str> {
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
    pub(super) fn number(&mut self, fraction: bool) -> Option<Option<i64>> {
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
    pub(super) fn object(
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
    pub(super) fn array(
        &mut self,
        depth: usize,
        mut item: impl FnMut(&mut Self) -> Option<()>,
    ) -> Option<()> {
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

    pub(super) fn literal(&mut self, word: &str) -> Option<()> {
        let end = self.i + word.len();
        (self.text.get(self.i..end) == Some(word)).then(|| self.i = end)
    }

    /// Checks a value at `depth` (its nesting if it is an object or array) and drops it.
    pub(super) fn skip(&mut self, depth: usize) -> Option<()> {
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
    pub(super) fn text_value(&mut self, depth: usize) -> Option<Text<'a>> {
        if self.peek() == b'"' {
            return self.string().map(|s| Text::Str(Cow::Borrowed(s)));
        }
        self.skip(depth).map(|()| Text::Other)
    }

    /// A value as a `serde_json::Value` (integers only: fractions go the serde way, whose
    /// float parsing this does not repeat).
    pub(super) fn value(&mut self, depth: usize) -> Option<Value> {
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
    pub(super) fn params(&mut self) -> Option<Option<RawParams<'a>>> {
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
pub(super) fn nesting_depth(bytes: &[u8]) -> usize {
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
pub(super) struct Checked;

impl<'de> Deserialize<'de> for Checked {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(CheckedVisitor)
    }
}

pub(super) struct CheckedVisitor;

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
pub(super) enum Text<'a> {
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
pub(super) struct RawParams<'a> {
    pub(super) name: Option<Text<'a>>,
    pub(super) uri: Option<Text<'a>>,
    pub(super) arguments: Option<Value>,
}

/// A message's members, as far as a decision reads them (`None`: absent).
#[derive(Debug, Default)]
pub(super) struct RawMessage<'a> {
    /// Whether `jsonrpc` is the string `"2.0"`.
    pub(super) jsonrpc_2: bool,
    pub(super) id: Option<Value>,
    pub(super) method: Option<Text<'a>>,
    /// `Some(None)`: `params` is not an object.
    pub(super) params: Option<Option<RawParams<'a>>>,
    /// Whether `result` or `error` is present.
    pub(super) answers: bool,
}

/// A body: one message (or a value that is not an object, refused later) or a batch.
pub(super) enum Top<'a> {
    Single(Option<RawMessage<'a>>),
    Batch(Vec<Option<RawMessage<'a>>>),
}

/// A key of a message or of `params`; anything else is checked and dropped.
pub(super) fn key<'de, A: MapAccess<'de>>(map: &mut A) -> Result<Option<Cow<'de, str>>, A::Error> {
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
pub(super) struct MessageVisitor;

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
pub(super) struct ParamsSeed;

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
pub(super) struct MessageSeed;

impl<'de> de::DeserializeSeed<'de> for MessageSeed {
    type Value = Option<RawMessage<'de>>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(MessageVisitor)
    }
}

pub(super) fn message(raw: Option<RawMessage<'_>>) -> Result<Message<'_>, ParseError> {
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
pub(super) fn target<'a>(
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
