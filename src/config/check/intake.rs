//! `[intake]`, and the message-push Token and EncodingAESKey it shares with `[apps.NAME]`.

use super::Checker;
use crate::config::{IntakeSettings, raw};

impl Checker {
    /// `http` is `[http] listen` when enabled.
    pub(super) fn intake(
        &mut self,
        i: raw::RawIntake,
        http: Option<std::net::SocketAddr>,
    ) -> Option<IntakeSettings> {
        if !i.enabled {
            return None;
        }
        let listen = match i.listen.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(a) => match a.parse::<std::net::SocketAddr>() {
                Ok(addr) if Some(addr) == http => {
                    self.fail(
                        "intake.listen",
                        format!("{a} is http.listen too; give the public routes their own port, or leave intake.listen out to share it"),
                    );
                    None
                }
                Ok(addr) => Some(addr),
                Err(_) => {
                    self.fail(
                        "intake.listen",
                        format!("{a:?} is not an address such as 127.0.0.1:8080"),
                    );
                    None
                }
            },
        };
        if listen.is_none() && http.is_none() && i.listen.is_none() {
            self.fail(
                "intake.enabled",
                "needs the HTTP listener; set http.enabled = true, or give the intake its own with intake.listen",
            );
        }
        let (token, aes_key) = self.callback(
            "intake",
            raw::RawCallback {
                callback_token: i.callback_token,
                callback_token_file: i.callback_token_file,
                encoding_aes_key: i.encoding_aes_key,
                encoding_aes_key_file: i.encoding_aes_key_file,
            },
        );
        if !(256..=1024 * 1024).contains(&i.max_body_bytes) {
            self.fail(
                "intake.max_body_bytes",
                format!("{} is not between 256 and 1048576", i.max_body_bytes),
            );
        }
        if i.per_ip_per_minute == 0 {
            self.fail("intake.per_ip_per_minute", "must be at least 1");
        }
        let client_ip_header = match i.client_ip_header.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(h) => axum::http::HeaderName::try_from(h)
                .map_err(|_| {
                    self.fail(
                        "intake.client_ip_header",
                        format!("{h:?} is not a header name such as X-Forwarded-For"),
                    )
                })
                .ok(),
        };
        Some(IntakeSettings {
            listen,
            callback_token: token,
            aes_key,
            max_body_bytes: i.max_body_bytes,
            per_ip_per_minute: i.per_ip_per_minute,
            client_ip_header,
        })
    }

    /// The message-push Token and EncodingAESKey of `at` (`intake` or
    /// `apps.NAME`), each checked as the mini program console requires.
    pub(super) fn callback(
        &mut self,
        at: &str,
        c: raw::RawCallback,
    ) -> (Option<secrecy::SecretString>, Option<crate::domain::AesKey>) {
        let token = self.secret(
            &format!("{at}.callback_token"),
            c.callback_token,
            c.callback_token_file.as_deref(),
        );
        if let Some(t) = &token {
            let t = secrecy::ExposeSecret::expose_secret(t);
            // The console's rule for the message-push Token.
            if !(3..=32).contains(&t.len()) || !t.chars().all(|c| c.is_ascii_alphanumeric()) {
                self.fail(
                    &format!("{at}.callback_token"),
                    "must be 3 to 32 letters or digits, as the mini program console requires",
                );
            }
        }
        let aes_key = self
            .secret(
                &format!("{at}.encoding_aes_key"),
                c.encoding_aes_key,
                c.encoding_aes_key_file.as_deref(),
            )
            .and_then(|k| {
                crate::domain::AesKey::parse(secrecy::ExposeSecret::expose_secret(&k))
                    .map_err(|rule| self.fail(&format!("{at}.encoding_aes_key"), rule))
                    .ok()
            });
        if aes_key.is_some() && token.is_none() {
            self.fail(
                &format!("{at}.encoding_aes_key"),
                format!("is used only with {at}.callback_token; set that too"),
            );
        }
        (token, aes_key)
    }
}
