//! SQLite's side of the dialect: one file on one machine, one writer.

use crate::storage::dialect::Dialect;
use crate::storage::sets::id_set;

/// SQLite.
#[derive(Debug)]
pub(in crate::storage) struct Sqlite;

impl Dialect for Sqlite {
    fn shares_runs(&self) -> bool {
        false
    }

    /// Takes the write lock at once, so a transaction never fails half-way
    /// upgrading to it.
    fn one_writer(&self) -> bool {
        true
    }

    fn begin_write(&self) -> &'static str {
        "BEGIN IMMEDIATE"
    }

    fn now_ms(&self) -> &'static str {
        "CAST((julianday('now') - 2440587.5) * 86400000 AS BIGINT)"
    }

    fn read_by(&self, index: &str) -> String {
        format!(" INDEXED BY {index}")
    }

    /// `json_each` gives a string element as SQL text.
    fn json_text(&self, value: &str) -> String {
        value.to_owned()
    }

    fn json_rows(&self, items: &str) -> String {
        format!("json_group_array(json_array({items}))")
    }

    fn in_ids(&self, n: usize) -> String {
        format!("IN ({})", id_set(n))
    }

    /// SQLite already probes the outcome set by key.
    fn among_outcomes(&self, _column: &str) -> String {
        String::new()
    }

    fn migrator(&self) -> &'static sqlx::migrate::Migrator {
        &super::MIGRATOR
    }
}
