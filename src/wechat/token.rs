//! One access_token for every sender: cached in memory and in the database,
//! refreshed ahead of expiry by a single task, invalidated only if unchanged.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use chrono::Utc;
use tokio::sync::{Mutex, RwLock};

use super::client::{FetchedToken, WechatClient, WechatError};
use super::errcode::{TokenFailure, classify_token, token_hint};
use crate::config::TokenSource;
use crate::domain::AppId;
use crate::storage::{StorageError, Store, StoredToken};

/// How many token requests a transient failure may retry.
const FETCH_ATTEMPTS: u32 = 3;
/// Stable-token force refreshes: WeChat allows 20 a day, 30 s apart.
const FORCE_PER_DAY: usize = 20;
const FORCE_GAP_SECS: i64 = 30;

/// An access_token; `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct AccessToken(Arc<str>);

impl AccessToken {
    /// The token, for the one line that builds a request.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AccessToken([redacted])")
    }
}

/// Why no token could be had.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// WeChat refused or could not be reached.
    #[error("cannot get an access_token: {source}{hint}")]
    Wechat {
        /// The failure.
        source: WechatError,
        /// An operator's hint, starting with " (".
        hint: String,
    },
    /// The stable token keeps being rejected and may not be force-refreshed now.
    #[error(
        "the access_token is still rejected after a refresh and no force refresh is left ({0}); another party may be force-refreshing the stable token"
    )]
    StillRejected(String),
    /// The cache could not be read or written.
    #[error(transparent)]
    Storage(#[from] StorageError),
}

impl TokenError {
    /// True when WeChat could not be reached (no answer, or a 5xx from a gateway):
    /// that passes, unlike a refused secret.
    pub fn is_unreachable(&self) -> bool {
        matches!(
            self,
            Self::Wechat {
                source: WechatError::Transport(_),
                ..
            }
        ) || matches!(self, Self::Wechat { source: WechatError::Http(c), .. } if *c >= 500)
    }
}

#[derive(Clone)]
struct Cached {
    token: AccessToken,
    /// Unix seconds after which we stop using it (ahead of WeChat's expiry).
    use_until: i64,
}

/// The token cache shared by all senders of one process.
pub struct TokenManager {
    client: WechatClient,
    store: Store,
    appid: AppId,
    source: TokenSource,
    cached: RwLock<Option<Cached>>,
    /// Held while fetching so that many senders needing a token cause one request.
    refreshing: Mutex<()>,
    fetches: AtomicU64,
}

/// Stop using a token this long before WeChat's expiry: under the 300 s that a
/// stable token is always still valid for, and never more than half its life.
fn use_until(t: &StoredToken) -> i64 {
    let life = (t.expires_at - t.fetched_at).max(0);
    t.expires_at - (life / 2).min(120)
}

impl TokenManager {
    /// A manager for `appid`'s token from `source`.
    pub fn new(client: WechatClient, store: Store, appid: AppId, source: TokenSource) -> Self {
        Self {
            client,
            store,
            appid,
            source,
            cached: RwLock::new(None),
            refreshing: Mutex::new(()),
            fetches: AtomicU64::new(0),
        }
    }

    /// Which endpoint its tokens come from (the name they are stored under).
    pub fn source(&self) -> crate::config::TokenSource {
        self.source
    }

    /// Token requests this process has made.
    pub fn fetches(&self) -> u64 {
        self.fetches.load(Ordering::Relaxed)
    }

    /// A usable token: from memory, else from the database, else from WeChat.
    pub async fn get(&self) -> Result<AccessToken, TokenError> {
        if let Some(t) = self.fresh_in_memory().await {
            return Ok(t);
        }
        let _guard = self.refreshing.lock().await;
        // Another task may have refreshed while we waited for the lock.
        if let Some(t) = self.fresh_in_memory().await {
            return Ok(t);
        }
        // And another instance, while we waited for the database's lock.
        let shared = self.store.lock_token_refresh(&self.appid).await?;
        let token = self.load_or_fetch().await;
        shared.release().await;
        token
    }

    async fn load_or_fetch(&self) -> Result<AccessToken, TokenError> {
        if let Some(stored) = self
            .store
            .load_token(&self.appid, self.source.as_str())
            .await?
            && use_until(&stored) > Utc::now().timestamp()
        {
            return Ok(self.remember(&stored).await);
        }
        self.fetch_and_store(false).await
    }

    /// Called when WeChat rejected `bad` (40001/40014/42001): returns a different,
    /// fresh token, or fails. Never throws away a token someone else just fetched.
    pub async fn replace(&self, bad: &AccessToken) -> Result<AccessToken, TokenError> {
        let _guard = self.refreshing.lock().await;
        if let Some(c) = self.cached.read().await.as_ref()
            && c.token != *bad
        {
            return Ok(c.token.clone());
        }
        *self.cached.write().await = None;
        let shared = self.store.lock_token_refresh(&self.appid).await?;
        let token = self.replace_shared(bad).await;
        shared.release().await;
        token
    }

    /// `replace` under the database's lock: compare-and-swap on the stored token.
    async fn replace_shared(&self, bad: &AccessToken) -> Result<AccessToken, TokenError> {
        self.store
            .invalidate_token(&self.appid, self.source.as_str(), bad.expose())
            .await?;
        if let Some(stored) = self
            .store
            .load_token(&self.appid, self.source.as_str())
            .await?
            && stored.token != bad.expose()
            && use_until(&stored) > Utc::now().timestamp()
        {
            return Ok(self.remember(&stored).await);
        }
        let fresh = self.fetch_and_store(false).await?;
        if fresh != *bad || self.source == TokenSource::Classic {
            return Ok(fresh);
        }
        // The stable endpoint handed back the token WeChat just rejected.
        self.force_refresh().await
    }

    async fn force_refresh(&self) -> Result<AccessToken, TokenError> {
        let now = Utc::now().timestamp();
        let recent = self
            .store
            .force_refreshes_since(&self.appid, now - 86_400)
            .await?;
        if recent.len() >= FORCE_PER_DAY {
            return Err(TokenError::StillRejected(
                "20 force refreshes used in the last 24 h".into(),
            ));
        }
        if recent
            .first()
            .is_some_and(|last| now - last < FORCE_GAP_SECS)
        {
            return Err(TokenError::StillRejected(
                "the last force refresh was under 30 s ago".into(),
            ));
        }
        self.store.record_force_refresh(&self.appid, now).await?;
        tracing::warn!(appid = %self.appid, "force-refreshing the stable access_token (limited to 20 a day)");
        *self.cached.write().await = None;
        self.fetch_and_store(true).await
    }

    async fn fresh_in_memory(&self) -> Option<AccessToken> {
        let now = Utc::now().timestamp();
        self.cached
            .read()
            .await
            .as_ref()
            .filter(|c| c.use_until > now)
            .map(|c| c.token.clone())
    }

    async fn remember(&self, stored: &StoredToken) -> AccessToken {
        let token = AccessToken(Arc::from(stored.token.as_str()));
        *self.cached.write().await = Some(Cached {
            token: token.clone(),
            use_until: use_until(stored),
        });
        token
    }

    async fn fetch_and_store(&self, force: bool) -> Result<AccessToken, TokenError> {
        let fetched = self.fetch_with_retry(force).await?;
        let now = Utc::now().timestamp();
        let stored = StoredToken {
            token: fetched.token,
            fetched_at: now,
            expires_at: now + fetched.expires_in,
        };
        self.store
            .save_token(&self.appid, self.source.as_str(), &stored)
            .await?;
        crate::stats::token_refresh();
        tracing::info!(
            appid = %self.appid,
            source = self.source.as_str(),
            expires_in = fetched.expires_in,
            "fetched a new access_token"
        );
        Ok(self.remember(&stored).await)
    }

    async fn fetch_with_retry(&self, force: bool) -> Result<FetchedToken, TokenError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            self.fetches.fetch_add(1, Ordering::Relaxed);
            let err = match self.client.fetch_token(self.source, force).await {
                Ok(t) => return Ok(t),
                Err(e) => e,
            };
            let wait = match &err {
                WechatError::Api { errcode, .. } => match classify_token(*errcode) {
                    TokenFailure::Transient(after) => Some(after.max(Duration::from_secs(1))),
                    TokenFailure::Fatal => None,
                },
                WechatError::Transport(_) => Some(Duration::from_secs(1)),
                WechatError::Http(code) if *code >= 500 => Some(Duration::from_secs(1)),
                _ => None,
            };
            match wait {
                Some(wait) if attempt < FETCH_ATTEMPTS && wait <= Duration::from_secs(5) => {
                    tracing::warn!(error = %err, attempt, "token request failed; retrying");
                    tokio::time::sleep(wait * attempt).await;
                }
                _ => {
                    let hint = match &err {
                        WechatError::Api { errcode, .. } => format!(" ({})", token_hint(*errcode)),
                        WechatError::Http(404) => " (check [wechat] api_base)".into(),
                        WechatError::Http(300..=399) => {
                            " (a redirect, not followed: check [wechat] api_base)".into()
                        }
                        _ => String::new(),
                    };
                    crate::stats::token_failure();
                    return Err(TokenError::Wechat { source: err, hint });
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_is_dropped_before_wechat_expires_it() {
        let t = |life: i64| StoredToken {
            token: "t".into(),
            fetched_at: 1000,
            expires_at: 1000 + life,
        };
        assert_eq!(use_until(&t(7200)), 1000 + 7200 - 120);
        // A stable token can come back with 300 s: use it for 180 s.
        assert_eq!(use_until(&t(300)), 1000 + 180);
        assert_eq!(use_until(&t(60)), 1000 + 30);
    }

    #[test]
    fn debug_output_hides_the_token() {
        let t = AccessToken(Arc::from("SECRET_TOKEN_VALUE"));
        assert!(!format!("{t:?}").contains("SECRET"));
    }
}
