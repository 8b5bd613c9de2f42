//! The PostgreSQL backend: connecting, its migrations folder (sqlx runs them
//! under an advisory lock, so ten instances starting together migrate once), and
//! job leases as session advisory locks.

use std::str::FromStr;
use std::time::Duration;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};

use super::db::Pool;
use super::{Context, Lease, LeaseError, StorageError};
use crate::domain::JobName;

/// The schema, one file per version (the same versions as SQLite's).
pub(super) static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// Connections per instance when `[database] max_connections` is not set.
const DEFAULT_CONNECTIONS: u32 = 10;

/// Connects to the database at `url` and migrates it. The password comes from
/// the URL, `PGPASSWORD`, or a `.pgpass` file (`PGPASSFILE`), as with libpq.
pub(super) async fn open(url: &str, max_connections: Option<u32>) -> Result<Pool, StorageError> {
    let options = AnyConnectOptions::from_str(url).context("parse [database] url")?;
    let pool = AnyPoolOptions::new()
        .max_connections(max_connections.unwrap_or(DEFAULT_CONNECTIONS))
        // A server that is down at start is reported, not waited on for 30 s.
        .acquire_timeout(Duration::from_secs(10))
        .connect_with(options)
        .await
        .context("connect to the database")?;
    MIGRATOR.run(&pool).await.context("run migrations")?;
    Ok(pool)
}

/// Takes `job` without waiting: a session advisory lock held by a connection
/// of the lease's own, which PostgreSQL lets go when that session ends (the
/// holder stops, is killed, or loses the server).
pub(super) async fn lease(pool: &Pool, job: &JobName) -> Result<Lease, LeaseError> {
    let mut conn = pool
        .acquire()
        .await
        .context("take a connection for a job lease")?;
    let taken: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock(hashtextextended($1, 0))")
        .bind(format!("wxpush job {job}"))
        .fetch_one(&mut *conn)
        .await
        .context("take a job lease")?;
    if taken {
        Ok(Lease::session(conn))
    } else {
        Err(LeaseError::Busy(job.to_string()))
    }
}
