//! A MySQL or MariaDB source: the query runs inside `START TRANSACTION READ
//! ONLY` (a write in it fails), the session in UTC, and is sent unprepared so
//! that every value arrives as the server's own text.

use std::str::FromStr;

use chrono_tz::Tz;
use secrecy::ExposeSecret;
use sqlx::mysql::{MySqlConnectOptions, MySqlConnection};
use sqlx::{ConnectOptions, Connection, Executor, Row};
use tokio::sync::mpsc;

use super::{Column, ColumnKind, Feed, SourceError, feed_rows, prepared_columns, query_error};
use crate::config::SourceSettings;
use crate::storage::AudienceRow;

fn kind(type_name: &str) -> ColumnKind {
    match type_name {
        // TINYINT(1), how MySQL spells BOOLEAN.
        "BOOLEAN" => ColumnKind::Bool,
        "DATETIME" => ColumnKind::Timestamp,
        "TIMESTAMP" => ColumnKind::TimestampUtc,
        _ => ColumnKind::AsWritten,
    }
}

async fn connect(source: &SourceSettings) -> Result<MySqlConnection, SourceError> {
    let unreachable = |e: sqlx::Error| SourceError::Unreachable {
        name: source.name.clone(),
        reason: super::masked(source, e),
    };
    let url = source.url.expose_secret();
    // sqlx reads mysql:// only; MariaDB speaks the same protocol.
    let url = match url.strip_prefix("mariadb:") {
        Some(rest) => format!("mysql:{rest}"),
        None => url.to_owned(),
    };
    let mut conn = MySqlConnectOptions::from_str(&url)
        .map_err(unreachable)?
        .timezone(Some("+00:00".to_owned()))
        .connect()
        .await
        .map_err(unreachable)?;
    conn.execute("START TRANSACTION READ ONLY")
        .await
        .map_err(|e| query_error(source, e))?;
    Ok(conn)
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
    // Unprepared: every value is the server's text for it.
    let rows = sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_owned())).fetch(&mut conn);
    feed_rows(source, &feed, rows, |row, i| {
        row.try_get_unchecked::<Option<String>, _>(i)
    })
    .await?;
    let _ = conn.execute("ROLLBACK").await;
    let _ = conn.close().await;
    Ok(())
}
