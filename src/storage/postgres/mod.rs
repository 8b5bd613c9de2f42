//! The PostgreSQL backend: connecting, its migrations folder (sqlx runs them
//! under an advisory lock, so ten instances starting together migrate once), and
//! taking deliveries with `FOR UPDATE SKIP LOCKED`.

use std::str::FromStr;
use std::time::Duration;

use sqlx::Connection as _;
use sqlx::any::{AnyConnectOptions, AnyPoolOptions};

use super::db::Pool;
use super::{Context, StorageError};

mod dialect;
mod pages;
mod signals;
pub(super) use dialect::Postgres;
pub use signals::RunChanges;
pub(super) use signals::{SENDS, Signals};

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

#[cfg(test)]
mod tests;
