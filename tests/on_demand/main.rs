//! Sends on demand: `wxpush sends` and the HTTP API (`[api]`, `/v1/sends`)
//! with idempotency keys, cancels and its config, sent by the in-process
//! daemon when due.
#![allow(unreachable_pub)] // a test binary: its modules share helpers freely
#[path = "../support/mod.rs"]
#[allow(dead_code, unused_imports)] // each binary uses its own part of the harness
mod helpers;

mod api;
mod cli;
mod policy;
mod served;
mod status;
