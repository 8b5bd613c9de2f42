//! Row sets for batched statements: a whole chunk of rows travels as one JSON
//! array bound to one parameter and is read back with `json_each`, so one
//! statement serves every batch size (one prepared statement per shape, no
//! padding). SQLite has `json_each(text)`; the PostgreSQL migrations add one
//! that reads an array the same way (its elements as `jsonb`, where `->>` gives
//! text), so the statements cast every field to its column's type and read the
//! same on both backends.

use crate::domain::Outcome;

/// Rows per statement in batched writes.
pub(crate) const CHUNK: usize = 256;

/// A subquery of the ids bound by `bind_ids` as parameter `$n`, for `id IN (...)`.
pub(crate) fn id_set(n: usize) -> String {
    format!("SELECT CAST(value AS BIGINT) FROM json_each(${n})")
}

/// A subquery of the strings bound by `bind_texts` as parameter `$n`, for `x IN (...)`.
pub(crate) fn text_set(n: usize) -> String {
    // Each string travels as a one-element array: `->> 0` reads text the same
    // way on both backends, where a bare JSON string would not.
    format!("SELECT value ->> 0 FROM json_each(${n})")
}

/// Binds strings for `text_set`.
pub(crate) fn bind_texts<'q>(
    q: super::db::Query<'q>,
    texts: &[impl AsRef<str>],
) -> super::db::Query<'q> {
    let rows: Vec<[&str; 1]> = texts.iter().map(|t| [t.as_ref()]).collect();
    q.bind(serde_json::to_string(&rows).expect("strings serialise"))
}

/// Binds strings as a plain JSON array, each read with `Dialect::json_text`.
pub(crate) fn bind_strings<'q>(
    q: super::db::Query<'q>,
    texts: &[impl AsRef<str>],
) -> super::db::Query<'q> {
    let texts: Vec<&str> = texts.iter().map(AsRef::as_ref).collect();
    q.bind(serde_json::to_string(&texts).expect("strings serialise"))
}

/// A CTE `v` of the outcomes bound by `bind_outcomes` as parameter `$n`.
pub(crate) fn outcome_set(n: usize) -> String {
    format!(
        "WITH v (id, status, errcode, errmsg, msgid, attempts) AS \
         (SELECT CAST(value ->> 0 AS BIGINT), value ->> 1, CAST(value ->> 2 AS BIGINT), value ->> 3, \
         value ->> 4, CAST(value ->> 5 AS BIGINT) FROM json_each(${n}))"
    )
}

/// Binds ids for `id_set`.
pub(crate) fn bind_ids<'q>(q: super::db::Query<'q>, ids: &[i64]) -> super::db::Query<'q> {
    q.bind(serde_json::to_string(ids).expect("ids serialise"))
}

/// Binds outcomes for `outcome_set`.
pub(crate) fn bind_outcomes<'q>(
    q: super::db::Query<'q>,
    chunk: &'q [Outcome],
) -> super::db::Query<'q> {
    let rows: Vec<serde_json::Value> = chunk
        .iter()
        .map(|o| {
            serde_json::json!([
                o.id,
                o.status.as_str(),
                o.errcode,
                o.errmsg,
                o.msgid.map(|m| m.to_string()),
                o.attempts
            ])
        })
        .collect();
    q.bind(serde_json::to_string(&rows).expect("outcomes serialise"))
}

/// A CTE `r` of recipients `(job, openid, name, vars)` bound by
/// `bind_recipients` as parameter `$n`.
pub(crate) fn recipient_set(n: usize) -> String {
    format!(
        "WITH r (job, openid, name, vars) AS \
         (SELECT value ->> 0, value ->> 1, value ->> 2, value ->> 3 FROM json_each(${n}))"
    )
}

/// Binds recipients for `recipient_set`.
pub(crate) fn bind_recipients<'q>(
    q: super::db::QueryScalar<'q, String>,
    rows: &[&crate::storage::StoredRecipient],
) -> super::db::QueryScalar<'q, String> {
    let rows: Vec<serde_json::Value> = rows
        .iter()
        .map(|r| {
            serde_json::json!([
                r.job.as_ref(),
                r.openid.as_ref(),
                r.name,
                serde_json::to_string(&r.vars).expect("a string map serialises")
            ])
        })
        .collect();
    q.bind(serde_json::to_string(&rows).expect("recipients serialise"))
}
