//! Audiences from the operator's own database (#14): a job's read-only query,
//! run once per slot on its `[sources.NAME]`, streamed row by row into the
//! run's snapshot (see `Store::enqueue_snapshot`). Each database has its own
//! module for connecting read-only and reading values as text; `values` says
//! how a value becomes text, the same way for all three.

mod mysql;
mod postgres;
mod sqlite;
mod values;

use chrono_tz::Tz;
use secrecy::ExposeSecret;
use tokio::sync::mpsc;

use crate::config::{JobQuery, SourceKind, SourceSettings};
use crate::domain::OpenId;
use crate::storage::AudienceRow;
pub use values::ColumnKind;

/// Rows read ahead of the writer: memory stays flat in the result's size.
const READ_AHEAD: usize = 2048;

/// Why an audience query gave no (whole) audience. Never holds the URL.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SourceError {
    /// The database could not be reached or refused the login: worth retrying.
    #[error("source {name}: cannot connect: {reason}")]
    Unreachable {
        /// The source's name.
        name: String,
        /// What the driver said, any password masked.
        reason: String,
    },
    /// The database refused or failed the query (a syntax error, a write refused
    /// by the read-only transaction, a missing table).
    #[error("source {name}: the query failed: {reason}")]
    Query {
        /// The source's name.
        name: String,
        /// What the database said.
        reason: String,
    },
    /// The query ran longer than the source's `timeout`.
    #[error("source {name}: the query ran longer than its timeout ({timeout})")]
    Timeout {
        /// The source's name.
        name: String,
        /// The timeout, as configured.
        timeout: String,
    },
    /// The result has no `openid` column.
    #[error("source {name}: the result has no openid column (columns: {columns})")]
    NoOpenid {
        /// The source's name.
        name: String,
        /// The columns it has.
        columns: String,
    },
}

impl SourceError {
    /// A short label for metrics: `unreachable`, `query`, `timeout` or `no_openid`.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Unreachable { .. } => "unreachable",
            Self::Query { .. } => "query",
            Self::Timeout { .. } => "timeout",
            Self::NoOpenid { .. } => "no_openid",
        }
    }

    /// True when the database could not be reached: the firing is tried again
    /// like one that could not reach WeChat. A bad query is not.
    pub fn unreachable(&self) -> bool {
        matches!(self, Self::Unreachable { .. })
    }
}

/// A column of the result: its name and how its values become text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    /// As the query names it.
    pub name: String,
    /// Its type, as far as text conversion cares.
    pub kind: ColumnKind,
}

/// Where the rows go, and how a failure is reported; shared by the backends.
struct Feed {
    tz: Tz,
    tx: mpsc::Sender<Result<AudienceRow, SourceError>>,
    openid: usize,
    columns: Vec<Column>,
}

impl Feed {
    /// Sends one row of text values (`None`: NULL); false once nobody reads.
    async fn row(&self, values: Vec<Option<String>>) -> bool {
        let mut openid = None;
        let mut vars = std::collections::BTreeMap::new();
        for (i, (value, column)) in values.into_iter().zip(&self.columns).enumerate() {
            let Some(value) = value else { continue };
            let text = values::text(column.kind, &value, self.tz);
            if i == self.openid {
                openid = Some(text);
            } else {
                vars.insert(column.name.clone(), text);
            }
        }
        let (openid, invalid) = match openid {
            None => (String::new(), Some("openid is NULL".to_owned())),
            Some(o) => match OpenId::parse(&o) {
                Ok(_) => (o, None),
                Err(e) => (o, Some(format!("openid: {e}"))),
            },
        };
        self.tx
            .send(Ok(AudienceRow {
                openid,
                vars,
                invalid,
            }))
            .await
            .is_ok()
    }
}

/// Runs `query` for a slot and streams its rows, the whole query bounded by the
/// source's timeout. Reading stops when the receiver is dropped.
pub fn rows(query: &JobQuery, tz: Tz) -> mpsc::Receiver<Result<AudienceRow, SourceError>> {
    let (tx, rx) = mpsc::channel(READ_AHEAD);
    let source = query.source.clone();
    let sql = query.sql.clone();
    tokio::spawn(async move {
        let errors = tx.clone();
        let timeout = source.timeout;
        let run = async {
            match source.kind {
                SourceKind::Sqlite => sqlite::stream(&source, &sql, tz, tx).await,
                SourceKind::Postgres => postgres::stream(&source, &sql, tz, tx).await,
                SourceKind::MySql => mysql::stream(&source, &sql, tz, tx).await,
            }
        };
        let result = match tokio::time::timeout(timeout, run).await {
            Ok(r) => r,
            Err(_) => Err(SourceError::Timeout {
                name: source.name.clone(),
                timeout: humantime::format_duration(timeout).to_string(),
            }),
        };
        if let Err(e) = result {
            let _ = errors.send(Err(e)).await;
        }
    });
    rx
}

/// The query's result columns, read by preparing it (nothing runs); for
/// `check`. Fails like a firing would on a bad query or a missing `openid`.
pub async fn columns(query: &JobQuery) -> Result<Vec<Column>, SourceError> {
    let source = &query.source;
    let run = async {
        let columns = match source.kind {
            SourceKind::Sqlite => sqlite::describe(source, &query.sql).await?,
            SourceKind::Postgres => postgres::describe(source, &query.sql).await?,
            SourceKind::MySql => mysql::describe(source, &query.sql).await?,
        };
        openid_index(source, &columns)?;
        Ok(columns)
    };
    tokio::time::timeout(source.timeout, run)
        .await
        .unwrap_or_else(|_| {
            Err(SourceError::Timeout {
                name: source.name.clone(),
                timeout: humantime::format_duration(source.timeout).to_string(),
            })
        })
}

/// The result columns of `sql`, by preparing it on `conn`: nothing runs, the
/// query is checked, and several statements in one query are refused.
async fn prepared_columns<'c, DB: sqlx::Database>(
    source: &SourceSettings,
    conn: impl sqlx::Executor<'c, Database = DB>,
    sql: &str,
    kind: fn(&str) -> ColumnKind,
) -> Result<Vec<Column>, SourceError> {
    use sqlx::{Column as _, SqlSafeStr, Statement, TypeInfo};
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

/// Sends every row of `rows` (each value read by `value`) until the end or
/// until nobody reads.
async fn feed_rows<R: sqlx::Row>(
    source: &SourceSettings,
    feed: &Feed,
    mut rows: futures_util::stream::BoxStream<'_, Result<R, sqlx::Error>>,
    value: impl Fn(&R, usize) -> Result<Option<String>, sqlx::Error>,
) -> Result<(), SourceError> {
    use futures_util::TryStreamExt;
    while let Some(row) = rows.try_next().await.map_err(|e| query_error(source, e))? {
        let values = (0..row.len())
            .map(|i| value(&row, i))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| query_error(source, e))?;
        if !feed.row(values).await {
            break;
        }
    }
    Ok(())
}

/// Where the `openid` column is (any letter case).
fn openid_index(source: &SourceSettings, columns: &[Column]) -> Result<usize, SourceError> {
    columns
        .iter()
        .position(|c| c.name.eq_ignore_ascii_case("openid"))
        .ok_or_else(|| SourceError::NoOpenid {
            name: source.name.clone(),
            columns: if columns.is_empty() {
                "none".to_owned()
            } else {
                columns
                    .iter()
                    .map(|c| c.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            },
        })
}

/// A query failure from the database.
fn query_error(source: &SourceSettings, e: impl std::fmt::Display) -> SourceError {
    SourceError::Query {
        name: source.name.clone(),
        reason: masked(source, e),
    }
}

/// A driver's message with the URL's password (should it appear) masked.
fn masked(source: &SourceSettings, e: impl std::fmt::Display) -> String {
    let text = e.to_string();
    let url = source.url.expose_secret();
    match url::Url::parse(url)
        .ok()
        .and_then(|u| u.password().map(str::to_owned))
    {
        Some(p) if !p.is_empty() => text.replace(&p, "***").replace(url, &source.shown()),
        _ => text,
    }
}
