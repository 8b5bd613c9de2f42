//! What the status page reads: runs and deliveries a page at a time (by id,
//! so that a run of a million opens as fast as one of ten), the latest run of
//! each job, and consent per template. Reads only.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::Row;

use super::runs::run_row;
use super::{Context, DeliveryRow, RunRow, StorageError, Store};
use crate::domain::{Counts, RunStatus, Status};

/// Statuses every delivery passes through, or ends in nearly always: the
/// partial index `deliveries_unusual` (migration 13) holds the others, so
/// that a filter by one of those reads its few rows, not the whole run.
const USUAL: &str = "('pending', 'claimed', 'sending', 'sent')";

/// Which of a run's deliveries a page shows.
#[derive(Debug, Clone, Default)]
pub struct DeliveryFilter {
    /// Only those in this status.
    pub status: Option<Status>,
    /// Only those with this errcode.
    pub errcode: Option<i64>,
    /// Only ids above this (the previous page's last).
    pub after: Option<i64>,
    /// At most this many.
    pub limit: u32,
}

/// Which runs a page shows, newest first.
#[derive(Debug, Clone, Default)]
pub struct RunFilter {
    /// Only runs of these jobs.
    pub jobs: Option<Vec<String>>,
    /// Only runs in this status.
    pub status: Option<RunStatus>,
    /// Only ids below this (the previous page's last).
    pub before: Option<i64>,
    /// At most this many.
    pub limit: u32,
}

/// One template's consent, for the status page.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ConsentSummary {
    /// The template.
    pub template_id: String,
    /// People whose consent changed to an acceptance since the window's start.
    pub accepted: i64,
    /// People whose consent changed to a refusal (reject or ban) since then.
    pub refused: i64,
    /// One-time credits outstanding (not yet used).
    pub credits: i64,
    /// Messages WeChat answered 43101 since then (runs' and sends').
    pub errcode_43101: i64,
    /// Messages WeChat answered at all since then.
    pub answered: i64,
}

/// A run's select list with no counts: the runs' rows alone.
fn heads() -> String {
    let zero = [
        "total",
        "sent",
        "failed",
        "refused",
        "invalid",
        "unknown",
        "skipped",
        "pending",
        "expired",
        "deferred",
        "suppressed",
    ]
    .map(|c| format!("0 AS {c}"))
    .join(", ");
    format!(
        "SELECT r.id, r.job, r.slot, r.trigger, r.status, r.note, r.folded, r.created_at, r.finished_at, \
         {zero} FROM runs r"
    )
}

impl Store {
    /// A page of run `run_id`'s deliveries under `filter`, in id order.
    pub async fn deliveries_page(
        &self,
        run_id: i64,
        filter: &DeliveryFilter,
    ) -> Result<Vec<DeliveryRow>, StorageError> {
        let mut conditions = " AND d.id > $2".to_owned();
        if let Some(status) = filter.status {
            // A literal (a parsed status): a partial index is used only where
            // the statement implies its condition.
            conditions.push_str(&format!(" AND d.status = '{}'", status.as_str()));
            if !USUAL.contains(&format!("'{}'", status.as_str())) {
                conditions.push_str(&format!(" AND d.status NOT IN {USUAL}"));
            }
        }
        if filter.errcode.is_some() {
            conditions.push_str(" AND d.errcode = $3");
        }
        let (after, errcode) = (filter.after.unwrap_or(0), filter.errcode);
        self.deliveries_where(run_id, &conditions, Some(filter.limit), move |q| {
            let q = q.bind(after);
            match errcode {
                Some(c) => q.bind(c),
                None => q,
            }
        })
        .await
    }

    /// A page of runs under `filter`, newest first, without their counts (see `run_counts`).
    pub async fn run_heads(&self, filter: &RunFilter) -> Result<Vec<RunRow>, StorageError> {
        let mut sql = format!("{} WHERE r.id < $1", heads());
        if let Some(status) = filter.status {
            sql.push_str(&format!(" AND r.status = '{}'", status.as_str()));
        }
        let jobs = filter.jobs.as_ref();
        if jobs.is_some() {
            sql.push_str(&format!(" AND r.job IN ({})", super::sets::text_set(2)));
        }
        sql.push_str(&format!(" ORDER BY r.id DESC LIMIT {}", filter.limit));
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(filter.before.unwrap_or(i64::MAX));
        if let Some(jobs) = jobs {
            q = super::sets::bind_texts(q, jobs);
        }
        q.fetch_all(&self.pool)
            .await
            .context("list runs")?
            .iter()
            .map(run_row)
            .collect::<Result<_, _>>()
            .context("decode runs")
    }

    /// Each job's latest run, without counts.
    pub async fn latest_runs(&self) -> Result<Vec<RunRow>, StorageError> {
        let sql = format!(
            "{} WHERE r.id IN (SELECT MAX(id) FROM runs WHERE snapshot = 1 GROUP BY job)",
            heads()
        );
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .fetch_all(&self.pool)
            .await
            .context("read each job's latest run")?
            .iter()
            .map(run_row)
            .collect::<Result<_, _>>()
            .context("decode runs")
    }

    /// Each job's latest finished run's end (`finished_at`).
    pub async fn last_finished(&self) -> Result<Vec<(String, String)>, StorageError> {
        let rows = sqlx::query(
            "SELECT job, MAX(finished_at) AS at FROM runs WHERE status = 'done' \
             AND finished_at IS NOT NULL GROUP BY job",
        )
        .fetch_all(&self.pool)
        .await
        .context("read each job's last finished run")?;
        Ok(rows.iter().map(|r| (r.get("job"), r.get("at"))).collect())
    }

    /// Run `id`'s deliveries counted by status.
    pub async fn run_counts(&self, id: i64) -> Result<Counts, StorageError> {
        Ok(self.run(id).await?.map(|r| r.counts).unwrap_or_default())
    }

    /// Sends a policy deferred, by job (`None`: API sends without one).
    pub async fn deferred_by_job(&self) -> Result<Vec<(Option<String>, i64)>, StorageError> {
        let rows = sqlx::query(
            "SELECT job, COUNT(*) AS n FROM sends WHERE status = 'pending' AND held IS NOT NULL GROUP BY job",
        )
        .fetch_all(&self.pool)
        .await
        .context("count deferred sends")?;
        Ok(rows.iter().map(|r| (r.get("job"), r.get("n"))).collect())
    }

    /// Sends of app `appid` due before `until`, pending, soonest first (at most `limit`).
    pub async fn sends_due_before(
        &self,
        until: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<(i64, String, String, String, Option<String>)>, StorageError> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT id, appid, openid, send_at, job FROM sends WHERE status = 'pending' \
             AND send_at < $1 ORDER BY send_at, id LIMIT {limit}"
        )))
        .bind(super::ts(until))
        .fetch_all(&self.pool)
        .await
        .context("read the sends due soon")?;
        Ok(rows
            .iter()
            .map(|r| {
                (
                    r.get("id"),
                    r.get("appid"),
                    r.get("openid"),
                    r.get("send_at"),
                    r.get("job"),
                )
            })
            .collect())
    }

    /// Consent per template of app `appid` since `since`, with how often WeChat
    /// answered 43101 (`templates`: each job's template, for its runs).
    pub async fn consent_summary(
        &self,
        appid: &str,
        since: DateTime<Utc>,
    ) -> Result<Vec<ConsentSummary>, StorageError> {
        let since = super::ts(since);
        let consents = sqlx::query(
            "SELECT template_id, \
             COALESCE(SUM(CASE WHEN status = 'accept' AND updated_at >= $2 THEN 1 ELSE 0 END), 0) AS accepted, \
             COALESCE(SUM(CASE WHEN status IN ('reject', 'ban') AND updated_at >= $2 THEN 1 ELSE 0 END), 0) AS refused, \
             COALESCE(SUM(credits), 0) AS credits \
             FROM consents WHERE appid = $1 GROUP BY template_id",
        )
        .bind(appid.to_owned())
        .bind(&since)
        .fetch_all(&self.pool)
        .await
        .context("sum consent by template")?;
        let answers = sqlx::query(
            "SELECT template_id, COALESCE(SUM(refused), 0) AS refused, COALESCE(SUM(answered), 0) AS answered FROM ( \
             SELECT r.template_id AS template_id, \
             CASE WHEN d.errcode = 43101 THEN 1 ELSE 0 END AS refused, \
             CASE WHEN d.errcode IS NOT NULL OR d.status = 'sent' THEN 1 ELSE 0 END AS answered \
             FROM runs r JOIN deliveries d ON d.run_id = r.id WHERE r.appid = $1 AND r.created_at >= $2 \
             UNION ALL SELECT s.template_id, CASE WHEN s.errcode = 43101 THEN 1 ELSE 0 END, \
             CASE WHEN s.errcode IS NOT NULL OR s.status = 'sent' THEN 1 ELSE 0 END \
             FROM sends s WHERE s.appid = $1 AND s.updated_at >= $2) AS a \
             WHERE template_id IS NOT NULL GROUP BY template_id",
        )
        .bind(appid.to_owned())
        .bind(&since)
        .fetch_all(&self.pool)
        .await
        .context("count 43101 answers by template")?;
        let mut by: std::collections::BTreeMap<String, ConsentSummary> = Default::default();
        for r in &consents {
            let t: String = r.get("template_id");
            let e = by.entry(t.clone()).or_default();
            e.template_id = t;
            e.accepted = r.get("accepted");
            e.refused = r.get("refused");
            e.credits = r.get("credits");
        }
        for r in &answers {
            let t: String = r.get("template_id");
            let e = by.entry(t.clone()).or_default();
            e.template_id = t;
            e.errcode_43101 = r.get("refused");
            e.answered = r.get("answered");
        }
        Ok(by.into_values().collect())
    }
}
