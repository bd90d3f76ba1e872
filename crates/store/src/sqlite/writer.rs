//! The single writer thread: it owns the only read-write connection and
//! commits whatever jobs are waiting as one transaction (group commit), so
//! many concurrent sends share one fsync.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::Mutex;
use std::thread::JoinHandle;
use std::time::Instant;

use rusqlite::Connection;
use tokio::sync::{mpsc, oneshot};

use crate::StoreError;

/// A write operation: runs inside the batch transaction and returns the
/// continuation that delivers its reply once the commit outcome is known.
type Job = Box<dyn FnOnce(&Connection) -> Ran + Send>;
type Completion = Box<dyn FnOnce(Result<(), StoreError>) + Send>;

struct Ran {
    complete: Completion,
    /// The job failed after writing and nothing undid its writes alone:
    /// its batch must not commit.
    spoiled: bool,
}

/// How a failing job is kept from leaving part of its writes behind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Undo {
    /// The job runs in its own savepoint; a failure is rolled back alone
    /// and the rest of its batch commits.
    Savepoint,
    /// The job makes every check before its first write, so a refusal has
    /// nothing to undo; a failure after a write (a full disk, an I/O
    /// error) rolls back its whole batch, whose callers get `unavailable`
    /// and may retry. Spares the savepoint's statements and the copy
    /// SQLite keeps of each page a job first touches inside one: a fifth
    /// of the writer's time when every send and ack paid it.
    Batch,
}

enum Command {
    Job(Job),
    Shutdown(oneshot::Sender<()>),
}

pub(crate) struct Writer {
    commands: mpsc::Sender<Command>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Writer {
    /// Starts the writer thread. `queue_max` bounds the jobs waiting for it.
    pub(crate) fn start(
        conn: Connection,
        batch_max: usize,
        queue_max: usize,
    ) -> Result<Self, StoreError> {
        let (commands, receiver) = mpsc::channel(queue_max);
        let thread = std::thread::Builder::new()
            .name("missive-store-writer".into())
            .spawn(move || run(conn, receiver, batch_max.max(1)))
            .map_err(|err| StoreError::Backend(format!("cannot start the writer thread: {err}")))?;
        Ok(Self {
            commands,
            thread: Mutex::new(Some(thread)),
        })
    }

    /// Runs `op` in the next batch; resolves after that batch committed.
    /// A failing `op` is rolled back alone (savepoint); others in its batch
    /// still commit.
    pub(crate) async fn write<T, F>(&self, undo: Undo, op: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        self.queue(undo, op).await?.await
    }

    /// [`write`](Self::write) in two steps: resolves once `op` is queued
    /// (jobs run in the order they were queued), the returned future once
    /// its batch committed.
    pub(crate) async fn queue<T, F>(
        &self,
        undo: Undo,
        op: F,
    ) -> Result<impl Future<Output = Result<T, StoreError>> + Send + 'static, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let job: Job = Box::new(move |conn| {
            let (result, spoiled) = match undo {
                Undo::Savepoint => (in_savepoint(conn, op), false),
                Undo::Batch => {
                    let changes_before = conn.total_changes();
                    let result = op(conn);
                    let spoiled = result
                        .as_ref()
                        .is_err_and(|err| is_fault(err) || conn.total_changes() != changes_before);
                    (result, spoiled)
                }
            };
            let complete: Completion = Box::new(move |committed: Result<(), StoreError>| {
                // When the transaction failed under this job, the job's own
                // error says why (a full disk, say); either way nothing of
                // it was written.
                let outcome = match (committed, result) {
                    (Err(_), Err(own)) => Err(own),
                    (committed, result) => committed.and(result),
                };
                let _ = reply.send(outcome);
            });
            Ran { complete, spoiled }
        });
        self.commands
            .send(Command::Job(job))
            .await
            .map_err(|_| StoreError::Closed)?;
        // A dropped reply means the job was discarded unrun (the batch could
        // not begin): an engine fault, not a shutdown.
        Ok(async move {
            answer.await.map_err(|_| {
                StoreError::Backend("the store writer discarded the operation".into())
            })?
        })
    }

    /// Commits what is queued, checkpoints the WAL and stops the thread.
    pub(crate) async fn shutdown(&self) {
        let (done, finished) = oneshot::channel();
        if self.commands.send(Command::Shutdown(done)).await.is_ok() {
            let _ = finished.await;
        }
        let handle = self.thread.lock().ok().and_then(|mut slot| slot.take());
        if let Some(handle) = handle {
            let _ = tokio::task::spawn_blocking(move || handle.join()).await;
        }
    }
}

/// An error of the engine rather than a refusal by the job's checks.
fn is_fault(err: &StoreError) -> bool {
    matches!(
        err,
        StoreError::Backend(_) | StoreError::Full | StoreError::Unavailable | StoreError::Closed
    )
}

fn in_savepoint<T>(
    conn: &Connection,
    op: impl FnOnce(&Connection) -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    run_cached(conn, "SAVEPOINT job")?;
    match op(conn) {
        Ok(value) => {
            run_cached(conn, "RELEASE job")?;
            Ok(value)
        }
        Err(err) => {
            // The job may have read rows into the facts it rolls back.
            super::facts::forget_all();
            run_cached(conn, "ROLLBACK TO job")?;
            run_cached(conn, "RELEASE job")?;
            Err(err)
        }
    }
}

/// Runs a statement without parameters, parsed once per connection: every
/// job runs these, and parsing them again was a measurable share of a send.
fn run_cached(conn: &Connection, sql: &str) -> Result<(), StoreError> {
    conn.prepare_cached(sql)
        .and_then(|mut stmt| stmt.execute([]))
        .map(drop)
        .map_err(backend)
}

pub(crate) fn backend(err: rusqlite::Error) -> StoreError {
    if err.sqlite_error_code() == Some(rusqlite::ErrorCode::DiskFull) {
        tracing::error!(%err, "the embedded store's disk is full; writes are refused until space is freed");
        return StoreError::Full;
    }
    StoreError::Backend(err.to_string())
}

fn run(conn: Connection, mut receiver: mpsc::Receiver<Command>, batch_max: usize) {
    super::facts::keep_on_this_thread();
    let mut batch: Vec<Job> = Vec::with_capacity(batch_max);
    let mut shutdown: Option<oneshot::Sender<()>> = None;
    while shutdown.is_none() {
        match receiver.blocking_recv() {
            Some(Command::Job(job)) => batch.push(job),
            Some(Command::Shutdown(done)) => shutdown = Some(done),
            None => break,
        }
        // Take whatever else is already waiting, up to the batch bound.
        while batch.len() < batch_max {
            match receiver.try_recv() {
                Ok(Command::Job(job)) => batch.push(job),
                Ok(Command::Shutdown(done)) => {
                    shutdown = Some(done);
                    break;
                }
                Err(_) => break,
            }
        }
        if !batch.is_empty() {
            commit_batch(&conn, &mut batch);
        }
    }
    receiver.close();
    // Jobs that raced the shutdown still get committed.
    while let Ok(command) = receiver.try_recv() {
        if let Command::Job(job) = command {
            batch.push(job);
        }
    }
    if !batch.is_empty() {
        commit_batch(&conn, &mut batch);
    }
    if let Err(err) = conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)") {
        tracing::warn!(%err, "WAL checkpoint at shutdown failed");
    }
    drop(conn);
    if let Some(done) = shutdown {
        let _ = done.send(());
    }
}

fn commit_batch(conn: &Connection, batch: &mut Vec<Job>) {
    let mut jobs: VecDeque<Job> = batch.drain(..).collect();
    while !jobs.is_empty() {
        commit_some(conn, &mut jobs);
    }
}

/// Runs jobs from the front of `jobs` in one transaction and completes them.
/// Normally that is all of them; if the engine aborts the transaction under
/// a failing job (SQLITE_FULL, IOERR…), or an [`Undo::Batch`] job fails
/// after writing, the jobs run so far are failed and rolled back and the
/// rest are left for a fresh transaction, so nothing runs outside one.
fn commit_some(conn: &Connection, jobs: &mut VecDeque<Job>) {
    let started = Instant::now();
    if let Err(err) = conn.execute_batch("BEGIN IMMEDIATE") {
        // Dropping the jobs unrun drops their reply channels: each caller
        // gets an error and nothing was written.
        tracing::error!(%err, n_jobs = jobs.len(), "could not begin a store transaction");
        jobs.clear();
        return;
    }
    if let Err(err) = super::facts::batch_begins(conn) {
        tracing::error!(%err, "could not read the database's data version");
        super::facts::forget_all();
    }
    let mut completions: Vec<Completion> = Vec::with_capacity(jobs.len());
    let mut aborted = false;
    let mut spoiled = false;
    while let Some(job) = jobs.pop_front() {
        let ran = job(conn);
        completions.push(ran.complete);
        if conn.is_autocommit() {
            aborted = true;
            break;
        }
        if ran.spoiled {
            spoiled = true;
            break;
        }
    }
    let committed = if aborted || spoiled {
        super::facts::forget_all();
        tracing::error!(
            n_jobs = completions.len(),
            "a store transaction failed part-way and is rolled back"
        );
        if spoiled {
            let _ = conn.execute_batch("ROLLBACK");
        }
        // Rolled back whole: nothing of the batch was written, and the
        // fault (a full disk, an I/O error) may pass.
        Err(StoreError::Unavailable)
    } else {
        let committed = conn.execute_batch("COMMIT").map_err(backend);
        if let Err(err) = &committed {
            super::facts::forget_all();
            tracing::error!(%err, n_jobs = completions.len(), "store commit failed; the batch is rolled back");
            let _ = conn.execute_batch("ROLLBACK");
        }
        committed
    };
    metrics::histogram!("missive_store_batch_jobs").record(completions.len() as f64);
    metrics::histogram!("missive_store_commit_seconds").record(started.elapsed().as_secs_f64());
    for complete in completions {
        complete(committed.clone());
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn a_job_is_queued_while_the_one_before_it_still_runs() {
        // Goal: `queue` resolves once the job has its place, not once it
        // committed (what lets one connection have many sends in flight),
        // and jobs run in the order they were queued.
        let writer = Writer::start(Connection::open_in_memory().unwrap(), 16, 16).unwrap();
        let ran = Arc::new(Mutex::new(Vec::new()));
        let (release, held) = std::sync::mpsc::channel::<()>();
        let first_ran = Arc::clone(&ran);
        let first = writer
            .queue(Undo::Savepoint, move |_| {
                // Holds the writer thread until the second job is queued.
                held.recv_timeout(Duration::from_secs(10)).ok();
                first_ran.lock().unwrap().push(1);
                Ok(1)
            })
            .await
            .unwrap();
        let second_ran = Arc::clone(&ran);
        let second = tokio::time::timeout(
            Duration::from_secs(5),
            writer.queue(Undo::Savepoint, move |_| {
                second_ran.lock().unwrap().push(2);
                Ok(2)
            }),
        )
        .await
        .expect("the second job is queued while the first still runs")
        .unwrap();
        assert!(ran.lock().unwrap().is_empty(), "nothing committed yet");
        release.send(()).unwrap();
        assert_eq!((first.await.unwrap(), second.await.unwrap()), (1, 2));
        assert_eq!(*ran.lock().unwrap(), [1, 2]);
        writer.shutdown().await;
    }

    #[tokio::test]
    async fn a_job_failing_after_its_writes_fails_its_batch_and_no_other() {
        // Goal: an `Undo::Batch` job has no savepoint, so when it fails
        // after writing, the batch it ran in is rolled back whole (no half
        // of it commits, as a seq taken without its message would be a
        // gap); a refusal before any write spoils nothing; jobs not yet run
        // commit in a fresh transaction.
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch("CREATE TABLE t (v TEXT NOT NULL)")
            .unwrap();
        let writer = Writer::start(conn, 16, 16).unwrap();
        let (release, held) = std::sync::mpsc::channel::<()>();
        let (started, running) = oneshot::channel::<()>();
        let blocker = writer
            .queue(Undo::Savepoint, move |_| {
                let _ = started.send(());
                held.recv_timeout(Duration::from_secs(10)).ok();
                Ok(())
            })
            .await
            .unwrap();
        // The rest queue while the blocker holds the writer, so they are
        // taken as one batch.
        running.await.unwrap();
        let insert = |v: &'static str| {
            move |conn: &Connection| {
                conn.execute("INSERT INTO t (v) VALUES (?1)", [v])
                    .map(drop)
                    .map_err(backend)
            }
        };
        let before = writer.queue(Undo::Batch, insert("before")).await.unwrap();
        let failing = writer
            .queue(Undo::Batch, move |conn| {
                insert("half")(conn)?;
                Err::<(), _>(StoreError::Backend("injected".into()))
            })
            .await
            .unwrap();
        let refused = writer
            .queue(Undo::Batch, |_| Err::<(), _>(StoreError::NotMember))
            .await
            .unwrap();
        let after = writer.queue(Undo::Batch, insert("after")).await.unwrap();
        release.send(()).unwrap();
        blocker.await.unwrap();
        assert!(matches!(before.await, Err(StoreError::Unavailable)));
        assert!(matches!(failing.await, Err(StoreError::Backend(_))));
        assert!(matches!(refused.await, Err(StoreError::NotMember)));
        after.await.unwrap();
        let rows = writer
            .write(Undo::Savepoint, |conn| {
                let mut stmt = conn
                    .prepare("SELECT v FROM t ORDER BY rowid")
                    .map_err(backend)?;
                let rows = stmt
                    .query_map([], |row| row.get::<_, String>(0))
                    .map_err(backend)?;
                rows.collect::<Result<Vec<_>, _>>().map_err(backend)
            })
            .await
            .unwrap();
        assert_eq!(rows, ["after"]);
        writer.shutdown().await;
    }
}
