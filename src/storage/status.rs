//! What the status page reads: runs and deliveries a page at a time (by id,
//! so that a run of a million opens as fast as one of ten), the latest run of
//! each job, and consent per template. Reads only.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::Row;

use super::runs::run_row;
use super::{Context, DeliveryRow, RunRow, SendRow, StorageError, Store};
use crate::domain::{Counts, RunStatus, SendStatus, Status};

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
    /// The run's counts when it is `done`: then none of its deliveries is
    /// pending, claimed or sending (`finish_run`), and a sent one has no
    /// errcode (the sender keeps none from a reply of 0), which spares
    /// scanning a run of a million for what is not there.
    pub done: Option<Counts>,
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

/// Which sends the status page lists, as the API shows their state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendShown {
    /// In this stored status.
    Status(SendStatus),
    /// Pending, not due yet, not held.
    Scheduled,
    /// Pending and due, not held.
    Queued,
    /// Pending at a later time a delivery policy gave it.
    Deferred,
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

/// A run's select list with no counts (and `extra` columns): the runs' rows alone.
fn heads(extra: &str) -> String {
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
         {zero}{extra} FROM runs r"
    )
}

impl Store {
    /// A page of run `run_id`'s deliveries under `filter`, in id order.
    pub async fn deliveries_page(
        &self,
        run_id: i64,
        filter: &DeliveryFilter,
    ) -> Result<Vec<DeliveryRow>, StorageError> {
        let usual = |st: Status| {
            matches!(
                st,
                Status::Pending | Status::Claimed | Status::Sending | Status::Sent
            )
        };
        if let (Some(_), Some(Status::Pending | Status::Claimed | Status::Sending)) =
            (filter.done, filter.status)
        {
            return Ok(Vec::new());
        }
        let mut conditions = " AND d.id > $2".to_owned();
        if let Some(status) = filter.status {
            // A literal (a parsed status): a partial index is used only where
            // the statement implies its condition.
            conditions.push_str(&format!(" AND d.status = '{}'", status.as_str()));
            if !usual(status) {
                conditions.push_str(&format!(" AND d.status NOT IN {USUAL}"));
            }
        }
        // A done run's deliveries with a nonzero errcode are all in the
        // unusual statuses: where those are a tenth at most, reading them
        // sorted by id costs less than the run in id order (which a planner
        // would pick to save the sort) until a page of matches is found.
        let few_unusual = filter
            .done
            .is_some_and(|c| (c.total - c.sent) * 10 <= c.total);
        let mut read_by = String::new();
        if let Some(code) = filter.errcode {
            conditions.push_str(" AND d.errcode = $3");
            if few_unusual && code != 0 && filter.status.is_none() {
                conditions.push_str(&format!(" AND d.status NOT IN {USUAL}"));
                read_by = self.dialect.read_by("deliveries_unusual");
            }
        }
        let (after, errcode) = (filter.after.unwrap_or(0), filter.errcode);
        self.deliveries_where(
            run_id,
            &read_by,
            &conditions,
            Some(filter.limit),
            move |q| {
                let q = q.bind(after);
                match errcode {
                    Some(c) => q.bind(c),
                    None => q,
                }
            },
        )
        .await
    }

    /// Run `id` without its counts (see `run_counts`), if there is one.
    pub async fn run_head(&self, id: i64) -> Result<Option<RunRow>, StorageError> {
        let sql = format!("{} WHERE r.id = $1", heads(""));
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .context("read a run")?
            .as_ref()
            .map(run_row)
            .transpose()
            .context("decode a run")
    }

    /// A page of runs under `filter`, newest first, without their counts (see `run_counts`).
    pub async fn run_heads(&self, filter: &RunFilter) -> Result<Vec<RunRow>, StorageError> {
        let mut sql = format!("{} WHERE r.id < $1", heads(""));
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

    /// Sends newest first: those `shown` (if given) with ids below `before`
    /// (if given), at most `limit`.
    pub async fn sends_newest(
        &self,
        shown: Option<SendShown>,
        before: Option<i64>,
        limit: u32,
        now: DateTime<Utc>,
    ) -> Result<Vec<SendRow>, StorageError> {
        let mut tail = "WHERE s.id < $1".to_owned();
        let status = match shown {
            None => None,
            Some(SendShown::Status(st)) => Some(st),
            Some(_) => Some(SendStatus::Pending),
        };
        if status.is_some() {
            tail.push_str(" AND s.status = $2");
        }
        tail.push_str(match shown {
            Some(SendShown::Scheduled) => " AND s.held IS NULL AND s.send_at > $3",
            Some(SendShown::Queued) => " AND s.held IS NULL AND s.send_at <= $3",
            Some(SendShown::Deferred) => " AND s.held IS NOT NULL",
            _ => "",
        });
        tail.push_str(&format!(" ORDER BY s.id DESC LIMIT {limit}"));
        let sql = super::sends::viewed(&tail);
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(before.unwrap_or(i64::MAX));
        if let Some(status) = status {
            q = q.bind(status.as_str());
        }
        if matches!(shown, Some(SendShown::Scheduled | SendShown::Queued)) {
            q = q.bind(super::ts(now));
        }
        q.fetch_all(&self.pool)
            .await
            .context("list sends")?
            .iter()
            .map(super::sends::send_row)
            .collect()
    }

    /// Each job's latest run, without counts (one whose audience query failed
    /// too: its note says why nothing was sent).
    pub async fn latest_runs(&self) -> Result<Vec<RunRow>, StorageError> {
        let sql = format!(
            "{} WHERE r.id IN (SELECT MAX(id) FROM runs GROUP BY job)",
            heads("")
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

    /// A `done` run's counts from its indexes alone: its deliveries counted by
    /// `deliveries_run`, the unusual statuses by `deliveries_unusual`, and the
    /// rest `sent`, since a run is only marked done with none pending, claimed
    /// or sending (`finish_run`, `expire_run`). A run of a million is counted
    /// without reading a million rows.
    pub async fn done_run_counts(&self, id: i64) -> Result<Counts, StorageError> {
        let total: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM deliveries WHERE run_id = $1")
            .bind(id)
            .fetch_one(&self.pool)
            .await
            .context("count a run's deliveries")?;
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT status, COUNT(*) AS n FROM deliveries WHERE run_id = $1 \
             AND status NOT IN {USUAL} GROUP BY status"
        )))
        .bind(id)
        .fetch_all(&self.pool)
        .await
        .context("count a run's unusual deliveries")?;
        let mut c = Counts {
            total: total as u64,
            ..Counts::default()
        };
        let mut unusual = 0;
        for row in &rows {
            let n = row.get::<i64, _>("n") as u64;
            unusual += n;
            let status: String = row.get("status");
            match Status::parse(&status) {
                Ok(Status::Failed) => c.failed = n,
                Ok(Status::Refused) => c.refused = n,
                Ok(Status::Invalid) => c.invalid = n,
                Ok(Status::Unknown) => c.unknown = n,
                Ok(Status::Skipped) => c.skipped = n,
                Ok(Status::Expired) => c.expired = n,
                Ok(Status::Deferred) => c.deferred = n,
                Ok(Status::Suppressed) => c.suppressed = n,
                _ => {}
            }
        }
        c.sent = c.total.saturating_sub(unusual);
        Ok(c)
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

    /// Consent per template of app `appid` since `since`, with how often
    /// WeChat answered its sends 43101 (the runs' answers are added by the
    /// caller from their counts: see `runs_since`).
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
             CAST(COALESCE(SUM(credits), 0) AS BIGINT) AS credits \
             FROM consents WHERE appid = $1 GROUP BY template_id",
        )
        .bind(appid.to_owned())
        .bind(&since)
        .fetch_all(&self.pool)
        .await
        .context("sum consent by template")?;
        let answers = sqlx::query(
            "SELECT template_id, \
             COALESCE(SUM(CASE WHEN errcode = 43101 THEN 1 ELSE 0 END), 0) AS refused, \
             COALESCE(SUM(CASE WHEN errcode IS NOT NULL OR status = 'sent' THEN 1 ELSE 0 END), 0) AS answered \
             FROM sends WHERE appid = $1 AND updated_at >= $2 GROUP BY template_id",
        )
        .bind(appid.to_owned())
        .bind(&since)
        .fetch_all(&self.pool)
        .await
        .context("count the sends' 43101 answers by template")?;
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

    /// The runs of app `appid` created since `since`, without counts, with
    /// each one's template.
    pub async fn runs_since(
        &self,
        appid: &str,
        since: DateTime<Utc>,
    ) -> Result<Vec<(RunRow, Option<String>)>, StorageError> {
        let sql = format!(
            "{} WHERE r.appid = $1 AND r.created_at >= $2 ORDER BY r.id",
            heads(", r.template_id AS template_of_run")
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(appid.to_owned())
            .bind(super::ts(since))
            .fetch_all(&self.pool)
            .await
            .context("list the week's runs")?;
        rows.iter()
            .map(|r| Ok((run_row(r)?, r.try_get("template_of_run")?)))
            .collect::<Result<_, sqlx::Error>>()
            .context("decode runs")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::test_stores::each_backend;

    /// A `done` run of 250 deliveries: every tenth refused (43101), every
    /// 25th failed, every 50th deferred, the rest sent. Returns its id.
    async fn done_run(store: &Store) -> i64 {
        let at = "2026-12-05T00:00:00.000Z";
        sqlx::query(
            "INSERT INTO runs (job, slot, trigger, status, created_at, finished_at, template_id, appid) \
             VALUES ('daily', $1, 'manual', 'done', $2, $3, 't', 'wx1')",
        )
        .bind(at)
        .bind(at)
        .bind(at)
        .execute(&store.pool)
        .await
        .unwrap();
        let run: i64 = sqlx::query_scalar("SELECT MAX(id) FROM runs")
            .fetch_one(&store.pool)
            .await
            .unwrap();
        for i in 0..250i64 {
            let (status, errcode) = match i {
                i if i % 10 == 0 => ("refused", Some(43101)),
                i if i % 25 == 0 => ("failed", Some(40003)),
                i if i % 50 == 1 => ("deferred", None),
                _ => ("sent", None),
            };
            sqlx::query(
                "INSERT INTO deliveries (run_id, openid, status, errcode, attempts, created_at, updated_at) \
                 VALUES ($1, $2, $3, $4, 1, $5, $6)",
            )
            .bind(run)
            .bind(format!("o{i:027}"))
            .bind(status)
            .bind(errcode)
            .bind(at)
            .bind(at)
            .execute(&store.pool)
            .await
            .unwrap();
        }
        run
    }

    #[tokio::test]
    async fn a_done_runs_counts_from_its_indexes_are_its_counts() {
        for store in each_backend("status_done_counts").await {
            let run = done_run(&store).await;
            let counted = store.run(run).await.unwrap().unwrap().counts;
            assert_eq!(
                (counted.refused, counted.failed, counted.deferred),
                (25, 5, 5)
            );
            assert_eq!(store.done_run_counts(run).await.unwrap(), counted);
        }
    }

    #[tokio::test]
    async fn a_runs_deliveries_page_by_id_and_filter_by_status_and_errcode() {
        for store in each_backend("status_delivery_pages").await {
            let run = done_run(&store).await;
            let page = |status, errcode, after| DeliveryFilter {
                status,
                errcode,
                after,
                limit: 100,
                done: None,
            };
            let first = store
                .deliveries_page(run, &page(None, None, None))
                .await
                .unwrap();
            assert_eq!(first.len(), 100);
            let mut seen = first.len();
            let mut after = first.last().map(|d| d.id);
            while let Some(a) = after {
                let next = store
                    .deliveries_page(run, &page(None, None, Some(a)))
                    .await
                    .unwrap();
                assert!(next.iter().all(|d| d.id > a), "pages go forward by id");
                seen += next.len();
                after = (next.len() == 100).then(|| next.last().unwrap().id);
            }
            assert_eq!(seen, 250);
            let refused = store
                .deliveries_page(run, &page(Some(Status::Refused), None, None))
                .await
                .unwrap();
            assert_eq!(refused.len(), 25);
            assert!(refused.iter().all(|d| d.errcode == Some(43101)));
            let by_code = store
                .deliveries_page(run, &page(None, Some(40003), None))
                .await
                .unwrap();
            assert_eq!(by_code.len(), 5);
            let sent = store
                .deliveries_page(run, &page(Some(Status::Sent), None, None))
                .await
                .unwrap();
            assert_eq!(sent.len(), 100, "a full page of the usual status");
            let past = store
                .deliveries_page(run, &page(None, None, Some(i64::MAX - 1)))
                .await
                .unwrap();
            assert!(past.is_empty());
        }
    }

    #[tokio::test]
    async fn consent_sums_credits_and_counts_the_weeks_changes_on_every_backend() {
        for store in each_backend("status_consent_summary").await {
            let rows = [
                ("o1", "t1", "accept", 2, "2026-12-04T00:00:00.000Z"),
                ("o2", "t1", "accept", 1, "2026-11-01T00:00:00.000Z"),
                ("o3", "t1", "reject", 0, "2026-12-04T00:00:00.000Z"),
                ("o4", "t2", "ban", 0, "2026-12-04T00:00:00.000Z"),
            ];
            for (openid, template, status, credits, at) in rows {
                sqlx::query(
                    "INSERT INTO consents (appid, openid, template_id, status, credits, source, updated_at) \
                     VALUES ('wx1', $1, $2, $3, $4, 'intake', $5)",
                )
                .bind(openid)
                .bind(template)
                .bind(status)
                .bind(credits)
                .bind(at)
                .execute(&store.pool)
                .await
                .unwrap();
            }
            let since = "2026-11-28T00:00:00Z".parse().unwrap();
            let got = store.consent_summary("wx1", since).await.unwrap();
            let t1 = got.iter().find(|t| t.template_id == "t1").unwrap();
            assert_eq!((t1.accepted, t1.refused, t1.credits), (1, 1, 3));
            let t2 = got.iter().find(|t| t.template_id == "t2").unwrap();
            assert_eq!((t2.accepted, t2.refused, t2.credits), (0, 1, 0));
            assert!(
                store
                    .consent_summary("wx-other", since)
                    .await
                    .unwrap()
                    .is_empty()
            );
        }
    }

    #[tokio::test]
    async fn a_filter_by_an_unusual_status_reads_the_partial_index() {
        let store = Store::open("sqlite::memory:").await.unwrap();
        let run = done_run(&store).await;
        // The condition `deliveries_page` writes for a status outside USUAL.
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "EXPLAIN QUERY PLAN SELECT id FROM deliveries d WHERE d.run_id = {run} \
             AND d.status = 'refused' AND d.status NOT IN {USUAL} AND d.id > 0 ORDER BY d.id LIMIT 100"
        )))
        .fetch_all(&store.pool)
        .await
        .unwrap();
        let plan: Vec<String> = rows.iter().map(|r| r.get::<String, _>("detail")).collect();
        assert!(
            plan.iter().any(|p| p.contains("deliveries_unusual")),
            "{plan:?}"
        );
    }
}
