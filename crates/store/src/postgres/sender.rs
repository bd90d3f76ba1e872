//! Gathers concurrent sends into batches (`send.rs` stores a batch in one
//! transaction). A few writer tasks each take every send that waits when
//! they come free, up to `BATCH_MAX`; there is no timer, so a lone send on
//! an idle node is committed at once, and under load a batch grows by
//! itself to what arrived during the previous commit.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Instant;

use deadpool_postgres::Pool;
use tokio::sync::{Mutex, mpsc, oneshot};
use tokio_postgres::IsolationLevel;

use super::TX_ATTEMPTS;
use super::fault::Outcome;
use super::send::{Answer, append_batch, changed_target};
use super::sql::ordered;
use crate::StoreError;
use crate::model::NewMessage;

/// Most sends in one transaction. A batch holds the locks of all its
/// conversations until it commits, so batches from several nodes that touch
/// the same conversations wait for each other; 16 did as well as 64 on one
/// node and better on three (BENCHMARKS.md).
const BATCH_MAX: usize = 16;
/// Sends waiting for a writer; past this, callers wait (back-pressure).
const WAITING_MAX: usize = 4096;

struct Job {
    message: NewMessage,
    answer: oneshot::Sender<Answer>,
}

/// The sending side of the batch writers; they stop once it is dropped and
/// they have answered what waits.
pub(super) struct Sender {
    jobs: mpsc::Sender<Job>,
}

impl Sender {
    /// Starts `writers` tasks on the current runtime, each using at most one
    /// connection of `pool` at a time.
    pub(super) fn start(pool: &Pool, writers: usize) -> Self {
        let (jobs, waiting) = mpsc::channel(WAITING_MAX);
        let waiting = Arc::new(Mutex::new(waiting));
        for _ in 0..writers.max(1) {
            tokio::spawn(writer(pool.clone(), Arc::clone(&waiting)));
        }
        Self { jobs }
    }

    pub(super) async fn send(&self, message: NewMessage) -> Answer {
        let (answer, answered) = oneshot::channel();
        self.jobs
            .send(Job { message, answer })
            .await
            .map_err(|_| StoreError::Closed)?;
        answered.await.map_err(|_| StoreError::Closed)?
    }
}

async fn writer(pool: Pool, waiting: Arc<Mutex<mpsc::Receiver<Job>>>) {
    let mut held_back: Vec<Job> = Vec::new();
    loop {
        let mut jobs = std::mem::take(&mut held_back);
        {
            let mut waiting = waiting.lock().await;
            if jobs.is_empty() {
                match waiting.recv().await {
                    Some(job) => jobs.push(job),
                    None => return,
                }
            }
            while jobs.len() < BATCH_MAX {
                match waiting.try_recv() {
                    Ok(job) => jobs.push(job),
                    Err(_) => break,
                }
            }
        }
        let (batch, later) = apart(jobs);
        held_back = later;
        run(&pool, batch).await;
    }
}

/// Splits off the sends that must not share a transaction with an earlier
/// one of `jobs`: the same dedup key (a retry racing its original), or the
/// same message reacted to, edited or deleted (each checks the target as
/// the batch found it). They go in the writer's next batch, in their order.
fn apart(jobs: Vec<Job>) -> (Vec<Job>, Vec<Job>) {
    let mut keys = HashSet::new();
    let mut targets = HashSet::new();
    jobs.into_iter().partition(|job| {
        let message = &job.message;
        let target = changed_target(&message.body);
        let key = (
            message.sender_device,
            message.client_msg_id.as_str().to_owned(),
        );
        let key_free = !keys.contains(&key);
        let target_free = target.is_none_or(|target| !targets.contains(target.as_str()));
        if key_free && target_free {
            keys.insert(key);
            if let Some(target) = target {
                targets.insert(target.as_str().to_owned());
            }
        }
        key_free && target_free
    })
}

/// Stores `jobs` and answers each. A batch that fails for a reason other
/// than an outage runs again one send at a time, so a send the database
/// rejects fails alone.
async fn run(pool: &Pool, jobs: Vec<Job>) {
    let messages: Vec<&NewMessage> = jobs.iter().map(|job| &job.message).collect();
    let started = Instant::now();
    let committed = commit(pool, &messages).await;
    // The same figures as the embedded store's group commits.
    metrics::histogram!("missive_store_batch_jobs").record(messages.len() as f64);
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
    tracing::warn!(%failed, sends = jobs.len(), "a batch of sends failed; storing them one by one");
    for job in jobs {
        let answer = match commit(pool, &[&job.message]).await {
            Ok(mut answers) => answers.pop().unwrap_or(Err(StoreError::Closed)),
            Err(fault) => Err(fault.into_store()),
        };
        let _ = job.answer.send(answer);
    }
}

/// One transaction for `messages`, run again when it loses a deadlock or
/// serialization race.
async fn commit(pool: &Pool, messages: &[&NewMessage]) -> Outcome<Vec<Answer>> {
    let mut client = pool.get().await?;
    let mut attempt = 1;
    loop {
        let outcome: Outcome<Vec<Answer>> = ordered(async {
            let tx = client
                .build_transaction()
                .isolation_level(IsolationLevel::ReadCommitted)
                .start()
                .await?;
            let answers = append_batch(&tx, messages).await?;
            tx.commit().await?;
            Ok(answers)
        })
        .await;
        match outcome {
            Err(fault) if fault.is_transient() && attempt < TX_ATTEMPTS => {
                tracing::debug!(?fault, attempt, "send batch lost a race; running it again");
                attempt += 1;
            }
            other => return other,
        }
    }
}
