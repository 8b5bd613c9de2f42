//! How an instance reads a page of a shared run: taking its rows with
//! `FOR UPDATE SKIP LOCKED` while another instance is live, only reading them
//! while it is alone, and keeping the planner on the run's index.

use crate::storage::Audience;

/// Where a page read starts: after `$3` in run `$2`. Written as a row
/// comparison, which only the run's own index `(run_id, id)` can serve: with
/// `id > $3` the planner walked the primary key from `$3` whenever its
/// statistics were stale, reading every delivery of every earlier run first.
const FROM_ID: &str = "run_id = $2 AND (run_id, id) > ($2, $3)";

/// Keeps a page read (run first in its transaction) on the run's index, in id
/// order, up to its limit. Statistics are stale for a fresh run (its id is in
/// none until autovacuum analyzes the table) and again after autovacuum
/// analyzes mid-run (few rows are still pending): both times the planner
/// guessed a few dozen rows and chose a bitmap scan of every pending delivery
/// of the run, sorted, for each page: 4 to 12 ms a page at 30k instead of well
/// under one, measured. No estimate is right for long, so the bitmap is ruled
/// out for this one statement.
pub(super) const PLAN_PAGE_READ: &str = "SELECT set_config('enable_bitmapscan', 'off', true)";

/// Where a page's names and variables come from, for `take_page_sql` and
/// `read_page_sql`: the job's recipients, what people sent through the intake
/// API, or the snapshot's own variables. Each row's are looked up by key, one
/// row at a time (`LIMIT 1` keeps the planner from turning the lookup into a
/// join): statistics that lag a big import had it hash all of a job's
/// recipients for every page.
pub(super) fn page_source(audience: Audience) -> &'static str {
    match audience {
        Audience::Listed => {
            "LEFT JOIN LATERAL (SELECT name, vars FROM recipients \
             WHERE job = $5 AND openid = t.openid LIMIT 1) x ON true"
        }
        Audience::Subscribed { .. } => {
            "LEFT JOIN LATERAL (SELECT name, vars FROM subscribers \
             WHERE appid = (SELECT appid FROM runs WHERE id = $2) AND openid = t.openid LIMIT 1) x ON true"
        }
        Audience::Query => {
            "CROSS JOIN LATERAL (SELECT CAST(NULL AS TEXT) AS name, t.vars AS vars) x"
        }
    }
}

/// Takes up to `limit` pending deliveries of a run for instance `me`: nobody
/// else's (or its own from before), skipping rows another instance is taking at
/// this moment, with each one's name and variables from `source` (a join
/// fragment giving `x.name` and `x.vars` from `t.openid` and the snapshot's
/// `t.vars`, binding the job as `$5` when it needs it) and `refused` (see
/// `refused_column`, on `t.openid`).
pub(super) fn take_page_sql(source: &str, refused: &str) -> String {
    // The ids are picked first, as an array (`ARRAY(...)` runs once), so that
    // the update probes them by key; with `id IN (subquery)` the planner hashes
    // the subquery and scans every delivery once per page.
    format!(
        "WITH taken AS (UPDATE deliveries SET owner = $1 WHERE id = ANY(ARRAY( \
           SELECT id FROM deliveries WHERE {FROM_ID} AND status = 'pending' \
           AND (owner IS NULL OR owner = $1) ORDER BY id LIMIT $4 FOR UPDATE SKIP LOCKED)) \
           RETURNING id, openid, vars) \
         SELECT t.id, t.openid, x.name, x.vars, {refused} AS refused FROM taken t {source} ORDER BY t.id"
    )
}

/// Reads up to `limit` pending deliveries of a run that are nobody's or `me`'s,
/// without taking them, with the same parameters and columns as `take_page_sql`.
/// For an instance alone on the database: taking writes a row version per
/// delivery that the `sending` mark, which takes it anyway, writes again.
pub(super) fn read_page_sql(source: &str, refused: &str) -> String {
    format!(
        "WITH t AS (SELECT id, openid, vars FROM deliveries WHERE {FROM_ID} AND status = 'pending' \
           AND (owner IS NULL OR owner = $1) ORDER BY id LIMIT $4) \
         SELECT t.id, t.openid, x.name, x.vars, {refused} AS refused FROM t {source} ORDER BY t.id"
    )
}
