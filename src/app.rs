//! Wiring: from checked settings to a database and, for each mini program, a
//! WeChat client, a token cache and a deliverer, shared by every command (the
//! daemon's tasks are in `daemon`).

use std::sync::Arc;

use crate::config::Settings;
use crate::delivery::Deliverer;
use crate::storage::{StorageError, Store, StoredRecipient, SyncReport};
use crate::wechat::{TokenManager, WechatClient, WechatError};

/// How long leaving waits for a database that does not answer.
const LEAVE_WAIT: std::time::Duration = std::time::Duration::from_secs(3);

/// Everything a command needs, built once.
pub struct App {
    /// The configuration.
    pub settings: Settings,
    /// The database.
    pub store: Store,
    /// How instances share work on it, decided once here.
    pub topology: crate::storage::Topology,
    /// Storage faults of scheduled firings, reported by `/readyz`.
    pub faults: crate::health::Faults,
    /// The wall clock slots, send windows and backoff are measured on.
    pub clock: crate::clock::Clock,
    /// This process in the database's instances table.
    pub instance: crate::storage::InstanceInfo,
    /// Each app's own client, token cache and sender: the default app
    /// (`[wechat]`, no name) first, then each `[apps.NAME]`.
    pub apps: Vec<(Option<crate::domain::AppName>, AppRuntime)>,
}

/// One mini program's WeChat side: its client, its token and its sender.
pub struct AppRuntime {
    /// Its WeChat client.
    pub client: WechatClient,
    /// Its access_token cache.
    pub tokens: Arc<TokenManager>,
    /// The sender of its jobs.
    pub deliverer: Arc<Deliverer>,
}

impl AppRuntime {
    /// The token cache and sender of the app `client` speaks for.
    fn build(
        client: WechatClient,
        wechat: &crate::config::WechatSettings,
        store: &Store,
        settings: &Settings,
        progress: crate::delivery::Progress,
        writer: &crate::delivery::RecordWriter,
    ) -> Self {
        let tokens = Arc::new(TokenManager::new(
            client.clone(),
            store.clone(),
            wechat.appid.clone(),
            wechat.token_source,
        ));
        let deliverer = Arc::new(
            Deliverer::new(
                store.clone(),
                store.topology(),
                client.clone(),
                Arc::clone(&tokens),
                &settings.delivery,
                writer.clone(),
            )
            .with_progress(progress)
            .with_lease(settings.database.instance_lease),
        );
        Self {
            client,
            tokens,
            deliverer,
        }
    }
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
    /// An app in `[apps.NAME]` has no AppSecret.
    #[error("{0}: apps.{1}.secret: is missing; set apps.{1}.secret_file, or WXPUSH__APPS__{upper}__SECRET", upper = .1.to_uppercase())]
    NoAppSecret(String, String),
}

impl App {
    /// Opens the database (running migrations) and builds the client and caches,
    /// registered as a daemon instance.
    pub async fn build(settings: Settings) -> Result<Self, AppError> {
        Self::build_as(settings, "daemon", crate::delivery::Progress::Log).await
    }

    /// `build`, registered as an instance in `role` (`daemon` or `send`),
    /// showing the progress of long runs as `progress`.
    pub async fn build_as(
        settings: Settings,
        role: &str,
        progress: crate::delivery::Progress,
    ) -> Result<Self, AppError> {
        let secret = settings
            .wechat
            .secret
            .clone()
            .ok_or_else(|| AppError::NoSecret(settings.path.display().to_string()))?;
        // Apps on one host (WeChat's own, in production) share the pool: room for
        // every app's concurrency.
        let pooled = settings.delivery.concurrency * (1 + settings.apps.len());
        let client = WechatClient::new(&settings.wechat, secret, pooled)?;
        let store =
            Store::open_with(&settings.database.url, &settings.database.open_options()).await?;
        // Before any run or report is written under an app's AppID.
        store.adopt_unkeyed(&settings.wechat.appid).await?;
        let instance = crate::instance::this_process(role, settings.database.instance_lease);
        let leftover = crate::delivery::leftover_of(settings.delivery.on_unknown);
        let store = crate::instance::join(&store, &instance, leftover).await?;
        // One writer for every app's runs: they share the database's write lock.
        let writer = crate::delivery::RecordWriter::new(store.clone());
        let default = AppRuntime::build(
            client,
            &settings.wechat,
            &store,
            &settings,
            progress,
            &writer,
        );
        let mut apps = vec![(None, default)];
        for app in &settings.apps {
            let secret = app.wechat.secret.clone().ok_or_else(|| {
                AppError::NoAppSecret(settings.path.display().to_string(), app.name.to_string())
            })?;
            let client =
                apps[0]
                    .1
                    .client
                    .sibling(&app.wechat, secret, settings.delivery.concurrency)?;
            let runtime =
                AppRuntime::build(client, &app.wechat, &store, &settings, progress, &writer);
            apps.push((Some(app.name.clone()), runtime));
        }
        Ok(Self {
            settings,
            topology: store.topology(),
            store,
            faults: Default::default(),
            clock: Default::default(),
            instance,
            apps,
        })
    }

    /// Keeps this instance's heartbeat until `stop` (see `instance::keep_alive`).
    pub fn keep_alive(
        &self,
        stop: tokio_util::sync::CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        tokio::spawn(crate::instance::keep_alive(
            self.store.clone(),
            self.instance.clone(),
            self.apps
                .iter()
                .map(|(_, app)| Arc::clone(&app.deliverer))
                .collect(),
            stop,
        ))
    }

    /// The client, token cache and sender of `app` (`None`: the default app).
    /// Jobs name only configured apps (the config is checked), so an unknown
    /// name cannot come; it would get the default app.
    pub fn runtime(&self, app: Option<&crate::domain::AppName>) -> &AppRuntime {
        self.apps
            .iter()
            .find(|(name, _)| name.as_ref() == app)
            .map_or(&self.apps[0].1, |(_, runtime)| runtime)
    }

    /// Leaves the instances table (a clean exit), giving back what was taken.
    /// Answers the database could not take before are written first:
    /// leaving would otherwise record their requests as `unknown`. A database
    /// back from a restart answers within a second or two; one that stays
    /// away is not waited for longer (a survivor, or the next start, records
    /// those requests `unknown`, and this instance's row lapses with its lease).
    pub async fn leave(&self) {
        // One writer serves every app: the default app's deliverer reaches it.
        let deliverer = &self.apps[0].1.deliverer;
        let mut last = None;
        let settled = tokio::time::timeout(LEAVE_WAIT, async {
            while let Err(e) = deliverer.settle_kept().await {
                last = Some(e);
                tokio::time::sleep(std::time::Duration::from_millis(250)).await;
            }
        })
        .await;
        if settled.is_err() {
            let error = last.map(|e| e.to_string()).unwrap_or_default();
            tracing::warn!(%error, "cannot write the outcomes the database did not take; a survivor or the next start records those requests unknown");
            return;
        }
        if tokio::time::timeout(
            LEAVE_WAIT,
            crate::instance::leave(&self.store, &self.instance),
        )
        .await
        .is_err()
        {
            tracing::warn!(
                "cannot deregister this instance in time; others settle it when its lease lapses"
            );
        }
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

/// The file's `[[recipients]]`, one row per job they belong to.
pub fn config_recipients(settings: &Settings) -> Vec<StoredRecipient> {
    settings
        .recipients
        .iter()
        .flat_map(|r| {
            r.jobs.iter().map(move |job| StoredRecipient {
                job: job.clone(),
                openid: r.openid.clone(),
                name: r.name.clone(),
                vars: r.vars.clone(),
            })
        })
        .collect()
}
