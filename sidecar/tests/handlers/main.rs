//! Handler tests: the sidecar's router through `tower::ServiceExt::oneshot` against a real Redis
//! the tests start (testkit), one key prefix per test.

#![allow(clippy::unwrap_used, clippy::panic)] // reason: test support fails by panicking

mod common;
mod discovery;
mod process;
mod register;
mod revoked;
mod token;
mod verify;
