//! Several instances on one PostgreSQL (PostgreSQL only): runs drained together,
//! kill -9 of one, the shared rate limit, and TLS to the database.
#![allow(unreachable_pub)] // a test binary: its modules share helpers freely
#[path = "../support/mod.rs"]
#[allow(dead_code, unused_imports)] // each binary uses its own part of the harness
mod helpers;

mod instances;
mod tls;
