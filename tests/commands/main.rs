//! The command line: config and its errors, `check`, recipients and audience
//! queries, init, and the Chinese-language conveniences.
#![allow(unreachable_pub)] // a test binary: its modules share helpers freely
#[path = "../support/mod.rs"]
#[allow(dead_code, unused_imports)] // each binary uses its own part of the harness
mod helpers;

mod china;
mod cli;
mod config;
mod conveniences;
mod init;
mod parsing;
mod query;
