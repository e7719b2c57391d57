//! A measuring probe, not a filter. `make bench-jwt` loads it beside the JWT filter to show what
//! the proxy-wasm path itself costs in this Envoy: with `clock 0` a request only enters the VM
//! twice (stream creation, request headers), the least any filter pays; `clock <n>` adds `n` host
//! calls that return a plain value (the clock); `header <n>` adds `n` single-header reads, each a
//! host call whose answer re-enters the VM (`proxy_on_memory_allocate`). Every request goes on.

use std::cell::Cell;

use mcpgw_proxy_abi::{self as abi, Action, Buffer, Map};

/// What each request does.
#[derive(Clone, Copy, Debug)]
enum Work {
    Clock(u32),
    Header(u32),
}

thread_local! {
    static WORK: Cell<Work> = const { Cell::new(Work::Clock(0)) };
}

/// Reads `clock <n>` or `header <n>`.
fn parse(config: &str) -> Option<Work> {
    let (kind, n) = config.trim().split_once(' ')?;
    let n = n.trim().parse().ok()?;
    match kind {
        "clock" => Some(Work::Clock(n)),
        "header" => Some(Work::Header(n)),
        _ => None,
    }
}

/// The callbacks this module exports.
#[allow(unsafe_code)] // reason: exporting a callback is a `no_mangle` declaration
mod exports {
    use super::*;

    #[unsafe(no_mangle)]
    pub extern "C" fn proxy_on_context_create(_: u32, _: u32) {}

    /// `0` (Envoy rejects the filter) unless the configuration reads as `clock <n>` or
    /// `header <n>`.
    #[unsafe(no_mangle)]
    pub extern "C" fn proxy_on_configure(_: u32, _: usize) -> u32 {
        let config = abi::buffer(Buffer::PluginConfiguration);
        let work = std::str::from_utf8(&config).ok().and_then(parse);
        work.map(|w| WORK.set(w)).is_some().into()
    }

    #[unsafe(no_mangle)]
    pub extern "C" fn proxy_on_request_headers(_: u32, _: usize, _: u32) -> u32 {
        match WORK.get() {
            Work::Clock(n) => (0..n).for_each(|_| {
                std::hint::black_box(abi::now_ms());
            }),
            Work::Header(n) => (0..n).for_each(|_| {
                std::hint::black_box(abi::header(Map::RequestHeaders, ":path"));
            }),
        }
        Action::Continue as u32
    }
}
