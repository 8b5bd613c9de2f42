//! What every statement runs on: sqlx's `Any` driver, so that one set of
//! statements serves SQLite and PostgreSQL, and the backend a URL names.

/// The sqlx driver the statements are written against.
pub(super) type Db = sqlx::Any;
/// A pool of connections to the database.
pub(super) type Pool = sqlx::AnyPool;
/// One connection, inside a transaction.
pub(super) type Conn = sqlx::AnyConnection;
/// A row read back.
pub(super) type Row = sqlx::any::AnyRow;
/// A statement with its bound values.
pub(super) type Query<'q> = sqlx::query::Query<'q, Db, sqlx::any::AnyArguments>;
/// A statement returning one column, with its bound values.
pub(super) type QueryScalar<'q, T> = sqlx::query::QueryScalar<'q, Db, T, sqlx::any::AnyArguments>;

/// Which database a store is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Backend {
    /// One file on one machine (the default).
    Sqlite,
    /// A PostgreSQL server, shared by any number of wxpush instances.
    Postgres,
}

impl Backend {
    /// The backend `url` names, if wxpush has one for it.
    pub(super) fn of_url(url: &str) -> Option<Self> {
        let scheme = url.split_once(':').map(|(s, _)| s)?;
        match scheme {
            "sqlite" => Some(Self::Sqlite),
            "postgres" | "postgresql" => Some(Self::Postgres),
            _ => None,
        }
    }
}

/// Registers the drivers `Any` dispatches to (once per process).
pub(super) fn install_drivers() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(sqlx::any::install_default_drivers);
}
