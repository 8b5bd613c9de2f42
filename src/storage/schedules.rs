//! When each job's schedule was first loaded, which bounds what catch-up may run.

use chrono::{DateTime, Utc};

use super::{Context, StorageError, Store, ts};

impl Store {
    /// When a daemon first loaded `schedule` for `job`; records `now` the first time.
    pub async fn schedule_since(
        &self,
        job: &str,
        schedule: &str,
        now: DateTime<Utc>,
    ) -> Result<DateTime<Utc>, StorageError> {
        let mut tx = self.write().await?;
        sqlx::query(
            "INSERT INTO schedules (job, schedule, since) VALUES (?, ?, ?) \
             ON CONFLICT (job, schedule) DO NOTHING",
        )
        .bind(job)
        .bind(schedule)
        .bind(ts(now))
        .execute(&mut *tx)
        .await
        .context("record when a schedule was loaded")?;
        let since: String =
            sqlx::query_scalar("SELECT since FROM schedules WHERE job = ? AND schedule = ?")
                .bind(job)
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

    #[tokio::test]
    async fn the_first_load_of_a_schedule_is_kept_and_a_new_line_starts_afresh() {
        let store = Store::open("sqlite::memory:").await.unwrap();
        let t1: DateTime<Utc> = "2026-11-24T01:00:00Z".parse().unwrap();
        let t2: DateTime<Utc> = "2026-11-24T02:00:00Z".parse().unwrap();
        let daily = "0 9 * * * Asia/Shanghai";
        assert_eq!(store.schedule_since("d", daily, t1).await.unwrap(), t1);
        assert_eq!(store.schedule_since("d", daily, t2).await.unwrap(), t1);
        let changed = "0 10 * * * Asia/Shanghai";
        assert_eq!(store.schedule_since("d", changed, t2).await.unwrap(), t2);
        assert_eq!(store.schedule_since("other", daily, t2).await.unwrap(), t2);
    }
}
