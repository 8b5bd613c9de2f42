//! Group commit: claims and outcomes from all senders are written by one task,
//! many per transaction, so that recording every delivery costs few commits.

use std::collections::HashSet;
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use crate::storage::{ConsentGate, Outcome, StorageError, Store};

/// Most operations folded into one transaction.
const MAX_BATCH: usize = 2048;

enum Op {
    Claim(
        Vec<i64>,
        oneshot::Sender<Result<HashSet<i64>, Arc<StorageError>>>,
    ),
    Sending(i64, oneshot::Sender<Result<bool, Arc<StorageError>>>),
    Record(Outcome),
    Flush(oneshot::Sender<Result<(), Arc<StorageError>>>),
}

/// The handle senders use; cheap to clone.
#[derive(Clone)]
pub struct Recorder {
    tx: mpsc::UnboundedSender<Op>,
}

impl Recorder {
    /// Starts the writer task for `store`; claims are checked against `gate`.
    pub fn start(store: Store, gate: ConsentGate) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(write_loop(store, gate, rx));
        Self { tx }
    }

    /// Claims deliveries for this sender (`claimed`: each holds its consent credit);
    /// the returned future resolves once that is committed, with the ones taken
    /// (those still pending and consented). The request is queued at once, before
    /// the future is awaited, so a caller can have the next chunk committing while
    /// it sends this one.
    pub fn claim(
        &self,
        ids: Vec<i64>,
    ) -> impl Future<Output = Result<HashSet<i64>, Arc<StorageError>>> + Send + 'static {
        let (ack, done) = oneshot::channel();
        if ids.is_empty() {
            let _ = ack.send(Ok(HashSet::new()));
        } else {
            self.tx
                .send(Op::Claim(ids, ack))
                .expect("recorder task runs while handles exist");
        }
        async move { done.await.expect("recorder answers every claim") }
    }

    /// Marks one taken delivery `sending` and waits for the commit: only then may
    /// its request start, and only if this returns true (false: it was no longer
    /// pending or claimed, so it is not this sender's). Marks of concurrent
    /// senders share a commit.
    pub async fn sending(&self, id: i64) -> Result<bool, Arc<StorageError>> {
        let (ack, done) = oneshot::channel();
        self.tx
            .send(Op::Sending(id, ack))
            .expect("recorder task runs while handles exist");
        done.await.expect("recorder answers every mark")
    }

    /// Queues an outcome; it is committed with the next batch.
    pub fn record(&self, outcome: Outcome) {
        self.tx
            .send(Op::Record(outcome))
            .expect("recorder task runs while handles exist");
    }

    /// Waits until everything queued so far is committed.
    pub async fn flush(&self) -> Result<(), Arc<StorageError>> {
        let (ack, done) = oneshot::channel();
        self.tx
            .send(Op::Flush(ack))
            .expect("recorder task runs while handles exist");
        done.await.expect("recorder answers every flush")
    }
}

async fn write_loop(store: Store, gate: ConsentGate, mut rx: mpsc::UnboundedReceiver<Op>) {
    let mut ops = Vec::with_capacity(MAX_BATCH);
    while rx.recv_many(&mut ops, MAX_BATCH).await > 0 {
        let mut claims = Vec::new();
        let mut claim_acks = Vec::new();
        let mut outcomes = Vec::new();
        let mut marks = Vec::new();
        let mut marked = Vec::new();
        let mut flushes = Vec::new();
        for op in ops.drain(..) {
            match op {
                Op::Claim(ids, ack) => {
                    claim_acks.push((ack, claims.len(), ids.len()));
                    claims.extend(ids);
                }
                Op::Sending(id, ack) => {
                    marks.push(id);
                    marked.push(ack);
                }
                Op::Record(o) => outcomes.push(o),
                Op::Flush(ack) => flushes.push(ack),
            }
        }
        match store.write_batch(&gate, &claims, &marks, &outcomes).await {
            Ok(written) => {
                let taken = &written.taken;
                for (ack, start, len) in claim_acks {
                    let mine = claims[start..start + len]
                        .iter()
                        .filter(|id| taken.contains(id))
                        .copied()
                        .collect();
                    let _ = ack.send(Ok(mine));
                }
                for (id, ack) in marks.iter().zip(marked) {
                    let _ = ack.send(Ok(written.marked.contains(id)));
                }
                for ack in flushes {
                    let _ = ack.send(Ok(()));
                }
            }
            Err(e) => {
                // Claims and marks did not happen (those deliveries are not sent);
                // recorded outcomes stay `sending` and become `unknown` on resume.
                tracing::error!(error = %e, lost_outcomes = outcomes.len(), "failed to record deliveries");
                let e = Arc::new(e);
                for (ack, _, _) in claim_acks {
                    let _ = ack.send(Err(Arc::clone(&e)));
                }
                for ack in marked {
                    let _ = ack.send(Err(Arc::clone(&e)));
                }
                for ack in flushes {
                    let _ = ack.send(Err(Arc::clone(&e)));
                }
            }
        }
    }
}
