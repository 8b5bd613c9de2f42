//! A PostgreSQL source: every transaction read-only
//! (`default_transaction_read_only`), the session in UTC with ISO dates, and
//! the query sent unprepared so that every value arrives as PostgreSQL's own text.

use std::str::FromStr;

use chrono_tz::Tz;
use futures_util::TryStreamExt;
use secrecy::ExposeSecret;
use sqlx::postgres::{PgConnectOptions, PgConnection};
use sqlx::{
    Column as _, ConnectOptions, Connection, Executor, Row, SqlSafeStr, Statement, TypeInfo,
};
use tokio::sync::mpsc;

use super::{Column, ColumnKind, Feed, SourceError, query_error};
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

async fn columns_of(
    source: &SourceSettings,
    conn: &mut PgConnection,
    sql: &str,
) -> Result<Vec<Column>, SourceError> {
    // Preparing checks the query and names its columns without running it; it
    // also refuses several statements in one query.
    let statement = conn
        .prepare(sqlx::AssertSqlSafe(sql.to_owned()).into_sql_str())
        .await
        .map_err(|e| query_error(source, e))?;
    Ok(statement
        .columns()
        .iter()
        .map(|c| Column {
            name: c.name().to_owned(),
            kind: kind(c.type_info().name()),
        })
        .collect())
}

pub(super) async fn describe(
    source: &SourceSettings,
    sql: &str,
) -> Result<Vec<Column>, SourceError> {
    let mut conn = connect(source).await?;
    let columns = columns_of(source, &mut conn, sql).await;
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
    let columns = columns_of(source, &mut conn, sql).await?;
    let openid = super::openid_index(source, &columns)?;
    let feed = Feed {
        tz,
        tx,
        openid,
        columns,
    };
    let mut rows = sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_owned())).fetch(&mut conn);
    while let Some(row) = rows.try_next().await.map_err(|e| query_error(source, e))? {
        let mut values = Vec::with_capacity(row.len());
        for i in 0..row.len() {
            // Unprepared: every value is PostgreSQL's text for it.
            values.push(
                row.try_get_unchecked::<Option<String>, _>(i)
                    .map_err(|e| query_error(source, e))?,
            );
        }
        if !feed.row(values).await {
            break;
        }
    }
    drop(rows);
    let _ = conn.close().await;
    Ok(())
}
