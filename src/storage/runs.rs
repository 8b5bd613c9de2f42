//! Runs: one firing of one job for one slot.

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;
use sqlx::Row;

use super::{Context, StorageError, Store, now};
use crate::domain::{AppId, Counts, JobName, RunStatus, TemplateId, Trigger};

/// A run with its delivery counts.
#[derive(Debug, Clone, Serialize)]
pub struct RunRow {
    /// Its id.
    pub id: i64,
    /// The job.
    pub job: String,
    /// The scheduled instant it belongs to (UTC).
    pub slot: DateTime<Utc>,
    /// What started it.
    pub trigger: Trigger,
    /// Where it stands.
    pub status: RunStatus,
    /// Why it stopped, if it did.
    pub note: Option<String>,
    /// Rows of its audience query whose openid an earlier row had (one
    /// delivery each); 0 for other audiences.
    pub folded: u64,
    /// When it was enqueued.
    pub created_at: String,
    /// When it finished.
    pub finished_at: Option<String>,
    /// Its deliveries by status.
    pub counts: Counts,
}

/// The result of enqueueing a slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Enqueued {
    /// The run for the slot.
    pub run_id: i64,
    /// False when the slot already had a run (nothing was added).
    pub created: bool,
    /// The run's status.
    pub status: RunStatus,
}

/// Who a new run sends to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Audience {
    /// The job's active recipients (config file, command line, imports).
    Listed,
    /// Everyone with consent for the template: a one-time credit or a long-term
    /// acceptance (`one_time` tells which to look for).
    Subscribed {
        /// The template is one-time: only credits count.
        one_time: bool,
    },
    /// The rows of an audience query, each delivery with its own variables:
    /// written by `enqueue_snapshot`, never by `enqueue`.
    Query,
}

/// A run to create.
#[derive(Debug, Clone, Copy)]
pub struct NewRun<'a> {
    /// The job.
    pub job: &'a JobName,
    /// The AppID of the job's mini program, recorded on the run: its consent is
    /// that app's.
    pub appid: &'a AppId,
    /// The template it sends, recorded on the run.
    pub template_id: &'a TemplateId,
    /// Who it sends to.
    pub audience: Audience,
    /// The scheduled instant.
    pub slot: DateTime<Utc>,
    /// What started it.
    pub trigger: Trigger,
}

pub(super) fn slot_text(slot: DateTime<Utc>) -> String {
    slot.to_rfc3339_opts(SecondsFormat::Millis, true)
}

const RUN_COLUMNS: &str = "SELECT r.id, r.job, r.slot, r.trigger, r.status, r.note, r.folded, r.created_at, r.finished_at, \
    COUNT(d.id) AS total, \
    COALESCE(SUM(CASE WHEN d.status = 'sent' THEN 1 ELSE 0 END), 0) AS sent, \
    COALESCE(SUM(CASE WHEN d.status = 'failed' THEN 1 ELSE 0 END), 0) AS failed, \
    COALESCE(SUM(CASE WHEN d.status = 'refused' THEN 1 ELSE 0 END), 0) AS refused, \
    COALESCE(SUM(CASE WHEN d.status = 'invalid' THEN 1 ELSE 0 END), 0) AS invalid, \
    COALESCE(SUM(CASE WHEN d.status = 'unknown' THEN 1 ELSE 0 END), 0) AS unknown, \
    COALESCE(SUM(CASE WHEN d.status = 'skipped' THEN 1 ELSE 0 END), 0) AS skipped, \
    COALESCE(SUM(CASE WHEN d.status IN ('pending', 'claimed', 'sending') THEN 1 ELSE 0 END), 0) AS pending, \
    COALESCE(SUM(CASE WHEN d.status = 'expired' THEN 1 ELSE 0 END), 0) AS expired, \
    COALESCE(SUM(CASE WHEN d.status = 'deferred' THEN 1 ELSE 0 END), 0) AS deferred, \
    COALESCE(SUM(CASE WHEN d.status = 'suppressed' THEN 1 ELSE 0 END), 0) AS suppressed \
    FROM runs r LEFT JOIN deliveries d ON d.run_id = r.id";

pub(super) fn run_row(row: &super::db::Row) -> Result<RunRow, sqlx::Error> {
    let slot: String = row.try_get("slot")?;
    let n = |c: &str| row.try_get::<i64, _>(c).map(|v| v as u64);
    Ok(RunRow {
        id: row.try_get("id")?,
        job: row.try_get("job")?,
        slot: slot
            .parse()
            .map_err(|e: chrono::ParseError| sqlx::Error::Decode(Box::new(e)))?,
        trigger: Trigger::parse(row.try_get("trigger")?)
            .map_err(|e| sqlx::Error::Decode(Box::new(e)))?,
        status: RunStatus::parse(row.try_get("status")?)
            .map_err(|e| sqlx::Error::Decode(Box::new(e)))?,
        note: row.try_get("note")?,
        folded: row.try_get::<i64, _>("folded")? as u64,
        created_at: row.try_get("created_at")?,
        finished_at: row.try_get("finished_at")?,
        counts: Counts {
            total: n("total")?,
            sent: n("sent")?,
            failed: n("failed")?,
            refused: n("refused")?,
            invalid: n("invalid")?,
            unknown: n("unknown")?,
            skipped: n("skipped")?,
            pending: n("pending")?,
            expired: n("expired")?,
            deferred: n("deferred")?,
            suppressed: n("suppressed")?,
        },
    })
}

impl Store {
    /// Creates the run for `(job, slot)` with one pending delivery per member of
    /// its audience, in one transaction; does nothing if the slot already has a run.
    pub async fn enqueue(&self, new: NewRun<'_>) -> Result<Enqueued, StorageError> {
        let NewRun {
            job,
            appid,
            template_id,
            audience,
            slot,
            trigger,
        } = new;
        let mut tx = self.write().await?;
        let now = now();
        let inserted: Option<i64> = sqlx::query_scalar(
            "INSERT INTO runs (job, slot, trigger, status, template_id, appid, created_at) \
             VALUES ($1, $2, $3, 'running', $4, $5, $6) ON CONFLICT (job, slot) DO NOTHING RETURNING id",
        )
        .bind(job.as_ref())
        .bind(slot_text(slot))
        .bind(trigger.as_str())
        .bind(template_id.as_ref())
        .bind(appid.as_ref())
        .bind(&now)
        .fetch_optional(&mut *tx)
        .await
        .context("create a run")?;
        let enqueued = match inserted {
            Some(run_id) => {
                let q = match audience {
                    Audience::Listed => Some(sqlx::query(
                        "INSERT INTO deliveries (run_id, openid, status, created_at, updated_at) \
                         SELECT $1, openid, 'pending', $2, $3 FROM recipients WHERE job = $4 AND active = 1 ORDER BY openid",
                    )
                    .bind(run_id)
                    .bind(&now)
                    .bind(&now)
                    .bind(job.as_ref())),
                    Audience::Subscribed { one_time } => Some(sqlx::query(sqlx::AssertSqlSafe(format!(
                        "INSERT INTO deliveries (run_id, openid, status, created_at, updated_at) \
                         SELECT $1, c.openid, 'pending', $2, $3 FROM consents c WHERE c.appid = $4 AND {} \
                         ORDER BY c.openid",
                        super::consents::subscribed(5)
                    )))
                    .bind(run_id)
                    .bind(&now)
                    .bind(&now)
                    .bind(appid.as_ref())
                    .bind(template_id.as_ref())
                    .bind(i64::from(one_time))),
                    // Its people come from the query, through `enqueue_snapshot`.
                    Audience::Query => None,
                };
                if let Some(q) = q {
                    q.execute(&mut *tx).await.context("enqueue deliveries")?;
                }
                Enqueued {
                    run_id,
                    created: true,
                    status: RunStatus::Running,
                }
            }
            None => {
                let row = sqlx::query("SELECT id, status FROM runs WHERE job = $1 AND slot = $2")
                    .bind(job.as_ref())
                    .bind(slot_text(slot))
                    .fetch_one(&mut *tx)
                    .await
                    .context("find the slot's run")?;
                Enqueued {
                    run_id: row.get("id"),
                    created: false,
                    status: RunStatus::parse(row.get("status"))
                        .map_err(|e| sqlx::Error::Decode(Box::new(e)))
                        .context("decode a run's status")?,
                }
            }
        };
        tx.commit().await.context("commit a new run")?;
        Ok(enqueued)
    }

    /// Whether a running run of `job` has work no instance has taken: deliveries
    /// nobody holds, or none left at all (it only needs finishing). Instances
    /// sharing a database join such a run.
    pub async fn joinable(&self, job: &JobName) -> Result<bool, StorageError> {
        let found: Option<i64> = sqlx::query_scalar(
            "SELECT r.id FROM runs r WHERE r.job = $1 AND r.status IN ('running', 'interrupted') AND \
             (EXISTS (SELECT 1 FROM deliveries d WHERE d.run_id = r.id AND d.status = 'pending' AND d.owner IS NULL) \
              OR NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.run_id = r.id \
                 AND d.status IN ('pending', 'claimed', 'sending'))) LIMIT 1",
        )
        .bind(job.as_ref())
        .fetch_optional(&self.pool)
        .await
        .context("look for runs to join")?;
        Ok(found.is_some())
    }

    /// Whether `job` has a run still going (status `running`).
    pub async fn has_running_run(&self, job: &JobName) -> Result<bool, StorageError> {
        let found: Option<i64> =
            sqlx::query_scalar("SELECT id FROM runs WHERE job = $1 AND status = 'running' LIMIT 1")
                .bind(job.as_ref())
                .fetch_optional(&self.pool)
                .await
                .context("look for a running run")?;
        Ok(found.is_some())
    }

    /// A run's deliveries that nobody holds (pending, not taken) and all that
    /// are not final yet (pending, claimed or sending, by anyone).
    pub async fn run_progress(&self, run_id: i64) -> Result<(i64, i64), StorageError> {
        let row = sqlx::query(
            "SELECT COALESCE(SUM(CASE WHEN status = 'pending' AND owner IS NULL THEN 1 ELSE 0 END), 0) AS free, \
             COALESCE(SUM(CASE WHEN status IN ('pending', 'claimed', 'sending') THEN 1 ELSE 0 END), 0) AS held \
             FROM deliveries WHERE run_id = $1",
        )
        .bind(run_id)
        .fetch_one(&self.pool)
        .await
        .context("read a run's progress")?;
        Ok((row.get("free"), row.get("held")))
    }

    /// How many of a run's deliveries are final, and how many it has.
    pub async fn run_done(&self, run_id: i64) -> Result<(i64, i64), StorageError> {
        let row = sqlx::query(
            "SELECT COALESCE(SUM(CASE WHEN status IN ('pending', 'claimed', 'sending') THEN 0 ELSE 1 END), 0) AS done, \
             COUNT(*) AS total FROM deliveries WHERE run_id = $1",
        )
        .bind(run_id)
        .fetch_one(&self.pool)
        .await
        .context("read a run's progress")?;
        Ok((row.get("done"), row.get("total")))
    }

    /// How many runs of each job are unfinished, by status (`running`,
    /// `interrupted`, `stopped`), for the metrics.
    pub async fn unfinished_by_status(&self) -> Result<Vec<(String, String, i64)>, StorageError> {
        let rows = sqlx::query(
            "SELECT job, status, COUNT(*) AS n FROM runs \
             WHERE status IN ('running', 'interrupted', 'stopped') AND snapshot = 1 \
             GROUP BY job, status",
        )
        .fetch_all(&self.pool)
        .await
        .context("count unfinished runs")?;
        Ok(rows
            .iter()
            .map(|r| (r.get("job"), r.get("status"), r.get("n")))
            .collect())
    }

    /// Runs of `job` that still have work: running, interrupted or stopped.
    /// Not a run whose audience query failed: it holds nobody, and only a firing
    /// of its slot takes its snapshot again.
    pub async fn unfinished_runs(&self, job: &JobName) -> Result<Vec<i64>, StorageError> {
        sqlx::query_scalar(
            "SELECT id FROM runs WHERE job = $1 AND status IN ('running', 'interrupted', 'stopped') \
             AND snapshot = 1 ORDER BY id",
        )
        .bind(job.as_ref())
        .fetch_all(&self.pool)
        .await
        .context("find unfinished runs")
    }

    /// The run for `(job, slot)`, if any.
    pub async fn run_for_slot(
        &self,
        job: &JobName,
        slot: DateTime<Utc>,
    ) -> Result<Option<i64>, StorageError> {
        // Not a failed audience snapshot: its slot has not run, and is caught up
        // (or, its window closed, reported too late) like one without a run.
        sqlx::query_scalar("SELECT id FROM runs WHERE job = $1 AND slot = $2 AND snapshot = 1")
            .bind(job.as_ref())
            .bind(slot_text(slot))
            .fetch_optional(&self.pool)
            .await
            .context("look up a slot's run")
    }

    /// One run with its counts.
    pub async fn run(&self, id: i64) -> Result<Option<RunRow>, StorageError> {
        let sql = sqlx::AssertSqlSafe(format!("{RUN_COLUMNS} WHERE r.id = $1 GROUP BY r.id"));
        let row = sqlx::query(sql)
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .context("read a run")?;
        row.as_ref()
            .map(run_row)
            .transpose()
            .context("decode a run")
    }

    /// The latest runs, newest first, optionally of one job.
    pub async fn runs(
        &self,
        job: Option<&JobName>,
        limit: u32,
    ) -> Result<Vec<RunRow>, StorageError> {
        let job: Option<&str> = job.map(AsRef::as_ref);
        let sql = sqlx::AssertSqlSafe(format!(
            "{RUN_COLUMNS} WHERE ($1 IS NULL OR r.job = $2) GROUP BY r.id ORDER BY r.id DESC LIMIT $3"
        ));
        let rows = sqlx::query(sql)
            .bind(job)
            .bind(job)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await
            .context("list runs")?;
        rows.iter()
            .map(run_row)
            .collect::<Result<_, _>>()
            .context("decode runs")
    }
}
