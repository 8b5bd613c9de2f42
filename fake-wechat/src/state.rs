//! What the fake knows: tokens, users and their subscriptions, scripts, counters.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Mutex;
use std::sync::atomic::AtomicU64;
use std::time::Instant;

use crate::*;

/// The tokens issued so far and which are still valid.
#[derive(Default)]
pub(crate) struct Tokens {
    /// token -> expiry.
    pub(crate) valid: HashMap<String, Instant>,
    pub(crate) stable: Option<String>,
    pub(crate) serial: u64,
}

/// What WeChat knows about users that the daemon must learn through intake.
#[derive(Default)]
pub(crate) struct Users {
    /// Login codes not yet exchanged -> openid.
    pub(crate) codes: HashMap<String, String>,
    /// Codes already exchanged (a second exchange answers 40163).
    pub(crate) used: HashSet<String>,
    /// (openid, template) -> one-time credits, or 1 for a long-term subscription.
    pub(crate) subscriptions: HashMap<(String, String), u64>,
    pub(crate) serial: u64,
}

/// Everything the handlers share: options, state, scripts and counters.
pub(crate) struct Inner {
    pub(crate) opts: FakeOptions,
    pub(crate) users: Mutex<Users>,
    pub(crate) code_requests: AtomicU64,
    /// Latency actually added to sends: total microseconds and count.
    pub(crate) added_us: AtomicU64,
    pub(crate) added_count: AtomicU64,
    /// Moving average of how much longer than asked a sleep takes, in microseconds.
    pub(crate) overshoot_us: AtomicU64,
    pub(crate) tokens: Mutex<Tokens>,
    pub(crate) scripts: Mutex<HashMap<String, VecDeque<Scripted>>>,
    pub(crate) in_flight: Mutex<HashSet<String>>,
    pub(crate) accepted: Mutex<Vec<Accepted>>,
    pub(crate) window: Mutex<(Instant, u64)>,
    pub(crate) token_requests: AtomicU64,
    pub(crate) force_refreshes: AtomicU64,
    pub(crate) send_requests: AtomicU64,
    pub(crate) accepted_count: AtomicU64,
    pub(crate) concurrent_same_user: AtomicU64,
    pub(crate) rng: AtomicU64,
    /// WeChat is away: a gateway answers 503 to everything.
    pub(crate) down: std::sync::atomic::AtomicBool,
}
