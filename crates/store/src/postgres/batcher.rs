//! Gathers concurrent calls of one kind into batches, each stored in one
//! transaction: sends (`send.rs`) and acks (`delivery.rs`). A few writer
//! tasks each take every call that waits when they come free, up to the
//! kind's most; there is no timer, so a lone call on an idle node is
//! committed at once, and under load a batch grows by itself to what
//! arrived during the previous commit.

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use deadpool_postgres::{Pool, Transaction};
use tokio::sync::{Mutex, mpsc, oneshot};
use tokio_postgres::IsolationLevel;

use super::TX_ATTEMPTS;
use super::fault::Outcome;
use super::sql::ordered;
use crate::StoreError;

/// Calls waiting for a writer; past this, callers wait (back-pressure).
const WAITING_MAX: usize = 4096;

/// One kind of batched call: how many share a transaction, which must wait
/// for the next one, and how a batch is stored.
pub(super) trait Batch: Send + Sync + 'static {
    type Item: Send + Sync + 'static;
    type Answer: Send + 'static;
    /// What [`Batch::admits`] remembers of the items already in a batch.
    type Seen: Default;
    /// Most calls in one transaction.
    const MAX: usize;
    /// For logs.
    const NAME: &'static str;

    /// Whether `item` may join a batch that already holds what `seen`
    /// records (and records it if so); one refused goes in the writer's
    /// next batch, in its order.
    fn admits(_seen: &mut Self::Seen, _item: &Self::Item) -> bool {
        true
    }

    /// Stores `items` in the transaction `tx`, answering each in order; an
    /// error concerns the whole batch, which is then rolled back.
    fn store<'a>(
        tx: &'a Transaction<'a>,
        items: &'a [&'a Self::Item],
    ) -> impl Future<Output = Outcome<Vec<Result<Self::Answer, StoreError>>>> + Send + 'a;
}

struct Job<B: Batch> {
    item: B::Item,
    answer: oneshot::Sender<Result<B::Answer, StoreError>>,
}

/// The calling side of one kind's writers; they stop once it is dropped and
/// they have answered what waits.
pub(super) struct Batcher<B: Batch> {
    jobs: mpsc::Sender<Job<B>>,
}

impl<B: Batch> Batcher<B> {
    /// Starts `writers` tasks on the current runtime, each using at most one
    /// connection of `pool` at a time.
    pub(super) fn start(pool: &Pool, writers: usize) -> Self {
        let (jobs, waiting) = mpsc::channel(WAITING_MAX);
        let waiting = Arc::new(Mutex::new(waiting));
        for _ in 0..writers.max(1) {
            tokio::spawn(writer::<B>(pool.clone(), Arc::clone(&waiting)));
        }
        Self { jobs }
    }

    pub(super) async fn call(&self, item: B::Item) -> Result<B::Answer, StoreError> {
        let (answer, answered) = oneshot::channel();
        self.jobs
            .send(Job { item, answer })
            .await
            .map_err(|_| StoreError::Closed)?;
        answered.await.map_err(|_| StoreError::Closed)?
    }
}

async fn writer<B: Batch>(pool: Pool, waiting: Arc<Mutex<mpsc::Receiver<Job<B>>>>) {
    let mut held_back: Vec<Job<B>> = Vec::new();
    loop {
        let mut jobs = std::mem::take(&mut held_back);
        if jobs.is_empty() {
            let mut waiting = waiting.lock().await;
            match waiting.recv().await {
                Some(job) => jobs.push(job),
                None => return,
            }
            top_up::<B>(&mut waiting, &mut jobs);
        } else if let Ok(mut waiting) = waiting.try_lock() {
            // Never wait for the lock with calls in hand: another writer may
            // hold it while it waits for a new call, which may never come
            // (the held-back retry's caller waits for this very answer).
            top_up::<B>(&mut waiting, &mut jobs);
        }
        let (batch, later) = apart::<B>(jobs);
        held_back = later;
        run::<B>(&pool, batch).await;
    }
}

/// Adds what waits, up to the kind's most, without waiting.
fn top_up<B: Batch>(waiting: &mut mpsc::Receiver<Job<B>>, jobs: &mut Vec<Job<B>>) {
    while jobs.len() < B::MAX {
        match waiting.try_recv() {
            Ok(job) => jobs.push(job),
            Err(_) => break,
        }
    }
}

/// Splits off the calls that must wait for the next batch.
fn apart<B: Batch>(jobs: Vec<Job<B>>) -> (Vec<Job<B>>, Vec<Job<B>>) {
    let mut seen = B::Seen::default();
    jobs.into_iter()
        .partition(|job| B::admits(&mut seen, &job.item))
}

/// Stores `jobs` and answers each. A batch that fails for a reason other
/// than an outage runs again one call at a time, so a call the database
/// rejects fails alone.
async fn run<B: Batch>(pool: &Pool, jobs: Vec<Job<B>>) {
    let items: Vec<&B::Item> = jobs.iter().map(|job| &job.item).collect();
    let started = Instant::now();
    let committed = commit::<B>(pool, &items).await;
    // The same figures as the embedded store's group commits.
    metrics::histogram!("missive_store_batch_jobs").record(items.len() as f64);
    metrics::histogram!("missive_store_commit_seconds").record(started.elapsed().as_secs_f64());
    let failed = match committed {
        Ok(answers) => {
            for (job, answer) in jobs.into_iter().zip(answers) {
                let _ = job.answer.send(answer);
            }
            return;
        }
        Err(fault) => fault.into_store(),
    };
    let outage = matches!(failed, StoreError::Unavailable | StoreError::Closed);
    if outage || jobs.len() == 1 {
        for job in jobs {
            let _ = job.answer.send(Err(failed.clone()));
        }
        return;
    }
    tracing::warn!(%failed, calls = jobs.len(), kind = B::NAME, "a batch failed; storing its calls one by one");
    for job in jobs {
        let answer = match commit::<B>(pool, &[&job.item]).await {
            Ok(mut answers) => answers.pop().unwrap_or(Err(StoreError::Closed)),
            Err(fault) => Err(fault.into_store()),
        };
        let _ = job.answer.send(answer);
    }
}

/// One transaction for `items`, run again when it loses a deadlock or
/// serialization race.
async fn commit<B: Batch>(
    pool: &Pool,
    items: &[&B::Item],
) -> Outcome<Vec<Result<B::Answer, StoreError>>> {
    let mut client = pool.get().await?;
    let mut attempt = 1;
    loop {
        let outcome: Outcome<Vec<Result<B::Answer, StoreError>>> = ordered(async {
            let tx = client
                .build_transaction()
                .isolation_level(IsolationLevel::ReadCommitted)
                .start()
                .await?;
            let answers = B::store(&tx, items).await?;
            tx.commit().await?;
            Ok(answers)
        })
        .await;
        match outcome {
            Err(fault) if fault.is_transient() && attempt < TX_ATTEMPTS => {
                tracing::debug!(
                    ?fault,
                    attempt,
                    kind = B::NAME,
                    "a batch lost a race; running it again"
                );
                attempt += 1;
            }
            other => return other,
        }
    }
}
