//! How runs change after they are enqueued: skipped, finished, reopened,
//! expired when their send window closes, and reopened for a retry.

use chrono::{DateTime, Utc};

use super::runs::slot_text;
use super::{Context, StorageError, Store, now};
use crate::domain::{JobName, RunStatus, TemplateId};

impl Store {
    /// Records that `slot` fired while the job's previous run was still going.
    pub async fn record_skipped(
        &self,
        job: &JobName,
        slot: DateTime<Utc>,
        note: &str,
    ) -> Result<(), StorageError> {
        let now = now();
        sqlx::query(
            "INSERT INTO runs (job, slot, trigger, status, note, created_at, finished_at) \
             VALUES ($1, $2, 'schedule', 'skipped', $3, $4, $5) ON CONFLICT (job, slot) DO NOTHING",
        )
        .bind(job.as_ref())
        .bind(slot_text(slot))
        .bind(note)
        .bind(&now)
        .bind(&now)
        .execute(&self.pool)
        .await
        .context("record a skipped run")?;
        Ok(())
    }

    /// Marks a run as finished with `status` (done or stopped) and an optional note.
    pub async fn finish_run(
        &self,
        run_id: i64,
        status: RunStatus,
        note: Option<&str>,
    ) -> Result<(), StorageError> {
        // Done only with nothing left to finish, by anyone: another instance may
        // have taken deliveries since this one counted.
        sqlx::query(
            "UPDATE runs SET status = $1, note = $2, finished_at = $3 WHERE id = $4 \
             AND ($5 <> 'done' OR NOT EXISTS (SELECT 1 FROM deliveries \
               WHERE run_id = $6 AND status IN ('pending', 'claimed', 'sending')))",
        )
        .bind(status.as_str())
        .bind(note)
        .bind(now())
        .bind(run_id)
        .bind(status.as_str())
        .bind(run_id)
        .execute(&self.pool)
        .await
        .context("finish a run")?;
        Ok(())
    }

    /// Marks a stopped or interrupted run as running again before it is
    /// resumed, with the template its remaining sends will use.
    pub async fn reopen_run(
        &self,
        run_id: i64,
        template_id: &TemplateId,
    ) -> Result<(), StorageError> {
        sqlx::query(
            "UPDATE runs SET template_id = $1, \
             status = CASE WHEN status IN ('stopped', 'interrupted') THEN 'running' ELSE status END, \
             finished_at = CASE WHEN status IN ('stopped', 'interrupted') THEN NULL ELSE finished_at END \
             WHERE id = $2",
        )
        .bind(template_id.as_ref())
        .bind(run_id)
        .execute(&self.pool)
        .await
        .context("reopen a run")?;
        Ok(())
    }

    /// Ends a run whose send window has closed: what is still pending is recorded
    /// `expired` and never sent. Call after `recover_sending`, holding the job's lock.
    pub async fn expire_run(&self, run_id: i64, note: &str) -> Result<u64, StorageError> {
        let mut tx = self.write().await?;
        let now = now();
        let r = sqlx::query(
            "UPDATE deliveries SET status = 'expired', errmsg = $1, updated_at = $2 \
             WHERE run_id = $3 AND status = 'pending'",
        )
        .bind(note)
        .bind(&now)
        .bind(run_id)
        .execute(&mut *tx)
        .await
        .context("expire pending deliveries")?;
        // Not while another instance still has requests of it in flight: it
        // finishes the run when they are answered (or a rescue settles them).
        sqlx::query(
            "UPDATE runs SET status = 'done', note = $1, finished_at = $2 WHERE id = $3 \
             AND NOT EXISTS (SELECT 1 FROM deliveries WHERE run_id = $4 AND status IN ('claimed', 'sending'))",
        )
        .bind(note)
        .bind(&now)
        .bind(run_id)
        .bind(run_id)
        .execute(&mut *tx)
        .await
        .context("close an expired run")?;
        tx.commit().await.context("commit an expired run")?;
        Ok(r.rows_affected())
    }

    /// Puts back to pending the deliveries of a run that failed for a passing
    /// cause (no errcode, or one of `transient`), and `unknown` ones too when
    /// `unknown_too`; reopens the run if any were. Returns how many.
    pub async fn retry_failed(
        &self,
        run_id: i64,
        transient: &[i64],
        unknown_too: bool,
    ) -> Result<u64, StorageError> {
        let codes = transient
            .iter()
            .map(i64::to_string)
            .collect::<Vec<_>>()
            .join(", ");
        let mut tx = self.write().await?;
        let sql = format!(
            "UPDATE deliveries SET status = 'pending', owner = NULL, updated_at = $1 WHERE run_id = $2 AND \
             ((status = 'failed' AND (errcode IS NULL OR errcode IN ({codes}))) OR ($3 AND status = 'unknown'))"
        );
        let r = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(now())
            .bind(run_id)
            .bind(unknown_too)
            .execute(&mut *tx)
            .await
            .context("retry failed deliveries")?;
        if r.rows_affected() > 0 {
            sqlx::query("UPDATE runs SET status = 'running', finished_at = NULL WHERE id = $1")
                .bind(run_id)
                .execute(&mut *tx)
                .await
                .context("reopen a run")?;
        }
        tx.commit().await.context("commit retried deliveries")?;
        Ok(r.rows_affected())
    }
}
