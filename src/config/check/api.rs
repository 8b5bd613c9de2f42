//! `[api]`: sends on demand over HTTP, behind a bearer token.

use std::net::SocketAddr;
use std::time::Duration;

use secrecy::ExposeSecret;

use super::Checker;
use crate::config::{ApiSettings, raw};

/// A token shorter than this is refused: it would be guessable.
const MIN_TOKEN_CHARS: usize = 16;

impl Checker {
    /// `http` is `[http] listen` when enabled: the API is served there unless
    /// `[api] listen` gives it an address of its own (not `intake`'s either).
    pub(super) fn api(
        &mut self,
        a: raw::RawApi,
        http: Option<SocketAddr>,
        intake: Option<SocketAddr>,
    ) -> Option<ApiSettings> {
        if !a.enabled {
            return None;
        }
        let listen = match a.listen.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(given) => match given.parse::<SocketAddr>() {
                Ok(addr) if Some(addr) == http && addr.port() != 0 => {
                    self.fail(
                        "api.listen",
                        format!("{given} is http.listen too; leave api.listen out to serve the API there"),
                    );
                    None
                }
                Ok(addr) if Some(addr) == intake && addr.port() != 0 => {
                    self.fail(
                        "api.listen",
                        format!("{given} is intake.listen too: the public intake and the API each need their own port"),
                    );
                    None
                }
                Ok(addr) => Some(addr),
                Err(_) => {
                    self.fail(
                        "api.listen",
                        format!("{given:?} is not an address such as 127.0.0.1:8081"),
                    );
                    None
                }
            },
        };
        if listen.is_none() && http.is_none() && a.listen.is_none() {
            self.fail(
                "api.enabled",
                "needs the HTTP listener; set http.enabled = true, or give the API its own with api.listen",
            );
        }
        let token = self.secret("api.token", a.token, a.token_file.as_deref());
        match &token {
            None => self.fail(
                "api.token",
                "is required when api.enabled = true; set api.token_file (or WXPUSH__API__TOKEN_FILE)",
            ),
            Some(t) if t.expose_secret().trim().chars().count() < MIN_TOKEN_CHARS => self.fail(
                "api.token",
                format!("is shorter than {MIN_TOKEN_CHARS} characters: make a long random one (openssl rand -hex 32)"),
            ),
            Some(_) => {}
        }
        let day = Duration::from_secs(24 * 3600);
        if a.max_schedule_ahead < Duration::from_secs(60) || a.max_schedule_ahead > 366 * day {
            self.fail(
                "api.max_schedule_ahead",
                format!(
                    "{} is not between 1m and 366d",
                    humantime::format_duration(a.max_schedule_ahead)
                ),
            );
        }
        if a.idempotency_retention < a.max_schedule_ahead + day {
            self.fail(
                "api.idempotency_retention",
                format!(
                    "{} must be at least a day longer than api.max_schedule_ahead ({}): a key must outlive any send made with it",
                    humantime::format_duration(a.idempotency_retention),
                    humantime::format_duration(a.max_schedule_ahead)
                ),
            );
        }
        Some(ApiSettings {
            listen,
            token: token
                .map(|t| secrecy::SecretString::from(t.expose_secret().trim().to_owned()))?,
            max_schedule_ahead: a.max_schedule_ahead,
            idempotency_retention: a.idempotency_retention,
        })
    }
}
