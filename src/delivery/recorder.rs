//! Group commit: claims, marks and outcomes from the senders of every run in the
//! process are written by one task per store, many per transaction, so that
//! recording every delivery costs few commits and concurrent runs never contend
//! for the database's write lock among themselves.
//!
//! With one writer per run, 100 runs at once meant 100 tasks taking turns at
//! SQLite's single write lock through the pool's connections, each waiting in
//! SQLite's busy handler (sleeps of milliseconds): most of the time went there.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use backon::BackoffBuilder;
use tokio::sync::{mpsc, oneshot};

use crate::domain::{ConsentGate, Outcome};
use crate::storage::{Held, StorageError, Store};

/// Most operations folded into one batch.
const MAX_BATCH: usize = 2048;

type Ack<T> = oneshot::Sender<Result<T, Arc<StorageError>>>;

/// The first wait before outcomes the database refused are written again, and
/// the longest: a database back after a restart is written to within a second.
const REWRITE_MIN: Duration = Duration::from_millis(200);
const REWRITE_MAX: Duration = Duration::from_secs(5);

/// What one run's operations share: its consent gate, and its outcomes that
/// the database has not taken yet.
struct Run {
    gate: ConsentGate,
    /// Outcomes of this run kept for a rewrite (see `Kept`).
    unwritten: AtomicUsize,
    /// Why the last of them failed.
    error: Mutex<Option<Arc<StorageError>>>,
    runs: Arc<AtomicUsize>,
}

impl Run {
    fn new(gate: ConsentGate, runs: Arc<AtomicUsize>) -> Self {
        runs.fetch_add(1, Ordering::Relaxed);
        Self {
            gate,
            unwritten: AtomicUsize::new(0),
            error: Mutex::new(None),
            runs,
        }
    }

    /// Ok when every outcome of this run queued so far is committed.
    fn written(&self) -> Result<(), Arc<StorageError>> {
        if self.unwritten.load(Ordering::Acquire) == 0 {
            return Ok(());
        }
        let error = self.error.lock().expect("poisoned").clone();
        Err(error.expect("an unwritten outcome has its error"))
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        self.runs.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Outcomes a batch failed to write (the database was down, restarted, locked
/// or full), kept until it takes them. Each is an answer this process alone
/// knows: its delivery stays `sending` under this instance meanwhile, and
/// writing it later records what really happened (sent, failed, or pending
/// for a request never made) where a crash recovery could only say `unknown`.
#[derive(Clone, Default)]
struct Kept {
    outcomes: Arc<Mutex<Vec<KeptOutcome>>>,
    /// Held while kept outcomes are being written again, so that `settle`
    /// returns only once a rewrite the writer task had under way is over.
    rewriting: Arc<tokio::sync::Mutex<()>>,
}

/// An outcome and the run it belongs to.
type KeptOutcome = (Arc<Run>, Outcome);

/// Kept outcomes taken out to be written, put back if dropped while `items`
/// still holds them.
struct Restore<'a> {
    kept: &'a Kept,
    items: Option<Vec<KeptOutcome>>,
}

impl Drop for Restore<'_> {
    fn drop(&mut self) {
        for (run, outcome) in self.items.take().into_iter().flatten() {
            self.kept.push(run, outcome);
        }
    }
}

impl Kept {
    fn push(&self, run: Arc<Run>, outcome: Outcome) {
        self.outcomes.lock().expect("poisoned").push((run, outcome));
    }

    fn take(&self) -> Vec<KeptOutcome> {
        std::mem::take(&mut *self.outcomes.lock().expect("poisoned"))
    }

    fn len(&self) -> usize {
        self.outcomes.lock().expect("poisoned").len()
    }
}

enum Kind {
    Claim(Vec<i64>, Ack<HashSet<i64>>),
    Sending(i64, Ack<bool>),
    /// An outcome; true when it is one kept after a failed batch, written again.
    Record(Outcome, bool),
    Flush(Ack<()>),
}

struct Op {
    run: Arc<Run>,
    kind: Kind,
}

/// The process's writer for one store; every run's `Recorder` comes from it.
/// Cheap to clone. The writer task runs while some run's recorder exists.
#[derive(Clone)]
pub struct RecordWriter {
    store: Store,
    live: Arc<Mutex<Option<mpsc::WeakUnboundedSender<Op>>>>,
    runs: Arc<AtomicUsize>,
    kept: Kept,
    /// Runs a drain of this process is on (see `enter`).
    draining: Arc<Mutex<HashSet<i64>>>,
}

/// A run entered by one drain of this process, until dropped.
pub struct Entered {
    run_id: i64,
    draining: Arc<Mutex<HashSet<i64>>>,
}

impl Drop for Entered {
    fn drop(&mut self) {
        self.draining.lock().expect("poisoned").remove(&self.run_id);
    }
}

impl RecordWriter {
    /// A writer for `store`; its task starts with the first run.
    pub fn new(store: Store) -> Self {
        Self {
            store,
            live: Arc::default(),
            runs: Arc::default(),
            kept: Kept::default(),
            draining: Arc::default(),
        }
    }

    /// Enters `run_id` for one drain of this process; `None` while another
    /// drain of this process is on it. Within a process, its job's lock
    /// (`busy` in the scheduler) keeps two drains of one run apart, but a
    /// reload that changes the job starts a new loop while the old one's
    /// drain finishes: this is what keeps the new one off that run (and its
    /// crash recovery off the old one's requests in flight).
    pub fn enter(&self, run_id: i64) -> Option<Entered> {
        self.draining
            .lock()
            .expect("poisoned")
            .insert(run_id)
            .then(|| Entered {
                run_id,
                draining: Arc::clone(&self.draining),
            })
    }

    /// Outcomes kept because the database failed to take them, not yet written.
    #[cfg(test)]
    fn unwritten(&self) -> usize {
        self.kept.len()
    }

    /// Writes the outcomes kept from failed batches now; an error while the
    /// database still refuses them (they stay kept). A drain calls this before
    /// it resumes a run, so that its crash recovery never takes one of this
    /// process's answered requests for an interrupted one.
    pub async fn settle(&self) -> Result<(), StorageError> {
        let _rewriting = self.kept.rewriting.lock().await;
        let kept = self.kept.take();
        if kept.is_empty() {
            return Ok(());
        }
        // Put back if this is dropped before the write ends (a caller's
        // timeout): a kept answer is never lost by waiting less for it.
        let mut restore = Restore {
            kept: &self.kept,
            items: Some(kept.clone()),
        };
        let mut ops = kept
            .into_iter()
            .map(|(run, outcome)| Op {
                run,
                kind: Kind::Record(outcome, true),
            })
            .collect();
        let (mut groups, mut flushes) = (Vec::new(), Vec::new());
        sort(&mut ops, &mut groups, &mut flushes);
        let written = write_groups(&self.store, &mut Held::default(), &self.kept, groups).await;
        // Written, or (on an error) kept again by the write itself.
        restore.items = None;
        written.map_err(StorageError::from)
    }

    /// Runs recording now (whose recorder, or an operation of it, still exists).
    pub fn runs(&self) -> usize {
        self.runs.load(Ordering::Relaxed)
    }

    /// A recorder for one run, whose claims are checked against `gate`.
    pub fn recorder(&self, gate: ConsentGate) -> Recorder {
        let mut live = self.live.lock().expect("poisoned");
        // The task ends once no recorder holds its channel; the next run starts
        // another (on its own runtime, which matters to tests).
        let tx = match live.as_ref().and_then(mpsc::WeakUnboundedSender::upgrade) {
            Some(tx) => tx,
            None => {
                let (tx, rx) = mpsc::unbounded_channel();
                tokio::spawn(write_loop(self.store.clone(), rx, self.kept.clone()));
                *live = Some(tx.downgrade());
                tx
            }
        };
        Recorder {
            tx,
            run: Arc::new(Run::new(gate, Arc::clone(&self.runs))),
        }
    }
}

/// The handle a run's senders use; cheap to clone.
#[derive(Clone)]
pub struct Recorder {
    tx: mpsc::UnboundedSender<Op>,
    run: Arc<Run>,
}

impl Recorder {
    fn send(&self, kind: Kind) {
        self.tx
            .send(Op {
                run: Arc::clone(&self.run),
                kind,
            })
            .expect("recorder task runs while handles exist");
    }

    /// Claims deliveries for this sender: under a one-time template each holds a
    /// consent credit (`claimed`), and the returned future resolves once that is
    /// committed, with the ones taken (those still pending and credited); under
    /// any other gate it resolves at once with all of them. The request is queued
    /// at once, before the future is awaited, so a caller can have the next chunk
    /// committing while it sends this one.
    pub fn claim(
        &self,
        ids: Vec<i64>,
    ) -> impl Future<Output = Result<HashSet<i64>, Arc<StorageError>>> + Send + 'static {
        let (ack, done) = oneshot::channel();
        if ids.is_empty() || !matches!(self.run.gate, ConsentGate::Credit(_)) {
            // Only a credit is held by a claim; otherwise the `sending` mark is
            // the first write and checks all a claim would (`take_claims`).
            let _ = ack.send(Ok(ids.into_iter().collect()));
        } else {
            self.send(Kind::Claim(ids, ack));
        }
        async move { done.await.expect("recorder answers every claim") }
    }

    /// Marks one taken delivery `sending` and waits for the commit: only then may
    /// its request start, and only if this returns true (false: it was no longer
    /// pending or claimed, so it is not this sender's). Marks of concurrent
    /// senders share a commit.
    pub async fn sending(&self, id: i64) -> Result<bool, Arc<StorageError>> {
        let (ack, done) = oneshot::channel();
        self.send(Kind::Sending(id, ack));
        done.await.expect("recorder answers every mark")
    }

    /// Queues an outcome; it is committed with the next batch.
    pub fn record(&self, outcome: Outcome) {
        self.send(Kind::Record(outcome, false));
    }

    /// Waits until everything this run queued so far is committed; an error
    /// while any of its outcomes is still kept for a rewrite (the database
    /// refused it and has not taken it since).
    pub async fn flush(&self) -> Result<(), Arc<StorageError>> {
        let (ack, done) = oneshot::channel();
        self.send(Kind::Flush(ack));
        done.await.expect("recorder answers every flush")
    }
}

/// One `write_batch` call: the operations written under one gate.
struct Group {
    gate: ConsentGate,
    claims: Vec<i64>,
    claim_acks: Vec<(Ack<HashSet<i64>>, usize, usize)>,
    marks: Vec<i64>,
    mark_acks: Vec<Ack<bool>>,
    outcomes: Vec<Outcome>,
    outcome_runs: Vec<Arc<Run>>,
    /// Per outcome: kept from a failed batch (already counted unwritten).
    rewrites: Vec<bool>,
}

impl Group {
    fn new(gate: ConsentGate) -> Self {
        Self {
            gate,
            claims: Vec::new(),
            claim_acks: Vec::new(),
            marks: Vec::new(),
            mark_acks: Vec::new(),
            outcomes: Vec::new(),
            outcome_runs: Vec::new(),
            rewrites: Vec::new(),
        }
    }

    /// Writes the group; the error when the database failed it (then its
    /// claims and marks are refused and its outcomes kept, as in `fail`).
    async fn write(
        self,
        store: &Store,
        held: &mut Held,
        kept: &Kept,
    ) -> Result<(), Arc<StorageError>> {
        if self.claims.is_empty() && self.marks.is_empty() && self.outcomes.is_empty() {
            return Ok(());
        }
        let written = match store
            .write_batch_on(held, &self.gate, &self.claims, &self.marks, &self.outcomes)
            .await
        {
            Ok(written) => written,
            Err(e) => {
                let e = Arc::new(e);
                tracing::error!(error = %e, kept_outcomes = self.outcomes.len(), "failed to record deliveries; keeping the outcomes to write them again");
                self.fail(&e, kept);
                return Err(e);
            }
        };
        let taken = &written.taken;
        for (ack, start, len) in self.claim_acks {
            let mine = self.claims[start..start + len]
                .iter()
                .filter(|id| taken.contains(id))
                .copied()
                .collect();
            let _ = ack.send(Ok(mine));
        }
        for (id, ack) in self.marks.iter().zip(self.mark_acks) {
            let _ = ack.send(Ok(written.marked.contains(id)));
        }
        let rewritten = self.rewrites.iter().filter(|r| **r).count();
        if rewritten > 0 {
            tracing::info!(
                count = rewritten,
                "wrote outcomes the database could not take before"
            );
        }
        for (run, rewrite) in self.outcome_runs.iter().zip(self.rewrites) {
            if rewrite {
                run.unwritten.fetch_sub(1, Ordering::AcqRel);
            }
        }
        Ok(())
    }

    /// The group as the database failing it leaves it: claims and marks did
    /// not happen, so their requests never start (a mark that did commit is
    /// put back by its sender's `pending` outcome). Outcomes are kept and
    /// written again once the database answers: until then their rows stay
    /// `sending` under this instance, and nobody else settles them.
    fn fail(self, e: &Arc<StorageError>, kept: &Kept) {
        for (ack, _, _) in self.claim_acks {
            let _ = ack.send(Err(Arc::clone(e)));
        }
        for ack in self.mark_acks {
            let _ = ack.send(Err(Arc::clone(e)));
        }
        for ((run, outcome), rewrite) in self
            .outcome_runs
            .into_iter()
            .zip(self.outcomes)
            .zip(self.rewrites)
        {
            *run.error.lock().expect("poisoned") = Some(Arc::clone(e));
            if !rewrite {
                run.unwritten.fetch_add(1, Ordering::AcqRel);
            }
            kept.push(run, outcome);
        }
    }
}

/// Sorts a batch into groups by the gate each operation needs: group 0 (no
/// gate) takes every mark and every outcome that does not depend on its run's
/// gate, whichever run it comes from.
fn sort(ops: &mut Vec<Op>, groups: &mut Vec<Group>, flushes: &mut Vec<(Arc<Run>, Ack<()>)>) {
    groups.push(Group::new(ConsentGate::Unchecked));
    // A run's group, found once per batch (runs of equal gates share one).
    let mut of_run: HashMap<*const Run, usize> = HashMap::new();
    let mut group_of = |run: &Arc<Run>, groups: &mut Vec<Group>| -> usize {
        *of_run.entry(Arc::as_ptr(run)).or_insert_with(|| {
            groups
                .iter()
                .position(|g| g.gate == run.gate)
                .unwrap_or_else(|| {
                    groups.push(Group::new(run.gate.clone()));
                    groups.len() - 1
                })
        })
    };
    for Op { run, kind } in ops.drain(..) {
        match kind {
            Kind::Claim(ids, ack) => {
                let i = group_of(&run, groups);
                let g = &mut groups[i];
                g.claim_acks.push((ack, g.claims.len(), ids.len()));
                g.claims.extend(ids);
            }
            Kind::Sending(id, ack) => {
                groups[0].marks.push(id);
                groups[0].mark_acks.push(ack);
            }
            Kind::Record(o, rewrite) => {
                let g = if run.gate.touched_by(o.status) {
                    group_of(&run, groups)
                } else {
                    0
                };
                groups[g].outcomes.push(o);
                groups[g].outcome_runs.push(run);
                groups[g].rewrites.push(rewrite);
            }
            Kind::Flush(ack) => flushes.push((run, ack)),
        }
    }
}

async fn write_loop(store: Store, mut rx: mpsc::UnboundedReceiver<Op>, kept: Kept) {
    let mut ops = Vec::with_capacity(MAX_BATCH);
    let mut flushes = Vec::new();
    // The writer's own connection, while it has runs to record.
    let mut held = Held::default();
    let mut rewrite_in = rewrite_delays();
    // When kept outcomes are next written, while there are some: a deadline
    // kept across batches, so that a stream of batches neither delays the
    // try nor runs the backoff up.
    let mut next_try: Option<tokio::time::Instant> = None;
    let mut open = true;
    // The error of the last write, while the database is taken to be failing:
    // until the next try, nothing is asked of it (each ask would wait out the
    // pool's acquire timeout, or SQLite's busy timeout, in turn), so a run
    // stops at once and its senders' answers are kept.
    let mut down: Option<Arc<StorageError>> = None;
    loop {
        if kept.len() == 0 {
            next_try = None;
            rewrite_in = rewrite_delays();
        } else if next_try.is_none() {
            let wait = rewrite_in.next().unwrap_or(REWRITE_MAX);
            next_try = Some(tokio::time::Instant::now() + wait);
        }
        let mut due = false;
        if open {
            match next_try {
                Some(at) => tokio::select! {
                    n = rx.recv_many(&mut ops, MAX_BATCH) => open = n > 0,
                    _ = tokio::time::sleep_until(at) => due = true,
                },
                None => open = rx.recv_many(&mut ops, MAX_BATCH).await > 0,
            }
        }
        if !open && ops.is_empty() {
            // Every recorder is gone; only kept outcomes keep the task going,
            // until the store is closed (a shutdown: what is kept is then
            // settled by a survivor or the next start, as `unknown`).
            let Some(at) = next_try.filter(|_| !store.is_closed()) else {
                break;
            };
            // Idle: its connection goes back, so that closing the pool
            // does not wait for it.
            held = Held::default();
            tokio::time::sleep_until(at).await;
            due = true;
        }
        if due {
            next_try = None;
        }
        let mut groups = Vec::new();
        match &down {
            Some(e) if !due => {
                sort(&mut ops, &mut groups, &mut flushes);
                for group in groups {
                    group.fail(e, &kept);
                }
            }
            _ => {
                // Kept outcomes go with this batch; a `settle` under way
                // finishes first, and one that comes waits for this write.
                let _rewriting = kept.rewriting.lock().await;
                let rewrites = kept.take();
                ops.splice(
                    0..0,
                    rewrites.into_iter().map(|(run, outcome)| Op {
                        run,
                        kind: Kind::Record(outcome, true),
                    }),
                );
                sort(&mut ops, &mut groups, &mut flushes);
                down = write_groups(&store, &mut held, &kept, groups).await.err();
            }
        }
        for (run, ack) in flushes.drain(..) {
            let _ = ack.send(run.written());
        }
    }
}

/// Writes a batch's groups: the gated ones first, since the plain group holds
/// the marks, and outcomes committed before marks keep the committed `sending`
/// rows to the requests in flight (a sender queues its outcome before it frees
/// its slot for the next mark), even if the process dies in between. Once one
/// fails the rest are failed without asking the database.
async fn write_groups(
    store: &Store,
    held: &mut Held,
    kept: &Kept,
    groups: Vec<Group>,
) -> Result<(), Arc<StorageError>> {
    let mut groups = groups.into_iter();
    let plain = groups.next().expect("group 0 is always there");
    let mut failed = None;
    for group in groups.chain(std::iter::once(plain)) {
        match &failed {
            None => failed = group.write(store, held, kept).await.err(),
            Some(e) => group.fail(e, kept),
        }
    }
    failed.map_or(Ok(()), Err)
}

/// Waits between tries to write kept outcomes: from `REWRITE_MIN`, doubling,
/// at most `REWRITE_MAX`, for as long as it takes.
fn rewrite_delays() -> impl Iterator<Item = Duration> {
    backon::ExponentialBuilder::default()
        .with_min_delay(REWRITE_MIN)
        .with_max_delay(REWRITE_MAX)
        .without_max_times()
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::AppTemplate;
    use crate::domain::Status;
    use crate::domain::test_ids::{app, job, oid, tmpl};

    fn run(gate: ConsentGate) -> Arc<Run> {
        Arc::new(Run::new(gate, Arc::new(AtomicUsize::new(0))))
    }

    #[test]
    fn marks_and_plain_outcomes_of_all_runs_share_one_group() {
        let long = run(ConsentGate::NotRefused(AppTemplate::new(
            &app("1"),
            &tmpl("a"),
        )));
        let once = run(ConsentGate::Credit(AppTemplate::new(&app("1"), &tmpl("b"))));
        let also_long = run(ConsentGate::NotRefused(AppTemplate::new(
            &app("1"),
            &tmpl("a"),
        )));
        let op = |run: &Arc<Run>, kind| Op {
            run: Arc::clone(run),
            kind,
        };
        let mut ops = vec![
            op(&long, Kind::Claim(vec![1, 2], oneshot::channel().0)),
            op(&once, Kind::Claim(vec![3], oneshot::channel().0)),
            op(&also_long, Kind::Claim(vec![4], oneshot::channel().0)),
            op(&long, Kind::Sending(5, oneshot::channel().0)),
            op(&once, Kind::Sending(6, oneshot::channel().0)),
            op(
                &long,
                Kind::Record(Outcome::local(7, Status::Sent, None), false),
            ),
            op(
                &long,
                Kind::Record(Outcome::local(8, Status::Refused, None), false),
            ),
            op(
                &once,
                Kind::Record(Outcome::local(9, Status::Sent, None), false),
            ),
            op(&once, Kind::Flush(oneshot::channel().0)),
        ];
        let (mut groups, mut flushes) = (Vec::new(), Vec::new());
        sort(&mut ops, &mut groups, &mut flushes);
        let ids = |o: &[Outcome]| o.iter().map(|o| o.id).collect::<Vec<_>>();
        assert_eq!(groups.len(), 3);
        assert_eq!(groups[0].gate, ConsentGate::Unchecked);
        assert_eq!(groups[0].marks, [5, 6]);
        assert_eq!(ids(&groups[0].outcomes), [7]);
        assert!(groups[0].claims.is_empty());
        // Runs with equal gates share a group; a refusal needs its gate.
        assert_eq!(
            groups[1].gate,
            ConsentGate::NotRefused(AppTemplate::new(&app("1"), &tmpl("a")))
        );
        assert_eq!(groups[1].claims, [1, 2, 4]);
        assert_eq!(ids(&groups[1].outcomes), [8]);
        // A one-time template's outcomes settle credits: always under its gate.
        assert_eq!(
            groups[2].gate,
            ConsentGate::Credit(AppTemplate::new(&app("1"), &tmpl("b")))
        );
        assert_eq!(groups[2].claims, [3]);
        assert_eq!(ids(&groups[2].outcomes), [9]);
        assert!(
            groups
                .iter()
                .all(|g| g.marks.is_empty() || g.gate == ConsentGate::Unchecked)
        );
        assert_eq!(flushes.len(), 1);
    }

    /// A SQLite store whose writes wait at most 50 ms for a lock, with one run
    /// of `n` deliveries already marked `sending`; the writer, and the ids.
    async fn sending_run(dir: &std::path::Path, n: usize) -> (RecordWriter, Recorder, Vec<i64>) {
        let url = format!("sqlite://{}", dir.join("w.db").display());
        let options = crate::storage::OpenOptions {
            busy_timeout: std::time::Duration::from_millis(50),
            ..Default::default()
        };
        let store = Store::open_with(&url, &options).await.unwrap();
        let people: Vec<crate::storage::StoredRecipient> = (0..n)
            .map(|i| crate::storage::StoredRecipient {
                job: job("daily"),
                openid: oid(&format!("oUser{i:023}")),
                name: None,
                vars: Default::default(),
            })
            .collect();
        store.sync_config_recipients(&people).await.unwrap();
        let run = store
            .enqueue(crate::storage::NewRun {
                job: &job("daily"),
                appid: &app("1"),
                template_id: &tmpl("t"),
                audience: crate::storage::Audience::Listed,
                slot: chrono::Utc::now(),
                trigger: crate::domain::Trigger::Manual,
            })
            .await
            .unwrap();
        let ids: Vec<i64> = store
            .deliveries(run.run_id)
            .await
            .unwrap()
            .iter()
            .map(|d| d.id)
            .collect();
        let writer = RecordWriter::new(store);
        let recorder = writer.recorder(ConsentGate::Unchecked);
        for id in &ids {
            assert!(recorder.sending(*id).await.unwrap());
        }
        (writer, recorder, ids)
    }

    async fn lock(dir: &std::path::Path) -> sqlx::SqliteConnection {
        use sqlx::Connection;
        let url = format!("sqlite://{}", dir.join("w.db").display());
        let mut other = sqlx::SqliteConnection::connect(&url).await.unwrap();
        sqlx::query("BEGIN EXCLUSIVE")
            .execute(&mut other)
            .await
            .unwrap();
        other
    }

    #[tokio::test]
    async fn answers_the_database_refused_are_kept_and_written_once_it_takes_them() {
        let dir = tempfile::tempdir().unwrap();
        let (writer, recorder, ids) = sending_run(dir.path(), 3).await;
        let store = writer.store.clone();
        let mut other = lock(dir.path()).await;

        for id in &ids {
            recorder.record(Outcome {
                msgid: Some(7),
                ..Outcome::local(*id, Status::Sent, None)
            });
        }
        let flushed = recorder.flush().await;
        // While the database is failing, a mark is refused without a try.
        let mark = recorder.sending(ids[0]).await;

        assert!(flushed.is_err(), "nothing written yet");
        assert!(mark.is_err());
        assert_eq!(writer.unwritten(), 3);
        let rows = |store: Store| async move {
            store
                .deliveries(1)
                .await
                .unwrap()
                .iter()
                .map(|d| d.status)
                .collect::<Vec<_>>()
        };
        // Still `sending` on record (read beside the other's write lock): kept.
        assert_eq!(
            rows(store.clone()).await,
            [Status::Sending; 3],
            "kept, not lost"
        );
        sqlx::query("ROLLBACK").execute(&mut other).await.unwrap();
        drop(other);
        writer.settle().await.unwrap();
        assert_eq!(rows(store.clone()).await, [Status::Sent; 3]);
        assert_eq!(writer.unwritten(), 0);
        assert!(
            recorder.flush().await.is_ok(),
            "nothing of the run is kept now"
        );
    }

    #[tokio::test]
    async fn the_writer_writes_kept_answers_by_itself_when_the_database_is_back() {
        let dir = tempfile::tempdir().unwrap();
        let (writer, recorder, ids) = sending_run(dir.path(), 2).await;
        let store = writer.store.clone();
        let mut other = lock(dir.path()).await;
        recorder.record(Outcome::local(ids[0], Status::Failed, None));
        recorder.record(Outcome::local(ids[1], Status::Pending, None));
        assert!(recorder.flush().await.is_err());
        sqlx::query("ROLLBACK").execute(&mut other).await.unwrap();
        drop(other);
        // Nobody calls settle: the writer's next try (within REWRITE_MAX) does.
        // A flush answers Ok once the run has nothing kept, after the commit.
        let deadline = std::time::Instant::now() + REWRITE_MAX * 2;
        while recorder.flush().await.is_err() {
            assert!(std::time::Instant::now() < deadline, "never written");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(writer.unwritten(), 0);
        let statuses: Vec<Status> = store
            .deliveries(1)
            .await
            .unwrap()
            .iter()
            .map(|d| d.status)
            .collect();
        assert_eq!(statuses, [Status::Failed, Status::Pending]);
        assert!(recorder.flush().await.is_ok());
    }

    #[tokio::test]
    async fn a_run_is_entered_by_one_drain_of_the_process_at_a_time() {
        let writer = RecordWriter::new(Store::open("sqlite::memory:").await.unwrap());
        let first = writer.enter(1).expect("free");
        assert!(
            writer.enter(1).is_none(),
            "a second drain of run 1 waits its turn"
        );
        assert!(writer.enter(2).is_some(), "another run is free");
        drop(first);
        assert!(
            writer.enter(1).is_some(),
            "free again once the first is over"
        );
    }
}
