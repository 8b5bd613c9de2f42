//! The account's template list, cached in the database: a template's kind
//! (one-time or long-term) decides how consent gates its sends.

use std::sync::Arc;

use super::{RemoteTemplate, TokenError, TokenManager, WechatClient, WechatError};
use crate::domain::{TemplateId, TemplateKind};
use crate::storage::{StorageError, Store, TemplateRow};

/// Why the template list could not be had.
#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    /// No access_token.
    #[error(transparent)]
    Token(#[from] TokenError),
    /// WeChat refused or could not be reached.
    #[error("cannot list the account's templates: {0}")]
    Wechat(#[from] WechatError),
    /// The cache failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// Looks templates up, fetching the list from WeChat only when a template is not
/// in the cache (a template's kind never changes once it exists).
pub struct TemplateCatalog {
    client: WechatClient,
    tokens: Arc<TokenManager>,
    store: Store,
}

impl TemplateCatalog {
    /// A catalog over `store`'s cache.
    pub fn new(client: WechatClient, tokens: Arc<TokenManager>, store: Store) -> Self {
        Self {
            client,
            tokens,
            store,
        }
    }

    /// Fetches the list from WeChat and replaces the cache with it.
    pub async fn refresh(&self) -> Result<Vec<RemoteTemplate>, TemplateError> {
        let mut token = self.tokens.get().await?;
        let mut replaced = false;
        let list = loop {
            match self.client.templates(token.expose()).await {
                Err(WechatError::Api { errcode, .. })
                    if !replaced && super::errcode::token_rejected(errcode) =>
                {
                    replaced = true;
                    token = self.tokens.replace(&token).await?;
                }
                other => break other?,
            }
        };
        let rows: Vec<TemplateRow> = list
            .iter()
            .filter_map(|t| {
                Some(TemplateRow {
                    template_id: t.template_id.clone(),
                    kind: t.kind?,
                    title: t.title.clone(),
                    keywords: t.keywords.clone(),
                })
            })
            .collect();
        self.store
            .save_templates(self.client.appid(), &rows)
            .await?;
        Ok(list)
    }

    /// The cached template, fetching the list when it is missing. `Ok(None)` when
    /// WeChat does not list it.
    pub async fn lookup(
        &self,
        template_id: &TemplateId,
    ) -> Result<Option<TemplateRow>, TemplateError> {
        if let Some((t, _)) = self
            .store
            .template(self.client.appid(), template_id)
            .await?
        {
            return Ok(Some(t));
        }
        self.refresh().await?;
        Ok(self
            .store
            .template(self.client.appid(), template_id)
            .await?
            .map(|(t, _)| t))
    }

    /// The template's kind, or `None` when it cannot be known now (the reason is
    /// logged; the caller then gates sends as for a long-term template).
    pub async fn kind(&self, template_id: &TemplateId) -> Option<TemplateKind> {
        match self.lookup(template_id).await {
            Ok(Some(t)) => Some(t.kind),
            Ok(None) => {
                tracing::warn!(
                    template_id = template_id.as_ref(),
                    "the account's template list does not have this template"
                );
                None
            }
            Err(e) => {
                tracing::warn!(
                    template_id = template_id.as_ref(),
                    error = %e,
                    "cannot tell whether the template is one-time"
                );
                None
            }
        }
    }
}
