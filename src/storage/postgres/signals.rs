//! Instances tell each other, through PostgreSQL's `NOTIFY`, that a job's shared
//! run has work or has changed: a drain began (others join it at once, instead
//! of at their next join check), an instance finished its share or a rescue
//! gave deliveries back (a drain waiting on the others looks again at once).
//!
//! Only a hint: every waiter still looks on its own timer, so a notification
//! lost (the listening connection dropped, the server restarted) costs time,
//! never a delivery.

use std::sync::{Arc, Mutex};

use tokio::sync::broadcast;

/// The channel every instance listens on; the payload is a job's name, or empty
/// for "any job" (an instance left, giving back what it had taken).
pub(crate) const CHANNEL: &str = "wxpush_runs";

/// The payload that says a send on demand was accepted and is due: no job's
/// name (a name has no `:`), so a run's waiter passes it over.
pub(in crate::storage) const SENDS: &str = ":sends";

/// Which job a notification is about; `None`: any job may have changed (the
/// listener reconnected or fell behind, so some may have been missed).
type Signal = Option<Arc<str>>;

/// Notifications waiting for a slow waiter before it is told it fell behind.
const BACKLOG: usize = 256;

/// The process's listening connection, started by the first waiter.
pub(crate) struct Signals {
    /// Where to connect; it may carry the password, so it is never shown.
    url: String,
    live: Mutex<Option<(broadcast::Sender<Signal>, tokio::task::JoinHandle<()>)>>,
}

impl std::fmt::Debug for Signals {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Signals")
    }
}

impl Signals {
    /// Signals `job` (empty: any job) to every listening instance.
    pub(crate) async fn notify(
        &self,
        pool: &crate::storage::db::Pool,
        job: &str,
    ) -> Result<(), sqlx::Error> {
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(CHANNEL)
            .bind(job)
            .execute(pool)
            .await
            .map(drop)
    }

    /// Signals from the database at `url`; nothing connects until `subscribe`.
    pub(crate) fn new(url: &str) -> Self {
        Self {
            url: url.to_owned(),
            live: Mutex::new(None),
        }
    }

    /// A receiver of what instances signal from now on. Starts the listener on
    /// the current runtime when none runs (the first waiter, or the runtime of
    /// the previous one has ended, as a test's does).
    pub(crate) fn subscribe(&self) -> broadcast::Receiver<Signal> {
        let mut live = self.live.lock().expect("poisoned");
        if let Some((tx, task)) = live.as_ref()
            && !task.is_finished()
        {
            return tx.subscribe();
        }
        let (tx, rx) = broadcast::channel(BACKLOG);
        let task = tokio::spawn(listen(self.url.clone(), tx.clone()));
        *live = Some((tx, task));
        rx
    }

    /// Stops listening (the store is closing); a later waiter starts again.
    pub(crate) fn close(&self) {
        if let Some((_, task)) = self.live.lock().expect("poisoned").take() {
            task.abort();
        }
    }
}

/// Listens on `CHANNEL` and passes each notification on, reconnecting after a
/// lost connection (and then telling every waiter to look again).
async fn listen(url: String, tx: broadcast::Sender<Signal>) {
    let mut warned = false;
    loop {
        match connect(&url).await {
            Ok(mut listener) => {
                warned = false;
                // Whatever was signalled before this connection listened is lost.
                let _ = tx.send(None);
                loop {
                    match listener.try_recv().await {
                        Ok(Some(n)) => {
                            let job = n.payload();
                            let _ = tx.send((!job.is_empty()).then(|| Arc::from(job)));
                        }
                        // Lost; sqlx reconnects at the next call.
                        Ok(None) => {
                            let _ = tx.send(None);
                        }
                        Err(e) => {
                            tracing::debug!(error = %e, "the listening connection failed");
                            break;
                        }
                    }
                }
            }
            Err(e) if !warned => {
                warned = true;
                tracing::warn!(error = %e, "cannot listen for other instances' runs; looking on a timer only");
            }
            Err(_) => {}
        }
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    }
}

async fn connect(url: &str) -> Result<sqlx::postgres::PgListener, sqlx::Error> {
    let mut listener = sqlx::postgres::PgListener::connect(url).await?;
    listener.listen(CHANNEL).await?;
    Ok(listener)
}

/// What a waiter is woken by.
pub struct RunChanges(pub(crate) Option<broadcast::Receiver<Signal>>);

impl RunChanges {
    /// Forgets what was signalled so far: the caller is about to look for
    /// itself, so only what comes after that should wake it (its own signals
    /// and others' from before would each cost it a needless look).
    pub fn clear(&mut self) {
        let Some(rx) = self.0.as_mut() else {
            return;
        };
        loop {
            match rx.try_recv() {
                Ok(_) | Err(broadcast::error::TryRecvError::Lagged(_)) => {}
                Err(_) => return,
            }
        }
    }

    /// Resolves when another process may have accepted a due send on demand
    /// (or a signal may have been missed); never on SQLite.
    pub async fn sends_added(&mut self) {
        let Some(rx) = self.0.as_mut() else {
            return std::future::pending().await;
        };
        loop {
            match rx.recv().await {
                Ok(Some(j)) if &*j != SENDS => continue,
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => return,
                Err(broadcast::error::RecvError::Closed) => {
                    self.0 = None;
                    return std::future::pending().await;
                }
            }
        }
    }

    /// Resolves when another instance may have changed `job`'s runs since the
    /// last call (or since this was made); never on SQLite, where no other
    /// process shares a run, nor once the listener has gone with its runtime.
    pub async fn changed(&mut self, job: &crate::domain::JobName) {
        let Some(rx) = self.0.as_mut() else {
            return std::future::pending().await;
        };
        loop {
            match rx.recv().await {
                Ok(Some(j)) if &*j != job.as_ref() => continue,
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => return,
                Err(broadcast::error::RecvError::Closed) => {
                    self.0 = None;
                    return std::future::pending().await;
                }
            }
        }
    }
}
