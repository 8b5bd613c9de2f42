//! Wiring: from checked settings to a database, a WeChat client, one token cache
//! and one deliverer; and the daemon's composition root, which owns every
//! long-lived task (HTTP, reload, scheduler, watchdog, intake upkeep) and joins them.

use std::sync::Arc;

use crate::config::Settings;
use crate::delivery::Deliverer;
use crate::storage::{StorageError, Store, StoredRecipient, SyncReport};
use crate::wechat::{TokenManager, WechatClient, WechatError};

/// Everything a command needs, built once.
pub struct App {
    /// The configuration.
    pub settings: Settings,
    /// The database.
    pub store: Store,
    /// The sender shared by all jobs.
    pub deliverer: Arc<Deliverer>,
    /// Storage faults of scheduled firings, reported by `/readyz`.
    pub faults: crate::health::Faults,
    /// The wall clock slots, send windows and backoff are measured on.
    pub clock: crate::clock::Clock,
}

/// Start-up failures.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// The database could not be opened or migrated.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// The HTTP client could not be built.
    #[error(transparent)]
    Wechat(#[from] WechatError),
    /// No AppSecret is configured.
    #[error("{0}: wechat.secret: is missing; set it in the file or in WXPUSH__WECHAT__SECRET")]
    NoSecret(String),
}

impl App {
    /// Opens the database (running migrations) and builds the client and caches.
    pub async fn build(settings: Settings) -> Result<Self, AppError> {
        let secret = settings
            .wechat
            .secret
            .clone()
            .ok_or_else(|| AppError::NoSecret(settings.path.display().to_string()))?;
        let client = WechatClient::new(&settings.wechat, secret, settings.delivery.concurrency)?;
        let store = Store::open(&settings.database.url).await?;
        let tokens = Arc::new(TokenManager::new(
            client.clone(),
            store.clone(),
            settings.wechat.appid.clone(),
            settings.wechat.token_source,
        ));
        let deliverer = Arc::new(Deliverer::new(
            store.clone(),
            client,
            tokens,
            &settings.delivery,
        ));
        Ok(Self {
            settings,
            store,
            deliverer,
            faults: Default::default(),
            clock: Default::default(),
        })
    }

    /// The same app on another clock (tests drive time with a manual one).
    pub fn with_clock(mut self, clock: crate::clock::Clock) -> Self {
        self.clock = clock;
        self
    }

    /// Makes the database's config-file recipients match the file.
    pub async fn sync_recipients(&self) -> Result<SyncReport, StorageError> {
        let report = self
            .store
            .sync_config_recipients(&config_recipients(&self.settings))
            .await?;
        if report != SyncReport::default() {
            tracing::info!(
                added = report.added,
                updated = report.updated,
                deactivated = report.deactivated,
                "synced recipients from the config file"
            );
        }
        Ok(report)
    }
}

/// What the daemon serves on, bound before it reports ready (so that a taken
/// port is a start-up error) and handed in (so that tests can use port 0).
pub struct Listeners {
    /// `[http]`: probes, metrics and the intake routes, with the metrics handle.
    pub http: Option<(
        tokio::net::TcpListener,
        metrics_exporter_prometheus::PrometheusHandle,
    )>,
}

impl App {
    /// Runs the daemon until `shutdown`: the HTTP listener, the config reload, the
    /// scheduler, the systemd watchdog and the intake upkeep. Returns once every
    /// one of them has stopped; runs in progress finish and are recorded first.
    pub async fn run(
        self: Arc<Self>,
        listeners: Listeners,
        shutdown: tokio_util::sync::CancellationToken,
    ) -> Result<(), StorageError> {
        let mut tasks = tokio::task::JoinSet::new();
        let intake = self.settings.intake.clone().map(|i| {
            crate::intake::Intake::new(self.store.clone(), self.deliverer.client().clone(), i)
        });
        if let Some(intake) = &intake {
            let (intake, stop) = (intake.clone(), shutdown.clone());
            tasks.spawn(async move { intake.maintain(stop).await });
        }
        if let Some((listener, metrics)) = listeners.http {
            let (store, faults, tokens, stop) = (
                self.store.clone(),
                self.faults.clone(),
                Arc::clone(self.deliverer.tokens()),
                shutdown.clone(),
            );
            tasks.spawn(async move {
                if let Err(e) =
                    crate::http::serve(listener, store, faults, tokens, metrics, intake, stop).await
                {
                    tracing::error!(error = %e, "the HTTP listener stopped");
                }
            });
        }
        let (reloads, watch) = crate::reload::watch(
            self.settings.path.clone(),
            self.settings.clone(),
            self.clock.clone(),
            shutdown.clone(),
        );
        tasks.spawn(watch);
        // The systemd watchdog is fed from the moment the schedule is loaded.
        let (loaded, ready_rx) = tokio::sync::oneshot::channel::<()>();
        let stop = shutdown.clone();
        tasks.spawn(async move {
            tokio::select! {
                r = ready_rx => if r.is_err() { return },
                _ = stop.cancelled() => return,
            }
            // Outside systemd there is no NOTIFY_SOCKET: nothing to feed.
            let Some(every) = sd_notify::watchdog_enabled() else {
                return;
            };
            let mut tick = tokio::time::interval(every / 2);
            loop {
                tokio::select! {
                    _ = tick.tick() => { let _ = sd_notify::notify(&[sd_notify::NotifyState::Watchdog]); }
                    _ = stop.cancelled() => break,
                }
            }
        });
        let ready = move || {
            let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
            let _ = loaded.send(());
            tracing::info!("ready");
        };
        let result =
            crate::scheduler::run(Arc::clone(&self), shutdown.clone(), reloads, ready).await;
        // However the scheduler ended, the other tasks stop with it.
        shutdown.cancel();
        while tasks.join_next().await.is_some() {}
        let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
        self.store.close().await;
        result
    }
}

/// The file's `[[recipients]]`, one row per job they belong to.
pub fn config_recipients(settings: &Settings) -> Vec<StoredRecipient> {
    settings
        .recipients
        .iter()
        .flat_map(|r| {
            r.jobs.iter().map(move |job| StoredRecipient {
                job: job.to_string(),
                openid: r.openid.to_string(),
                name: r.name.clone(),
                vars: r.vars.clone(),
            })
        })
        .collect()
}
