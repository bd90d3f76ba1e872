//! A small pool of read-only connections; WAL lets them read while the
//! writer commits. Queries run on the blocking thread pool.

use std::sync::{Arc, Mutex};

use rusqlite::Connection;
use tokio::sync::Semaphore;

use crate::StoreError;

pub(crate) struct Readers {
    idle: Arc<Mutex<Vec<Connection>>>,
    permits: Arc<Semaphore>,
}

impl Readers {
    pub(crate) fn new(conns: Vec<Connection>) -> Self {
        Self {
            permits: Arc::new(Semaphore::new(conns.len())),
            idle: Arc::new(Mutex::new(conns)),
        }
    }

    pub(crate) async fn read<T, F>(&self, op: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        // The permit guarantees an idle connection exists when we pop. It
        // moves into the blocking task and is released only after the
        // connection is back in the pool, even when the caller's future is
        // dropped half-way (a session ending mid-read).
        let permit = Arc::clone(&self.permits)
            .acquire_owned()
            .await
            .map_err(|_| StoreError::Closed)?;
        let idle = Arc::clone(&self.idle);
        tokio::task::spawn_blocking(move || {
            let pool_fault = || StoreError::Backend("reader pool has no idle connection".into());
            let conn = idle
                .lock()
                .map_err(|_| pool_fault())?
                .pop()
                .ok_or_else(pool_fault)?;
            let result = op(&conn);
            if let Ok(mut idle) = idle.lock() {
                idle.push(conn);
            }
            drop(permit);
            result
        })
        .await
        .map_err(|err| StoreError::Backend(format!("reader task failed: {err}")))?
    }

    pub(crate) fn close(&self) {
        self.permits.close();
    }
}
