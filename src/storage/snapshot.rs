//! A run whose audience is a query's rows (#14): the rows are written as the
//! run's deliveries in the transaction that creates the run, so a run holds
//! its whole snapshot or does not exist, and resuming it never asks again.

use std::collections::BTreeMap;

use sqlx::Row;
use tokio::sync::mpsc;

use super::runs::{Enqueued, NewRun, slot_text};
use super::{Context, StorageError, Store, now};
use crate::domain::{JobName, RunStatus};

/// Rows written per statement.
const ROWS_PER_INSERT: usize = 500;

/// The note that marks a run whose query failed; `runs` shows it.
const FAILED: &str = "audience query failed";

/// One row of an audience query, as the run will send it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AudienceRow {
    /// The `openid` column as text (`""` when NULL).
    pub openid: String,
    /// Every other column that was not NULL, as text.
    pub vars: BTreeMap<String, String>,
    /// Why the openid cannot be sent to, if it cannot: recorded `invalid`.
    pub invalid: Option<String>,
}

/// What taking a snapshot did.
#[derive(Debug)]
pub enum Snapshot<E> {
    /// The run was created (or its failed snapshot taken again) with these rows.
    Taken {
        /// The run.
        run_id: i64,
        /// Rows the query returned.
        rows: u64,
        /// Rows whose openid an earlier row already had: one delivery each.
        folded: u64,
        /// Rows recorded `invalid` (an impossible openid).
        invalid: u64,
    },
    /// The slot already has a run with its people: resume it; the query was not used.
    Existing(Enqueued),
    /// The query failed before the snapshot was whole: nobody was written, and
    /// the slot's run is recorded stopped with the reason.
    Failed {
        /// The stopped run.
        run_id: i64,
        /// Why.
        error: E,
    },
}

impl Store {
    /// Creates the run `new` with one pending delivery per row read from `rows`,
    /// all or nothing. The first row (or the end) is awaited before the write
    /// transaction opens, so a slow query never holds the database's writer. A
    /// slot whose earlier query failed is taken again; a slot with a whole
    /// snapshot is left as it is (`Existing`), and `rows` is not read.
    pub async fn enqueue_snapshot<E: std::fmt::Display>(
        &self,
        new: NewRun<'_>,
        rows: &mut mpsc::Receiver<Result<AudienceRow, E>>,
    ) -> Result<Snapshot<E>, StorageError> {
        if let Some(existing) = self.whole_run(new.job, new.slot).await? {
            return Ok(Snapshot::Existing(existing));
        }
        let first = match rows.recv().await {
            Some(Err(error)) => return self.failed(new, error).await,
            other => other.and_then(Result::ok),
        };
        let mut tx = self.write().await?;
        let now = now();
        let run_id: Option<i64> = sqlx::query_scalar(
            "INSERT INTO runs (job, slot, trigger, status, template_id, appid, created_at) \
             VALUES ($1, $2, $3, 'running', $4, $5, $6) \
             ON CONFLICT (job, slot) DO UPDATE SET status = 'running', note = NULL, snapshot = 1, \
             trigger = excluded.trigger, finished_at = NULL WHERE runs.snapshot = 0 RETURNING id",
        )
        .bind(new.job.as_ref())
        .bind(slot_text(new.slot))
        .bind(new.trigger.as_str())
        .bind(new.template_id.as_ref())
        .bind(new.appid.as_ref())
        .bind(&now)
        .fetch_optional(&mut *tx)
        .await
        .context("create a run")?;
        let Some(run_id) = run_id else {
            // Another process took the snapshot since we looked.
            tx.rollback()
                .await
                .context("give up a snapshot taken elsewhere")?;
            return self.taken_elsewhere(new).await;
        };
        let (mut total, mut written, mut invalid) = (0u64, 0u64, 0u64);
        let mut chunk: Vec<AudienceRow> = first.into_iter().collect();
        loop {
            let mut ended = false;
            while chunk.len() < ROWS_PER_INSERT {
                match rows.recv().await {
                    Some(Ok(row)) => chunk.push(row),
                    Some(Err(error)) => {
                        // Nothing of this snapshot stays: the run is stopped, empty.
                        tx.rollback().await.context("drop a partial snapshot")?;
                        return self.failed(new, error).await;
                    }
                    None => {
                        ended = true;
                        break;
                    }
                }
            }
            if !chunk.is_empty() {
                let first = total + 1;
                total += chunk.len() as u64;
                invalid += chunk.iter().filter(|r| r.invalid.is_some()).count() as u64;
                written += insert_rows(&mut tx, run_id, &chunk, first, &now).await?;
                chunk.clear();
            }
            if ended {
                break;
            }
        }
        let folded = total - written;
        if folded > 0 {
            sqlx::query("UPDATE runs SET folded = $1 WHERE id = $2")
                .bind(folded as i64)
                .bind(run_id)
                .execute(&mut *tx)
                .await
                .context("note folded duplicates")?;
        }
        tx.commit().await.context("commit a run's snapshot")?;
        Ok(Snapshot::Taken {
            run_id,
            rows: total,
            folded,
            invalid,
        })
    }

    /// The slot's run when it holds its people (every run but a failed snapshot).
    async fn whole_run(
        &self,
        job: &JobName,
        slot: chrono::DateTime<chrono::Utc>,
    ) -> Result<Option<Enqueued>, StorageError> {
        let row = sqlx::query(
            "SELECT id, status FROM runs WHERE job = $1 AND slot = $2 AND snapshot = 1",
        )
        .bind(job.as_ref())
        .bind(slot_text(slot))
        .fetch_optional(&self.pool)
        .await
        .context("find the slot's run")?;
        row.map(|row| {
            Ok(Enqueued {
                run_id: row.get("id"),
                created: false,
                status: RunStatus::parse(row.get("status"))
                    .map_err(|e| sqlx::Error::Decode(Box::new(e)))
                    .context("decode a run's status")?,
            })
        })
        .transpose()
    }

    /// Records the slot's run stopped, empty, with why its query failed.
    async fn failed<E: std::fmt::Display>(
        &self,
        new: NewRun<'_>,
        error: E,
    ) -> Result<Snapshot<E>, StorageError> {
        let why = error.to_string();
        let mut tx = self.write().await?;
        let now = now();
        let run_id: Option<i64> = sqlx::query_scalar(
            "INSERT INTO runs (job, slot, trigger, status, template_id, appid, note, snapshot, created_at, finished_at) \
             VALUES ($1, $2, $3, 'stopped', $4, $5, $6, 0, $7, $7) \
             ON CONFLICT (job, slot) DO UPDATE SET note = excluded.note, finished_at = excluded.finished_at \
             WHERE runs.snapshot = 0 RETURNING id",
        )
        .bind(new.job.as_ref())
        .bind(slot_text(new.slot))
        .bind(new.trigger.as_str())
        .bind(new.template_id.as_ref())
        .bind(new.appid.as_ref())
        .bind(format!("{FAILED}: {why}"))
        .bind(&now)
        .fetch_optional(&mut *tx)
        .await
        .context("record a failed audience query")?;
        tx.commit()
            .await
            .context("commit a failed audience query")?;
        match run_id {
            Some(run_id) => Ok(Snapshot::Failed { run_id, error }),
            // A whole snapshot by another process meanwhile: that run stands.
            None => self.taken_elsewhere(new).await,
        }
    }

    /// The slot's run another process created with its snapshot meanwhile: it
    /// stands, and this firing resumes it.
    async fn taken_elsewhere<E>(&self, new: NewRun<'_>) -> Result<Snapshot<E>, StorageError> {
        match self.whole_run(new.job, new.slot).await? {
            Some(existing) => Ok(Snapshot::Existing(existing)),
            None => Err(StorageError {
                action: "find the slot's run",
                source: sqlx::Error::RowNotFound.into(),
            }),
        }
    }
}

/// Writes one chunk of rows (the first being row `first` of the result) as
/// pending (or invalid) deliveries; returns how many were new (a repeated
/// openid keeps its first row). A row with no openid at all (NULL or empty)
/// is a delivery of its own, named by its row number: each is a person the
/// query failed to name, never a duplicate of another. `WHERE true`: without
/// it SQLite reads the upsert's ON as a join's.
async fn insert_rows(
    tx: &mut super::db::Conn,
    run_id: i64,
    chunk: &[AudienceRow],
    first: u64,
    now: &str,
) -> Result<u64, StorageError> {
    let rows: Vec<serde_json::Value> = chunk
        .iter()
        .zip(first..)
        .map(|(r, n)| {
            let (status, errmsg) = match &r.invalid {
                Some(why) => ("invalid", Some(why.as_str())),
                None => ("pending", None),
            };
            let openid = if r.invalid.is_some() && r.openid.trim().is_empty() {
                format!("(row {n})")
            } else {
                r.openid.clone()
            };
            serde_json::json!([
                openid,
                status,
                errmsg,
                serde_json::to_string(&r.vars).expect("strings serialise")
            ])
        })
        .collect();
    let r = sqlx::query(
        "INSERT INTO deliveries (run_id, openid, status, errmsg, vars, created_at, updated_at) \
         SELECT $1, value ->> 0, value ->> 1, value ->> 2, value ->> 3, $2, $2 FROM json_each($3) \
         WHERE true ON CONFLICT (run_id, openid) DO NOTHING",
    )
    .bind(run_id)
    .bind(now)
    .bind(serde_json::to_string(&rows).expect("rows serialise"))
    .execute(&mut *tx)
    .await
    .context("write a run's snapshot")?;
    Ok(r.rows_affected())
}
