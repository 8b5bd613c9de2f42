//! The raw tree checked into [`Settings`]: every problem is collected, one line
//! each naming its key, so that one `check` shows them all. Each section has its
//! own file; here is what they share and the order they are checked in.

mod api;
mod database;
mod intake;
mod jobs;
mod policy;
mod recipients;
mod retention;
mod sources;
mod status;
mod wechat;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use super::raw::RawSettings;
use super::{ConfigError, LogSettings, Settings, TokenSource, secret_file};

/// Why `token_source = "classic"` is refused on a shared database.
const CLASSIC_SHARED: &str = "\"classic\" cannot be used with a PostgreSQL database: every classic fetch invalidates the token other instances hold; use \"stable\"";

/// Walks the raw tree, converting each value and collecting every problem.
pub(super) struct Checker {
    file: String,
    path: PathBuf,
    problems: Vec<String>,
}

impl Checker {
    /// A checker for the file at `path`, named `file` in its problems.
    pub(super) fn new(file: String, path: PathBuf) -> Self {
        Self {
            file,
            path,
            problems: Vec::new(),
        }
    }

    /// Records a problem with `key`.
    fn fail(&mut self, key: &str, msg: impl std::fmt::Display) {
        self.problems.push(format!("{}: {key}: {msg}", self.file));
    }

    /// The config file's folder: relative paths in it are read from there.
    fn config_dir(&self) -> PathBuf {
        self.path.parent().unwrap_or(Path::new(".")).to_path_buf()
    }

    /// A secret from its key or its `_file` key (see `secret_file`).
    fn secret(
        &mut self,
        key: &str,
        value: Option<secrecy::SecretString>,
        file: Option<&str>,
    ) -> Option<secrecy::SecretString> {
        secret_file::pick(key, value, file, &self.config_dir())
            .map_err(|e| self.problems.push(format!("{}: {e}", self.file)))
            .ok()
            .flatten()
    }

    /// The settings, or every problem found in them.
    pub(super) fn check(mut self, raw: RawSettings) -> Result<Settings, ConfigError> {
        if raw.scheduler.outage_retry.is_zero() {
            self.fail("scheduler.outage_retry", "must be more than 0s");
        }
        let classic = raw.wechat.token_source == TokenSource::Classic;
        let default_appid = raw.wechat.appid.clone();
        let wechat = self.wechat("wechat", raw.wechat);
        let delivery = self.delivery(raw.delivery);
        let database = self.database(raw.database, classic);
        let shared = super::database::is_shared(&database.url);
        let (app_names, apps) = self.apps(raw.apps, &default_appid, shared);
        let policy = self.policy("policy", &raw.policy);
        let sources = self.sources(raw.sources);
        // Every name written in [[jobs]], good or not: a recipient of a job that has
        // its own error is not reported again (one root cause, one line).
        let written: BTreeSet<String> = raw.jobs.iter().map(|j| j.name.clone()).collect();
        let jobs = self.jobs(raw.jobs, &raw.scheduler, &app_names, &sources);
        let recipients = self.recipients(raw.recipients, &jobs, &written, &app_names);
        let http = if raw.http.enabled {
            raw.http
                .listen
                .parse()
                .map_err(|_| {
                    self.fail(
                        "http.listen",
                        format!(
                            "{:?} is not an address such as 127.0.0.1:9464",
                            raw.http.listen
                        ),
                    )
                })
                .ok()
        } else {
            None
        };
        let intake = self.intake(raw.intake, http);
        let intake_listen = intake.as_ref().and_then(|i| i.listen);
        let api = self.api(raw.api, http, intake_listen);
        let intake_shares = intake.as_ref().is_some_and(|i| i.listen.is_none());
        let status = self.status(raw.status, http, intake_shares);
        let retention = self.retention(raw.retention);
        if !self.problems.is_empty() {
            return Err(ConfigError {
                problems: self.problems,
            });
        }
        let mut settings = Settings {
            path: self.path,
            wechat: wechat.expect("no problems means the wechat section converted"),
            apps,
            database,
            delivery,
            log: LogSettings {
                level: raw.log.level,
                format: raw.log.format,
            },
            http,
            intake,
            api,
            status,
            jobs,
            recipients,
            reload_on_change: raw.scheduler.reload_on_change,
            outage_retry: raw.scheduler.outage_retry,
            retention,
            policy,
        };
        let effective: Vec<_> = (settings.jobs.iter())
            .map(|j| {
                std::sync::Arc::new(settings.policy_of(settings.appid_of_job(j), Some(j), None))
            })
            .collect();
        for (job, policy) in settings.jobs.iter_mut().zip(effective) {
            job.effective_policy = policy;
        }
        Ok(settings)
    }
}
