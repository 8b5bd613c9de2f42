//! The cached access_token, shared by every process that uses the database.

use sqlx::Row;

use super::{Context, StorageError, Store};
use crate::domain::AppId;

/// A cached token and its lifetime (unix seconds).
#[derive(Clone, PartialEq, Eq)]
pub struct StoredToken {
    /// The token itself. Never log it.
    pub token: String,
    /// When it was fetched.
    pub fetched_at: i64,
    /// When WeChat said it expires.
    pub expires_at: i64,
}

impl std::fmt::Debug for StoredToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredToken")
            .field("token", &"[redacted]")
            .field("fetched_at", &self.fetched_at)
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

/// Held while this process refreshes the token, so that instances sharing a
/// PostgreSQL database fetch one token between them, not one each.
pub struct TokenRefresh {
    conn: Option<(sqlx::pool::PoolConnection<super::db::Db>, &'static str)>,
    key: String,
}

impl TokenRefresh {
    /// Lets the next instance in.
    pub async fn release(mut self) {
        if let Some((mut conn, unlock)) = self.conn.take() {
            let unlocked = sqlx::query(unlock)
                .bind(&self.key)
                .execute(&mut *conn)
                .await;
            if unlocked.is_err() {
                // The session ends with the connection, and its lock with it.
                drop(conn.detach());
            }
        }
    }
}

impl Drop for TokenRefresh {
    fn drop(&mut self) {
        // Not released (a panic, a cancelled task): closing the session is what
        // frees a session lock; returned to the pool, the lock would stay held.
        if let Some((conn, _)) = self.conn.take() {
            drop(conn.detach());
        }
    }
}

impl Store {
    /// Waits until this process alone may refresh `appid`'s token among the
    /// instances sharing the database (PostgreSQL's advisory lock; on SQLite a
    /// refresh by two local processes is harmless with the stable endpoint).
    pub async fn lock_token_refresh(&self, appid: &AppId) -> Result<TokenRefresh, StorageError> {
        let key = format!("wxpush token {appid}");
        let Some(statements) = self.dialect.token_lock() else {
            return Ok(TokenRefresh { conn: None, key });
        };
        let mut conn = self
            .pool
            .acquire()
            .await
            .context("take a connection for the token lock")?;
        sqlx::query(statements.lock)
            .bind(&key)
            .execute(&mut *conn)
            .await
            .context("wait for the token lock")?;
        Ok(TokenRefresh {
            conn: Some((conn, statements.unlock)),
            key,
        })
    }

    /// The cached token for `appid` from `source`, if any.
    pub async fn load_token(
        &self,
        appid: &AppId,
        source: &str,
    ) -> Result<Option<StoredToken>, StorageError> {
        let row = sqlx::query("SELECT token, fetched_at, expires_at FROM access_tokens WHERE appid = $1 AND source = $2")
            .bind(appid.as_ref())
            .bind(source)
            .fetch_optional(&self.pool)
            .await
            .context("read the cached access_token")?;
        Ok(row.map(|r| StoredToken {
            token: r.get("token"),
            fetched_at: r.get("fetched_at"),
            expires_at: r.get("expires_at"),
        }))
    }

    /// Caches a freshly fetched token.
    pub async fn save_token(
        &self,
        appid: &AppId,
        source: &str,
        t: &StoredToken,
    ) -> Result<(), StorageError> {
        sqlx::query(
            "INSERT INTO access_tokens (appid, source, token, fetched_at, expires_at) VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (appid, source) DO UPDATE SET token = excluded.token, \
             fetched_at = excluded.fetched_at, expires_at = excluded.expires_at",
        )
        .bind(appid.as_ref())
        .bind(source)
        .bind(&t.token)
        .bind(t.fetched_at)
        .bind(t.expires_at)
        .execute(&self.pool)
        .await
        .context("cache the access_token")?;
        Ok(())
    }

    /// Drops the cached token only if it is still `token` (compare-and-swap), so a
    /// token another process just fetched is not thrown away.
    pub async fn invalidate_token(
        &self,
        appid: &AppId,
        source: &str,
        token: &str,
    ) -> Result<bool, StorageError> {
        let r = sqlx::query(
            "DELETE FROM access_tokens WHERE appid = $1 AND source = $2 AND token = $3",
        )
        .bind(appid.as_ref())
        .bind(source)
        .bind(token)
        .execute(&self.pool)
        .await
        .context("invalidate the access_token")?;
        Ok(r.rows_affected() > 0)
    }

    /// Times (unix seconds) of force refreshes at or after `since`, newest first.
    pub async fn force_refreshes_since(
        &self,
        appid: &AppId,
        since: i64,
    ) -> Result<Vec<i64>, StorageError> {
        let rows = sqlx::query(
            "SELECT at FROM token_force_refreshes WHERE appid = $1 AND at >= $2 ORDER BY at DESC",
        )
        .bind(appid.as_ref())
        .bind(since)
        .fetch_all(&self.pool)
        .await
        .context("read force refreshes")?;
        Ok(rows.into_iter().map(|r| r.get("at")).collect())
    }

    /// Remembers a force refresh (they are limited per day).
    pub async fn record_force_refresh(&self, appid: &AppId, at: i64) -> Result<(), StorageError> {
        sqlx::query("INSERT INTO token_force_refreshes (appid, at) VALUES ($1, $2)")
            .bind(appid.as_ref())
            .bind(at)
            .execute(&self.pool)
            .await
            .context("record a force refresh")?;
        Ok(())
    }
}
