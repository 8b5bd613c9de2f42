//! The delivery policy's history of who got what, in the store: each message a
//! policy let go is a record (`policy_history`), counted against later claims
//! of the same person. A claim screens its people first (an index-only count
//! each), reads the records of the few near a limit, and records what goes.

use chrono::{DateTime, TimeZone, Utc};
use sqlx::Row;

use super::dialect::Dialect;
use super::sets::{bind_strings, bind_texts, text_set};
use super::tx::WriteTx;
use super::{Context, StorageError};
use crate::domain::policy::{Candidate, Policy, Sent};

/// What a history row belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    /// A run's delivery.
    Delivery,
    /// A send.
    Send,
}

impl Kind {
    pub(super) fn as_str(self) -> &'static str {
        match self {
            Self::Delivery => "d",
            Self::Send => "s",
        }
    }
}

/// Statuses in which a delivery's or a send's history row counts: it went, it
/// may have, or it is on its way (taken and not ended yet).
pub(super) const COUNTS: &str = "('pending', 'claimed', 'sending', 'sent', 'unknown')";

/// A history record's delivery (`d`) or send (`s`) and its id.
pub(super) type Ref = (String, i64);

/// Where a claim's people's records are looked up: the app, the kind of the
/// claims, and the start of the window.
pub(super) struct Lookup<'a> {
    /// The database's way of saying things.
    pub dialect: &'a dyn Dialect,
    /// The app.
    pub appid: &'a str,
    /// What the claims are.
    pub kind: Kind,
    /// The earliest record that counts.
    pub since: DateTime<Utc>,
}

impl Lookup<'_> {
    /// The records of `people` that claims with ids in `ids` (at most `most`
    /// of them one person's) must be weighed against under `policy`: those
    /// of the people `screen` cannot rule out, read whole.
    pub(super) async fn records_to_weigh(
        &self,
        tx: &mut WriteTx,
        policy: &Policy,
        most: usize,
        ids: (i64, i64),
        people: &[&str],
    ) -> Result<Vec<(String, Ref, Sent)>, StorageError> {
        let (d, appid, since) = (self.dialect, self.appid, self.since);
        match self.screen(tx, policy, most, ids, people).await? {
            Some(risky) if risky.is_empty() => Ok(Vec::new()),
            Some(risky) => {
                let risky: Vec<&str> = risky.iter().map(String::as_str).collect();
                read_history(tx, d, appid, &risky, since, None, policy.compares()).await
            }
            None => read_history(tx, d, appid, people, since, None, policy.compares()).await,
        }
    }

    /// Of `people`, those whose history must be read: those with at least as
    /// many records in the window as could hold one of their claims, and those
    /// who may have one of the claims' own records (decided before, then
    /// resumed). The rest go whatever their records say, so most people of a
    /// daily job cost one index-only count instead of their records read.
    /// `None`: everyone must be read (a person has as many claims in the batch
    /// as the lowest limit).
    async fn screen(
        &self,
        tx: &mut WriteTx,
        policy: &Policy,
        most: usize,
        (low, high): (i64, i64),
        people: &[&str],
    ) -> Result<Option<Vec<String>>, StorageError> {
        // A person's claims in this batch count against each other: all but
        // one before the last.
        let threshold = match policy.fewest_holding() {
            Some(fewest) => i64::from(fewest) - (most as i64 - 1),
            None => i64::MAX,
        };
        if threshold <= 0 {
            return Ok(None);
        }
        // Ids in the batch's range stand for its own: a record of another
        // claim there only costs that person a read.
        let who = self.dialect.json_text("p.value");
        let sql = format!(
            "SELECT {} FROM json_each($2) p WHERE (SELECT COUNT(*) >= $4 OR COALESCE(MAX(CASE \
             WHEN h.kind = $5 AND h.ref_id BETWEEN $6 AND $7 THEN 1 ELSE 0 END), 0) = 1 \
             FROM policy_history h WHERE h.appid = $1 AND h.openid = {who} AND h.at_ms >= $3)",
            self.dialect.json_rows(&who),
        );
        let q = bind_strings(
            sqlx::query(sqlx::AssertSqlSafe(sql)).bind(self.appid.to_owned()),
            people,
        );
        let risky: String = q
            .bind(self.since.timestamp_millis())
            .bind(threshold)
            .bind(self.kind.as_str())
            .bind(low)
            .bind(high)
            .fetch_one(&mut **tx)
            .await
            .context("count the people's history")?
            .get(0);
        let risky: Vec<(String,)> = serde_json::from_str(&risky)
            .map_err(|e| sqlx::Error::Decode(Box::new(e)))
            .context("count the people's history")?;
        Ok(Some(risky.into_iter().map(|(who,)| who).collect()))
    }
}

/// The history of `people` since `since`, read as one JSON value (a row each
/// would cost the driver a round of decoding each); with `counting`, only the
/// records whose delivery or send is in one of those statuses. Of template,
/// job and digest, only those `compares` names are read (the others read empty).
pub(super) async fn read_history(
    tx: &mut WriteTx,
    dialect: &dyn Dialect,
    appid: &str,
    people: &[&str],
    since: DateTime<Utc>,
    counting: Option<&str>,
    compares: (bool, bool, bool),
) -> Result<Vec<(String, Ref, Sent)>, StorageError> {
    let (template, job, digest) = compares;
    let pick = |wanted: bool, column: &'static str, empty: &'static str| {
        if wanted { column } else { empty }
    };
    let check = counting.map_or(String::new(), |statuses| {
        format!(
            " AND CASE WHEN h.kind = 'd' \
             THEN EXISTS (SELECT 1 FROM deliveries d WHERE d.id = h.ref_id AND d.status IN {statuses}) \
             ELSE EXISTS (SELECT 1 FROM sends s WHERE s.id = h.ref_id AND s.status IN {statuses}) END"
        )
    });
    let sql = format!(
        "SELECT {} FROM policy_history h WHERE h.appid = $1 AND h.openid IN ({}) AND h.at_ms >= $3{check}",
        dialect.json_rows(&format!(
            "h.openid, {}, {}, {}, h.counted, h.at_ms, h.kind, h.ref_id",
            pick(template, "h.template_id", "''"),
            pick(job, "h.job", "NULL"),
            pick(digest, "h.digest", "''"),
        )),
        text_set(2),
    );
    let q = bind_texts(
        sqlx::query(sqlx::AssertSqlSafe(sql)).bind(appid.to_owned()),
        people,
    );
    let rows: String = q
        .bind(since.timestamp_millis())
        .fetch_one(&mut **tx)
        .await
        .context("read the people's history")?
        .get(0);
    type Entry = (
        String,
        String,
        Option<String>,
        String,
        i64,
        i64,
        String,
        i64,
    );
    let rows: Vec<Entry> = serde_json::from_str(&rows)
        .map_err(|e| sqlx::Error::Decode(Box::new(e)))
        .context("read the people's history")?;
    Ok(rows
        .into_iter()
        .map(
            |(openid, template_id, job, digest, counted, at_ms, kind, ref_id)| {
                let sent = Sent {
                    template_id,
                    job,
                    digest,
                    counted: counted != 0,
                    at: Utc.timestamp_millis_opt(at_ms).single().unwrap_or(since),
                };
                (openid, (kind, ref_id), sent)
            },
        )
        .collect())
}

/// Records what goes, a statement per template and job (one for a run's
/// page), what the rows share bound once. Without digests (no policy of the
/// app dedupes) the rows are read from the deliveries or sends themselves by
/// id; with them, from a JSON set of (openid, digest, id).
pub(super) async fn record(
    tx: &mut WriteTx,
    dialect: &dyn Dialect,
    appid: &str,
    kind: Kind,
    counted: bool,
    going: &mut [(i64, &Candidate<'_>)],
    now: DateTime<Utc>,
) -> Result<(), StorageError> {
    going.sort_by(|a, b| {
        (a.1.template_id, a.1.job, a.1.openid).cmp(&(b.1.template_id, b.1.job, b.1.openid))
    });
    let table = match kind {
        Kind::Delivery => "deliveries",
        Kind::Send => "sends",
    };
    for group in going.chunk_by(|a, b| (a.1.template_id, a.1.job) == (b.1.template_id, b.1.job)) {
        let first = group[0].1;
        let (source, set) = if group.iter().all(|(_, c)| c.digest.is_empty()) {
            let ids: Vec<i64> = group.iter().map(|(id, _)| *id).collect();
            (
                format!(
                    "SELECT $1, t.openid, $5, $6, '', $4, $2, $3, t.id FROM {table} t WHERE t.id {}",
                    dialect.in_ids(7)
                ),
                serde_json::to_string(&ids),
            )
        } else {
            let rows: Vec<(&str, &str, i64)> = group
                .iter()
                .map(|(id, c)| (c.openid, c.digest, *id))
                .collect();
            (
                "SELECT $1, value ->> 0, $5, $6, value ->> 1, $4, $2, $3, CAST(value ->> 2 AS BIGINT) \
                 FROM json_each($7)"
                    .to_owned(),
                serde_json::to_string(&rows),
            )
        };
        let sql = format!(
            "INSERT INTO policy_history (appid, openid, template_id, job, digest, counted, at_ms, kind, ref_id) {source}"
        );
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(appid.to_owned())
            .bind(now.timestamp_millis())
            .bind(kind.as_str())
            .bind(i64::from(counted))
            .bind(first.template_id.to_owned())
            .bind(first.job.map(str::to_owned))
            .bind(set.expect("rows serialise"))
            .execute(&mut **tx)
            .await
            .context("record what the policy let go")?;
    }
    Ok(())
}

/// Forgets the history row of a held send of `openid` (held on a later claim,
/// it may have one from an earlier).
pub(super) async fn forget(
    tx: &mut WriteTx,
    appid: &str,
    openid: &str,
    id: i64,
) -> Result<(), StorageError> {
    sqlx::query(
        "DELETE FROM policy_history WHERE appid = $1 AND openid = $2 AND kind = 's' AND ref_id = $3",
    )
    .bind(appid.to_owned())
    .bind(openid.to_owned())
    .bind(id)
    .execute(&mut **tx)
    .await
    .context("forget a held claim's history")?;
    Ok(())
}
