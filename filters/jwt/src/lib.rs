//! The JWT filter: a thin proxy-wasm shell over `mcpgw_core`.
