//! WeChat's pushes: consent events applied once (their keys remembered for a
//! while), and sent events kept by msgid for `runs show`.

use super::consents::apply;
use super::{Context, StorageError, Store, now};
use crate::domain::{AppId, ConsentResult, ConsentSource, OpenId, TemplateId};

impl Store {
    /// Applies one pushed event of the mini program `appid` unless `event_key`
    /// was applied before (WeChat retries pushes). True when it was new.
    pub async fn apply_consent_event(
        &self,
        appid: &AppId,
        event_key: &str,
        openid: &OpenId,
        template_id: &TemplateId,
        result: ConsentResult,
    ) -> Result<bool, StorageError> {
        let mut tx = self.write().await?;
        let now = now();
        let fresh = sqlx::query(
            "INSERT INTO consent_events (event_key, received_at) VALUES ($1, $2) ON CONFLICT (event_key) DO NOTHING",
        )
        // Keys are kept per app: one push's sender and time mean nothing in another.
        .bind(format!("{appid}|{event_key}"))
        .bind(&now)
        .execute(&mut *tx)
        .await
        .context("record an event")?
        .rows_affected()
            == 1;
        if fresh {
            apply(
                &mut tx,
                appid,
                openid,
                template_id,
                result,
                ConsentSource::Event,
            )
            .await?;
        }
        tx.commit().await.context("commit an event")?;
        Ok(fresh)
    }

    /// Forgets which pushes were applied before `before`: WeChat retries a push
    /// within seconds, so old keys only take space. Returns how many went.
    pub async fn prune_consent_events(
        &self,
        before: chrono::DateTime<chrono::Utc>,
    ) -> Result<u64, StorageError> {
        let r = sqlx::query("DELETE FROM consent_events WHERE received_at < $1")
            .bind(super::ts(before))
            .execute(&self.pool)
            .await
            .context("prune applied events")?;
        Ok(r.rows_affected())
    }

    /// Records a `subscribe_msg_sent_event` (once per msgid). True when it was new.
    pub async fn record_sent_event(
        &self,
        appid: &AppId,
        msgid: u64,
        openid: &OpenId,
        template_id: &TemplateId,
        error_code: i64,
        error_status: &str,
    ) -> Result<bool, StorageError> {
        let r = sqlx::query(
            "INSERT INTO sent_events (appid, msgid, openid, template_id, error_code, error_status, received_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (appid, msgid) DO NOTHING",
        )
        .bind(appid.as_ref())
        .bind(msgid.to_string())
        .bind(openid.as_ref())
        .bind(template_id.as_ref())
        .bind(error_code)
        .bind(error_status)
        .bind(now())
        .execute(&self.pool)
        .await
        .context("record a sent event")?;
        Ok(r.rows_affected() == 1)
    }
}
