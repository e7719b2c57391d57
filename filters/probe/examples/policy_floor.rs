//! A measuring probe for `make bench-policy`, not a filter: the least a policy filter with the
//! policy filter's features pays in this Envoy. It exports the callbacks the policy filter
//! exports (request headers and body, response headers and body, stream end) and, with the
//! configuration `calls`, makes the host calls the policy filter makes on an allowed `tools/call`:
//! it reads the request header map and adds the route header, reads the buffered body, writes
//! the five access-log values to filter state and counts the request. It decides nothing. With
//! `enter` it only enters the VM for each callback. Every request goes on.

use std::cell::Cell;

use mcpgw_proxy_abi::{self as abi, Action, Buffer, Map};

/// The access-log values the policy filter writes for an allowed call.
const DECISION: [(&str, &str); 5] = [
    ("mcpgw_policy.decision", "allowed"),
    ("mcpgw_policy.server", "everything"),
    ("mcpgw_policy.method", "tools/call"),
    ("mcpgw_policy.name", "echo"),
    ("mcpgw_policy.rule", "echo"),
];

thread_local! {
    /// `Some(counter id)` when configured with `calls`.
    static CALLS: Cell<Option<u32>> = const { Cell::new(None) };
}

/// The callbacks this module exports.
#[allow(unsafe_code)] // reason: exporting a callback is a `no_mangle` declaration
mod exports {
    use super::*;

    #[unsafe(no_mangle)]
    pub extern "C" fn proxy_on_context_create(_: u32, _: u32) {}

    /// `0` (Envoy rejects the filter) unless the configuration is `calls` or `enter`.
    #[unsafe(no_mangle)]
    pub extern "C" fn proxy_on_configure(_: u32, _: usize) -> u32 {
        match abi::buffer(Buffer::PluginConfiguration).trim_ascii() {
            b"calls" => {
                CALLS.set(abi::define_counter("mcpgw_probe.allowed").ok());
                u32::from(CALLS.get().is_some())
            }
            b"enter" => 1,
            _ => 0,
        }
    }

    #[unsafe(no_mangle)]
    pub extern "C" fn proxy_on_request_headers(_: u32, _: usize, _: u32) -> u32 {
        if CALLS.get().is_some() {
            std::hint::black_box(abi::headers(Map::RequestHeaders));
            let _ = std::hint::black_box(abi::add_header(
                Map::RequestHeaders,
                "x-mcpgw-server",
                "everything",
            ));
        }
        Action::Continue as u32
    }

    #[unsafe(no_mangle)]
    pub extern "C" fn proxy_on_request_body(_: u32, _: usize, end_of_stream: u32) -> u32 {
        if let (Some(counter), true) = (CALLS.get(), end_of_stream != 0) {
            std::hint::black_box(abi::buffer(Buffer::RequestBody));
            for (name, value) in DECISION {
                abi::set_property(name, value.as_bytes());
            }
            abi::increment(counter, 1);
        }
        Action::Continue as u32
    }

    #[unsafe(no_mangle)]
    pub extern "C" fn proxy_on_response_headers(_: u32, _: usize, _: u32) -> u32 {
        Action::Continue as u32
    }

    #[unsafe(no_mangle)]
    pub extern "C" fn proxy_on_response_body(_: u32, _: usize, _: u32) -> u32 {
        Action::Continue as u32
    }

    #[unsafe(no_mangle)]
    pub extern "C" fn proxy_on_delete(_: u32) {}
}
