//! A write transaction that never hands a connection back to the pool while it is
//! still inside a transaction.
//!
//! sqlx's own `Transaction` counts its depth and, when COMMIT fails after the
//! database has already rolled back on its own (SQLite does on a full disk; so
//! does PostgreSQL on a deferred constraint) (a full disk does that), its ROLLBACK fails
//! too and the count is never reset: the pooled connection then refuses every
//! later `BEGIN` ("non-zero transaction depth"). Here BEGIN and COMMIT are plain
//! statements, and a connection whose transaction did not end cleanly is closed
//! instead of returned; closing it rolls back whatever SQLite still holds.

use std::ops::{Deref, DerefMut};

use super::db::{Conn, Db, Pool};
use super::dialect::Dialect;
use sqlx::pool::PoolConnection;

/// An open write transaction on one pooled connection.
pub(crate) struct WriteTx {
    conn: PoolConnection<Db>,
    open: bool,
}

impl WriteTx {
    /// Takes a connection and begins (on SQLite, with the write lock at once).
    pub(crate) async fn begin(pool: &Pool, dialect: &dyn Dialect) -> Result<Self, sqlx::Error> {
        let mut conn = pool.acquire().await?;
        if let Err(e) = sqlx::query(dialect.begin_write()).execute(&mut *conn).await {
            conn.close_on_drop();
            return Err(e);
        }
        Ok(Self { conn, open: true })
    }

    /// Commits; on failure the connection is closed rather than reused.
    pub(crate) async fn commit(mut self) -> Result<(), sqlx::Error> {
        sqlx::query("COMMIT").execute(&mut *self.conn).await?;
        self.open = false;
        Ok(())
    }

    /// Rolls back; on failure the connection is closed rather than reused.
    pub(crate) async fn rollback(mut self) -> Result<(), sqlx::Error> {
        sqlx::query("ROLLBACK").execute(&mut *self.conn).await?;
        self.open = false;
        Ok(())
    }
}

impl Drop for WriteTx {
    fn drop(&mut self) {
        if self.open {
            self.conn.close_on_drop();
        }
    }
}

impl Deref for WriteTx {
    type Target = Conn;

    fn deref(&self) -> &Conn {
        &self.conn
    }
}

impl DerefMut for WriteTx {
    fn deref_mut(&mut self) -> &mut Conn {
        &mut self.conn
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::Store;

    /// A table whose foreign key is checked only at COMMIT, so that COMMIT fails.
    async fn store_with_deferred_check() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("t.db").display());
        let store = Store::open(&url).await.unwrap();
        sqlx::query(
            "CREATE TABLE parent (id INTEGER PRIMARY KEY); \
             CREATE TABLE child (p INTEGER REFERENCES parent (id) DEFERRABLE INITIALLY DEFERRED)",
        )
        .execute(&store.pool)
        .await
        .unwrap();
        (dir, store)
    }

    #[tokio::test]
    async fn a_failed_commit_leaves_no_pooled_connection_inside_a_transaction() {
        let (_dir, store) = store_with_deferred_check().await;
        for _ in 0..8 {
            let mut tx = WriteTx::begin(&store.pool, store.dialect).await.unwrap();
            sqlx::query("INSERT INTO child (p) VALUES (42)")
                .execute(&mut *tx)
                .await
                .unwrap();
            assert!(
                tx.commit().await.is_err(),
                "the deferred check fails COMMIT"
            );
        }
        // Every connection the pool hands out now can begin and commit, and nothing
        // of the failed transactions was kept.
        for _ in 0..8 {
            let mut tx = WriteTx::begin(&store.pool, store.dialect).await.unwrap();
            sqlx::query("INSERT INTO parent (id) VALUES (NULL)")
                .execute(&mut *tx)
                .await
                .unwrap();
            tx.commit().await.unwrap();
        }
        let children: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM child")
            .fetch_one(&store.pool)
            .await
            .unwrap();
        assert_eq!(children, 0);
    }

    #[tokio::test]
    async fn a_transaction_dropped_half_way_is_rolled_back_and_its_connection_closed() {
        let (_dir, store) = store_with_deferred_check().await;
        {
            let mut tx = WriteTx::begin(&store.pool, store.dialect).await.unwrap();
            sqlx::query("INSERT INTO parent (id) VALUES (7)")
                .execute(&mut *tx)
                .await
                .unwrap();
        }
        for _ in 0..8 {
            WriteTx::begin(&store.pool, store.dialect)
                .await
                .unwrap()
                .commit()
                .await
                .unwrap();
        }
        let parents: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM parent")
            .fetch_one(&store.pool)
            .await
            .unwrap();
        assert_eq!(parents, 0);
    }
}
