//! A CSV import of recipients: all-or-nothing, in one transaction, written in
//! chunks, with a row repeated in the file reported by its line.

use super::recipients::StoredRecipient;
use super::sets::{bind_recipients, recipient_set};
use super::{Context, StorageError, Store, now};

impl Store {
    /// Starts an all-or-nothing bulk write of recipients from `source`.
    pub async fn begin_import(&self, source: &str) -> Result<RecipientImport, StorageError> {
        Ok(RecipientImport {
            tx: self.write().await?,
            source: source.to_owned(),
            stamp: now(),
            buffer: Vec::with_capacity(IMPORT_CHUNK),
            written: 0,
            duplicates: Vec::new(),
        })
    }
}

/// Rows per statement in an import.
const IMPORT_CHUNK: usize = 200;

/// A bulk write of recipients in one transaction; dropped without
/// [`RecipientImport::finish`]`(true)`, nothing of it is kept.
pub struct RecipientImport {
    tx: super::WriteTx,
    source: String,
    /// This import's `updated_at`: a row already carrying it came earlier in the file.
    stamp: String,
    buffer: Vec<(u64, StoredRecipient)>,
    written: u64,
    duplicates: Vec<(u64, String)>,
}

/// What an import wrote, or why it was rolled back.
#[derive(Debug, Default)]
pub struct ImportReport {
    /// Rows written (zero when rolled back).
    pub written: u64,
    /// `(line, openid)` of rows whose openid came earlier in the same import.
    pub duplicates: Vec<(u64, String)>,
}

impl RecipientImport {
    /// Adds the recipient read at `line`.
    pub async fn add(&mut self, line: u64, row: StoredRecipient) -> Result<(), StorageError> {
        self.buffer.push((line, row));
        if self.buffer.len() == IMPORT_CHUNK {
            self.flush().await?;
        }
        Ok(())
    }

    async fn flush(&mut self) -> Result<(), StorageError> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let sql = format!(
            "{} INSERT INTO recipients (job, openid, name, vars, source, active, created_at, updated_at) \
             SELECT job, openid, name, vars, $2, 1, $3, $3 FROM r WHERE true \
             ON CONFLICT (job, openid) DO UPDATE SET name = excluded.name, vars = excluded.vars, \
             source = excluded.source, active = 1, updated_at = excluded.updated_at \
             WHERE recipients.updated_at <> excluded.updated_at RETURNING openid",
            recipient_set(1)
        );
        // A statement may not write one row twice (PostgreSQL refuses it), so a
        // repeat within the chunk is a duplicate before the statement runs; one
        // from an earlier chunk is told by the stamp.
        let mut firsts = std::collections::HashSet::with_capacity(self.buffer.len());
        let repeat: Vec<bool> = self
            .buffer
            .iter()
            .map(|(_, w)| !firsts.insert((w.job.as_ref(), w.openid.as_ref())))
            .collect();
        drop(firsts);
        let rows: Vec<&StoredRecipient> = self
            .buffer
            .iter()
            .zip(&repeat)
            .filter(|(_, repeat)| !**repeat)
            .map(|((_, w), _)| w)
            .collect();
        let q = bind_recipients(sqlx::query_scalar(sqlx::AssertSqlSafe(sql)), &rows)
            .bind(&self.source)
            .bind(&self.stamp);
        let returned = q
            .fetch_all(&mut *self.tx)
            .await
            .context("import recipients")?;
        // A row that conflicted with one of this import's own rows returns nothing.
        let mut returned: std::collections::HashMap<String, usize> =
            returned.into_iter().fold(Default::default(), |mut m, o| {
                *m.entry(o).or_default() += 1;
                m
            });
        for ((line, w), repeat) in self.buffer.drain(..).zip(repeat) {
            match returned.get_mut(w.openid.as_ref()) {
                Some(n) if *n > 0 && !repeat => {
                    *n -= 1;
                    self.written += 1;
                }
                _ => self.duplicates.push((line, w.openid.to_string())),
            }
        }
        Ok(())
    }

    /// Writes what is buffered, then commits if `commit` and no duplicate was found;
    /// otherwise rolls everything back.
    pub async fn finish(mut self, commit: bool) -> Result<ImportReport, StorageError> {
        self.flush().await?;
        if !commit || !self.duplicates.is_empty() {
            self.tx.rollback().await.context("roll back an import")?;
            return Ok(ImportReport {
                written: 0,
                duplicates: self.duplicates,
            });
        }
        self.tx.commit().await.context("commit an import")?;
        Ok(ImportReport {
            written: self.written,
            duplicates: Vec::new(),
        })
    }
}
