//! The PostgreSQL backend: connecting, its migrations folder (sqlx runs them
//! under an advisory lock, so ten instances starting together migrate once), and
//! taking deliveries with `FOR UPDATE SKIP LOCKED`.

use std::str::FromStr;
use std::time::Duration;

use sqlx::Connection as _;
use sqlx::any::{AnyConnectOptions, AnyPoolOptions};

use super::db::Pool;
use super::db::{Backend, Conn};
use super::runs::Audience;
use super::{Context, StorageError};

mod signals;
pub use signals::RunChanges;
pub(super) use signals::{CHANNEL, Signals};

/// The schema, one file per version (the same versions as SQLite's).
pub(super) static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// Connections per instance when `[database] max_connections` is not set.
const DEFAULT_CONNECTIONS: u32 = 10;

/// Connects to the database at `url` and migrates it. The password comes from
/// the URL, `PGPASSWORD`, or a `.pgpass` file (`PGPASSFILE`), as with libpq.
pub(super) async fn open(url: &str, max_connections: Option<u32>) -> Result<Pool, StorageError> {
    let pool = connect(url, max_connections).await?;
    MIGRATOR.run(&pool).await.context("run migrations")?;
    Ok(pool)
}

/// Connects to the database at `url`, migrating nothing.
pub(super) async fn connect(url: &str, max_connections: Option<u32>) -> Result<Pool, StorageError> {
    let options = AnyConnectOptions::from_str(url).context("parse [database] url")?;
    // One connection first: a server that is down or refuses the login is
    // reported at once (the pool would retry until its acquire timeout).
    let first = sqlx::AnyConnection::connect_with(&options)
        .await
        .context("connect to the database")?;
    first.close().await.context("connect to the database")?;
    Ok(AnyPoolOptions::new()
        .max_connections(max_connections.unwrap_or(DEFAULT_CONNECTIONS))
        // A server that went away is retried for this long by each statement
        // that needs a new connection: long enough to ride out a restart,
        // short enough that a stopped run (and `send`) says so soon.
        .acquire_timeout(Duration::from_secs(5))
        .connect_lazy_with(options))
}

/// Where a page read starts: after `$3` in run `$2`. Written as a row
/// comparison, which only the run's own index `(run_id, id)` can serve: with
/// `id > $3` the planner walked the primary key from `$3` whenever its
/// statistics were stale, reading every delivery of every earlier run first.
const FROM_ID: &str = "run_id = $2 AND (run_id, id) > ($2, $3)";

/// Keeps a page read (in the transaction on `conn`) on the run's index, in id
/// order, up to its limit. Statistics are stale for a fresh run (its id is in
/// none until autovacuum analyzes the table) and again after autovacuum
/// analyzes mid-run (few rows are still pending): both times the planner
/// guessed a few dozen rows and chose a bitmap scan of every pending delivery
/// of the run, sorted, for each page: 4 to 12 ms a page at 30k instead of well
/// under one, measured. No estimate is right for long, so the bitmap is ruled
/// out for this one statement.
pub(super) async fn plan_page_read(conn: &mut Conn) -> Result<(), StorageError> {
    sqlx::query("SELECT set_config('enable_bitmapscan', 'off', true)")
        .execute(conn)
        .await
        .context("read pending deliveries")?;
    Ok(())
}

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
/// `deliveries::refused_column`, on `t.openid`).
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

/// Records outcomes (`outcome_set` as `$1`) and marks deliveries `sending`
/// (ids as `$3`, each only if still pending or claimed and not another
/// instance's, and then `$4`'s) in one statement, at `$2`; returns the ids marked. One
/// statement is one round trip and one commit, where two cost the send path
/// twice the wait; and since both commit together, a crash can never keep a
/// new mark while losing the outcome that freed its sender's slot. The two
/// touch different rows: an outcome's row is `sending`, a mark's is not yet.
pub(super) fn record_and_mark_sql() -> String {
    format!(
        "{}, recorded AS (UPDATE deliveries SET status = v.status, errcode = v.errcode, \
           errmsg = v.errmsg, msgid = v.msgid, attempts = deliveries.attempts + v.attempts, \
           credit = 0, owner = NULL, updated_at = $2 FROM v WHERE deliveries.id = v.id{} AND {} RETURNING 1) \
         UPDATE deliveries SET status = 'sending', owner = $4, updated_at = $2 WHERE id {} \
         AND status IN ('pending', 'claimed') AND (owner IS NULL OR owner = $4) RETURNING id",
        super::sets::outcome_set(1),
        super::sets::among_outcomes(Backend::Postgres, "deliveries.id"),
        super::batch::open_and_mine(4),
        super::sets::in_ids(Backend::Postgres, 3)
    )
}

#[cfg(test)]
mod tests;
