//! Copies committed WAL pages back into the database file, on a thread of
//! its own and on a timer, so the writer never stalls a commit for a
//! checkpoint and a page rewritten by many commits between two checkpoints
//! is copied once.

use std::sync::Mutex;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread::JoinHandle;
use std::time::Duration;

use rusqlite::Connection;

use crate::StoreError;

/// How often committed pages are copied back.
pub(crate) const INTERVAL: Duration = Duration::from_millis(200);
/// The writer still checkpoints by itself once the WAL holds this many
/// pages (the checkpointer is starved or failing), bounding the WAL file.
pub(crate) const WRITER_BACKSTOP_PAGES: u32 = 16_384;
/// What a restarted WAL file is truncated to: its usual size, so it is not
/// regrown on every restart, without keeping a burst's size for ever.
pub(crate) const WAL_KEPT_BYTES: u64 = 64 << 20;

pub(crate) struct Checkpointer {
    stop: Mutex<Option<mpsc::Sender<()>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Checkpointer {
    pub(crate) fn start(conn: Connection) -> Result<Self, StoreError> {
        let (stop, stopped) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("missive-store-checkpoint".into())
            .spawn(move || run(conn, stopped))
            .map_err(|err| {
                StoreError::Backend(format!("cannot start the checkpoint thread: {err}"))
            })?;
        Ok(Self {
            stop: Mutex::new(Some(stop)),
            thread: Mutex::new(Some(thread)),
        })
    }

    /// Stops the thread; the writer's final checkpoint follows.
    pub(crate) async fn shutdown(&self) {
        // Dropping the sender wakes the thread at once.
        drop(self.stop.lock().ok().and_then(|mut slot| slot.take()));
        let handle = self.thread.lock().ok().and_then(|mut slot| slot.take());
        if let Some(handle) = handle {
            let _ = tokio::task::spawn_blocking(move || handle.join()).await;
        }
    }
}

fn run(conn: Connection, stopped: mpsc::Receiver<()>) {
    let mut failing = false;
    while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(INTERVAL) {
        // PASSIVE: copies what no reader still needs and never blocks the
        // writer; the writer restarts the WAL from the top once all of it
        // was copied.
        match conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |row| {
            row.get::<_, i64>(0)
        }) {
            Ok(_) => failing = false,
            Err(err) => {
                // A full disk fails every attempt: say so once, not five
                // times a second.
                if !failing {
                    tracing::warn!(%err, "WAL checkpoint failed; retrying");
                }
                failing = true;
            }
        }
    }
}
