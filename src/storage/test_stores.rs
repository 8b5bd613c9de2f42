//! Stores for tests of behaviour that must hold on every backend: SQLite in
//! memory, and a fresh database on the test process's PostgreSQL cluster
//! (skipped, saying why, where the server binaries are missing; a failure
//! instead under `WXPUSH_REQUIRE_POSTGRES=1`).

use super::Store;

/// One store per backend this machine has.
pub(crate) async fn each_backend(test: &str) -> Vec<Store> {
    let mut stores = vec![Store::open("sqlite::memory:").await.unwrap()];
    if let Some(url) = postgres_url(test) {
        stores.push(Store::open(&url).await.unwrap());
    }
    stores
}

/// A fresh PostgreSQL database for `test`, or `None` (with a note) without one.
pub(crate) fn postgres_url(test: &str) -> Option<String> {
    testpg::cluster_or_skip(test).map(testpg::Cluster::database)
}
