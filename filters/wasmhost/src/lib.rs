//! An in-process proxy-wasm host on wasmtime (test tree only): it loads a built mcpgw filter and
//! drives it through the proxy-wasm ABI 0.2.1 the way Envoy does, so hundreds of cases run in
//! seconds. Real Envoy stays the judge for the end-to-end set (`tests/envoy_*.rs`).
//!
//! What it models, and how (Envoy's behaviour in brackets):
//! - one VM = one Envoy worker: `_initialize`, a root context, `proxy_on_vm_start`,
//!   `proxy_on_configure` (a `false` there makes Envoy reject the filter);
//! - HTTP streams: request headers, then the body in chunks; a chunk answered `Pause` stays
//!   buffered and the next call sees the whole buffer (`StopIterationAndBuffer`); headers
//!   answered `Pause` stop everything, body callbacks included, until `proxy_continue_stream`
//!   (Envoy converts `StopIteration` to `StopAllIterationAndWatermark`); the same for the
//!   response; `proxy_send_local_response` ends the stream with the filter's answer;
//! - header maps, buffers, properties (what the filter sets; unknown paths are `NotFound`),
//!   shared data with CAS (shared between the VMs made from one [`Shared`], like Envoy's
//!   workers), counters, gauges and histograms, timers (`proxy_on_tick` when the test calls
//!   [`Vm::tick`]), HTTP call-outs (recorded; the test answers them with
//!   [`Vm::answer_http_call`]), logs;
//! - WASI: only what a Rust `wasm32-wasip1` module imports (clock, random, environment, stdout);
//!   any other import traps when called.
//!
//! Every call into the module is metered with wasmtime fuel (about one unit per wasm
//! instruction); [`Vm::take_fuel`] reads it, which is how `make bench` counts instructions.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use wasmtime::{
    Caller, Config, Engine, Extern, Instance, Linker, Memory, Module, Result, Store, TypedFunc,
};

/// Header pairs, in order, names lower-case as Envoy keeps them.
pub type Headers = Vec<(String, String)>;

/// proxy-wasm status codes (ABI 0.2.1).
mod status {
    pub const OK: i32 = 0;
    pub const NOT_FOUND: i32 = 1;
    pub const BAD_ARGUMENT: i32 = 2;
    pub const CAS_MISMATCH: i32 = 8;
}

/// A compiled filter module: compile once (a debug-built Cranelift takes seconds), start many VMs.
#[derive(Debug, Clone)]
pub struct Plugin {
    engine: Engine,
    module: Module,
}

impl Plugin {
    /// Compiles the `.wasm` file at `path`.
    pub fn load(path: &Path) -> Result<Plugin> {
        let mut config = Config::new();
        config.consume_fuel(true);
        let engine = Engine::new(&config)?;
        let module = Module::from_file(&engine, path)?;
        Ok(Plugin { engine, module })
    }
}

/// One metric the module defined.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Metric {
    /// The name as the module defined it (Envoy shows it as `wasmcustom.<name>`).
    pub name: String,
    /// 0 counter, 1 gauge, 2 histogram.
    pub kind: i32,
    /// The current value (counters and gauges) or the last recorded value (histograms).
    pub value: u64,
}

/// What the VMs of one "Envoy" share: shared data and metrics.
#[derive(Debug, Clone, Default)]
pub struct Shared(Arc<Mutex<SharedState>>);

#[derive(Debug, Default)]
struct SharedState {
    data: HashMap<String, (Vec<u8>, u32)>,
    metrics: Vec<Metric>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, SharedState> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The value of the metric named `name`, if the module defined it.
    pub fn metric(&self, name: &str) -> Option<u64> {
        self.lock()
            .metrics
            .iter()
            .find(|m| m.name == name)
            .map(|m| m.value)
    }

    /// Every metric the module defined.
    pub fn metrics(&self) -> Vec<Metric> {
        self.lock().metrics.clone()
    }

    /// The shared-data value under `key`.
    pub fn data(&self, key: &str) -> Option<Vec<u8>> {
        self.lock().data.get(key).map(|(v, _)| v.clone())
    }
}

/// A response the filter sent itself (`proxy_send_local_response`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalResponse {
    /// The HTTP status.
    pub status: u32,
    /// The headers the filter gave.
    pub headers: Headers,
    /// The body.
    pub body: Vec<u8>,
}

impl LocalResponse {
    /// The first value of header `name`.
    pub fn header(&self, name: &str) -> Option<&str> {
        header_in(&self.headers, name)
    }
}

/// An HTTP call-out the module started (`proxy_http_call`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpCall {
    /// The token the module got back.
    pub token: u32,
    /// The context that made the call.
    pub context_id: u32,
    /// The Envoy cluster.
    pub upstream: String,
    /// The request headers (`:method`, `:path`, `:authority`, ...).
    pub headers: Headers,
    /// The request body.
    pub body: Vec<u8>,
    /// The timeout in milliseconds.
    pub timeout_ms: u32,
}

/// The first value of header `name` in `headers`.
pub fn header_in<'a>(headers: &'a Headers, name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

#[derive(Debug, Default)]
struct Stream {
    request_headers: Headers,
    request_body: Vec<u8>,
    response_headers: Headers,
    response_body: Vec<u8>,
    properties: HashMap<Vec<u8>, Vec<u8>>,
    local: Option<LocalResponse>,
    /// `proxy_continue_stream` was called for the request (0) or response (1) direction.
    continued: [bool; 2],
}

#[derive(Debug)]
struct State {
    shared: Shared,
    plugin_config: Vec<u8>,
    now: SystemTime,
    tick_period_ms: u32,
    log_level: i32,
    logs: Vec<(i32, String)>,
    streams: HashMap<u32, Stream>,
    /// The context whose stream the host calls act on.
    current: u32,
    next_token: u32,
    calls: Vec<HttpCall>,
    /// The answer to the call-out being delivered.
    call_response: Option<(Headers, Vec<u8>)>,
}

impl State {
    fn stream(&mut self) -> &mut Stream {
        self.streams.entry(self.current).or_default()
    }
}

const FUEL: u64 = u64::MAX / 2;

/// One VM (an Envoy worker's instance of the filter), with its root context configured.
pub struct Vm {
    store: Store<State>,
    instance: Instance,
    root_id: u32,
    next_id: u32,
    /// Whether `proxy_on_configure` accepted the configuration.
    pub configured: bool,
    /// The request/response body chunk size used to deliver bodies.
    pub chunk_size: usize,
}

impl std::fmt::Debug for Vm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vm")
            .field("root_id", &self.root_id)
            .field("configured", &self.configured)
            .finish()
    }
}

/// A stream after the request phase.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exchange {
    /// The stream's context id.
    pub context_id: u32,
    /// The filter answered locally.
    pub local: Option<LocalResponse>,
    /// The request headers as they go upstream (after the filter's changes).
    pub headers: Headers,
    /// The body that went upstream.
    pub body: Vec<u8>,
    /// The request is still held (headers or body paused, e.g. waiting for a call-out).
    pub held: bool,
}

impl Exchange {
    /// The first value of an upstream request header.
    pub fn header(&self, name: &str) -> Option<&str> {
        header_in(&self.headers, name)
    }
}

/// The response after the filter's response phase.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// The filter replaced the response with its own.
    pub local: Option<LocalResponse>,
    /// The response headers as they go downstream.
    pub headers: Headers,
    /// The response body as it goes downstream.
    pub body: Vec<u8>,
    /// The response is still held.
    pub held: bool,
}

fn serialize_pairs(pairs: &Headers) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&len_u32(pairs.len()).to_le_bytes());
    for (k, v) in pairs {
        out.extend_from_slice(&len_u32(k.len()).to_le_bytes());
        out.extend_from_slice(&len_u32(v.len()).to_le_bytes());
    }
    for (k, v) in pairs {
        out.extend_from_slice(k.as_bytes());
        out.push(0);
        out.extend_from_slice(v.as_bytes());
        out.push(0);
    }
    out
}

fn deserialize_pairs(bytes: &[u8]) -> Result<Headers> {
    let word = |at: usize| -> Result<usize> {
        let b = bytes
            .get(at..at + 4)
            .ok_or_else(|| wasmtime::format_err!("truncated header map"))?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
    };
    let n = word(0)?;
    let mut sizes = Vec::with_capacity(n);
    for i in 0..n {
        sizes.push((word(4 + i * 8)?, word(8 + i * 8)?));
    }
    let mut at = 4 + n * 8;
    let mut text = |len: usize| -> Result<String> {
        let s = bytes
            .get(at..at + len)
            .ok_or_else(|| wasmtime::format_err!("truncated header map"))?;
        at += len + 1;
        Ok(String::from_utf8_lossy(s).into_owned())
    };
    sizes
        .into_iter()
        .map(|(k, v)| Ok((text(k)?, text(v)?)))
        .collect()
}

fn len_u32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

fn memory(caller: &mut Caller<'_, State>) -> Result<Memory> {
    caller
        .get_export("memory")
        .and_then(Extern::into_memory)
        .ok_or_else(|| wasmtime::format_err!("module exports no memory"))
}

fn read(caller: &mut Caller<'_, State>, ptr: i32, len: i32) -> Result<Vec<u8>> {
    let mem = memory(caller)?;
    let (ptr, len) = (ptr as u32 as usize, len as u32 as usize);
    mem.data(&*caller)
        .get(ptr..ptr + len)
        .map(<[u8]>::to_vec)
        .ok_or_else(|| wasmtime::format_err!("guest pointer out of bounds"))
}

fn read_str(caller: &mut Caller<'_, State>, ptr: i32, len: i32) -> Result<String> {
    Ok(String::from_utf8_lossy(&read(caller, ptr, len)?).into_owned())
}

fn write(caller: &mut Caller<'_, State>, ptr: i32, bytes: &[u8]) -> Result<()> {
    let mem = memory(caller)?;
    mem.write(&mut *caller, ptr as u32 as usize, bytes)?;
    Ok(())
}

/// Copies `data` into guest memory allocated by the module and writes its address and size.
fn give(caller: &mut Caller<'_, State>, data: &[u8], ptr_ptr: i32, size_ptr: i32) -> Result<i32> {
    let alloc: TypedFunc<i32, i32> = caller
        .get_export("proxy_on_memory_allocate")
        .and_then(Extern::into_func)
        .ok_or_else(|| wasmtime::format_err!("module exports no proxy_on_memory_allocate"))?
        .typed(&*caller)?;
    let size = i32::try_from(data.len())?;
    let ptr = alloc.call(&mut *caller, size)?;
    write(caller, ptr, data)?;
    write(caller, ptr_ptr, &ptr.to_le_bytes())?;
    write(caller, size_ptr, &size.to_le_bytes())?;
    Ok(status::OK)
}

fn map_of(stream: &mut Stream, map_type: i32) -> Option<&mut Headers> {
    match map_type {
        0 => Some(&mut stream.request_headers),
        2 => Some(&mut stream.response_headers),
        _ => None,
    }
}

/// The header map `map_type` of the current stream (call-out answers are maps 6 and 7).
fn pairs(state: &mut State, map_type: i32) -> Option<Headers> {
    match map_type {
        6 => state.call_response.as_ref().map(|(h, _)| h.clone()),
        7 => Some(Vec::new()),
        _ => map_of(state.stream(), map_type).map(|h| h.clone()),
    }
}

fn buffer(state: &mut State, buffer_type: i32) -> Option<Vec<u8>> {
    match buffer_type {
        0 => Some(state.stream().request_body.clone()),
        1 => Some(state.stream().response_body.clone()),
        4 => state.call_response.as_ref().map(|(_, b)| b.clone()),
        6 => Some(Vec::new()),
        7 => Some(state.plugin_config.clone()),
        _ => None,
    }
}

fn define_proxy_abi(linker: &mut Linker<State>) -> Result<()> {
    linker.func_wrap(
        "env",
        "proxy_log",
        |mut c: Caller<'_, State>, level: i32, ptr: i32, len: i32| {
            let msg = read_str(&mut c, ptr, len)?;
            c.data_mut().logs.push((level, msg));
            Ok(status::OK)
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_get_log_level",
        |mut c: Caller<'_, State>, ret: i32| {
            let level = c.data().log_level;
            write(&mut c, ret, &level.to_le_bytes())?;
            Ok(status::OK)
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_get_current_time_nanoseconds",
        |mut c: Caller<'_, State>, ret: i32| {
            let ns = c
                .data()
                .now
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64);
            write(&mut c, ret, &ns.to_le_bytes())?;
            Ok(status::OK)
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_set_tick_period_milliseconds",
        |mut c: Caller<'_, State>, ms: i32| {
            c.data_mut().tick_period_ms = ms as u32;
            status::OK
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_get_buffer_bytes",
        |mut c: Caller<'_, State>, ty: i32, start: i32, max: i32, ptr_ptr: i32, size_ptr: i32| {
            let Some(buf) = buffer(c.data_mut(), ty) else {
                return Ok(status::NOT_FOUND);
            };
            let start = (start as u32 as usize).min(buf.len());
            let end = start.saturating_add(max as u32 as usize).min(buf.len());
            give(&mut c, &buf[start..end], ptr_ptr, size_ptr)
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_set_buffer_bytes",
        |mut c: Caller<'_, State>, ty: i32, start: i32, size: i32, ptr: i32, len: i32| {
            let data = read(&mut c, ptr, len)?;
            let stream = c.data_mut().stream();
            let buf = match ty {
                0 => &mut stream.request_body,
                1 => &mut stream.response_body,
                _ => return Ok(status::BAD_ARGUMENT),
            };
            // Envoy: start 0 with the whole size replaces, start past the end appends.
            let start = (start as u32 as usize).min(buf.len());
            let end = start.saturating_add(size as u32 as usize).min(buf.len());
            buf.splice(start..end, data);
            Ok(status::OK)
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_get_header_map_pairs",
        |mut c: Caller<'_, State>, ty: i32, pp: i32, sp: i32| {
            let Some(map) = pairs(c.data_mut(), ty) else {
                return Ok(status::NOT_FOUND);
            };
            give(&mut c, &serialize_pairs(&map), pp, sp)
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_set_header_map_pairs",
        |mut c: Caller<'_, State>, ty: i32, ptr: i32, len: i32| {
            let new = deserialize_pairs(&read(&mut c, ptr, len)?)?;
            let Some(map) = map_of(c.data_mut().stream(), ty) else {
                return Ok(status::BAD_ARGUMENT);
            };
            *map = new;
            Ok(status::OK)
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_get_header_map_value",
        |mut c: Caller<'_, State>, ty: i32, kp: i32, kl: i32, pp: i32, sp: i32| {
            let key = read_str(&mut c, kp, kl)?;
            let value =
                pairs(c.data_mut(), ty).and_then(|m| header_in(&m, &key).map(str::to_owned));
            match value {
                Some(v) => give(&mut c, v.as_bytes(), pp, sp),
                None => Ok(status::NOT_FOUND),
            }
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_replace_header_map_value",
        |mut c: Caller<'_, State>, ty: i32, kp: i32, kl: i32, vp: i32, vl: i32| {
            let key = read_str(&mut c, kp, kl)?.to_ascii_lowercase();
            let value = read_str(&mut c, vp, vl)?;
            let Some(map) = map_of(c.data_mut().stream(), ty) else {
                return Ok(status::BAD_ARGUMENT);
            };
            map.retain(|(k, _)| *k != key);
            map.push((key, value));
            Ok(status::OK)
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_add_header_map_value",
        |mut c: Caller<'_, State>, ty: i32, kp: i32, kl: i32, vp: i32, vl: i32| {
            let key = read_str(&mut c, kp, kl)?.to_ascii_lowercase();
            let value = read_str(&mut c, vp, vl)?;
            let Some(map) = map_of(c.data_mut().stream(), ty) else {
                return Ok(status::BAD_ARGUMENT);
            };
            map.push((key, value));
            Ok(status::OK)
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_remove_header_map_value",
        |mut c: Caller<'_, State>, ty: i32, kp: i32, kl: i32| {
            let key = read_str(&mut c, kp, kl)?.to_ascii_lowercase();
            let Some(map) = map_of(c.data_mut().stream(), ty) else {
                return Ok(status::BAD_ARGUMENT);
            };
            map.retain(|(k, _)| *k != key);
            Ok(status::OK)
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_get_property",
        |mut c: Caller<'_, State>, kp: i32, kl: i32, pp: i32, sp: i32| {
            let path = read(&mut c, kp, kl)?;
            match c.data_mut().stream().properties.get(&path).cloned() {
                Some(v) => give(&mut c, &v, pp, sp),
                None => Ok(status::NOT_FOUND),
            }
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_set_property",
        |mut c: Caller<'_, State>, kp: i32, kl: i32, vp: i32, vl: i32| {
            let path = read(&mut c, kp, kl)?;
            let value = read(&mut c, vp, vl)?;
            c.data_mut().stream().properties.insert(path, value);
            Ok(status::OK)
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_get_shared_data",
        |mut c: Caller<'_, State>, kp: i32, kl: i32, pp: i32, sp: i32, cas_ptr: i32| {
            let key = read_str(&mut c, kp, kl)?;
            let found = c.data().shared.lock().data.get(&key).cloned();
            let Some((value, cas)) = found else {
                return Ok(status::NOT_FOUND);
            };
            write(&mut c, cas_ptr, &cas.to_le_bytes())?;
            give(&mut c, &value, pp, sp)
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_set_shared_data",
        |mut c: Caller<'_, State>, kp: i32, kl: i32, vp: i32, vl: i32, cas: i32| {
            let key = read_str(&mut c, kp, kl)?;
            let value = read(&mut c, vp, vl)?;
            let shared = c.data().shared.clone();
            let mut s = shared.lock();
            let current = s.data.get(&key).map_or(0, |(_, c)| *c);
            if cas != 0 && cas as u32 != current {
                return Ok(status::CAS_MISMATCH);
            }
            s.data.insert(key, (value, current.wrapping_add(1).max(1)));
            Ok(status::OK)
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_continue_stream",
        |mut c: Caller<'_, State>, ty: i32| match ty {
            0 | 1 => {
                c.data_mut().stream().continued[ty as usize] = true;
                status::OK
            }
            _ => status::BAD_ARGUMENT,
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_close_stream",
        |mut c: Caller<'_, State>, _: i32| {
            let stream = c.data_mut().stream();
            stream.local.get_or_insert(LocalResponse {
                status: 0,
                headers: Vec::new(),
                body: Vec::new(),
            });
            status::OK
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_send_local_response",
        |mut c: Caller<'_, State>,
         code: i32,
         _dp: i32,
         _dl: i32,
         bp: i32,
         bl: i32,
         hp: i32,
         hl: i32,
         _grpc: i32| {
            let body = read(&mut c, bp, bl)?;
            let headers = deserialize_pairs(&read(&mut c, hp, hl)?)?;
            c.data_mut().stream().local = Some(LocalResponse {
                status: code as u32,
                headers,
                body,
            });
            Ok(status::OK)
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_http_call",
        |mut c: Caller<'_, State>,
         up: i32,
         ul: i32,
         hp: i32,
         hl: i32,
         bp: i32,
         bl: i32,
         _tp: i32,
         _tl: i32,
         timeout: i32,
         token_ptr: i32| {
            let upstream = read_str(&mut c, up, ul)?;
            let headers = deserialize_pairs(&read(&mut c, hp, hl)?)?;
            let body = read(&mut c, bp, bl)?;
            let state = c.data_mut();
            state.next_token += 1;
            let token = state.next_token;
            let context_id = state.current;
            state.calls.push(HttpCall {
                token,
                context_id,
                upstream,
                headers,
                body,
                timeout_ms: timeout as u32,
            });
            write(&mut c, token_ptr, &token.to_le_bytes())?;
            Ok(status::OK)
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_set_effective_context",
        |mut c: Caller<'_, State>, id: i32| {
            c.data_mut().current = id as u32;
            status::OK
        },
    )?;
    linker.func_wrap("env", "proxy_done", |_: Caller<'_, State>| status::OK)?;
    linker.func_wrap(
        "env",
        "proxy_define_metric",
        |mut c: Caller<'_, State>, kind: i32, np: i32, nl: i32, ret: i32| {
            let name = read_str(&mut c, np, nl)?;
            let shared = c.data().shared.clone();
            let id = {
                let mut s = shared.lock();
                match s.metrics.iter().position(|m| m.name == name) {
                    Some(i) => i,
                    None => {
                        s.metrics.push(Metric {
                            name,
                            kind,
                            value: 0,
                        });
                        s.metrics.len() - 1
                    }
                }
            };
            write(&mut c, ret, &len_u32(id).to_le_bytes())?;
            Ok(status::OK)
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_increment_metric",
        |c: Caller<'_, State>, id: i32, by: i64| {
            let mut s = c.data().shared.lock();
            match s.metrics.get_mut(id as u32 as usize) {
                Some(m) => {
                    m.value = m.value.saturating_add_signed(by);
                    status::OK
                }
                None => status::NOT_FOUND,
            }
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_record_metric",
        |c: Caller<'_, State>, id: i32, value: i64| {
            let mut s = c.data().shared.lock();
            match s.metrics.get_mut(id as u32 as usize) {
                Some(m) => {
                    m.value = value as u64;
                    status::OK
                }
                None => status::NOT_FOUND,
            }
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_get_metric",
        |mut c: Caller<'_, State>, id: i32, ret: i32| {
            let value = c
                .data()
                .shared
                .lock()
                .metrics
                .get(id as u32 as usize)
                .map(|m| m.value);
            match value {
                Some(v) => {
                    write(&mut c, ret, &v.to_le_bytes())?;
                    Ok(status::OK)
                }
                None => Ok(status::NOT_FOUND),
            }
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_call_foreign_function",
        |_: Caller<'_, State>, _: i32, _: i32, _: i32, _: i32, _: i32, _: i32| status::NOT_FOUND,
    )?;
    Ok(())
}

/// The WASI functions a Rust `wasm32-wasip1` cdylib imports.
fn define_wasi(linker: &mut Linker<State>) -> Result<()> {
    const WASI: &str = "wasi_snapshot_preview1";
    linker.func_wrap(
        WASI,
        "random_get",
        |mut c: Caller<'_, State>, ptr: i32, len: i32| {
            // Hash-map seeds only; any bytes do, and fixed ones keep runs reproducible.
            let bytes: Vec<u8> = (0..len as u32)
                .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
                .collect();
            write(&mut c, ptr, &bytes)?;
            Ok(0)
        },
    )?;
    linker.func_wrap(
        WASI,
        "environ_sizes_get",
        |mut c: Caller<'_, State>, count: i32, size: i32| {
            write(&mut c, count, &0u32.to_le_bytes())?;
            write(&mut c, size, &0u32.to_le_bytes())?;
            Ok(0)
        },
    )?;
    linker.func_wrap(
        WASI,
        "environ_get",
        |_: Caller<'_, State>, _: i32, _: i32| 0,
    )?;
    linker.func_wrap(
        WASI,
        "clock_time_get",
        |mut c: Caller<'_, State>, _id: i32, _precision: i64, ret: i32| {
            let ns = c
                .data()
                .now
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64);
            write(&mut c, ret, &ns.to_le_bytes())?;
            Ok(0)
        },
    )?;
    linker.func_wrap(
        WASI,
        "fd_write",
        |mut c: Caller<'_, State>, _fd: i32, iovs: i32, n: i32, written: i32| {
            let mut total = 0u32;
            let mut text = Vec::new();
            for i in 0..n {
                let iov = read(&mut c, iovs + i * 8, 8)?;
                let (ptr, len) = (
                    i32::from_le_bytes([iov[0], iov[1], iov[2], iov[3]]),
                    i32::from_le_bytes([iov[4], iov[5], iov[6], iov[7]]),
                );
                text.extend(read(&mut c, ptr, len)?);
                total += len as u32;
            }
            c.data_mut()
                .logs
                .push((-1, String::from_utf8_lossy(&text).into_owned()));
            write(&mut c, written, &total.to_le_bytes())?;
            Ok(0)
        },
    )?;
    linker.func_wrap(WASI, "sched_yield", |_: Caller<'_, State>| 0)?;
    linker.func_wrap(
        WASI,
        "proc_exit",
        |_: Caller<'_, State>, code: i32| -> Result<()> {
            wasmtime::bail!("module called proc_exit({code})")
        },
    )?;
    Ok(())
}

impl Vm {
    /// Starts a VM of `plugin` with `plugin_config` (the filter's JSON), sharing data and metrics
    /// through `shared`: `_initialize`, root context, `proxy_on_vm_start`, `proxy_on_configure`.
    pub fn start(plugin: &Plugin, shared: &Shared, plugin_config: &[u8]) -> Result<Vm> {
        let state = State {
            shared: shared.clone(),
            plugin_config: plugin_config.to_vec(),
            now: SystemTime::now(),
            tick_period_ms: 0,
            log_level: 1,
            logs: Vec::new(),
            streams: HashMap::new(),
            current: 0,
            next_token: 0,
            calls: Vec::new(),
            call_response: None,
        };
        let mut store = Store::new(&plugin.engine, state);
        store.set_fuel(FUEL)?;
        let mut linker = Linker::new(&plugin.engine);
        define_proxy_abi(&mut linker)?;
        define_wasi(&mut linker)?;
        linker.define_unknown_imports_as_traps(&plugin.module)?;
        let instance = linker.instantiate(&mut store, &plugin.module)?;
        let mut vm = Vm {
            store,
            instance,
            root_id: 1,
            next_id: 2,
            configured: false,
            chunk_size: 16 * 1024,
        };
        vm.call::<(), ()>("_initialize", (), ())?;
        vm.call::<(i32, i32), ()>("proxy_on_context_create", (1, 0), ())?;
        let started = vm.call::<(i32, i32), i32>("proxy_on_vm_start", (1, 0), 1)? != 0;
        let size = i32::try_from(plugin_config.len())?;
        vm.configured =
            started && vm.call::<(i32, i32), i32>("proxy_on_configure", (1, size), 1)? != 0;
        Ok(vm)
    }

    /// Calls the module's export `name`; a callback the module does not export is skipped, as
    /// Envoy skips it, and reads as `missing`.
    fn call<P: wasmtime::WasmParams, R: wasmtime::WasmResults>(
        &mut self,
        name: &str,
        params: P,
        missing: R,
    ) -> Result<R> {
        if self.instance.get_export(&mut self.store, name).is_none() {
            return Ok(missing);
        }
        let f = self
            .instance
            .get_typed_func::<P, R>(&mut self.store, name)?;
        f.call(&mut self.store, params)
    }

    /// Calls a stream callback on context `id` with the stream as the current one.
    fn on(&mut self, id: u32, name: &str, size: usize, end_of_stream: bool) -> Result<bool> {
        self.store.data_mut().current = id;
        let size = i32::try_from(size)?;
        let args = (id as i32, size, i32::from(end_of_stream));
        let action = self.call::<(i32, i32, i32), i32>(name, args, 0)?;
        Ok(action == 0)
    }

    /// The fuel (≈ wasm instructions) the module spent since the last call; resets the meter.
    pub fn take_fuel(&mut self) -> u64 {
        let left = self.store.get_fuel().unwrap_or(FUEL);
        let _ = self.store.set_fuel(FUEL);
        FUEL.saturating_sub(left)
    }

    /// Everything the module logged: (proxy-wasm level, message); stdout/stderr are level -1.
    pub fn logs(&self) -> &[(i32, String)] {
        &self.store.data().logs
    }

    /// The call-outs the module started and nobody answered yet.
    pub fn http_calls(&self) -> &[HttpCall] {
        &self.store.data().calls
    }

    /// The tick period the module asked for (0: none).
    pub fn tick_period(&self) -> Duration {
        Duration::from_millis(u64::from(self.store.data().tick_period_ms))
    }

    /// Moves the VM's clock.
    pub fn advance(&mut self, by: Duration) {
        self.store.data_mut().now += by;
    }

    /// Fires the root context's timer once.
    pub fn tick(&mut self) -> Result<()> {
        self.store.data_mut().current = self.root_id;
        self.call::<i32, ()>("proxy_on_tick", self.root_id as i32, ())
    }

    /// Answers call-out `token` (`:status` goes in `headers`).
    pub fn answer_http_call(
        &mut self,
        token: u32,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<()> {
        let state = self.store.data_mut();
        let Some(i) = state.calls.iter().position(|c| c.token == token) else {
            wasmtime::bail!("no call-out with token {token}");
        };
        let call = state.calls.remove(i);
        state.call_response = Some((owned(headers), body.to_vec()));
        state.current = call.context_id;
        let args = (
            call.context_id as i32,
            token as i32,
            i32::try_from(headers.len())?,
            i32::try_from(body.len())?,
            0,
        );
        let result =
            self.call::<(i32, i32, i32, i32, i32), ()>("proxy_on_http_call_response", args, ());
        self.store.data_mut().call_response = None;
        result
    }

    /// Sends a request through the filter: headers, then the body in [`Vm::chunk_size`] chunks
    /// (none when `body` is empty), as Envoy's HTTP connection manager does.
    pub fn request(&mut self, headers: &[(&str, &str)], body: &[u8]) -> Result<Exchange> {
        let id = self.next_id;
        self.next_id += 1;
        self.store.data_mut().current = id;
        let ids = (id as i32, self.root_id as i32);
        self.call::<(i32, i32), ()>("proxy_on_context_create", ids, ())?;
        self.store.data_mut().streams.insert(
            id,
            Stream {
                request_headers: owned(headers),
                ..Stream::default()
            },
        );
        let (forwarded, held) = self.deliver(id, 0, headers.len(), body)?;
        let stream = self.stream(id)?;
        Ok(Exchange {
            context_id: id,
            local: stream.local.clone(),
            headers: stream.request_headers.clone(),
            body: forwarded,
            held,
        })
    }

    /// Delivers the upstream's response to stream `exchange` and ends the stream (`on_done`,
    /// `on_log`, `on_delete`).
    pub fn respond(
        &mut self,
        exchange: &Exchange,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<Response> {
        let id = exchange.context_id;
        self.stream_mut(id)?.response_headers = owned(headers);
        let (forwarded, held) = self.deliver(id, 1, headers.len(), body)?;
        let stream = self.stream(id)?;
        let response = Response {
            local: stream.local.clone(),
            headers: stream.response_headers.clone(),
            body: forwarded,
            held,
        };
        self.finish(id)?;
        Ok(response)
    }

    /// Ends stream `id` without a response (after a local reply, or a client that went away).
    pub fn finish(&mut self, id: u32) -> Result<()> {
        self.store.data_mut().current = id;
        self.call::<i32, i32>("proxy_on_done", id as i32, 1)?;
        self.call::<i32, ()>("proxy_on_log", id as i32, ())?;
        self.call::<i32, ()>("proxy_on_delete", id as i32, ())?;
        self.store.data_mut().streams.remove(&id);
        Ok(())
    }

    /// The filter-state property `name` stream `id` set (Envoy: `%FILTER_STATE(wasm.<name>)%`).
    pub fn property(&self, id: u32, name: &str) -> Option<String> {
        let stream = self.store.data().streams.get(&id)?;
        stream
            .properties
            .get(name.as_bytes())
            .map(|v| String::from_utf8_lossy(v).into_owned())
    }

    fn stream(&self, id: u32) -> Result<&Stream> {
        self.store
            .data()
            .streams
            .get(&id)
            .ok_or_else(|| wasmtime::format_err!("no stream {id}"))
    }

    fn stream_mut(&mut self, id: u32) -> Result<&mut Stream> {
        self.store
            .data_mut()
            .streams
            .get_mut(&id)
            .ok_or_else(|| wasmtime::format_err!("no stream {id}"))
    }

    /// One direction (0 request, 1 response): headers, then body chunks with Envoy's buffering.
    /// Returns what passed the filter and whether the direction is still held.
    fn deliver(
        &mut self,
        id: u32,
        dir: usize,
        header_count: usize,
        body: &[u8],
    ) -> Result<(Vec<u8>, bool)> {
        let (on_headers, on_body) = match dir {
            0 => ("proxy_on_request_headers", "proxy_on_request_body"),
            _ => ("proxy_on_response_headers", "proxy_on_response_body"),
        };
        let mut headers_go = self.on(id, on_headers, header_count, body.is_empty())?;
        let mut forwarded = Vec::new();
        let chunks: Vec<&[u8]> = body.chunks(self.chunk_size.max(1)).collect();
        for (i, chunk) in chunks.iter().enumerate() {
            // Envoy turns a paused header phase into StopAllIterationAndWatermark: the body is
            // buffered in front of the filter, which sees none of it until it continues.
            if self.stream(id)?.local.is_some() || !(headers_go || self.stream(id)?.continued[dir])
            {
                let s = self.stream_mut(id)?;
                let buf = if dir == 0 {
                    &mut s.request_body
                } else {
                    &mut s.response_body
                };
                buf.extend_from_slice(&chunks[i..].concat());
                break;
            }
            let last = i + 1 == chunks.len();
            let buffered = {
                let s = self.stream_mut(id)?;
                let buf = if dir == 0 {
                    &mut s.request_body
                } else {
                    &mut s.response_body
                };
                buf.extend_from_slice(chunk);
                buf.len()
            };
            if self.on(id, on_body, buffered, last)? {
                headers_go = true;
                let s = self.stream_mut(id)?;
                let buf = if dir == 0 {
                    &mut s.request_body
                } else {
                    &mut s.response_body
                };
                forwarded.append(buf);
            }
        }
        let s = self.stream_mut(id)?;
        if s.continued[dir] {
            headers_go = true;
            let buf = if dir == 0 {
                &mut s.request_body
            } else {
                &mut s.response_body
            };
            forwarded.append(buf);
        }
        let held = s.local.is_none()
            && (!headers_go
                || !(if dir == 0 {
                    &s.request_body
                } else {
                    &s.response_body
                })
                .is_empty());
        Ok((forwarded, held))
    }
}

fn owned(headers: &[(&str, &str)]) -> Headers {
    headers
        .iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), (*v).to_owned()))
        .collect()
}
