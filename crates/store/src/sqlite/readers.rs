//! A small pool of read-only connections; WAL lets them read while the
//! writer commits. Queries run on the blocking thread pool.

use std::sync::{Arc, Mutex};

use rusqlite::Connection;
use tokio::sync::Semaphore;

use crate::StoreError;

pub(crate) struct Readers {
    idle: Arc<Mutex<Vec<Connection>>>,
    permits: Semaphore,
}

impl Readers {
    pub(crate) fn new(conns: Vec<Connection>) -> Self {
        Self {
            permits: Semaphore::new(conns.len()),
            idle: Arc::new(Mutex::new(conns)),
        }
    }

    pub(crate) async fn read<T, F>(&self, op: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        // The permit guarantees an idle connection exists when we pop.
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| StoreError::Closed)?;
        let idle = Arc::clone(&self.idle);
        tokio::task::spawn_blocking(move || {
            let conn = idle
                .lock()
                .map_err(|_| StoreError::Closed)?
                .pop()
                .ok_or(StoreError::Closed)?;
            let result = op(&conn);
            if let Ok(mut idle) = idle.lock() {
                idle.push(conn);
            }
            result
        })
        .await
        .map_err(|err| StoreError::Backend(format!("reader task failed: {err}")))?
    }

    pub(crate) fn close(&self) {
        self.permits.close();
    }
}
