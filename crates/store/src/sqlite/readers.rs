//! The read-only connections, each owned by its own thread; WAL lets them
//! read while the writer commits.
//!
//! A reader thread takes every read waiting (up to [`READ_BATCH_MAX`]) and
//! runs them in one read transaction. A reader connection starts each read
//! transaction by asking whether the WAL changed since its last one, and
//! under load it always has: SQLite then drops the connection's whole page
//! cache and its map of the file, and the next reads fault every page back
//! in. When each statement was its own transaction, a reconnect storm's
//! catch-up reads spent a seventh of the server's CPU on that (unmapping
//! and page faults); a batch pays it once. The jobs are taken before the
//! transaction begins, so each sees every commit that finished before it
//! was queued, as it did alone.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use rusqlite::Connection;
use tokio::sync::{mpsc, oneshot};

use crate::StoreError;

/// Most reads one transaction runs: enough to amortise the fresh page
/// cache, few enough that a small read does not wait long behind a batch
/// of catch-up pages.
const READ_BATCH_MAX: usize = 32;

/// Most reads waiting for a reader thread before callers wait.
const QUEUE_MAX: usize = 8192;

type Job = Box<dyn FnOnce(&Connection) + Send>;

pub(crate) struct Readers {
    jobs: mpsc::Sender<Job>,
    closed: AtomicBool,
}

impl Readers {
    /// Starts one thread per connection. They end when the `Readers` is
    /// dropped (the queue closes) after finishing what was queued.
    pub(crate) fn start(conns: Vec<Connection>) -> Result<Self, StoreError> {
        let (jobs, receiver) = mpsc::channel(QUEUE_MAX);
        let receiver = Arc::new(Mutex::new(receiver));
        for (index, conn) in conns.into_iter().enumerate() {
            let receiver = Arc::clone(&receiver);
            std::thread::Builder::new()
                .name(format!("missive-store-reader-{index}"))
                .spawn(move || run(&conn, &receiver))
                .map_err(|err| {
                    StoreError::Backend(format!("cannot start a reader thread: {err}"))
                })?;
        }
        Ok(Self {
            jobs,
            closed: AtomicBool::new(false),
        })
    }

    pub(crate) async fn read<T, F>(&self, op: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        if self.closed.load(Ordering::Acquire) {
            return Err(StoreError::Closed);
        }
        let (reply, answer) = oneshot::channel();
        let job: Job = Box::new(move |conn| {
            // A caller that went away (a session ending mid-read) needs
            // no answer.
            if !reply.is_closed() {
                let _ = reply.send(op(conn));
            }
        });
        self.jobs.send(job).await.map_err(|_| StoreError::Closed)?;
        answer
            .await
            .map_err(|_| StoreError::Backend("a store reader failed during the read".into()))?
    }

    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::Release);
    }
}

fn run(conn: &Connection, receiver: &Mutex<mpsc::Receiver<Job>>) {
    let mut batch = Vec::with_capacity(READ_BATCH_MAX);
    loop {
        {
            // One thread waits on the queue while the others wait for the
            // lock or run their batches.
            let Ok(mut receiver) = receiver.lock() else {
                return;
            };
            let Some(first) = receiver.blocking_recv() else {
                return;
            };
            batch.push(first);
            while batch.len() < READ_BATCH_MAX {
                match receiver.try_recv() {
                    Ok(job) => batch.push(job),
                    Err(_) => break,
                }
            }
        }
        run_batch(conn, &mut batch);
    }
}

fn run_batch(conn: &Connection, batch: &mut Vec<Job>) {
    for job in batch.drain(..) {
        // A failing statement can end the transaction (an I/O error, say):
        // the next job begins another.
        if conn.is_autocommit()
            && let Err(err) = conn.execute_batch("BEGIN")
        {
            tracing::warn!(%err, "could not begin a read transaction; reading without one");
        }
        // A panicking job drops its reply (its caller gets an error) and
        // leaves the thread serving the rest.
        if catch_unwind(AssertUnwindSafe(|| job(conn))).is_err() {
            tracing::error!("a store read panicked");
        }
    }
    if !conn.is_autocommit()
        && let Err(err) = conn.execute_batch("COMMIT")
    {
        tracing::warn!(%err, "could not end a read transaction");
        let _ = conn.execute_batch("ROLLBACK");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rusqlite::OpenFlags;

    fn open_pair(dir: &tempfile::TempDir, readers: usize) -> (Connection, Readers) {
        let path = dir.path().join("readers.db");
        let writer = Connection::open(&path).expect("open writer");
        writer
            .execute_batch("PRAGMA journal_mode = WAL; CREATE TABLE t (n INTEGER NOT NULL);")
            .expect("schema");
        let conns = (0..readers)
            .map(|_| {
                Connection::open_with_flags(&path, OpenFlags::SQLITE_OPEN_READ_ONLY)
                    .expect("open reader")
            })
            .collect();
        (writer, Readers::start(conns).expect("start readers"))
    }

    fn count(conn: &Connection) -> Result<i64, StoreError> {
        conn.query_row("SELECT COUNT(*) FROM t", [], |row| row.get(0))
            .map_err(|err| StoreError::Backend(err.to_string()))
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_read_sees_every_commit_finished_before_it_was_queued() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (writer, readers) = open_pair(&dir, 2);
        let readers = Arc::new(readers);
        for committed in 1..=50_i64 {
            writer
                .execute("INSERT INTO t VALUES (1)", [])
                .expect("insert");
            // Many reads at once, so the threads take them in batches.
            let reads: Vec<_> = (0..2 * READ_BATCH_MAX)
                .map(|_| {
                    let readers = Arc::clone(&readers);
                    tokio::spawn(async move { readers.read(count).await })
                })
                .collect();
            for read in reads {
                let seen = read.await.expect("task").expect("read");
                assert_eq!(seen, committed, "a read missed a commit made before it");
            }
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_panicking_read_fails_only_its_caller() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (_writer, readers) = open_pair(&dir, 1);
        let panicked = readers
            .read(|_| -> Result<(), StoreError> { panic!("a read that panics") })
            .await;
        assert!(
            panicked.is_err(),
            "the caller of a panicking read gets an error"
        );
        // Bounded: a reader thread lost to the panic would leave this read
        // waiting forever rather than failing.
        let next = tokio::time::timeout(std::time::Duration::from_secs(10), readers.read(count))
            .await
            .expect("the reader thread survived the panic");
        assert_eq!(next.expect("the next read"), 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_closed_pool_refuses_reads() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (_writer, readers) = open_pair(&dir, 1);
        readers.close();
        assert!(matches!(readers.read(count).await, Err(StoreError::Closed)));
    }
}
