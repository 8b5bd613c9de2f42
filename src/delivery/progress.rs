//! Progress of a long run: a bar for `wxpush send` on a terminal, otherwise a
//! log line every ten seconds (sent so far, total, rate, time left). Read from
//! the database, so every instance draining a run reports the run's whole count.

use std::time::{Duration, Instant};

use tokio_util::task::AbortOnDropHandle;

use crate::storage::Store;

/// How progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// A log line every `LOG_EVERY` (the daemon; `send` without a terminal).
    Log,
    /// A bar on standard error (`send` on a terminal).
    Bar,
}

/// How often the log line comes.
const LOG_EVERY: Duration = Duration::from_secs(10);
/// How often the bar moves: each move counts the run's rows in the database,
/// so not more often than a person can read it.
const BAR_EVERY: Duration = Duration::from_secs(1);

impl Progress {
    /// For `send`: a bar when standard error is a `terminal`.
    pub(crate) fn on(terminal: bool) -> Self {
        if terminal { Self::Bar } else { Self::Log }
    }

    /// Reports run `run_id` of `job` until the returned handle is dropped.
    pub fn watch(self, store: Store, job: &str, run_id: i64) -> AbortOnDropHandle<()> {
        let job = job.to_owned();
        AbortOnDropHandle::new(tokio::spawn(async move {
            match self {
                Self::Log => log(store, &job, run_id, LOG_EVERY).await,
                Self::Bar => bar(store, &job, run_id).await,
            }
        }))
    }
}

async fn log(store: Store, job: &str, run_id: i64, every: Duration) {
    let started = Instant::now();
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    let Ok((first, _)) = store.run_done(run_id).await else {
        return;
    };
    loop {
        tick.tick().await;
        let Ok((done, total)) = store.run_done(run_id).await else {
            continue;
        };
        let (rate, eta) = pace(done - first, total - done, started.elapsed());
        tracing::info!(
            job,
            run = run_id,
            done,
            total,
            per_sec = rate.round() as u64,
            eta_s = eta.map(|d| d.as_secs()),
            "run progress"
        );
    }
}

async fn bar(store: Store, job: &str, run_id: i64) {
    let Ok((_, total)) = store.run_done(run_id).await else {
        return;
    };
    let bar = indicatif::ProgressBar::new(total.max(0) as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{prefix} [{bar:30}] {pos}/{len} {per_sec} ETA {eta}",
        )
        .expect("a valid template")
        .progress_chars("=> "),
    );
    bar.set_prefix(job.to_owned());
    let _clear = ClearOnDrop(bar.clone());
    let mut tick = tokio::time::interval(BAR_EVERY);
    loop {
        tick.tick().await;
        if let Ok((done, _)) = store.run_done(run_id).await {
            bar.set_position(done.max(0) as u64);
        }
    }
}

/// Takes the bar off the terminal when the run ends, before the summary line.
struct ClearOnDrop(indicatif::ProgressBar);

impl Drop for ClearOnDrop {
    fn drop(&mut self) {
        self.0.finish_and_clear();
    }
}

/// Deliveries per second since `elapsed` began, and the time the `left` take at it.
fn pace(done: i64, left: i64, elapsed: Duration) -> (f64, Option<Duration>) {
    let secs = elapsed.as_secs_f64();
    if done <= 0 || secs <= 0.0 {
        return (0.0, None);
    }
    let rate = done as f64 / secs;
    (
        rate,
        Some(Duration::from_secs_f64(left.max(0) as f64 / rate)),
    )
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::domain::Trigger;
    use crate::domain::test_ids::{app, job, oid, tmpl};
    use crate::storage::{Audience, NewRun};

    #[derive(Clone, Default)]
    struct Lines(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Lines {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[tokio::test]
    async fn a_long_run_logs_its_progress_every_ten_seconds_and_stops_with_the_run() {
        let store = Store::open("sqlite::memory:").await.unwrap();
        let rows: Vec<_> = (0..4)
            .map(|i| crate::storage::StoredRecipient {
                job: job("daily"),
                openid: oid(&format!("oUser{i:023}")),
                name: None,
                vars: Default::default(),
            })
            .collect();
        store.upsert_recipients(&rows, "cli").await.unwrap();
        let run = store
            .enqueue(NewRun {
                job: &job("daily"),
                appid: &app("1"),
                template_id: &tmpl("t"),
                audience: Audience::Listed,
                slot: chrono::Utc::now(),
                trigger: Trigger::Manual,
            })
            .await
            .unwrap()
            .run_id;
        let lines = Lines::default();
        let sink = lines.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || sink.clone())
            .with_ansi(false)
            .finish();
        let _guard = tracing::subscriber::set_default(subscriber);

        // Ten seconds in the daemon; a tenth of a second here.
        let every = Duration::from_millis(100);
        let watching =
            AbortOnDropHandle::new(tokio::spawn(log(store.clone(), "daily", run, every)));
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(
            lines.0.lock().unwrap().is_empty(),
            "nothing before the first period"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
        let text = String::from_utf8(lines.0.lock().unwrap().clone()).unwrap();
        assert!(
            text.contains("run progress") && text.contains("done=0") && text.contains("total=4"),
            "{text}"
        );
        drop(watching);
        tokio::task::yield_now().await;
        let before = lines.0.lock().unwrap().len();
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(
            lines.0.lock().unwrap().len(),
            before,
            "no line after the run"
        );
    }

    #[test]
    fn pace_is_the_rate_so_far_and_the_time_left_at_it() {
        let (rate, eta) = pace(500, 1500, Duration::from_secs(10));
        assert_eq!(rate, 50.0);
        assert_eq!(eta, Some(Duration::from_secs(30)));
        assert_eq!(pace(0, 10, Duration::from_secs(10)), (0.0, None));
    }
}
