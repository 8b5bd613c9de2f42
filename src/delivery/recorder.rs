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
use std::sync::{Arc, Mutex, OnceLock};

use tokio::sync::{mpsc, oneshot};

use crate::storage::{ConsentGate, Held, Outcome, Status, StorageError, Store};

/// Most operations folded into one batch.
const MAX_BATCH: usize = 2048;

type Ack<T> = oneshot::Sender<Result<T, Arc<StorageError>>>;

/// What one run's operations share: its consent gate, and whether any of its
/// outcomes failed to be written.
struct Run {
    gate: ConsentGate,
    lost: OnceLock<Arc<StorageError>>,
    runs: Arc<AtomicUsize>,
}

impl Drop for Run {
    fn drop(&mut self) {
        self.runs.fetch_sub(1, Ordering::Relaxed);
    }
}

enum Kind {
    Claim(Vec<i64>, Ack<HashSet<i64>>),
    Sending(i64, Ack<bool>),
    Record(Outcome),
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
}

impl RecordWriter {
    /// A writer for `store`; its task starts with the first run.
    pub fn new(store: Store) -> Self {
        Self {
            store,
            live: Arc::default(),
            runs: Arc::default(),
        }
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
                tokio::spawn(write_loop(self.store.clone(), rx));
                *live = Some(tx.downgrade());
                tx
            }
        };
        self.runs.fetch_add(1, Ordering::Relaxed);
        Recorder {
            tx,
            run: Arc::new(Run {
                gate,
                lost: OnceLock::new(),
                runs: Arc::clone(&self.runs),
            }),
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
        self.send(Kind::Record(outcome));
    }

    /// Waits until everything this run queued so far is committed; an error if
    /// any of its outcomes could not be written, now or before.
    pub async fn flush(&self) -> Result<(), Arc<StorageError>> {
        let (ack, done) = oneshot::channel();
        self.send(Kind::Flush(ack));
        done.await.expect("recorder answers every flush")
    }
}

/// True when writing `outcome` depends on its run's gate: a one-time template's
/// outcomes settle the credit each delivery held, and a refusal of a long-term
/// one records the rejection. Every other outcome is written the same under
/// any gate, so those of all runs can share one statement.
fn needs_gate(gate: &ConsentGate, outcome: &Outcome) -> bool {
    match gate {
        ConsentGate::Unchecked => false,
        ConsentGate::NotRefused(_) => outcome.status == Status::Refused,
        ConsentGate::Credit(_) => true,
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
        }
    }

    async fn write(self, store: &Store, held: &mut Held) {
        let result = store
            .write_batch_on(held, &self.gate, &self.claims, &self.marks, &self.outcomes)
            .await;
        match result {
            Ok(written) => {
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
            }
            Err(e) => {
                // Claims and marks did not happen (those deliveries are not sent);
                // recorded outcomes stay `sending` and become `unknown` on resume.
                tracing::error!(error = %e, lost_outcomes = self.outcomes.len(), "failed to record deliveries");
                let e = Arc::new(e);
                for (ack, _, _) in self.claim_acks {
                    let _ = ack.send(Err(Arc::clone(&e)));
                }
                for ack in self.mark_acks {
                    let _ = ack.send(Err(Arc::clone(&e)));
                }
                for run in self.outcome_runs {
                    let _ = run.lost.set(Arc::clone(&e));
                }
            }
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
            Kind::Record(o) => {
                let g = if needs_gate(&run.gate, &o) {
                    group_of(&run, groups)
                } else {
                    0
                };
                groups[g].outcomes.push(o);
                groups[g].outcome_runs.push(run);
            }
            Kind::Flush(ack) => flushes.push((run, ack)),
        }
    }
}

async fn write_loop(store: Store, mut rx: mpsc::UnboundedReceiver<Op>) {
    let mut ops = Vec::with_capacity(MAX_BATCH);
    let mut flushes = Vec::new();
    // The writer's own connection, while it has runs to record.
    let mut held = Held::default();
    while rx.recv_many(&mut ops, MAX_BATCH).await > 0 {
        let mut groups = Vec::new();
        sort(&mut ops, &mut groups, &mut flushes);
        let mut groups = groups.into_iter();
        let plain = groups.next().expect("group 0 is always there");
        // The gated groups first: the plain group holds the marks, and outcomes
        // committed before marks keep the committed `sending` rows to the
        // requests in flight (a sender queues its outcome before it frees its
        // slot for the next mark), even if the process dies in between.
        for group in groups {
            group.write(&store, &mut held).await;
        }
        plain.write(&store, &mut held).await;
        for (run, ack) in flushes.drain(..) {
            let _ = ack.send(run.lost.get().map_or(Ok(()), |e| Err(Arc::clone(e))));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::AppTemplate;

    fn run(gate: ConsentGate) -> Arc<Run> {
        let runs = Arc::new(AtomicUsize::new(1));
        Arc::new(Run {
            gate,
            lost: OnceLock::new(),
            runs,
        })
    }

    #[test]
    fn marks_and_plain_outcomes_of_all_runs_share_one_group() {
        let long = run(ConsentGate::NotRefused(AppTemplate::new("wx1", "a")));
        let once = run(ConsentGate::Credit(AppTemplate::new("wx1", "b")));
        let also_long = run(ConsentGate::NotRefused(AppTemplate::new("wx1", "a")));
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
            op(&long, Kind::Record(Outcome::local(7, Status::Sent, None))),
            op(
                &long,
                Kind::Record(Outcome::local(8, Status::Refused, None)),
            ),
            op(&once, Kind::Record(Outcome::local(9, Status::Sent, None))),
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
            ConsentGate::NotRefused(AppTemplate::new("wx1", "a"))
        );
        assert_eq!(groups[1].claims, [1, 2, 4]);
        assert_eq!(ids(&groups[1].outcomes), [8]);
        // A one-time template's outcomes settle credits: always under its gate.
        assert_eq!(
            groups[2].gate,
            ConsentGate::Credit(AppTemplate::new("wx1", "b"))
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
}
