//! `[status]`: the read-only status page, on `[http]` only (never the public
//! intake listener), optionally behind a password.

use std::net::SocketAddr;

use secrecy::ExposeSecret;

use super::Checker;
use crate::config::{StatusSettings, raw};

/// A password shorter than this is refused: it would be guessable.
const MIN_PASSWORD_CHARS: usize = 12;

impl Checker {
    /// On by default wherever `http` (`[http] listen`) is served; asked for
    /// without it, an error rather than a page that silently is not there.
    /// Where that listener is public (`intake_shares`: the intake is served
    /// on it; or not a loopback address), the page shows people's data, so
    /// it needs a password: without one, an unset `enabled` withholds it (and
    /// says why), and `enabled = true` is an error.
    pub(super) fn status(
        &mut self,
        s: raw::RawStatus,
        http: Option<SocketAddr>,
        intake_shares: bool,
    ) -> Option<StatusSettings> {
        let password = self.secret("status.password", s.password, s.password_file.as_deref());
        if let Some(p) = &password
            && p.expose_secret().trim().chars().count() < MIN_PASSWORD_CHARS
        {
            self.fail(
                "status.password",
                format!("is shorter than {MIN_PASSWORD_CHARS} characters: make a long random one (openssl rand -hex 16)"),
            );
        }
        let public = match http {
            Some(addr) if intake_shares => Some(format!(
                "http.listen ({addr}) is public: the intake is served on it"
            )),
            Some(addr) if !addr.ip().is_loopback() => {
                Some(format!("http.listen ({addr}) is not a loopback address"))
            }
            _ => None,
        };
        match (s.enabled, http, public) {
            (Some(false), _, _) => None,
            (Some(true), None, _) => {
                self.fail(
                    "status.enabled",
                    "needs the HTTP listener it is served on; set http.enabled = true",
                );
                None
            }
            (_, None, _) => None,
            (Some(true), Some(_), Some(why)) if password.is_none() => {
                self.fail(
                    "status.password",
                    format!("is required: {why}, and the status page shows people's data; set status.password_file"),
                );
                None
            }
            (None, Some(_), Some(why)) if password.is_none() => Some(StatusSettings {
                password,
                withheld: Some(format!(
                    "the status page is not served: {why}, and [status] has no password; set status.password_file"
                )),
            }),
            (_, Some(_), _) => Some(StatusSettings {
                password,
                withheld: None,
            }),
        }
    }
}
