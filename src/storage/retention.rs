//! `[retention]`: deleting what is old, in small batches. Runs and deliveries
//! hold openids (personal data under PIPL), so they are kept only as long as the
//! operator chose; each batch is its own short statement, so a send in progress
//! waits for the database at most one batch long.

use chrono::{DateTime, Utc};

use sqlx::Row;

use super::{Context, StorageError, Store, ts};
use crate::domain::JobName;

/// What one pass deleted.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Pruned {
    /// Deliveries of old runs.
    pub deliveries: u64,
    /// Old runs.
    pub runs: u64,
    /// Applied event pushes (consent and sent events), test sends and ended
    /// sends on demand.
    pub events: u64,
}

/// Old runs looked at per round.
const RUNS_PER_ROUND: i64 = 20;

/// A job's runs that retention keeps whatever `keep` says: those of a slot at
/// or after `since`, which may still be sent (its send window) or caught up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenSlots {
    /// The job.
    pub job: JobName,
    /// Its oldest slot that may still send: now less the longer of its send
    /// window and its catch-up.
    pub since: DateTime<Utc>,
}

impl Store {
    /// Deletes finished runs (done or skipped) that ended before `before`, with
    /// their deliveries, and event pushes received before it, `batch` rows per
    /// statement. Never a run that may still send, never a job's newest run
    /// (its slot is what tells the scheduler and `send` that the slot ran),
    /// and never a run of a slot `open` says may still be sent or caught up,
    /// whatever later rounds exist: without its run, `send` or the catch-up
    /// would take that slot for one that never ran and message everyone again.
    pub async fn prune(
        &self,
        before: DateTime<Utc>,
        sends_before: DateTime<Utc>,
        batch: u32,
        open: &[OpenSlots],
    ) -> Result<Pruned, StorageError> {
        let sends_before = ts(sends_before);
        let before = ts(before);
        let batch = i64::from(batch.max(1));
        let mut pruned = Pruned::default();
        let mut after = 0_i64;
        loop {
            let found = sqlx::query(
                "SELECT r.id, r.job, r.slot FROM runs r WHERE r.status IN ('done', 'skipped') \
                 AND COALESCE(r.finished_at, r.created_at) < $1 AND r.id > $2 \
                 AND r.id < (SELECT MAX(n.id) FROM runs n WHERE n.job = r.job) \
                 ORDER BY r.id LIMIT $3",
            )
            .bind(&before)
            .bind(after)
            .bind(RUNS_PER_ROUND)
            .fetch_all(&self.pool)
            .await
            .context("find old runs")?;
            let Some(last) = found.last() else {
                break;
            };
            after = last.get("id");
            let runs: Vec<i64> = found
                .iter()
                .filter(|r| {
                    let (job, slot): (String, String) = (r.get("job"), r.get("slot"));
                    // Slots are stored in one format, which sorts in time order.
                    !open
                        .iter()
                        .any(|o| o.job.as_ref() == job && slot >= super::runs::slot_text(o.since))
                })
                .map(|r| r.get("id"))
                .collect();
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
        // Sends on demand that ended (their idempotency keys with them): never
        // one that may still go.
        pruned.events += self
            .in_batches(batch, "delete old sends", || {
                sqlx::query(
                    "DELETE FROM sends WHERE id IN (SELECT id FROM sends \
                     WHERE status NOT IN ('pending', 'sending') AND updated_at < $1 LIMIT $2)",
                )
                .bind(&sends_before)
                .bind(batch)
            })
            .await?;
        // What the delivery policy recorded (it names people): kept as long as
        // ended sends, at least `idempotency_retention` (35 days by default),
        // which caps and dedupe windows fit in.
        let before_ms = sends_before
            .parse::<DateTime<Utc>>()
            .map_or(0, |t| t.timestamp_millis());
        pruned.events += self
            .in_batches(batch, "delete old policy history", || {
                sqlx::query(
                    // Oldest first by id, which follows time: the rows to go
                    // are the first ones read (no index of its own to keep up).
                    "DELETE FROM policy_history WHERE id IN (SELECT id FROM policy_history \
                     WHERE at_ms < $1 ORDER BY id LIMIT $2)",
                )
                .bind(before_ms)
                .bind(batch)
            })
            .await?;
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
    use crate::domain::Trigger;
    use crate::domain::test_ids::{app, tmpl};
    use crate::storage::{Audience, NewRun};

    async fn run_at(store: &Store, job: &str, slot: &str, finished: Option<&str>) -> i64 {
        let run = store
            .enqueue(NewRun {
                job: &JobName::parse(job).unwrap(),
                appid: &app("1"),
                template_id: &tmpl("t"),
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
            let pruned = store.prune(cutoff, cutoff, 3, &[]).await.unwrap();

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
            assert_eq!(
                store.prune(cutoff, cutoff, 3, &[]).await.unwrap(),
                Pruned::default()
            );
        }
    }

    #[tokio::test]
    async fn a_run_of_a_slot_that_may_still_send_stays_whatever_later_rounds_exist() {
        for store in
            each_backend("a_run_of_a_slot_that_may_still_send_stays_whatever_later_rounds_exist")
                .await
        {
            // A weekly job with a 7-day window: Monday's slot, then an
            // operator's `send --again` round on Tuesday, both finished.
            let day = |d: &str| Some(format!("2026-11-{d}T02:00:00.000Z"));
            let monday = run_at(
                &store,
                "weekly",
                "2026-11-30T01:00:00Z",
                day("30").as_deref(),
            )
            .await;
            let again = run_at(
                &store,
                "weekly",
                "2026-12-01T03:00:00Z",
                day("01").as_deref(),
            )
            .await;
            let _newest = run_at(
                &store,
                "weekly",
                "2026-12-02T03:00:00Z",
                day("02").as_deref(),
            )
            .await;
            // Friday, with keep = "1d".
            let now: DateTime<Utc> = "2026-12-04T12:00:00Z".parse().unwrap();
            let before = now - chrono::Duration::days(1);
            let open = [OpenSlots {
                job: JobName::parse("weekly").unwrap(),
                since: now - chrono::Duration::days(7),
            }];

            let pruned = store.prune(before, before, 10, &open).await.unwrap();

            assert_eq!(pruned.runs, 0, "{pruned:?}");
            // Without the job's open slots both would go.
            let pruned = store.prune(before, before, 10, &[]).await.unwrap();
            assert_eq!(pruned.runs, 2);
            let left: Vec<i64> = sqlx::query_scalar("SELECT id FROM runs ORDER BY id")
                .fetch_all(&store.pool)
                .await
                .unwrap();
            assert!(!left.contains(&monday) && !left.contains(&again));
        }
    }
}
