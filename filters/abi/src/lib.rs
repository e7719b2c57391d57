//! mcpgw's own binding of the proxy-wasm ABI (0.2.1), for its filters.
//!
//! Why not the proxy-wasm Rust SDK: the SDK exports every callback of the ABI, and Envoy enters
//! the VM for every exported callback of every request (response headers, body chunks, log,
//! done, delete), whether the filter cares or not; each host-to-VM entry and each value the host
//! hands back (through `proxy_on_memory_allocate`, another entry) costs microseconds under V8.
//! A filter built on this crate exports only the callbacks it implements (it writes them with
//! `#[unsafe(no_mangle)]`, calling into its own state), reads all request headers with one call
//! ([`headers`]) and changes only the headers it must ([`add_header`], [`remove_header`]): Envoy
//! rebuilds a whole header map when it is replaced, which costs more than a few calls.
//!
//! This crate exports the two functions every module needs: `proxy_abi_version_0_2_1` and
//! `proxy_on_memory_allocate`. Everything else is a thin, safe wrapper over one host import.
//! Values the host returns are owned `Vec<u8>`s; header values are bytes, read as text lossily
//! (a header that is not UTF-8 still matches by its valid prefix and never panics).

#![allow(unsafe_code)] // reason: this crate is the one place that speaks the raw ABI

use std::alloc::{Layout, alloc};
use std::borrow::Cow;
use std::ptr::{NonNull, null, null_mut};

/// What a stream callback tells the host.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum Action {
    /// Go on with the next filter.
    Continue = 0,
    /// Hold the stream (headers: stop iteration; body: buffer) until the filter resumes or
    /// answers it.
    Pause = 1,
}

/// An ABI status that is not `Ok`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Status(pub u32);

fn check(status: u32) -> Result<(), Status> {
    if status == 0 {
        Ok(())
    } else {
        Err(Status(status))
    }
}

/// Header maps (`MapType` in the ABI).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum Map {
    /// The request headers of the current stream.
    RequestHeaders = 0,
    /// The response headers of the current stream.
    ResponseHeaders = 2,
    /// The response headers of an HTTP call-out, inside `proxy_on_http_call_response`.
    HttpCallResponseHeaders = 6,
}

/// Buffers (`BufferType` in the ABI).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum Buffer {
    /// The request body buffered so far.
    RequestBody = 0,
    /// The response body buffered so far.
    ResponseBody = 1,
    /// The body of an HTTP call-out's response.
    HttpCallResponseBody = 4,
    /// The plugin configuration, inside `proxy_on_configure`.
    PluginConfiguration = 7,
}

/// Log levels, as the ABI numbers them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
enum Level {
    Trace = 0,
    Debug = 1,
    Info = 2,
    Warn = 3,
    Error = 4,
    Critical = 5,
}

#[cfg_attr(target_family = "wasm", link(wasm_import_module = "env"))]
unsafe extern "C" {
    fn proxy_log(level: u32, message: *const u8, message_len: usize) -> u32;
    fn proxy_get_current_time_nanoseconds(time: *mut u64) -> u32;
    fn proxy_set_tick_period_milliseconds(period: u32) -> u32;
    fn proxy_get_buffer_bytes(
        buffer: u32,
        start: usize,
        max: usize,
        data: *mut *mut u8,
        len: *mut usize,
    ) -> u32;
    fn proxy_set_buffer_bytes(
        buffer: u32,
        start: usize,
        size: usize,
        data: *const u8,
        len: usize,
    ) -> u32;
    fn proxy_get_header_map_pairs(map: u32, data: *mut *mut u8, len: *mut usize) -> u32;
    fn proxy_get_header_map_value(
        map: u32,
        key: *const u8,
        key_len: usize,
        value: *mut *mut u8,
        value_len: *mut usize,
    ) -> u32;
    fn proxy_add_header_map_value(
        map: u32,
        key: *const u8,
        key_len: usize,
        value: *const u8,
        value_len: usize,
    ) -> u32;
    fn proxy_remove_header_map_value(map: u32, key: *const u8, key_len: usize) -> u32;
    fn proxy_set_property(path: *const u8, path_len: usize, value: *const u8, len: usize) -> u32;
    fn proxy_get_shared_data(
        key: *const u8,
        key_len: usize,
        value: *mut *mut u8,
        value_len: *mut usize,
        cas: *mut u32,
    ) -> u32;
    fn proxy_set_shared_data(
        key: *const u8,
        key_len: usize,
        value: *const u8,
        value_len: usize,
        cas: u32,
    ) -> u32;
    fn proxy_continue_stream(stream: u32) -> u32;
    fn proxy_send_local_response(
        status: u32,
        details: *const u8,
        details_len: usize,
        body: *const u8,
        body_len: usize,
        headers: *const u8,
        headers_len: usize,
        grpc_status: i32,
    ) -> u32;
    fn proxy_http_call(
        cluster: *const u8,
        cluster_len: usize,
        headers: *const u8,
        headers_len: usize,
        body: *const u8,
        body_len: usize,
        trailers: *const u8,
        trailers_len: usize,
        timeout_ms: u32,
        token: *mut u32,
    ) -> u32;
    fn proxy_set_effective_context(context: u32) -> u32;
    fn proxy_define_metric(kind: u32, name: *const u8, name_len: usize, id: *mut u32) -> u32;
    fn proxy_increment_metric(id: u32, offset: i64) -> u32;
}

/// The ABI version this module speaks (the host looks for this export).
#[unsafe(no_mangle)]
pub extern "C" fn proxy_abi_version_0_2_1() {}

/// Memory for a value the host hands to the module; [`take`] turns it into a `Vec`.
#[unsafe(no_mangle)]
pub extern "C" fn proxy_on_memory_allocate(size: usize) -> *mut u8 {
    match Layout::array::<u8>(size) {
        Ok(_) if size == 0 => NonNull::dangling().as_ptr(),
        // SAFETY: the layout has a non-zero size.
        Ok(layout) => unsafe { alloc(layout) },
        Err(_) => null_mut(),
    }
}

/// Takes ownership of `len` bytes at `data` that the host got from `proxy_on_memory_allocate`.
fn take(data: *mut u8, len: usize) -> Vec<u8> {
    if data.is_null() || len == 0 {
        return Vec::new();
    }
    // SAFETY: `data` came from `proxy_on_memory_allocate(len)`, i.e. the global allocator with
    // `Layout::array::<u8>(len)`, which is exactly what a `Vec<u8>` of capacity `len` frees.
    unsafe { Vec::from_raw_parts(data, len, len) }
}

/// Calls a host import that returns a value through `proxy_on_memory_allocate`.
fn fetch(call: impl FnOnce(*mut *mut u8, *mut usize) -> u32) -> Result<Vec<u8>, Status> {
    let mut data = null_mut();
    let mut len = 0;
    let status = call(&mut data, &mut len);
    let bytes = take(data, len);
    check(status).map(|()| bytes)
}

/// Like [`fetch`], `None` when the host has nothing under that name.
fn fetch_optional(call: impl FnOnce(*mut *mut u8, *mut usize) -> u32) -> Option<Vec<u8>> {
    fetch(call).ok()
}

/// Writes `msg` to Envoy's log at `level`.
fn log_at(level: Level, msg: &str) {
    // SAFETY: the pointer and length describe `msg`.
    let _ = unsafe { proxy_log(level as u32, msg.as_ptr(), msg.len()) };
}

/// The host's wall clock, in milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    let mut nanos = 0;
    // SAFETY: `nanos` is a valid place for the host to write a u64.
    let _ = unsafe { proxy_get_current_time_nanoseconds(&mut nanos) };
    nanos / 1_000_000
}

/// Asks for `proxy_on_tick` on the current root context every `period_ms`.
pub fn set_tick_period(period_ms: u32) {
    // SAFETY: plain value.
    let _ = unsafe { proxy_set_tick_period_milliseconds(period_ms) };
}

/// The whole of a buffer (empty when there is none).
pub fn buffer(buffer: Buffer) -> Vec<u8> {
    // SAFETY: `fetch` passes valid out-pointers.
    fetch_optional(|d, l| unsafe { proxy_get_buffer_bytes(buffer as u32, 0, usize::MAX, d, l) })
        .unwrap_or_default()
}

/// Replaces `size` bytes of a buffer from `start` by `data`.
pub fn set_buffer(buffer: Buffer, start: usize, size: usize, data: &[u8]) -> Result<(), Status> {
    // SAFETY: the pointer and length describe `data`.
    check(unsafe { proxy_set_buffer_bytes(buffer as u32, start, size, data.as_ptr(), data.len()) })
}

/// A header map read in one call: the host's serialised form, parsed in place.
#[derive(Debug, Default)]
pub struct Headers {
    bytes: Vec<u8>,
    /// (name start, name end, value start, value end) into `bytes`.
    spans: Vec<[usize; 4]>,
}

impl Headers {
    /// Parses the ABI's map serialisation: a u32 count, `count` pairs of u32 lengths, then each
    /// name and value followed by a NUL. A malformed map reads as empty.
    fn parse(bytes: Vec<u8>) -> Headers {
        let spans = Self::spans(&bytes).unwrap_or_default();
        Headers { bytes, spans }
    }

    fn spans(bytes: &[u8]) -> Option<Vec<[usize; 4]>> {
        let word = |at: usize| -> Option<usize> {
            let b = bytes.get(at..at + 4)?;
            usize::try_from(u32::from_le_bytes([b[0], b[1], b[2], b[3]])).ok()
        };
        let count = word(0)?;
        let mut at = 4usize.checked_add(count.checked_mul(8)?)?;
        if at > bytes.len() {
            return None;
        }
        let mut spans = Vec::with_capacity(count);
        for i in 0..count {
            let name_len = word(4 + i * 8)?;
            let value_len = word(8 + i * 8)?;
            let name = [at, at.checked_add(name_len)?];
            let value_start = name[1].checked_add(1)?;
            let value = [value_start, value_start.checked_add(value_len)?];
            at = value[1].checked_add(1)?;
            if at > bytes.len() {
                return None;
            }
            spans.push([name[0], name[1], value[0], value[1]]);
        }
        Some(spans)
    }

    /// The first value of `name` (lowercase).
    pub fn get(&self, name: &str) -> Option<Cow<'_, str>> {
        self.spans
            .iter()
            .find(|s| &self.bytes[s[0]..s[1]] == name.as_bytes())
            .map(|s| text(&self.bytes[s[2]..s[3]]))
    }

    /// Every (name, value), in order, as the host's bytes (names lowercase in Envoy); text through
    /// [`get`](Headers::get) or [`value`](Headers::value).
    pub fn raw(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.spans
            .iter()
            .map(|s| (&self.bytes[s[0]..s[1]], &self.bytes[s[2]..s[3]]))
    }

    /// The value of the `i`th header (in [`raw`](Headers::raw)'s order) as text; empty when there
    /// is no such header.
    pub fn value(&self, i: usize) -> Cow<'_, str> {
        self.spans
            .get(i)
            .map_or(Cow::Borrowed(""), |s| text(&self.bytes[s[2]..s[3]]))
    }
}

/// Header bytes as text: borrowed when they are UTF-8 (checked a word at a time), else lossily
/// (`from_utf8_lossy` alone checks byte by byte: ~7k wasm instructions for a bearer token).
fn text(bytes: &[u8]) -> Cow<'_, str> {
    match std::str::from_utf8(bytes) {
        Ok(s) => Cow::Borrowed(s),
        Err(_) => String::from_utf8_lossy(bytes),
    }
}

/// Serialises (name, value) pairs as the ABI's maps are.
fn serialize_pairs(pairs: &[(&str, &str)]) -> Vec<u8> {
    let size = pairs
        .iter()
        .map(|(k, v)| 10 + k.len() + v.len())
        .sum::<usize>()
        + 4;
    let mut out = Vec::with_capacity(size);
    let len = |n: usize| u32::try_from(n).unwrap_or(u32::MAX).to_le_bytes();
    out.extend_from_slice(&len(pairs.len()));
    for (k, v) in pairs {
        out.extend_from_slice(&len(k.len()));
        out.extend_from_slice(&len(v.len()));
    }
    for (k, v) in pairs {
        out.extend_from_slice(k.as_bytes());
        out.push(0);
        out.extend_from_slice(v.as_bytes());
        out.push(0);
    }
    out
}

/// Every header of `map`, in one host call.
pub fn headers(map: Map) -> Headers {
    // SAFETY: `fetch` passes valid out-pointers.
    let bytes = fetch_optional(|d, l| unsafe { proxy_get_header_map_pairs(map as u32, d, l) });
    Headers::parse(bytes.unwrap_or_default())
}

/// One header of `map` (the first value), lossily as text.
pub fn header(map: Map, name: &str) -> Option<String> {
    // SAFETY: the key pointer and length describe `name`; `fetch` passes valid out-pointers.
    let bytes = fetch_optional(|d, l| unsafe {
        proxy_get_header_map_value(map as u32, name.as_ptr(), name.len(), d, l)
    })?;
    Some(text(&bytes).into_owned())
}

/// Adds a value of header `name` to `map` (after any it already has). On the security path a
/// failure refuses the request: an identity that was not set must not look like no identity.
pub fn add_header(map: Map, name: &str, value: &str) -> Result<(), Status> {
    // SAFETY: the pointers and lengths describe `name` and `value`.
    check(unsafe {
        proxy_add_header_map_value(
            map as u32,
            name.as_ptr(),
            name.len(),
            value.as_ptr(),
            value.len(),
        )
    })
}

/// Removes every value of header `name` from `map`. On the security path a failure refuses the
/// request: a spoofed header that could not be removed must not reach the upstream.
pub fn remove_header(map: Map, name: &[u8]) -> Result<(), Status> {
    // SAFETY: the pointer and length describe `name`.
    check(unsafe { proxy_remove_header_map_value(map as u32, name.as_ptr(), name.len()) })
}

/// Sets the property `name` (a one-segment path) for the current stream, e.g. filter state that
/// Envoy's access log reads.
pub fn set_property(name: &str, value: &[u8]) {
    // SAFETY: the pointers and lengths describe `name` and `value`.
    let _ = unsafe { proxy_set_property(name.as_ptr(), name.len(), value.as_ptr(), value.len()) };
}

/// A shared-data value (shared by every VM of this `vm_id` in the process) and its CAS.
pub fn shared_data(key: &str) -> (Option<Vec<u8>>, Option<u32>) {
    let mut cas = 0;
    // SAFETY: the key pointer and length describe `key`; the out-pointers are valid.
    let value = fetch_optional(|d, l| unsafe {
        proxy_get_shared_data(key.as_ptr(), key.len(), d, l, &mut cas)
    });
    match value {
        Some(v) => (Some(v), Some(cas)),
        None => (None, None),
    }
}

/// Writes a shared-data value; with `cas`, only if nobody wrote it since that CAS was read.
pub fn set_shared_data(key: &str, value: &[u8], cas: Option<u32>) -> Result<(), Status> {
    // SAFETY: the pointers and lengths describe `key` and `value`.
    check(unsafe {
        proxy_set_shared_data(
            key.as_ptr(),
            key.len(),
            value.as_ptr(),
            value.len(),
            cas.unwrap_or(0),
        )
    })
}

/// Resumes the current stream's paused request.
pub fn resume_request() {
    // SAFETY: plain value.
    let _ = unsafe { proxy_continue_stream(0) };
}

/// Answers the current stream locally with `status`, `headers` and `body`.
pub fn send_response(status: u32, headers: &[(&str, &str)], body: &[u8]) {
    let headers = serialize_pairs(headers);
    // SAFETY: the pointers and lengths describe `body` and `headers`; no details.
    let _ = unsafe {
        proxy_send_local_response(
            status,
            null(),
            0,
            body.as_ptr(),
            body.len(),
            headers.as_ptr(),
            headers.len(),
            -1,
        )
    };
}

/// Fails closed: answers the current request 500 (`{"error":"server_error"}`) and holds it. For a
/// callback the module has no state to decide with (a context it does not know, a root without
/// configuration, which Envoy does not run).
pub fn refuse_undecidable() -> Action {
    send_response(
        500,
        &[
            ("content-type", "application/json"),
            ("cache-control", "no-store"),
        ],
        br#"{"error":"server_error"}"#,
    );
    Action::Pause
}

/// Starts an HTTP call-out to an Envoy `cluster`; its answer comes to
/// `proxy_on_http_call_response` of the current context with the returned token.
pub fn http_call(cluster: &str, headers: &[(&str, &str)], timeout_ms: u32) -> Result<u32, Status> {
    let headers = serialize_pairs(headers);
    let trailers = serialize_pairs(&[]);
    let mut token = 0;
    // SAFETY: the pointers and lengths describe `cluster`, `headers` and `trailers`; no body;
    // `token` is a valid out-pointer.
    check(unsafe {
        proxy_http_call(
            cluster.as_ptr(),
            cluster.len(),
            headers.as_ptr(),
            headers.len(),
            null(),
            0,
            trailers.as_ptr(),
            trailers.len(),
            timeout_ms,
            &mut token,
        )
    })
    .map(|()| token)
}

/// Makes `context` the current context (a stream a root context acts on); fails when that
/// context is gone.
pub fn set_effective_context(context: u32) -> Result<(), Status> {
    // SAFETY: plain value.
    check(unsafe { proxy_set_effective_context(context) })
}

/// Defines a counter (Envoy names it `wasmcustom.<name>`) and returns its id.
pub fn define_counter(name: &str) -> Result<u32, Status> {
    let mut id = 0;
    // SAFETY: the pointer and length describe `name`; `id` is a valid out-pointer.
    check(unsafe { proxy_define_metric(0, name.as_ptr(), name.len(), &mut id) }).map(|()| id)
}

/// Adds `by` to a counter.
pub fn increment(id: u32, by: i64) {
    // SAFETY: plain values.
    let _ = unsafe { proxy_increment_metric(id, by) };
}

/// Routes the `log` crate's macros to Envoy's log, at `max` and above.
#[derive(Debug)]
struct HostLogger;

impl log::Log for HostLogger {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &log::Record<'_>) {
        let level = match record.level() {
            log::Level::Error => Level::Error,
            log::Level::Warn => Level::Warn,
            log::Level::Info => Level::Info,
            log::Level::Debug => Level::Debug,
            log::Level::Trace => Level::Trace,
        };
        log_at(level, &record.args().to_string());
    }

    fn flush(&self) {}
}

/// Sets up logging (the `log` macros, at `max` and above, go to Envoy's log) and a panic hook
/// that logs the panic at critical level under `name` before the VM aborts. Call it once, when
/// the first context is created.
pub fn init(name: &'static str, max: log::LevelFilter) {
    if log::set_logger(&HostLogger).is_ok() {
        log::set_max_level(max);
        std::panic::set_hook(Box::new(move |info| {
            log_at(Level::Critical, &format!("{name} panicked: {info}"));
        }));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_round_trip_through_the_abi_serialisation() {
        let pairs = [
            (":path", "/mcp"),
            ("x-empty", ""),
            ("authorization", "Bearer a.b.c"),
        ];
        let headers = Headers::parse(serialize_pairs(&pairs));
        let read: Vec<(String, String)> = headers
            .raw()
            .map(|(k, v)| (text(k).into_owned(), text(v).into_owned()))
            .collect();
        let want: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        assert_eq!(read, want);
        assert_eq!(headers.get("x-empty").as_deref(), Some(""));
        assert_eq!(headers.value(2), "Bearer a.b.c");
        assert_eq!(headers.value(3), "");
        assert_eq!(headers.get("missing"), None);
    }

    #[test]
    fn a_malformed_map_reads_as_empty_and_bad_bytes_read_lossily() {
        for bytes in [
            vec![],
            vec![1, 0, 0],
            vec![1, 0, 0, 0, 5, 0, 0, 0, 1, 0, 0, 0, b'a'],
            vec![255, 255, 255, 255],
        ] {
            assert_eq!(Headers::parse(bytes).raw().count(), 0);
        }
        let mut bytes = serialize_pairs(&[(":path", "/mcp?")]);
        let at = bytes.len() - 2;
        bytes[at] = 0xff;
        let headers = Headers::parse(bytes);
        assert_eq!(headers.get(":path").as_deref(), Some("/mcp\u{fffd}"));
    }
}
