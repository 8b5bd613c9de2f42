//! A SQLite source, opened read-only (`mode=ro`): SQLite itself refuses a write.
//! SQLite keeps a type per value, so a value is read by its own type; a column
//! declared BOOLEAN or TIMESTAMP is converted like the other databases'.

use std::str::FromStr;

use chrono_tz::Tz;
use secrecy::ExposeSecret;
use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection, SqliteRow};
use sqlx::{ConnectOptions, Connection, Row, TypeInfo, ValueRef};
use tokio::sync::mpsc;

use super::{Column, ColumnKind, Feed, SourceError, feed_rows, prepared_columns};
use crate::config::SourceSettings;
use crate::storage::AudienceRow;

fn kind(declared: &str) -> ColumnKind {
    match declared.to_ascii_uppercase().as_str() {
        "BOOLEAN" | "BOOL" => ColumnKind::Bool,
        "DATETIME" | "TIMESTAMP" => ColumnKind::Timestamp,
        _ => ColumnKind::AsWritten,
    }
}

async fn connect(source: &SourceSettings) -> Result<SqliteConnection, SourceError> {
    let unreachable = |e: sqlx::Error| SourceError::Unreachable {
        name: source.name.clone(),
        reason: super::masked(source, e),
    };
    SqliteConnectOptions::from_str(source.url.expose_secret())
        .map_err(unreachable)?
        .read_only(true)
        .create_if_missing(false)
        .connect()
        .await
        .map_err(unreachable)
}

pub(super) async fn describe(
    source: &SourceSettings,
    sql: &str,
) -> Result<Vec<Column>, SourceError> {
    let mut conn = connect(source).await?;
    let columns = prepared_columns(source, &mut conn, sql, kind).await;
    let _ = conn.close().await;
    columns
}

/// One value as text by its stored type; `None` for NULL.
fn value(row: &SqliteRow, i: usize) -> Result<Option<String>, sqlx::Error> {
    let raw = row.try_get_raw(i)?;
    if raw.is_null() {
        return Ok(None);
    }
    let stored = raw.type_info().name().to_owned();
    Ok(Some(match stored.as_str() {
        "INTEGER" => row.try_get_unchecked::<i64, _>(i)?.to_string(),
        "REAL" => row.try_get_unchecked::<f64, _>(i)?.to_string(),
        _ => row.try_get_unchecked::<String, _>(i)?,
    }))
}

pub(super) async fn stream(
    source: &SourceSettings,
    sql: &str,
    tz: Tz,
    tx: mpsc::Sender<Result<AudienceRow, SourceError>>,
) -> Result<(), SourceError> {
    let mut conn = connect(source).await?;
    let columns = prepared_columns(source, &mut conn, sql, kind).await?;
    let openid = super::openid_index(source, &columns)?;
    let feed = Feed {
        tz,
        tx,
        openid,
        columns,
    };
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql.to_owned())).fetch(&mut conn);
    feed_rows(source, &feed, rows, value).await?;
    let _ = conn.close().await;
    Ok(())
}
