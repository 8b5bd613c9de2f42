//! The PostgreSQL backend: connecting, its migrations folder (sqlx runs them
//! under an advisory lock, so ten instances starting together migrate once), and
//! taking deliveries with `FOR UPDATE SKIP LOCKED`.

use std::str::FromStr;
use std::time::Duration;

use sqlx::Connection as _;
use sqlx::any::{AnyConnectOptions, AnyPoolOptions};

use super::db::Pool;
use super::{Context, StorageError};

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
        .acquire_timeout(Duration::from_secs(10))
        .connect_lazy_with(options))
}

/// Takes up to `limit` pending deliveries of a run for instance `me`: nobody
/// else's (or its own from before), skipping rows another instance is taking at
/// this moment, with each one's name and variables from `source` (a join
/// fragment on `t.openid`, binding the job as `$5` when it needs it).
pub(super) fn take_page_sql(source: &str) -> String {
    // The ids are picked first, as an array (`ARRAY(...)` runs once), so that
    // the update probes them by key; with `id IN (subquery)` the planner hashes
    // the subquery and scans every delivery once per page.
    format!(
        "WITH taken AS (UPDATE deliveries SET owner = $1 WHERE id = ANY(ARRAY( \
           SELECT id FROM deliveries WHERE run_id = $2 AND status = 'pending' AND id > $3 \
           AND (owner IS NULL OR owner = $1) ORDER BY id LIMIT $4 FOR UPDATE SKIP LOCKED)) \
           RETURNING id, openid) \
         SELECT t.id, t.openid, x.name, x.vars FROM taken t {source} ORDER BY t.id"
    )
}

/// Reads up to `limit` pending deliveries of a run that are nobody's or `me`'s,
/// without taking them, with the same parameters and columns as `take_page_sql`.
/// For an instance alone on the database: taking writes a row version per
/// delivery that the `sending` mark, which takes it anyway, writes again.
pub(super) fn read_page_sql(source: &str) -> String {
    format!(
        "WITH t AS (SELECT id, openid FROM deliveries WHERE run_id = $2 AND status = 'pending' \
           AND id > $3 AND (owner IS NULL OR owner = $1) ORDER BY id LIMIT $4) \
         SELECT t.id, t.openid, x.name, x.vars FROM t {source} ORDER BY t.id"
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
           credit = 0, owner = NULL, updated_at = $2 FROM v WHERE deliveries.id = v.id AND {} RETURNING 1) \
         UPDATE deliveries SET status = 'sending', owner = $4, updated_at = $2 WHERE id IN ({}) \
         AND status IN ('pending', 'claimed') AND (owner IS NULL OR owner = $4) RETURNING id",
        super::sets::outcome_set(1),
        super::batch::open_and_mine(4),
        super::sets::id_set(3)
    )
}
