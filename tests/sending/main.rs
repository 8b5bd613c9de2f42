//! Sending: one run's deliveries, rate limits, lost replies, re-runs, crash
//! recovery and test sends, against the fake WeChat.
#![allow(unreachable_pub)] // a test binary: its modules share helpers freely
#[path = "../support/mod.rs"]
#[allow(dead_code, unused_imports)] // each binary uses its own part of the harness
mod helpers;

mod delivery;
mod recovery;
mod rerun;
mod test_send;
