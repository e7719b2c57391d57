//! Rewriting `*/list` responses, JSON bodies and SSE streams, so a caller sees only the entries a
//! predicate keeps.

use super::*;

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
pub(super) fn filter_message(
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
pub(super) enum Spliced {
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
pub(super) fn splice_lists(
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
pub(super) type Edit = ((usize, usize), Vec<(usize, usize)>, usize);

/// The state of [`splice_lists`]' walk. Its methods return `None` when a member it reads is
/// given twice ([`Spliced::ViaValue`]).
pub(super) struct Splicer<'a, 'k> {
    pub(super) c: Cursor<'a>,
    pub(super) pending: &'k [PendingList],
    pub(super) keep: &'k mut dyn FnMut(ListKind, &str) -> bool,
    pub(super) out: String,
    /// How much of the text is in `out` (or replaced there).
    pub(super) copied: usize,
    pub(super) removed: usize,
}

impl Splicer<'_, '_> {
    /// Walks one message (at a value) and rewrites its list if it answers a pending list.
    pub(super) fn message(&mut self) -> Option<()> {
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
    pub(super) fn result(&mut self, kind: ListKind) -> Option<Option<Edit>> {
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
    pub(super) fn list(&mut self, kind: ListKind) -> Option<Option<Edit>> {
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
    pub(super) fn entry(&mut self, kind: ListKind) -> Option<bool> {
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
pub(super) fn json_string(literal: &str) -> Option<Cow<'_, str>> {
    let inner = literal.strip_prefix('"')?.strip_suffix('"')?;
    if inner.contains('\\') {
        serde_json::from_str::<String>(literal).ok().map(Cow::Owned)
    } else {
        Some(Cow::Borrowed(inner))
    }
}

/// A cursor over a JSON document already checked to be valid: it finds where values start and
/// end, and decodes nothing but keys.
pub(super) struct Cursor<'a> {
    pub(super) text: &'a str,
    pub(super) i: usize,
}

impl<'a> Cursor<'a> {
    pub(super) fn peek(&self) -> u8 {
        self.text.as_bytes().get(self.i).copied().unwrap_or(0)
    }

    pub(super) fn ws(&mut self) {
        while matches!(self.peek(), b' ' | b'\n' | b'\r' | b'\t') {
            self.i += 1;
        }
    }

    /// At a `"`: skips the string literal.
    pub(super) fn string(&mut self) {
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
    pub(super) fn value(&mut self) -> (usize, usize) {
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
    pub(super) fn next_key(&mut self) -> Option<Cow<'a, str>> {
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
pub(super) fn split_event(s: &str) -> (&str, &str, &str) {
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
