//! When each job's schedule was first loaded, which bounds what catch-up may run.

use chrono::{DateTime, Utc};

use super::{Context, StorageError, Store, ts};
use crate::domain::JobName;

impl Store {
    /// When a daemon first loaded `schedule` for `job`; records `now` the first time.
    pub async fn schedule_since(
        &self,
        job: &JobName,
        schedule: &str,
        now: DateTime<Utc>,
    ) -> Result<DateTime<Utc>, StorageError> {
        let mut tx = self.write().await?;
        // A job that ran on its schedule before wxpush kept this table (an upgrade)
        // dates from its first scheduled run, so that the restart of an upgrade
        // still catches up. Manual sends are no schedule history: a test send
        // before the first start must not make that start catch up.
        sqlx::query(
            "INSERT INTO schedules (job, schedule, since) \
             SELECT $1, $2, COALESCE(\
                 CASE WHEN NOT EXISTS (SELECT 1 FROM schedules WHERE job = $1) \
                      THEN (SELECT MIN(created_at) FROM runs WHERE job = $1 AND trigger IN ('schedule', 'catch_up')) END, \
                 $3) \
             WHERE true \
             ON CONFLICT (job, schedule) DO NOTHING",
        )
        .bind(job.as_ref())
        .bind(schedule)
        .bind(ts(now))
        .execute(&mut *tx)
        .await
        .context("record when a schedule was loaded")?;
        let since: String =
            sqlx::query_scalar("SELECT since FROM schedules WHERE job = $1 AND schedule = $2")
                .bind(job.as_ref())
                .bind(schedule)
                .fetch_one(&mut *tx)
                .await
                .context("read when a schedule was loaded")?;
        tx.commit().await.context("commit a schedule")?;
        since
            .parse()
            .map_err(|e: chrono::ParseError| sqlx::Error::Decode(Box::new(e)))
            .context("decode when a schedule was loaded")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::test_ids::{app, job, tmpl};

    #[tokio::test]
    async fn the_first_load_of_a_schedule_is_kept_and_a_new_line_starts_afresh() {
        for store in crate::storage::test_stores::each_backend(
            "the_first_load_of_a_schedule_is_kept_and_a_new_line_starts_afresh",
        )
        .await
        {
            let t1: DateTime<Utc> = "2026-11-24T01:00:00Z".parse().unwrap();
            let t2: DateTime<Utc> = "2026-11-24T02:00:00Z".parse().unwrap();
            let daily = "0 9 * * * Asia/Shanghai";
            assert_eq!(
                store.schedule_since(&job("d"), daily, t1).await.unwrap(),
                t1
            );
            assert_eq!(
                store.schedule_since(&job("d"), daily, t2).await.unwrap(),
                t1
            );
            let changed = "0 10 * * * Asia/Shanghai";
            assert_eq!(
                store.schedule_since(&job("d"), changed, t2).await.unwrap(),
                t2
            );
            assert_eq!(
                store
                    .schedule_since(&job("other"), daily, t2)
                    .await
                    .unwrap(),
                t2
            );
        }
    }

    #[tokio::test]
    async fn a_job_that_ran_before_the_table_existed_dates_from_its_first_run() {
        for store in crate::storage::test_stores::each_backend(
            "a_job_that_ran_before_the_table_existed_dates_from_its_first_run",
        )
        .await
        {
            let slot: DateTime<Utc> = "2026-11-20T01:00:00Z".parse().unwrap();
            store
                .record_skipped(&job("old"), slot, "test")
                .await
                .unwrap();
            let first_run = Utc::now();
            // Whole seconds: the table keeps milliseconds.
            let later =
                chrono::SubsecRound::trunc_subsecs(first_run + chrono::Duration::hours(1), 0);
            let since = store
                .schedule_since(&job("old"), "0 9 * * * UTC", later)
                .await
                .unwrap();
            assert!(since <= first_run && first_run - since < chrono::Duration::minutes(1));
            // Once the job has a row, a new cron line starts afresh.
            let changed = store
                .schedule_since(&job("old"), "0 10 * * * UTC", later)
                .await
                .unwrap();
            assert_eq!(changed, later);
        }
    }

    #[tokio::test]
    async fn a_manual_send_is_no_schedule_history() {
        // A test send before the first start must not make that start catch up.
        for store in
            crate::storage::test_stores::each_backend("a_manual_send_is_no_schedule_history").await
        {
            let slot: DateTime<Utc> = "2026-11-20T01:00:00Z".parse().unwrap();
            store
                .enqueue(crate::storage::NewRun {
                    job: &job("new"),
                    appid: &app("1"),
                    template_id: &tmpl("t"),
                    audience: crate::storage::Audience::Listed,
                    slot,
                    trigger: crate::domain::Trigger::Manual,
                })
                .await
                .unwrap();
            let start =
                chrono::SubsecRound::trunc_subsecs(Utc::now() + chrono::Duration::hours(1), 0);
            let since = store
                .schedule_since(&job("new"), "0 9 * * * UTC", start)
                .await
                .unwrap();
            assert_eq!(since, start);
        }
    }
}
