//! `[retention]`: deleting what is old, in small batches. Runs and deliveries
//! hold openids (personal data under PIPL), so they are kept only as long as the
//! operator chose; each batch is its own short statement, so a send in progress
//! waits for the database at most one batch long.

use chrono::{DateTime, Utc};

use super::{Context, StorageError, Store, ts};

/// What one pass deleted.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Pruned {
    /// Deliveries of old runs.
    pub deliveries: u64,
    /// Old runs.
    pub runs: u64,
    /// Applied event pushes (consent and sent events) and test sends.
    pub events: u64,
}

/// Old runs looked at per round.
const RUNS_PER_ROUND: i64 = 20;

impl Store {
    /// Deletes finished runs (done or skipped) that ended before `before`, with
    /// their deliveries, and event pushes received before it, `batch` rows per
    /// statement. Never a run that may still send, and never a job's newest run:
    /// its slot is what tells the scheduler and `send` that the slot ran.
    pub async fn prune(&self, before: DateTime<Utc>, batch: u32) -> Result<Pruned, StorageError> {
        let before = ts(before);
        let batch = i64::from(batch.max(1));
        let mut pruned = Pruned::default();
        loop {
            let runs: Vec<i64> = sqlx::query_scalar(
                "SELECT r.id FROM runs r WHERE r.status IN ('done', 'skipped') \
                 AND COALESCE(r.finished_at, r.created_at) < $1 \
                 AND r.id < (SELECT MAX(n.id) FROM runs n WHERE n.job = r.job) \
                 ORDER BY r.id LIMIT $2",
            )
            .bind(&before)
            .bind(RUNS_PER_ROUND)
            .fetch_all(&self.pool)
            .await
            .context("find old runs")?;
            if runs.is_empty() {
                break;
            }
            for run in runs {
                pruned.deliveries += self
                    .in_batches(batch, "delete old deliveries", || {
                        sqlx::query(
                            "DELETE FROM deliveries WHERE id IN \
                             (SELECT id FROM deliveries WHERE run_id = $1 LIMIT $2)",
                        )
                        .bind(run)
                        .bind(batch)
                    })
                    .await?;
                // Only once empty, and only if it is still finished.
                pruned.runs += sqlx::query(
                    "DELETE FROM runs WHERE id = $1 AND status IN ('done', 'skipped') \
                     AND NOT EXISTS (SELECT 1 FROM deliveries WHERE run_id = $1)",
                )
                .bind(run)
                .execute(&self.pool)
                .await
                .context("delete old runs")?
                .rows_affected();
            }
        }
        for (table, key, at) in [
            ("consent_events", "event_key", "received_at"),
            ("sent_events", "msgid", "received_at"),
            ("test_sends", "id", "created_at"),
        ] {
            let sql = format!(
                "DELETE FROM {table} WHERE {key} IN \
                 (SELECT {key} FROM {table} WHERE {at} < $1 LIMIT $2)"
            );
            pruned.events += self
                .in_batches(batch, "delete old event pushes", || {
                    sqlx::query(sqlx::AssertSqlSafe(sql.clone()))
                        .bind(&before)
                        .bind(batch)
                })
                .await?;
        }
        Ok(pruned)
    }

    /// Runs the statement `delete` makes (one deleting at most `batch` rows)
    /// until a run deletes fewer; returns the rows deleted.
    async fn in_batches<'q>(
        &self,
        batch: i64,
        action: &'static str,
        delete: impl Fn() -> super::db::Query<'q>,
    ) -> Result<u64, StorageError> {
        let mut deleted = 0;
        loop {
            let n = delete()
                .execute(&self.pool)
                .await
                .context(action)?
                .rows_affected();
            deleted += n;
            if n < batch as u64 {
                return Ok(deleted);
            }
            // Let the send path's writes in between batches.
            tokio::task::yield_now().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_stores::each_backend;
    use super::*;
    use crate::storage::{Audience, NewRun, Trigger};

    async fn run_at(store: &Store, job: &str, slot: &str, finished: Option<&str>) -> i64 {
        let run = store
            .enqueue(NewRun {
                job,
                appid: "wx1",
                template_id: "t",
                audience: Audience::Listed,
                slot: slot.parse().unwrap(),
                trigger: Trigger::Schedule,
            })
            .await
            .unwrap()
            .run_id;
        if let Some(at) = finished {
            sqlx::query("UPDATE runs SET status = 'done', finished_at = $1 WHERE id = $2")
                .bind(at)
                .bind(run)
                .execute(&store.pool)
                .await
                .unwrap();
        }
        run
    }

    #[tokio::test]
    async fn old_finished_runs_go_with_their_deliveries_and_the_newest_and_unfinished_stay() {
        for store in each_backend(
            "old_finished_runs_go_with_their_deliveries_and_the_newest_and_unfinished_stay",
        )
        .await
        {
            for i in 0..7 {
                sqlx::query(
                    "INSERT INTO recipients (job, openid, source, created_at, updated_at) \
                     VALUES ('daily', $1, 'cli', '', ''), ('yearly', $1, 'cli', '', '')",
                )
                .bind(format!("oUser{i:023}"))
                .execute(&store.pool)
                .await
                .unwrap();
            }
            let old = Some("2025-01-02T00:00:00.000Z");
            let gone = run_at(&store, "daily", "2025-01-01T01:00:00Z", old).await;
            let unfinished = run_at(&store, "daily", "2025-01-03T01:00:00Z", None).await;
            let recent = run_at(
                &store,
                "daily",
                "2026-11-01T01:00:00Z",
                Some("2026-11-01T01:00:05.000Z"),
            )
            .await;
            // A yearly job's only run is old, but it says its slot ran.
            let newest = run_at(&store, "yearly", "2025-01-01T01:00:00Z", old).await;
            sqlx::query("INSERT INTO consent_events (event_key, received_at) VALUES ('old', '2025-01-01T00:00:00.000Z'), ('new', '2026-11-24T00:00:00.000Z')")
                .execute(&store.pool)
                .await
                .unwrap();

            let cutoff: DateTime<Utc> = "2026-06-01T00:00:00Z".parse().unwrap();
            // Batches of 3: the 7 deliveries take three statements.
            let pruned = store.prune(cutoff, 3).await.unwrap();

            assert_eq!(
                pruned,
                Pruned {
                    deliveries: 7,
                    runs: 1,
                    events: 1
                }
            );
            let left: Vec<i64> = sqlx::query_scalar("SELECT id FROM runs ORDER BY id")
                .fetch_all(&store.pool)
                .await
                .unwrap();
            assert_eq!(left, [unfinished, recent, newest]);
            assert!(!left.contains(&gone));
            let orphans: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM deliveries d WHERE NOT EXISTS (SELECT 1 FROM runs r WHERE r.id = d.run_id)",
            )
            .fetch_one(&store.pool)
            .await
            .unwrap();
            assert_eq!(orphans, 0);
            // A second pass finds nothing.
            assert_eq!(store.prune(cutoff, 3).await.unwrap(), Pruned::default());
        }
    }
}
