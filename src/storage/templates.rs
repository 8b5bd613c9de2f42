//! The account's templates as gettemplate lists them, cached: a template's kind
//! never changes once it exists.

use sqlx::Row;

use super::consents::TemplateRow;
use super::{Context, StorageError, Store, now};
use crate::domain::TemplateKind;

impl Store {
    /// Replaces the cached template list with a freshly fetched one.
    pub async fn save_templates(&self, templates: &[TemplateRow]) -> Result<(), StorageError> {
        let mut tx = self.write().await?;
        let now = now();
        sqlx::query("DELETE FROM templates")
            .execute(&mut *tx)
            .await
            .context("replace the template list")?;
        for t in templates {
            sqlx::query(
                "INSERT INTO templates (template_id, kind, title, keywords, fetched_at) VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(&t.template_id)
            .bind(t.kind.as_str())
            .bind(&t.title)
            .bind(serde_json::to_string(&t.keywords).expect("strings serialise"))
            .bind(&now)
            .execute(&mut *tx)
            .await
            .context("save the template list")?;
        }
        tx.commit().await.context("commit the template list")?;
        Ok(())
    }

    /// The cached template `id`, and when the list it came from was fetched.
    pub async fn template(&self, id: &str) -> Result<Option<(TemplateRow, String)>, StorageError> {
        let row = sqlx::query(
            "SELECT template_id, kind, title, keywords, fetched_at FROM templates WHERE template_id = $1",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await
        .context("read the template list")?;
        Ok(row.and_then(|r| {
            let kind = TemplateKind::parse(r.get("kind"))?;
            let keywords: String = r.get("keywords");
            Some((
                TemplateRow {
                    template_id: r.get("template_id"),
                    kind,
                    title: r.get("title"),
                    keywords: serde_json::from_str(&keywords).unwrap_or_default(),
                },
                r.get("fetched_at"),
            ))
        }))
    }
}
