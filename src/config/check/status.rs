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
    pub(super) fn status(
        &mut self,
        s: raw::RawStatus,
        http: Option<SocketAddr>,
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
        match (s.enabled, http) {
            (Some(false), _) => None,
            (Some(true), None) => {
                self.fail(
                    "status.enabled",
                    "needs the HTTP listener it is served on; set http.enabled = true",
                );
                None
            }
            (_, None) => None,
            (_, Some(_)) => Some(StatusSettings { password }),
        }
    }
}
