//! Batched statements: many rows per statement, padded to a few sizes so that
//! only a handful of distinct statements are ever prepared per connection.

use crate::domain::Outcome;

/// Rows per statement in batched writes (6 parameters each stays far below
/// SQLite's 32,766 and PostgreSQL's 65,535 parameter limits).
pub(super) const CHUNK: usize = 256;

/// Statement sizes: a chunk is padded up to one of these, so that only a handful of
/// distinct statements are ever prepared and cached per connection.
const SIZES: [usize; 4] = [8, 32, 128, CHUNK];

pub(super) fn padded(rows: usize) -> usize {
    SIZES.into_iter().find(|s| *s >= rows).unwrap_or(CHUNK)
}

/// Padding rows carry this id, which no delivery has.
const NO_ID: i64 = -1;

/// `(?, ?), (?, ?)` for `rows` rows of `width` parameters, or `?, ?` when width is 1.
pub(super) fn placeholders(width: usize, rows: usize) -> String {
    let row = if width == 1 {
        "?".to_owned()
    } else {
        format!("({})", vec!["?"; width].join(", "))
    };
    vec![row; rows].join(", ")
}

/// A CTE of `rows` outcomes (padded); it reads the same in SQLite and PostgreSQL.
pub(super) fn outcome_values(rows: usize) -> String {
    format!(
        "WITH v (id, status, errcode, errmsg, msgid, attempts) AS (VALUES {})",
        placeholders(6, padded(rows))
    )
}

/// Binds a chunk of ids and the padding up to its statement size.
pub(super) fn bind_ids<'q>(
    mut q: sqlx::query::Query<'q, sqlx::Sqlite, sqlx::sqlite::SqliteArguments>,
    ids: &[i64],
) -> sqlx::query::Query<'q, sqlx::Sqlite, sqlx::sqlite::SqliteArguments> {
    for id in ids {
        q = q.bind(*id);
    }
    for _ in ids.len()..padded(ids.len()) {
        q = q.bind(NO_ID);
    }
    q
}

/// Binds a chunk of outcomes (and the padding) to a statement from `outcome_values`.
pub(super) fn bind_outcomes<'q>(
    mut q: sqlx::query::Query<'q, sqlx::Sqlite, sqlx::sqlite::SqliteArguments>,
    chunk: &'q [Outcome],
) -> sqlx::query::Query<'q, sqlx::Sqlite, sqlx::sqlite::SqliteArguments> {
    for o in chunk {
        q = q
            .bind(o.id)
            .bind(o.status.as_str())
            .bind(o.errcode)
            .bind(o.errmsg.as_deref())
            .bind(o.msgid.map(|m| m.to_string()))
            .bind(i64::from(o.attempts));
    }
    for _ in chunk.len()..padded(chunk.len()) {
        q = q
            .bind(NO_ID)
            .bind("pending")
            .bind(None::<i64>)
            .bind(None::<&str>)
            .bind(None::<String>)
            .bind(0_i64);
    }
    q
}
