//! A PostgreSQL source: every transaction read-only
//! (`default_transaction_read_only`), the session in UTC with ISO dates, and
//! the query sent unprepared so that every value arrives as PostgreSQL's own text.

use std::str::FromStr;

use chrono_tz::Tz;
use secrecy::ExposeSecret;
use sqlx::postgres::{PgConnectOptions, PgConnection};
use sqlx::{ConnectOptions, Connection, Row};
use tokio::sync::mpsc;

use super::{Column, ColumnKind, Feed, SourceError, feed_rows, prepared_columns};
use crate::config::SourceSettings;
use crate::storage::AudienceRow;

fn kind(type_name: &str) -> ColumnKind {
    match type_name {
        "BOOL" => ColumnKind::Bool,
        "TIMESTAMP" => ColumnKind::Timestamp,
        "TIMESTAMPTZ" => ColumnKind::TimestampUtc,
        _ => ColumnKind::AsWritten,
    }
}

async fn connect(source: &SourceSettings) -> Result<PgConnection, SourceError> {
    let unreachable = |e: sqlx::Error| SourceError::Unreachable {
        name: source.name.clone(),
        reason: super::masked(source, e),
    };
    let timeout_ms = source.timeout.as_millis().to_string();
    let options = PgConnectOptions::from_str(source.url.expose_secret())
        .map_err(unreachable)?
        .application_name("wxpush")
        .options([
            ("default_transaction_read_only", "on"),
            ("TimeZone", "UTC"),
            ("DateStyle", "ISO, YMD"),
            ("statement_timeout", timeout_ms.as_str()),
        ]);
    options.connect().await.map_err(unreachable)
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
    // Unprepared: every value is PostgreSQL's text for it.
    let rows = sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_owned())).fetch(&mut conn);
    feed_rows(source, &feed, rows, |row, i| {
        row.try_get_unchecked::<Option<String>, _>(i)
    })
    .await?;
    let _ = conn.close().await;
    Ok(())
}
