//! mcpgw's own binding of Envoy's dynamic-module C ABI (`source/extensions/dynamic_modules/abi/abi.h`),
//! HTTP filters only, and only the hooks and callbacks mcpgw's filters use.
//!
//! A filter crate implements [`FilterConfig`] (one per filter configuration, made on Envoy's main
//! thread and shared by every worker) and [`Filter`] (one per HTTP stream, on its worker), and
//! exports Envoy's hooks with [`export_http_filter!`]. The hooks turn Envoy's raw pointers into
//! the boxed values this crate made, and Envoy's buffers into slices; the filter sees only safe
//! handles ([`Stream`], [`ConfigContext`]) whose methods each wrap one callback into Envoy.
//!
//! The ABI is tied to the Envoy build: [`ABI_VERSION`] is the version string of the Envoy this
//! crate was written against (Envoy 1.40.0, whose binary carries `v0.2.0`). Envoy only warns on
//! another version and loads the module anyway, so a module built here must be tested in the Envoy
//! it runs in.

#![allow(unsafe_code)] // reason: this crate is the one place that speaks Envoy's C ABI

use std::ffi::{CStr, c_void};
use std::marker::PhantomData;
use std::ptr::null;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

/// The dynamic-module ABI version this binding follows: `ENVOY_DYNAMIC_MODULES_ABI_VERSION` of
/// Envoy 1.40.0. Envoy logs whether the module's version matched its own when it loads it.
pub const ABI_VERSION: &CStr = c"v0.2.0";

/// The Envoy release whose ABI [`ABI_VERSION`] is.
pub const ENVOY: &str = "Envoy 1.40.0";

/// A buffer Envoy owns (`envoy_dynamic_module_type_envoy_buffer`).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
#[doc(hidden)]
pub struct EnvoyBuffer {
    ptr: *const u8,
    length: usize,
}

impl EnvoyBuffer {
    /// The bytes, borrowed for `'a`.
    ///
    /// # Safety
    /// `ptr` must point at `length` bytes Envoy keeps alive and unchanged for `'a`, or be null.
    unsafe fn bytes<'a>(self) -> &'a [u8] {
        if self.ptr.is_null() || self.length == 0 {
            return &[];
        }
        // SAFETY: the caller guarantees `length` readable bytes at `ptr` for `'a`.
        unsafe { std::slice::from_raw_parts(self.ptr, self.length) }
    }
}

/// A buffer the module owns (`envoy_dynamic_module_type_module_buffer`).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
struct ModuleBuffer {
    ptr: *const u8,
    length: usize,
}

impl ModuleBuffer {
    fn of(bytes: &[u8]) -> ModuleBuffer {
        ModuleBuffer {
            ptr: bytes.as_ptr(),
            length: bytes.len(),
        }
    }

    /// The null buffer (no value: removes a header, no response details).
    const NONE: ModuleBuffer = ModuleBuffer {
        ptr: null(),
        length: 0,
    };
}

/// A header Envoy owns (`envoy_dynamic_module_type_envoy_http_header`).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
#[doc(hidden)]
pub struct EnvoyHeader {
    key: EnvoyBuffer,
    value: EnvoyBuffer,
}

/// A header the module owns (`envoy_dynamic_module_type_module_http_header`).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
struct ModuleHeader {
    key: ModuleBuffer,
    value: ModuleBuffer,
}

fn module_headers(headers: &[(&str, &str)]) -> Vec<ModuleHeader> {
    headers
        .iter()
        .map(|(k, v)| ModuleHeader {
            key: ModuleBuffer::of(k.as_bytes()),
            value: ModuleBuffer::of(v.as_bytes()),
        })
        .collect()
}

/// `envoy_dynamic_module_type_http_header_type_RequestHeader`.
const REQUEST_HEADERS: u32 = 0;
/// `envoy_dynamic_module_type_http_callout_result_Success`.
const CALLOUT_SUCCESS: u32 = 0;

unsafe extern "C" {
    fn envoy_dynamic_module_callback_log(level: u32, message: ModuleBuffer);
    fn envoy_dynamic_module_callback_log_enabled(level: u32) -> bool;
    fn envoy_dynamic_module_callback_get_concurrency() -> u32;
    fn envoy_dynamic_module_callback_http_get_headers_size(filter: *mut c_void, kind: u32)
    -> usize;
    fn envoy_dynamic_module_callback_http_get_headers(
        filter: *mut c_void,
        kind: u32,
        out: *mut EnvoyHeader,
    ) -> bool;
    fn envoy_dynamic_module_callback_http_add_header(
        filter: *mut c_void,
        kind: u32,
        key: ModuleBuffer,
        value: ModuleBuffer,
    ) -> bool;
    fn envoy_dynamic_module_callback_http_set_header(
        filter: *mut c_void,
        kind: u32,
        key: ModuleBuffer,
        value: ModuleBuffer,
    ) -> bool;
    fn envoy_dynamic_module_callback_http_send_response(
        filter: *mut c_void,
        status: u32,
        headers: *mut ModuleHeader,
        headers_len: usize,
        body: ModuleBuffer,
        details: ModuleBuffer,
    );
    fn envoy_dynamic_module_callback_http_filter_continue_decoding(filter: *mut c_void);
    fn envoy_dynamic_module_callback_http_filter_get_worker_index(filter: *mut c_void) -> u32;
    fn envoy_dynamic_module_callback_http_filter_http_callout(
        filter: *mut c_void,
        id: *mut u64,
        cluster: ModuleBuffer,
        headers: *mut ModuleHeader,
        headers_len: usize,
        body: ModuleBuffer,
        timeout_ms: u64,
    ) -> u32;
    fn envoy_dynamic_module_callback_http_filter_config_http_callout(
        config: *mut c_void,
        id: *mut u64,
        cluster: ModuleBuffer,
        headers: *mut ModuleHeader,
        headers_len: usize,
        body: ModuleBuffer,
        timeout_ms: u64,
    ) -> u32;
    fn envoy_dynamic_module_callback_http_filter_config_scheduler_new(
        config: *mut c_void,
    ) -> *mut c_void;
    fn envoy_dynamic_module_callback_http_filter_config_scheduler_commit(
        scheduler: *mut c_void,
        event: u64,
    );
    fn envoy_dynamic_module_callback_http_filter_config_scheduler_delete(scheduler: *mut c_void);
    fn envoy_dynamic_module_callback_http_filter_scheduler_new(filter: *mut c_void) -> *mut c_void;
    fn envoy_dynamic_module_callback_http_filter_scheduler_commit(
        scheduler: *mut c_void,
        event: u64,
    );
    fn envoy_dynamic_module_callback_http_filter_scheduler_delete(scheduler: *mut c_void);
}

/// What the request headers hook tells Envoy (`..._request_headers_status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum HeadersStatus {
    /// Go on with the next filter.
    Continue = 0,
    /// Hold the request headers until the filter continues or answers it (used with an answer).
    StopIteration = 1,
    /// Hold the whole request, buffering its body, until the filter continues or answers it.
    StopAllIterationAndBuffer = 3,
}

/// Why an HTTP callout could not start (`envoy_dynamic_module_type_http_callout_init_result`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CalloutError(pub u32);

/// The answer to an HTTP callout that completed (`None` where it failed or was reset).
#[derive(Debug)]
pub struct CalloutResponse<'a> {
    /// The `:status` header.
    pub status: Option<&'a [u8]>,
    /// The body, its chunks joined.
    pub body: Vec<u8>,
}

/// Turns a callout's result, headers and body chunks into a [`CalloutResponse`].
///
/// # Safety
/// `headers` and `chunks` must point at `headers_len` / `chunks_len` values Envoy keeps alive for
/// `'a`, or be null.
unsafe fn callout_response<'a>(
    result: u32,
    headers: *const EnvoyHeader,
    headers_len: usize,
    chunks: *const EnvoyBuffer,
    chunks_len: usize,
) -> Option<CalloutResponse<'a>> {
    if result != CALLOUT_SUCCESS {
        return None;
    }
    // SAFETY: the caller guarantees the arrays (or null).
    let (headers, chunks) = unsafe { (array(headers, headers_len), array(chunks, chunks_len)) };
    let status = headers.iter().find_map(|h| {
        // SAFETY: header buffers live as long as the array, for `'a`.
        let (key, value) = unsafe { (h.key.bytes(), h.value.bytes()) };
        (key == b":status").then_some(value)
    });
    // SAFETY: chunk buffers live as long as the array, for `'a`.
    let body = chunks
        .iter()
        .flat_map(|c| unsafe { c.bytes() })
        .copied()
        .collect();
    Some(CalloutResponse { status, body })
}

/// A slice over an array Envoy passed in.
///
/// # Safety
/// `ptr` must point at `len` initialised values alive for `'a`, or be null.
unsafe fn array<'a, T>(ptr: *const T, len: usize) -> &'a [T] {
    if ptr.is_null() || len == 0 {
        return &[];
    }
    // SAFETY: the caller guarantees `len` values at `ptr` for `'a`.
    unsafe { std::slice::from_raw_parts(ptr, len) }
}

/// The current HTTP stream, inside one of its hooks (`envoy_dynamic_module_type_http_filter_envoy_ptr`).
#[derive(Debug)]
pub struct Stream<'a> {
    envoy: *mut c_void,
    hook: PhantomData<&'a mut ()>,
}

impl Stream<'_> {
    /// Every request header, in order, with repeats. The slices borrow Envoy's map, so the
    /// borrow checker keeps them from outliving a change to it.
    pub fn request_headers(&self) -> Vec<(&[u8], &[u8])> {
        // SAFETY: `envoy` is the live stream of the current hook.
        let len = unsafe {
            envoy_dynamic_module_callback_http_get_headers_size(self.envoy, REQUEST_HEADERS)
        };
        let mut out = vec![
            EnvoyHeader {
                key: EnvoyBuffer {
                    ptr: null(),
                    length: 0
                },
                value: EnvoyBuffer {
                    ptr: null(),
                    length: 0
                },
            };
            len
        ];
        // SAFETY: `out` has room for the `len` headers Envoy just counted.
        let ok = unsafe {
            envoy_dynamic_module_callback_http_get_headers(
                self.envoy,
                REQUEST_HEADERS,
                out.as_mut_ptr(),
            )
        };
        if !ok {
            return Vec::new();
        }
        out.iter()
            // SAFETY: Envoy keeps the header map's buffers until it changes, which needs
            // `&mut self` while these borrows of `self` live.
            .map(|h| unsafe { (h.key.bytes(), h.value.bytes()) })
            .collect()
    }

    /// Adds a request header value; false when Envoy refused.
    pub fn add_request_header(&mut self, name: &str, value: &str) -> bool {
        // SAFETY: `envoy` is the live stream; the buffers outlive the call.
        unsafe {
            envoy_dynamic_module_callback_http_add_header(
                self.envoy,
                REQUEST_HEADERS,
                ModuleBuffer::of(name.as_bytes()),
                ModuleBuffer::of(value.as_bytes()),
            )
        }
    }

    /// Removes every value of a request header; false when Envoy refused.
    pub fn remove_request_header(&mut self, name: &[u8]) -> bool {
        // SAFETY: `envoy` is the live stream; a null value removes the header.
        unsafe {
            envoy_dynamic_module_callback_http_set_header(
                self.envoy,
                REQUEST_HEADERS,
                ModuleBuffer::of(name),
                ModuleBuffer::NONE,
            )
        }
    }

    /// Answers the request locally with `status`, `headers` and `body`.
    pub fn send_response(&mut self, status: u32, headers: &[(&str, &str)], body: &[u8]) {
        let mut headers = module_headers(headers);
        // SAFETY: `envoy` is the live stream; the header array and body outlive the call.
        unsafe {
            envoy_dynamic_module_callback_http_send_response(
                self.envoy,
                status,
                headers.as_mut_ptr(),
                headers.len(),
                ModuleBuffer::of(body),
                ModuleBuffer::NONE,
            );
        }
    }

    /// Lets a request held by [`HeadersStatus::StopIteration`] go on.
    pub fn continue_request(&mut self) {
        // SAFETY: `envoy` is the live stream.
        unsafe { envoy_dynamic_module_callback_http_filter_continue_decoding(self.envoy) }
    }

    /// The index of the worker thread this stream runs on.
    pub fn worker_index(&self) -> usize {
        // SAFETY: `envoy` is the live stream.
        let index =
            unsafe { envoy_dynamic_module_callback_http_filter_get_worker_index(self.envoy) };
        usize::try_from(index).unwrap_or(usize::MAX)
    }

    /// A handle any thread can use to call this stream's [`Filter::on_woken`] on its worker.
    pub fn waker(&mut self) -> Option<Waker> {
        // SAFETY: `envoy` is the live stream.
        let scheduler =
            unsafe { envoy_dynamic_module_callback_http_filter_scheduler_new(self.envoy) };
        (!scheduler.is_null()).then_some(Waker(scheduler))
    }

    /// Starts a bodiless HTTP request to `cluster` whose answer comes to this stream's
    /// [`Filter::on_callout_done`] with the returned id.
    pub fn http_callout(
        &mut self,
        cluster: &str,
        headers: &[(&str, &str)],
        timeout_ms: u64,
    ) -> Result<u64, CalloutError> {
        // SAFETY: `envoy` is the live stream.
        callout(
            |id, cluster, headers, len| unsafe {
                envoy_dynamic_module_callback_http_filter_http_callout(
                    self.envoy,
                    id,
                    cluster,
                    headers,
                    len,
                    ModuleBuffer::NONE,
                    timeout_ms,
                )
            },
            cluster,
            headers,
        )
    }
}

/// Starts a bodiless HTTP callout with `start(id_out, cluster, headers, headers_len)`, one of
/// Envoy's two callout callbacks; the pointers it gets are valid for the call.
fn callout(
    start: impl FnOnce(*mut u64, ModuleBuffer, *mut ModuleHeader, usize) -> u32,
    cluster: &str,
    headers: &[(&str, &str)],
) -> Result<u64, CalloutError> {
    let mut headers = module_headers(headers);
    let mut id = 0;
    let result = start(
        &mut id,
        ModuleBuffer::of(cluster.as_bytes()),
        headers.as_mut_ptr(),
        headers.len(),
    );
    if result == CALLOUT_SUCCESS {
        Ok(id)
    } else {
        Err(CalloutError(result))
    }
}

/// The filter configuration inside one of its main-thread hooks
/// (`envoy_dynamic_module_type_http_filter_config_envoy_ptr`).
#[derive(Debug)]
pub struct ConfigContext<'a> {
    envoy: *mut c_void,
    hook: PhantomData<&'a mut ()>,
}

impl ConfigContext<'_> {
    /// Starts a bodiless HTTP request to `cluster` whose answer comes to
    /// [`FilterConfig::on_callout_done`] with the returned id.
    pub fn http_callout(
        &mut self,
        cluster: &str,
        headers: &[(&str, &str)],
        timeout_ms: u64,
    ) -> Result<u64, CalloutError> {
        // SAFETY: `envoy` is the live configuration, on the main thread.
        callout(
            |id, cluster, headers, len| unsafe {
                envoy_dynamic_module_callback_http_filter_config_http_callout(
                    self.envoy,
                    id,
                    cluster,
                    headers,
                    len,
                    ModuleBuffer::NONE,
                    timeout_ms,
                )
            },
            cluster,
            headers,
        )
    }

    /// Calls [`FilterConfig::on_tick`] on the main thread every `period`, until the returned
    /// [`Ticker`] is dropped.
    pub fn ticker(&mut self, period: Duration) -> Option<Ticker> {
        // SAFETY: `envoy` is the live configuration on the main thread.
        let scheduler =
            unsafe { envoy_dynamic_module_callback_http_filter_config_scheduler_new(self.envoy) };
        if scheduler.is_null() {
            return None;
        }
        let scheduler = Scheduler(scheduler);
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let stop = stop.clone();
            let scheduler = scheduler.clone_handle();
            std::thread::Builder::new()
                .name("mcpgw-ticker".to_owned())
                .spawn(move || {
                    while !stop.load(Ordering::Acquire) {
                        std::thread::park_timeout(period);
                        if !stop.load(Ordering::Acquire) {
                            scheduler.commit();
                        }
                    }
                })
                .ok()?
        };
        Some(Ticker {
            scheduler,
            stop,
            thread: Some(thread),
        })
    }
}

/// Wakes one stream on its worker, from any thread (`..._http_filter_scheduler_module_ptr`).
/// Waking a stream that has ended does nothing; dropping the waker deletes Envoy's scheduler.
#[derive(Debug)]
pub struct Waker(*mut c_void);

// SAFETY: Envoy documents `..._http_filter_scheduler_commit` as callable from any thread (it
// posts to the stream's worker, holding the stream weakly), and deleting the scheduler only drops
// that weak reference.
unsafe impl Send for Waker {}

impl Waker {
    /// Calls the stream's [`Filter::on_woken`] on its worker, unless the stream has ended.
    pub fn wake(self) {
        // SAFETY: the scheduler lives until `drop`, right after.
        unsafe { envoy_dynamic_module_callback_http_filter_scheduler_commit(self.0, TICK) }
    }
}

impl Drop for Waker {
    fn drop(&mut self) {
        // SAFETY: made by `..._scheduler_new`, deleted once; a posted wake holds no reference to it.
        unsafe { envoy_dynamic_module_callback_http_filter_scheduler_delete(self.0) }
    }
}

/// A configuration scheduler (`..._http_filter_config_scheduler_module_ptr`).
#[derive(Debug)]
struct Scheduler(*mut c_void);

// SAFETY: Envoy documents `..._config_scheduler_commit` as callable from any thread; the pointer
// is deleted only by `Ticker::drop`, after the one thread that commits has been joined.
unsafe impl Send for Scheduler {}
// SAFETY: as above; committing takes no module state.
unsafe impl Sync for Scheduler {}

impl Scheduler {
    fn clone_handle(&self) -> Scheduler {
        Scheduler(self.0)
    }

    fn commit(&self) {
        // SAFETY: the scheduler lives until `Ticker::drop` joins this thread and deletes it.
        unsafe { envoy_dynamic_module_callback_http_filter_config_scheduler_commit(self.0, TICK) }
    }
}

/// The event id of a tick.
const TICK: u64 = 1;

/// A thread that wakes the configuration on the main thread periodically; dropping it stops and
/// joins the thread, then deletes Envoy's scheduler.
#[derive(Debug)]
pub struct Ticker {
    scheduler: Scheduler,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for Ticker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(thread) = self.thread.take() {
            thread.thread().unpark();
            let _ = thread.join();
        }
        // SAFETY: the only thread that used the scheduler has been joined.
        unsafe {
            envoy_dynamic_module_callback_http_filter_config_scheduler_delete(self.scheduler.0)
        }
    }
}

/// How many worker threads Envoy runs (main thread only: configuration hooks).
pub fn concurrency() -> usize {
    // SAFETY: a plain query; configurations are made on the main thread.
    let n = unsafe { envoy_dynamic_module_callback_get_concurrency() };
    usize::try_from(n).unwrap_or(1).max(1)
}

/// One filter configuration, shared by every worker.
pub trait FilterConfig: Send + Sync + Sized + 'static {
    /// The per-stream filter.
    type Filter: Filter;

    /// A new stream's filter; `None` makes Envoy close the stream.
    fn new_filter(&self) -> Option<Self::Filter>;

    /// The periodic tick asked for with [`ConfigContext::ticker`] (main thread).
    fn on_tick(&self, config: &mut ConfigContext<'_>);

    /// The answer to a [`ConfigContext::http_callout`] (main thread).
    fn on_callout_done(
        &self,
        config: &mut ConfigContext<'_>,
        id: u64,
        response: Option<CalloutResponse<'_>>,
    );
}

/// One HTTP stream's filter.
pub trait Filter: 'static {
    /// The request headers arrived.
    fn on_request_headers(&mut self, stream: &mut Stream<'_>) -> HeadersStatus;

    /// A [`Waker`] of this stream was woken.
    fn on_woken(&mut self, stream: &mut Stream<'_>);

    /// The answer to a [`Stream::http_callout`].
    fn on_callout_done(
        &mut self,
        stream: &mut Stream<'_>,
        id: u64,
        response: Option<CalloutResponse<'_>>,
    );
}

/// The code behind the hooks [`export_http_filter!`] exports.
#[doc(hidden)]
pub mod hooks {
    use super::*;

    /// `envoy_dynamic_module_on_http_filter_config_new`.
    ///
    /// # Safety
    /// Envoy's contract: `envoy` is the new configuration; the buffers live for the call.
    pub unsafe fn config_new<C: FilterConfig>(
        envoy: *mut c_void,
        name: EnvoyBuffer,
        config: EnvoyBuffer,
        new: fn(&mut ConfigContext<'_>, &str, &[u8]) -> Option<C>,
    ) -> *const c_void {
        // SAFETY: the buffers live for this call.
        let (name, config) = unsafe { (name.bytes(), config.bytes()) };
        let mut context = ConfigContext {
            envoy,
            hook: PhantomData,
        };
        match new(&mut context, &String::from_utf8_lossy(name), config) {
            Some(c) => Box::into_raw(Box::new(c)).cast_const().cast(),
            None => null(),
        }
    }

    /// `envoy_dynamic_module_on_http_filter_config_destroy`.
    ///
    /// # Safety
    /// `config` came from [`config_new::<C>`] and is destroyed once.
    pub unsafe fn config_destroy<C: FilterConfig>(config: *const c_void) {
        if !config.is_null() {
            // SAFETY: made by `Box::into_raw` in `config_new::<C>`, freed once.
            drop(unsafe { Box::from_raw(config.cast_mut().cast::<C>()) });
        }
    }

    /// `envoy_dynamic_module_on_http_filter_config_scheduled`.
    ///
    /// # Safety
    /// `config` came from [`config_new::<C>`] and is alive; `envoy` is its Envoy configuration.
    pub unsafe fn config_scheduled<C: FilterConfig>(envoy: *mut c_void, config: *const c_void) {
        // SAFETY: alive until `config_destroy`, which Envoy calls after its last event.
        let Some(config) = (unsafe { config.cast::<C>().as_ref() }) else {
            return;
        };
        config.on_tick(&mut ConfigContext {
            envoy,
            hook: PhantomData,
        });
    }

    /// `envoy_dynamic_module_on_http_filter_config_http_callout_done`.
    ///
    /// # Safety
    /// As [`config_scheduled`]; the arrays are Envoy's for the call.
    #[allow(clippy::too_many_arguments)] // reason: the hook's C signature
    pub unsafe fn config_callout_done<C: FilterConfig>(
        envoy: *mut c_void,
        config: *const c_void,
        id: u64,
        result: u32,
        headers: *const EnvoyHeader,
        headers_len: usize,
        chunks: *const EnvoyBuffer,
        chunks_len: usize,
    ) {
        // SAFETY: alive until `config_destroy`.
        let Some(config) = (unsafe { config.cast::<C>().as_ref() }) else {
            return;
        };
        // SAFETY: the arrays live for this call.
        let response =
            unsafe { callout_response(result, headers, headers_len, chunks, chunks_len) };
        config.on_callout_done(
            &mut ConfigContext {
                envoy,
                hook: PhantomData,
            },
            id,
            response,
        );
    }

    /// `envoy_dynamic_module_on_http_filter_new`.
    ///
    /// # Safety
    /// `config` came from [`config_new::<C>`] and is alive.
    pub unsafe fn filter_new<C: FilterConfig>(config: *const c_void) -> *const c_void {
        // SAFETY: alive until `config_destroy`, after every stream's filter.
        let Some(config) = (unsafe { config.cast::<C>().as_ref() }) else {
            return null();
        };
        match config.new_filter() {
            Some(f) => Box::into_raw(Box::new(f)).cast_const().cast(),
            None => null(),
        }
    }

    /// `envoy_dynamic_module_on_http_filter_destroy`.
    ///
    /// # Safety
    /// `filter` came from [`filter_new`] for `F` and is destroyed once.
    pub unsafe fn filter_destroy<F: Filter>(filter: *const c_void) {
        if !filter.is_null() {
            // SAFETY: made by `Box::into_raw` in `filter_new`, freed once.
            drop(unsafe { Box::from_raw(filter.cast_mut().cast::<F>()) });
        }
    }

    /// The stream's filter, for one hook.
    ///
    /// # Safety
    /// `filter` came from [`filter_new`] for `F`, is alive, and no other reference to it exists
    /// (Envoy calls a stream's hooks one at a time on its worker).
    unsafe fn filter<'a, F: Filter>(filter: *const c_void) -> Option<&'a mut F> {
        // SAFETY: as the caller guarantees.
        unsafe { filter.cast_mut().cast::<F>().as_mut() }
    }

    /// `envoy_dynamic_module_on_http_filter_request_headers`.
    ///
    /// # Safety
    /// As [`filter`]; `envoy` is the stream.
    pub unsafe fn request_headers<F: Filter>(envoy: *mut c_void, filter: *const c_void) -> u32 {
        // SAFETY: as the caller guarantees.
        let Some(filter) = (unsafe { self::filter::<F>(filter) }) else {
            return HeadersStatus::StopIteration as u32;
        };
        filter.on_request_headers(&mut Stream {
            envoy,
            hook: PhantomData,
        }) as u32
    }

    /// `envoy_dynamic_module_on_http_filter_scheduled`.
    ///
    /// # Safety
    /// As [`filter`]; `envoy` is the stream.
    pub unsafe fn scheduled<F: Filter>(envoy: *mut c_void, filter: *const c_void) {
        // SAFETY: as the caller guarantees.
        if let Some(filter) = unsafe { self::filter::<F>(filter) } {
            filter.on_woken(&mut Stream {
                envoy,
                hook: PhantomData,
            });
        }
    }

    /// `envoy_dynamic_module_on_http_filter_http_callout_done`.
    ///
    /// # Safety
    /// As [`filter`]; `envoy` is the stream; the arrays are Envoy's for the call.
    #[allow(clippy::too_many_arguments)] // reason: the hook's C signature
    pub unsafe fn callout_done<F: Filter>(
        envoy: *mut c_void,
        filter: *const c_void,
        id: u64,
        result: u32,
        headers: *const EnvoyHeader,
        headers_len: usize,
        chunks: *const EnvoyBuffer,
        chunks_len: usize,
    ) {
        // SAFETY: as the caller guarantees.
        let Some(filter) = (unsafe { self::filter::<F>(filter) }) else {
            return;
        };
        // SAFETY: the arrays live for this call.
        let response =
            unsafe { callout_response(result, headers, headers_len, chunks, chunks_len) };
        filter.on_callout_done(
            &mut Stream {
                envoy,
                hook: PhantomData,
            },
            id,
            response,
        );
    }

    /// `envoy_dynamic_module_on_program_init`: the ABI version, and logging through Envoy.
    pub fn program_init(name: &'static str) -> *const std::ffi::c_char {
        if log::set_logger(&EnvoyLogger).is_ok() {
            log::set_max_level(log::LevelFilter::Trace);
            std::panic::set_hook(Box::new(move |info| {
                log_message(5, &format!("{name} panicked: {info}"));
            }));
        }
        log::info!(
            "{name}: built for Envoy's dynamic-module ABI {} ({ENVOY})",
            ABI_VERSION.to_string_lossy()
        );
        ABI_VERSION.as_ptr()
    }

    pub use std::ffi::c_void as CVoid;
    pub use std::ptr::null as null_ptr;
}

/// Envoy's log levels, as `envoy_dynamic_module_type_log_level` numbers them.
fn envoy_level(level: log::Level) -> u32 {
    match level {
        log::Level::Trace => 0,
        log::Level::Debug => 1,
        log::Level::Info => 2,
        log::Level::Warn => 3,
        log::Level::Error => 4,
    }
}

fn log_message(level: u32, message: &str) {
    // SAFETY: the buffer outlives the call.
    unsafe { envoy_dynamic_module_callback_log(level, ModuleBuffer::of(message.as_bytes())) }
}

/// The `log` facade, into Envoy's `dynamic_modules` logger.
#[derive(Debug)]
struct EnvoyLogger;

impl log::Log for EnvoyLogger {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        // SAFETY: a plain query.
        unsafe { envoy_dynamic_module_callback_log_enabled(envoy_level(metadata.level())) }
    }

    fn log(&self, record: &log::Record<'_>) {
        if self.enabled(record.metadata()) {
            log_message(envoy_level(record.level()), &record.args().to_string());
        }
    }

    fn flush(&self) {}
}

/// Exports Envoy's HTTP filter hooks for the [`FilterConfig`] type `$config`, made by
/// `$new(&mut ConfigContext, filter_name, filter_config_bytes) -> Option<$config>`; `$name`
/// names the module in panic logs. Hooks the filter has no use for answer "continue".
#[macro_export]
macro_rules! export_http_filter {
    ($name:literal, $config:ty, $new:path) => {
        #[allow(unsafe_code)] // reason: exporting Envoy's hooks is a `no_mangle` declaration
        mod envoy_hooks {
            use super::*;
            use $crate::hooks::{CVoid, null_ptr};
            use $crate::{EnvoyBuffer, EnvoyHeader, FilterConfig};

            type Config = $config;
            type Stream = <$config as FilterConfig>::Filter;

            #[unsafe(no_mangle)]
            extern "C" fn envoy_dynamic_module_on_program_init() -> *const ::std::ffi::c_char {
                $crate::hooks::program_init($name)
            }

            #[unsafe(no_mangle)]
            extern "C" fn envoy_dynamic_module_on_http_filter_config_new(
                envoy: *mut CVoid,
                name: EnvoyBuffer,
                config: EnvoyBuffer,
            ) -> *const CVoid {
                // SAFETY: Envoy calls this hook with its new configuration and live buffers.
                unsafe { $crate::hooks::config_new::<Config>(envoy, name, config, $new) }
            }

            #[unsafe(no_mangle)]
            extern "C" fn envoy_dynamic_module_on_http_filter_config_destroy(config: *const CVoid) {
                // SAFETY: Envoy destroys the configuration it got from `config_new`, once.
                unsafe { $crate::hooks::config_destroy::<Config>(config) }
            }

            #[unsafe(no_mangle)]
            extern "C" fn envoy_dynamic_module_on_http_filter_config_scheduled(
                envoy: *mut CVoid,
                config: *const CVoid,
                _event: u64,
            ) {
                // SAFETY: Envoy passes the live configuration it got from `config_new`.
                unsafe { $crate::hooks::config_scheduled::<Config>(envoy, config) }
            }

            #[unsafe(no_mangle)]
            extern "C" fn envoy_dynamic_module_on_http_filter_config_http_callout_done(
                envoy: *mut CVoid,
                config: *const CVoid,
                id: u64,
                result: u32,
                headers: *const EnvoyHeader,
                headers_len: usize,
                chunks: *const EnvoyBuffer,
                chunks_len: usize,
            ) {
                // SAFETY: Envoy passes the live configuration and arrays alive for the call.
                unsafe {
                    $crate::hooks::config_callout_done::<Config>(
                        envoy, config, id, result, headers, headers_len, chunks, chunks_len,
                    )
                }
            }

            #[unsafe(no_mangle)]
            extern "C" fn envoy_dynamic_module_on_http_filter_new(
                config: *const CVoid,
                _envoy: *mut CVoid,
            ) -> *const CVoid {
                // SAFETY: Envoy passes the live configuration it got from `config_new`.
                unsafe { $crate::hooks::filter_new::<Config>(config) }
            }

            #[unsafe(no_mangle)]
            extern "C" fn envoy_dynamic_module_on_http_filter_destroy(filter: *const CVoid) {
                // SAFETY: Envoy destroys the filter it got from `filter_new`, once.
                unsafe { $crate::hooks::filter_destroy::<Stream>(filter) }
            }

            #[unsafe(no_mangle)]
            extern "C" fn envoy_dynamic_module_on_http_filter_request_headers(
                envoy: *mut CVoid,
                filter: *const CVoid,
                _end_of_stream: bool,
            ) -> u32 {
                // SAFETY: Envoy calls a stream's hooks one at a time with its live filter.
                unsafe { $crate::hooks::request_headers::<Stream>(envoy, filter) }
            }

            #[unsafe(no_mangle)]
            extern "C" fn envoy_dynamic_module_on_http_filter_http_callout_done(
                envoy: *mut CVoid,
                filter: *const CVoid,
                id: u64,
                result: u32,
                headers: *const EnvoyHeader,
                headers_len: usize,
                chunks: *const EnvoyBuffer,
                chunks_len: usize,
            ) {
                // SAFETY: Envoy calls a stream's hooks one at a time with its live filter and
                // arrays alive for the call.
                unsafe {
                    $crate::hooks::callout_done::<Stream>(
                        envoy, filter, id, result, headers, headers_len, chunks, chunks_len,
                    )
                }
            }

            #[unsafe(no_mangle)]
            extern "C" fn envoy_dynamic_module_on_http_filter_scheduled(
                envoy: *mut CVoid,
                filter: *const CVoid,
                _event: u64,
            ) {
                // SAFETY: Envoy calls a stream's hooks one at a time with its live filter.
                unsafe { $crate::hooks::scheduled::<Stream>(envoy, filter) }
            }

            // The hooks below are required by Envoy and unused by mcpgw's filters.

            #[unsafe(no_mangle)]
            extern "C" fn envoy_dynamic_module_on_http_filter_per_route_config_new(
                _name: EnvoyBuffer,
                _config: EnvoyBuffer,
            ) -> *const CVoid {
                null_ptr()
            }

            #[unsafe(no_mangle)]
            extern "C" fn envoy_dynamic_module_on_http_filter_per_route_config_destroy(
                _config: *const CVoid,
            ) {
            }

            #[unsafe(no_mangle)]
            extern "C" fn envoy_dynamic_module_on_http_filter_request_body(
                _envoy: *mut CVoid,
                _filter: *const CVoid,
                _end_of_stream: bool,
            ) -> u32 {
                0
            }

            #[unsafe(no_mangle)]
            extern "C" fn envoy_dynamic_module_on_http_filter_request_trailers(
                _envoy: *mut CVoid,
                _filter: *const CVoid,
            ) -> u32 {
                0
            }

            #[unsafe(no_mangle)]
            extern "C" fn envoy_dynamic_module_on_http_filter_response_headers(
                _envoy: *mut CVoid,
                _filter: *const CVoid,
                _end_of_stream: bool,
            ) -> u32 {
                0
            }

            #[unsafe(no_mangle)]
            extern "C" fn envoy_dynamic_module_on_http_filter_response_body(
                _envoy: *mut CVoid,
                _filter: *const CVoid,
                _end_of_stream: bool,
            ) -> u32 {
                0
            }

            #[unsafe(no_mangle)]
            extern "C" fn envoy_dynamic_module_on_http_filter_response_trailers(
                _envoy: *mut CVoid,
                _filter: *const CVoid,
            ) -> u32 {
                0
            }

            #[unsafe(no_mangle)]
            extern "C" fn envoy_dynamic_module_on_http_filter_stream_complete(
                _envoy: *mut CVoid,
                _filter: *const CVoid,
            ) {
            }

            #[unsafe(no_mangle)]
            extern "C" fn envoy_dynamic_module_on_http_filter_local_reply(
                _envoy: *mut CVoid,
                _filter: *const CVoid,
                _status: u32,
                _details: EnvoyBuffer,
                _reset_imminent: bool,
            ) -> u32 {
                0
            }


            #[unsafe(no_mangle)]
            extern "C" fn envoy_dynamic_module_on_http_filter_downstream_above_write_buffer_high_watermark(
                _envoy: *mut CVoid,
                _filter: *const CVoid,
            ) {
            }

            #[unsafe(no_mangle)]
            extern "C" fn envoy_dynamic_module_on_http_filter_downstream_below_write_buffer_low_watermark(
                _envoy: *mut CVoid,
                _filter: *const CVoid,
            ) {
            }

            #[unsafe(no_mangle)]
            extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_headers(
                _envoy: *mut CVoid,
                _filter: *const CVoid,
                _stream: u64,
                _headers: *const EnvoyHeader,
                _headers_len: usize,
                _end_stream: bool,
            ) {
            }

            #[unsafe(no_mangle)]
            extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_data(
                _envoy: *mut CVoid,
                _filter: *const CVoid,
                _stream: u64,
                _data: *const EnvoyBuffer,
                _data_len: usize,
                _end_stream: bool,
            ) {
            }

            #[unsafe(no_mangle)]
            extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_trailers(
                _envoy: *mut CVoid,
                _filter: *const CVoid,
                _stream: u64,
                _trailers: *const EnvoyHeader,
                _trailers_len: usize,
            ) {
            }

            #[unsafe(no_mangle)]
            extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_complete(
                _envoy: *mut CVoid,
                _filter: *const CVoid,
                _stream: u64,
            ) {
            }

            #[unsafe(no_mangle)]
            extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_reset(
                _envoy: *mut CVoid,
                _filter: *const CVoid,
                _stream: u64,
                _reason: u32,
            ) {
            }

            #[unsafe(no_mangle)]
            extern "C" fn envoy_dynamic_module_on_http_filter_config_http_stream_headers(
                _envoy: *mut CVoid,
                _config: *const CVoid,
                _stream: u64,
                _headers: *const EnvoyHeader,
                _headers_len: usize,
                _end_stream: bool,
            ) {
            }

            #[unsafe(no_mangle)]
            extern "C" fn envoy_dynamic_module_on_http_filter_config_http_stream_data(
                _envoy: *mut CVoid,
                _config: *const CVoid,
                _stream: u64,
                _data: *const EnvoyBuffer,
                _data_len: usize,
                _end_stream: bool,
            ) {
            }

            #[unsafe(no_mangle)]
            extern "C" fn envoy_dynamic_module_on_http_filter_config_http_stream_trailers(
                _envoy: *mut CVoid,
                _config: *const CVoid,
                _stream: u64,
                _trailers: *const EnvoyHeader,
                _trailers_len: usize,
            ) {
            }

            #[unsafe(no_mangle)]
            extern "C" fn envoy_dynamic_module_on_http_filter_config_http_stream_complete(
                _envoy: *mut CVoid,
                _config: *const CVoid,
                _stream: u64,
            ) {
            }

            #[unsafe(no_mangle)]
            extern "C" fn envoy_dynamic_module_on_http_filter_config_http_stream_reset(
                _envoy: *mut CVoid,
                _config: *const CVoid,
                _stream: u64,
                _reason: u32,
            ) {
            }
        }
    };
}
