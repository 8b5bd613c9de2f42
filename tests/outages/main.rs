//! PostgreSQL restarted or stopped under three daemons (PostgreSQL only: each
//! test runs a cluster of its own).
#![allow(unreachable_pub)] // a test binary: its modules share helpers freely
#[path = "../support/mod.rs"]
#[allow(dead_code, unused_imports)] // each binary uses its own part of the harness
mod helpers;

mod postgres;
