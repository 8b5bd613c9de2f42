//! Credentials: the AppSecret as `check` and reload test it, secrets read from
//! files, and the shared access_token (fetched once, refreshed, invalidated).
#![allow(unreachable_pub)] // a test binary: its modules share helpers freely
#[path = "../support/mod.rs"]
#[allow(dead_code, unused_imports)] // each binary uses its own part of the harness
mod helpers;

mod gate;
mod secrets;
mod token;
