//! `[database]`: its URL and password file, the pool, and what a shared database refuses.

use super::{CLASSIC_SHARED, Checker};
use crate::config::{DatabaseSettings, database, raw, secret_file};

impl Checker {
    /// `classic` is `[wechat] token_source = "classic"`, which a shared database refuses.
    pub(super) fn database(&mut self, d: raw::RawDatabase, classic: bool) -> DatabaseSettings {
        let config_dir = self.config_dir();
        let config_dir = config_dir.as_path();
        let mut url = database::resolve(&d.url, config_dir)
            .map_err(|e| self.fail("database.url", e))
            .unwrap_or_default();
        if let Some(file) = d.password_file.as_deref() {
            let password = secret_file::pick("database.password", None, Some(file), config_dir);
            match password.and_then(|p| database::with_password(&url, p)) {
                Ok(with) => url = with,
                Err(e) => self.problems.push(format!("{}: {e}", self.file)),
            }
        }
        if d.max_connections == Some(0) {
            self.fail("database.max_connections", "must be at least 1");
        }
        if d.busy_timeout.is_zero() {
            self.fail(
                "database.busy_timeout",
                "must be more than 0s (a write would fail at once whenever another process writes)",
            );
        }
        if d.instance_lease < std::time::Duration::from_secs(1) {
            // Heartbeats come every third of it: shorter would be mostly writes.
            self.fail("database.instance_lease", "must be at least 1s");
        }
        if database::is_shared(&url) && classic {
            // Every classic fetch rotates the token: instances sharing one
            // database would keep invalidating each other's.
            self.fail("wechat.token_source", CLASSIC_SHARED);
        }
        DatabaseSettings {
            url,
            max_connections: d.max_connections,
            instance_lease: d.instance_lease,
            busy_timeout: d.busy_timeout,
        }
    }
}
