//! PostgreSQL's side of the dialect: a server shared by any number of
//! instances, row locks, and a planner that needs a word of help on fresh runs.

use crate::storage::Audience;
use crate::storage::batch::{mark_sending_sql, record_outcomes_sql};
use crate::storage::deliveries::refused_column;
use crate::storage::dialect::{Dialect, SharedPage, TokenLock};
use crate::storage::sets::{id_set, outcome_set};

/// PostgreSQL.
#[derive(Debug)]
pub(in crate::storage) struct Postgres;

impl Dialect for Postgres {
    fn shares_runs(&self) -> bool {
        true
    }

    /// Rows are locked as statements touch them, and every statement is guarded.
    fn one_writer(&self) -> bool {
        false
    }

    fn begin_write(&self) -> &'static str {
        "BEGIN"
    }

    fn now_ms(&self) -> &'static str {
        "CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000 AS BIGINT)"
    }

    /// An array, computed once and matched by key: with `IN (subquery)` and
    /// the stale statistics of a fresh run, the planner scanned every delivery
    /// and read the whole set once for each (8 to 26 ms a batch of 16, measured).
    /// The migrations' `json_each` gives `jsonb`: `#>> '{}'` is a scalar's text.
    fn json_text(&self, value: &str) -> String {
        format!("({value} #>> '{{}}')")
    }

    fn json_rows(&self, items: &str) -> String {
        format!("COALESCE(json_agg(json_build_array({items})), '[]')::text")
    }

    fn in_ids(&self, n: usize) -> String {
        format!("= ANY(ARRAY({}))", id_set(n))
    }

    /// For the same reason as `in_ids`.
    fn among_outcomes(&self, column: &str) -> String {
        format!(" AND {column} = ANY(ARRAY(SELECT id FROM v))")
    }

    /// Outcomes (`$1`, at `$2`) and marks (ids as `$3`, for instance `$4`) in
    /// one statement, built from the plain statements' own parts. One statement
    /// is one round trip and one commit, where two cost the send path twice the
    /// wait; and since both commit together, a crash can never keep a new mark
    /// while losing the outcome that freed its sender's slot. The two touch
    /// different rows: an outcome's row is `sending`, a mark's is not yet.
    fn record_and_mark(&self) -> Option<String> {
        Some(format!(
            "{}, recorded AS ({} RETURNING 1) {}",
            outcome_set(1),
            record_outcomes_sql(self, 2, 4),
            mark_sending_sql(self, 3, 2, 4)
        ))
    }

    /// Transaction-level advisory locks, taken in key order (the subquery's
    /// `OFFSET 0` keeps its order for the outer scan) so that two claims over
    /// the same people never wait on each other in a circle.
    fn lock_people(&self) -> Option<String> {
        Some(format!(
            "SELECT pg_advisory_xact_lock(k) FROM (SELECT DISTINCT hashtextextended($1 || ':' || p.o, 26) AS k \
             FROM ({}) AS p (o) ORDER BY k OFFSET 0) AS l",
            super::super::sets::text_set(2)
        ))
    }

    fn shared_page(&self, audience: Audience, refusals: bool, take: bool) -> Option<SharedPage> {
        let source = super::pages::page_source(audience);
        // Numbered after the job's `$5` where the source binds it.
        let first = if matches!(audience, Audience::Listed) {
            6
        } else {
            5
        };
        let refused = refused_column("t", refusals.then_some((first, first + 1)));
        let sql = if take {
            super::pages::take_page_sql(source, &refused)
        } else {
            super::pages::read_page_sql(source, &refused)
        };
        Some(SharedPage {
            sql,
            setup: super::pages::PLAN_PAGE_READ,
        })
    }

    /// A session-level advisory lock, so that instances fetch one token between
    /// them, not one each.
    fn token_lock(&self) -> Option<TokenLock> {
        Some(TokenLock {
            lock: "SELECT pg_advisory_lock(hashtextextended($1, 0))",
            unlock: "SELECT pg_advisory_unlock(hashtextextended($1, 0))",
        })
    }

    fn migrator(&self) -> &'static sqlx::migrate::Migrator {
        &super::MIGRATOR
    }
}
