//! The store's database: where it is, when the daemon may call itself ready,
//! and SQLite failing under a run.
#![allow(unreachable_pub)] // a test binary: its modules share helpers freely
#[path = "../support/mod.rs"]
#[allow(dead_code, unused_imports)] // each binary uses its own part of the harness
mod helpers;

mod database;
mod sqlite_outages;
