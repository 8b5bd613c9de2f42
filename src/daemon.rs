//! The daemon's composition root: `App::run` owns every long-lived task (HTTP,
//! config reload, scheduler, systemd watchdog, intake upkeep), stops each on
//! shutdown and joins them all.

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::app::App;
use crate::config::Settings;
use crate::intake::Intake;
use crate::storage::StorageError;

/// What the daemon serves on, bound before it reports ready (so that a taken
/// port is a start-up error) and handed in (so that tests can use port 0).
pub struct Listeners {
    /// `[http]`: probes, metrics and the intake routes, with the metrics handle.
    pub http: Option<(
        tokio::net::TcpListener,
        metrics_exporter_prometheus::PrometheusHandle,
    )>,
    /// `[intake] listen`: the public intake routes alone; `None` puts them on `http`.
    pub intake: Option<tokio::net::TcpListener>,
    /// `[api] listen`: the sends API alone; `None` puts it on `http`.
    pub api: Option<tokio::net::TcpListener>,
}

impl App {
    /// Runs the daemon until `shutdown`: the HTTP listener, the config reload, the
    /// scheduler, the sender of sends on demand, the systemd watchdog and the intake upkeep. Returns once every
    /// one of them has stopped; runs in progress finish and are recorded first.
    pub async fn run(
        self: Arc<Self>,
        listeners: Listeners,
        shutdown: CancellationToken,
    ) -> Result<(), StorageError> {
        let mut tasks = JoinSet::new();
        let heartbeat = self.keep_alive(shutdown.clone());
        crate::stats::callback_served(self.callback_served());
        let intake = self.intake();
        if let Some(intake) = &intake {
            let (intake, stop) = (intake.clone(), shutdown.clone());
            tasks.spawn(async move { intake.maintain(stop).await });
        }
        let api = self
            .settings
            .api
            .clone()
            .map(|a| crate::api::routes(Arc::clone(&self), a));
        let status = match self.settings.status.clone() {
            Some(s) if s.withheld.is_some() => {
                tracing::warn!("{}", s.withheld.as_deref().unwrap_or_default());
                None
            }
            Some(s) => Some(crate::status::routes(Arc::clone(&self), s)),
            None => None,
        };
        self.serve(&mut tasks, listeners, intake, (api, status), &shutdown);
        tasks.spawn(crate::delivery::serve_on_demand(
            Arc::clone(&self),
            shutdown.clone(),
        ));
        let reloads = self.follow_reloads(&mut tasks, &shutdown);
        let loaded = feed_watchdog(&mut tasks, shutdown.clone());
        let ready = move || {
            let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
            let _ = loaded.send(());
            tracing::info!("ready");
        };
        let result = match self.sync_recipients().await {
            Ok(_) => {
                crate::scheduler::run(
                    Arc::new(crate::scheduler::Parts::of(&self)),
                    self.settings.jobs.clone(),
                    shutdown.clone(),
                    reloads,
                    ready,
                )
                .await
            }
            Err(e) => Err(e),
        };
        // However the scheduler ended, the other tasks stop with it.
        shutdown.cancel();
        while tasks.join_next().await.is_some() {}
        let _ = heartbeat.await;
        let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
        self.leave().await;
        self.store.close().await;
        result
    }

    /// Whether WeChat pushes events to /wechat/callback: only where a Token is
    /// set (for the default app or any other). The alert on pushes that stop
    /// coming needs to know that they should come.
    fn callback_served(&self) -> bool {
        self.settings.intake.as_ref().is_some_and(|i| {
            i.callback_token.is_some()
                || self
                    .settings
                    .apps
                    .iter()
                    .any(|a| a.callback_token.is_some())
        })
    }

    /// The intake for the default app and every `[apps.NAME]`, when `[intake]` is enabled.
    fn intake(&self) -> Option<Intake> {
        self.settings.intake.clone().map(|i| {
            let more = self
                .settings
                .apps
                .iter()
                .map(|a| crate::intake::IntakeApp {
                    name: Some(a.name.clone()),
                    client: self.runtime(Some(&a.name)).client.clone(),
                    callback_token: a.callback_token.clone(),
                    aes_key: a.aes_key.clone(),
                })
                .collect();
            Intake::new(
                self.store.clone(),
                self.runtime(None).client.clone(),
                i,
                more,
            )
        })
    }

    /// Serves `[http]` (with the status page), `[intake] listen` and `[api]
    /// listen`, each until `shutdown`.
    fn serve(
        &self,
        tasks: &mut JoinSet<()>,
        listeners: Listeners,
        intake: Option<Intake>,
        (api, status): (Option<axum::Router>, Option<axum::Router>),
        shutdown: &CancellationToken,
    ) {
        // With a listener of its own, the intake is not also on [http]: the
        // public side then has no /metrics, and the private side no intake.
        let (intake, intake_apart) = match (intake, listeners.intake) {
            (Some(intake), Some(listener)) => (None, Some((intake, listener))),
            (intake, _) => (intake, None),
        };
        let api = match (api, listeners.api) {
            (Some(api), Some(listener)) => {
                let stop = shutdown.clone();
                tasks.spawn(async move {
                    if let Err(e) = crate::http::serve_api(listener, api, stop).await {
                        tracing::error!(error = %e, "the API listener stopped");
                    }
                });
                None
            }
            (api, _) => api,
        };
        // The status page is on the private listener only, beside the API if it is there.
        let api = match (api, status) {
            (Some(api), Some(status)) => Some(api.merge(status)),
            (api, status) => api.or(status),
        };
        if let Some((intake, listener)) = intake_apart {
            let stop = shutdown.clone();
            tasks.spawn(async move {
                if let Err(e) = crate::http::serve_intake(listener, intake, stop).await {
                    tracing::error!(error = %e, "the intake listener stopped");
                }
            });
        }
        if let Some((listener, metrics)) = listeners.http {
            let (store, faults, tokens, stop) = (
                self.store.clone(),
                self.faults.clone(),
                Arc::new(
                    self.apps
                        .iter()
                        .map(|(name, app)| {
                            (
                                name.as_ref().map(ToString::to_string),
                                Arc::clone(&app.tokens),
                            )
                        })
                        .collect(),
                ),
                shutdown.clone(),
            );
            tasks.spawn(async move {
                if let Err(e) = crate::http::serve(
                    listener,
                    (store, faults, tokens, metrics),
                    intake,
                    api,
                    stop,
                )
                .await
                {
                    tracing::error!(error = %e, "the HTTP listener stopped");
                }
            });
        }
    }

    /// Watches the config file and prunes old history; each reloaded configuration
    /// comes out of the receiver, for the scheduler, once retention has it.
    fn follow_reloads(
        &self,
        tasks: &mut JoinSet<()>,
        shutdown: &CancellationToken,
    ) -> mpsc::Receiver<Settings> {
        // Retention keeps what each job may still send, by the jobs of the
        // configuration in effect: each reload passes by here on its way to
        // the scheduler.
        let (horizons, horizons_rx) =
            tokio::sync::watch::channel(crate::retention::horizons(&self.settings.jobs));
        if let Some(retention) = self.settings.retention {
            let keys = self
                .settings
                .api
                .as_ref()
                .map_or(crate::config::DEFAULT_KEY_RETENTION, |a| {
                    a.idempotency_retention
                });
            tasks.spawn(crate::retention::keep_pruning(
                self.store.clone(),
                retention,
                keys,
                horizons_rx,
                self.clock.clone(),
                shutdown.clone(),
            ));
        }
        let (mut reloaded, watch) = crate::reload::watch(
            self.settings.path.clone(),
            self.settings.clone(),
            self.clock.clone(),
            shutdown.clone(),
        );
        tasks.spawn(watch);
        let (forward, reloads) = mpsc::channel(1);
        tasks.spawn(async move {
            while let Some(settings) = reloaded.recv().await {
                horizons.send_replace(crate::retention::horizons(&settings.jobs));
                if forward.send(settings).await.is_err() {
                    break;
                }
            }
        });
        reloads
    }
}

/// Feeds the systemd watchdog from the moment the schedule is loaded, which the
/// returned sender says, until `stop`.
fn feed_watchdog(tasks: &mut JoinSet<()>, stop: CancellationToken) -> oneshot::Sender<()> {
    let (loaded, ready_rx) = oneshot::channel::<()>();
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
    loaded
}
