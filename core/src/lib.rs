//! mcpgw core: every security decision, made once, for every host (the proxy-wasm filters, the
//! sidecar's `/verify`). No ABI, no async runtime, no clock: time and keys are passed in.

pub mod auth;
pub mod claims;
pub mod hash;
pub mod identity;
pub mod jwk;
pub mod mcp;
pub mod policy;
pub mod resource;
pub mod revocation;
pub mod route;
pub mod session;
#[cfg(any(test, feature = "signing"))]
pub mod signing;
