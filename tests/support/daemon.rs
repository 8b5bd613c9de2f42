//! The daemon in this process: the library's composition root (`App::run`) on
//! port 0, on a manual clock, so that slots, send windows, outage backoff and the
//! config poll are driven by moving the clock instead of waiting real seconds.
//! Tests that need a real process (exit codes, signals, kill -9, sd_notify) run the
//! binary instead.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;
use wxpush::app::App;
use wxpush::clock::{Clock, ManualClock};
use wxpush::daemon::Listeners;
use wxpush::storage::StorageError;

use super::{SECRET, TestEnv};

/// A daemon running in the test's runtime.
pub struct Daemon {
    /// The composition root, for its store and settings.
    pub app: Arc<App>,
    /// Move this to make time pass for the daemon.
    pub clock: ManualClock,
    /// Where its HTTP listener took a port.
    pub http: SocketAddr,
    /// Where `[api] listen` took a port, when the config gives one.
    pub api_addr: Option<SocketAddr>,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<Result<(), StorageError>>,
}

impl TestEnv {
    /// Starts the daemon in process with this env's config, its clock reading `start`.
    pub async fn daemon_at(&self, start: DateTime<Utc>) -> Daemon {
        self.daemon_with(start, |_| {}).await
    }

    /// `daemon_at`, with the loaded settings changed by `edit` first (what the
    /// environment's `WXPUSH__` variables would do to a process).
    pub async fn daemon_with(
        &self,
        start: DateTime<Utc>,
        edit: impl FnOnce(&mut wxpush::config::Settings),
    ) -> Daemon {
        let mut settings = wxpush::config::load(&self.config).expect("a valid config");
        edit(&mut settings);
        // What the binary tests pass in the environment, which a process shares.
        settings.wechat.api_base = self.fake.base_url();
        settings.wechat.secret = Some(SECRET.into());
        let clock = ManualClock::new(start);
        let app = App::build(settings)
            .await
            .expect("the app starts")
            .with_clock(Clock::Manual(clock.clone()));
        let app = Arc::new(app);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let http = listener.local_addr().unwrap();
        // `[api] listen` (port 0 in tests): bound here, its port read back.
        let api = match app.settings.api.as_ref().and_then(|a| a.listen) {
            Some(addr) => Some(tokio::net::TcpListener::bind(addr).await.unwrap()),
            None => None,
        };
        let api_addr = api.as_ref().map(|l| l.local_addr().unwrap());
        // A recorder of its own: the global one belongs to no test.
        let metrics = metrics_exporter_prometheus::PrometheusBuilder::new()
            .build_recorder()
            .handle();
        let stop = CancellationToken::new();
        let task = tokio::spawn(Arc::clone(&app).run(
            Listeners {
                http: Some((listener, metrics)),
                intake: None,
                api,
            },
            stop.clone(),
        ));
        let daemon = Daemon {
            app,
            clock,
            http,
            api_addr,
            stop,
            task,
        };
        daemon.wait_ready(start).await;
        daemon
    }
}

impl Daemon {
    /// Waits until the listener answers and every job sleeps until its next slot
    /// (so that moving the clock cannot race its start: a job loop that began
    /// after the clock passed its slot would take the next day's). Counting
    /// sleepers is not enough: the config poll, retention and heartbeats sleep
    /// too, and may all be asleep before a job loop is.
    async fn wait_ready(&self, start: DateTime<Utc>) {
        let url = format!("http://{}/healthz", self.http);
        let mut slots = std::collections::BTreeMap::new();
        for job in &self.app.settings.jobs {
            if let Some(next) = job.schedule.next_after(start) {
                *slots.entry(next).or_insert(0usize) += 1;
            }
        }
        for _ in 0..1000 {
            assert!(
                !self.task.is_finished(),
                "the daemon stopped while starting"
            );
            let asleep = slots
                .iter()
                .all(|(t, n)| self.clock.waiting_until(*t) >= *n);
            if asleep && reqwest::get(&url).await.is_ok() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("the daemon never became ready (every job asleep until its next slot)");
    }

    /// Moves the clock forward by `d`, then waits for the daemon to act on it:
    /// every sleeper that came due has woken (however loaded the machine), and
    /// then 20 ms more for what woke, and any work not started by the clock
    /// (a run in flight), to go on (`advance_until` waits for its results).
    pub async fn advance(&self, d: Duration) {
        self.clock.advance(d);
        self.clock.woken().await;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    /// Moves the clock in `step`s until `cond` holds; panics after `max` of them.
    pub async fn advance_until(
        &self,
        step: Duration,
        max: usize,
        what: &str,
        mut cond: impl AsyncFnMut() -> bool,
    ) {
        for _ in 0..max {
            if cond().await {
                return;
            }
            assert!(!self.task.is_finished(), "the daemon stopped: {what}");
            self.advance(step).await;
        }
        assert!(cond().await, "not after {max} steps of {step:?}: {what}");
    }

    /// Stops it as a shutdown signal would and waits for every task to end.
    pub async fn stop(self) -> Result<(), StorageError> {
        self.stop.cancel();
        tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .expect("stopped within 10 s")
            .expect("did not panic")
    }
}

/// What the code under test logged on this thread (the test's current-thread
/// runtime runs the in-process daemon's tasks), as text, while the guard lives.
pub struct Logs {
    text: Arc<std::sync::Mutex<Vec<u8>>>,
    _guard: tracing::subscriber::DefaultGuard,
}

impl Logs {
    /// Starts capturing at info level.
    pub fn capture() -> Self {
        static WANTED: std::sync::Once = std::sync::Once::new();
        WANTED.call_once(|| {
            use tracing_subscriber::layer::SubscriberExt;
            // A thread's own subscriber alone races: an info callsite first
            // reached on another test's thread (no subscriber there) can be
            // cached as wanted by nobody, and this thread's events from it
            // lost. A global subscriber that wants info (and drops it) keeps
            // every info callsite asked.
            let _ = tracing::subscriber::set_global_default(
                tracing_subscriber::registry().with(tracing_subscriber::filter::LevelFilter::INFO),
            );
        });
        let text = Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = Arc::clone(&text);
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::INFO)
            .with_ansi(false)
            .with_writer(move || Sink(Arc::clone(&sink)))
            .finish();
        Self {
            text,
            _guard: tracing::subscriber::set_default(subscriber),
        }
    }

    /// Everything logged so far.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.text.lock().unwrap()).into_owned()
    }
}

struct Sink(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Sink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
