//! The seam between the shared statements and the two databases: every way
//! SQLite and PostgreSQL differ is a method here, written in `sqlite/` and
//! `postgres/`. A store picks its dialect once, when it opens the URL; the
//! shared statement files ask it, never which database it is.

use super::Audience;

/// What one database says its own way.
pub(super) trait Dialect: Send + Sync + std::fmt::Debug {
    /// Whether several instances drain one run together here, each taking its
    /// own deliveries; otherwise one process holds a job at a time.
    fn shares_runs(&self) -> bool;

    /// Whether the database takes one writer at a time: this process's
    /// writers of sends then take turns here rather than meet its busy
    /// handler, whose sleeps (milliseconds each) would be their latency.
    fn one_writer(&self) -> bool;

    /// The statement that opens a write transaction.
    fn begin_write(&self) -> &'static str;

    /// An SQL expression for the database's clock, in milliseconds since the
    /// epoch: instances compare heartbeats by one clock, not by each machine's.
    fn now_ms(&self) -> &'static str;

    /// The tail of a predicate `id ...` that holds for the ids bound (as
    /// `sets::bind_ids` does) as parameter `$n`.
    fn in_ids(&self, n: usize) -> String;

    /// A condition keeping `column` (a delivery id joined to the outcome set
    /// `v`) to the ids of `v`; empty where the planner needs no help.
    fn among_outcomes(&self, column: &str) -> String;

    /// The statement that records outcomes and marks deliveries `sending` in
    /// one (see `batch::record_and_mark`), where the database has one.
    fn record_and_mark(&self) -> Option<String> {
        None
    }

    /// How an instance reads a page of a shared run (see
    /// `Store::pending_page`): `None` where runs are not shared.
    fn shared_page(&self, _audience: Audience, _refusals: bool, _take: bool) -> Option<SharedPage> {
        None
    }

    /// The statements that take and give back the lock under which one
    /// instance refreshes an app's token, bound to a key; `None` where
    /// instances do not share a token.
    fn token_lock(&self) -> Option<TokenLock> {
        None
    }

    /// A statement that locks, until the transaction ends, the people whose
    /// openids are bound as a text set (`$2`) of app `$1`, so that two claims
    /// for one person decide in turn; `None` where a write transaction
    /// already holds the database's only write lock (SQLite's `BEGIN IMMEDIATE`).
    fn lock_people(&self) -> Option<String> {
        None
    }

    /// The text of `value`, an element of `json_each` over a plain JSON array
    /// of strings (bound by `sets::bind_strings`): read without parsing an
    /// array per element, as `text_set` must for both backends.
    fn json_text(&self, value: &str) -> String;

    /// An aggregate of every row's `items` (a comma-separated list of
    /// expressions) as one JSON array of arrays, in text: a history read as one
    /// value rather than a row per entry, which costs the driver a round of
    /// decoding each.
    fn json_rows(&self, items: &str) -> String;

    /// What follows a table's alias to make the planner read it by `index`
    /// where its estimate would choose another (SQLite has no statistics of
    /// a partial index's size); empty where the planner can judge.
    fn read_by(&self, _index: &str) -> String {
        String::new()
    }

    /// The migrations of this database's schema.
    fn migrator(&self) -> &'static sqlx::migrate::Migrator;
}

/// A shared run's page read: the statement (parameters: instance, run, after,
/// limit, then the job where the audience needs it, then the refusals' template
/// and app), and one to run first in its transaction.
pub(super) struct SharedPage {
    /// The page read.
    pub(super) sql: String,
    /// Set up first, in the same transaction.
    pub(super) setup: &'static str,
}

/// The token refresh lock's statements, each binding the key as `$1`.
#[derive(Debug, Clone, Copy)]
pub(super) struct TokenLock {
    /// Waits for and takes it.
    pub(super) lock: &'static str,
    /// Gives it back.
    pub(super) unlock: &'static str,
}
