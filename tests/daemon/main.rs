//! The daemon: its schedule, signals, reload, health and metrics, and its
//! lifecycle (some against the real binary, where a process is the point).
#![allow(unreachable_pub)] // a test binary: its modules share helpers freely
#[path = "../support/mod.rs"]
#[allow(dead_code, unused_imports)] // each binary uses its own part of the harness
mod helpers;

mod lifecycle;
mod scheduler;
mod service;
