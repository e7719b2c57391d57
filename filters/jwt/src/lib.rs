//! The JWT filter: one core, two Envoy shells. Built for `wasm32-wasip1` it is the proxy-wasm
//! module (`mcpgw_filter_jwt.wasm`, for Envoy and Istio: [`proxy_wasm`]); built for the host it is
//! an Envoy dynamic module (`libmcpgw_filter_jwt.so`, loaded by the `dynamic_modules` HTTP filter
//! of the Envoy version it was built for: [`dynamic_module`]). Both take the same JSON
//! configuration ([`config`]) and do the same with a request ([`gate`]): strip client-sent
//! identity headers, serve RFC 9728 metadata, let CORS preflights and unprotected paths through,
//! and have core decide, with the JWKS and the revocation feed fetched from Envoy clusters.

pub mod config;
pub mod gate;

#[cfg(not(target_family = "wasm"))]
pub mod dynamic_module;
#[cfg(target_family = "wasm")]
pub mod proxy_wasm;
