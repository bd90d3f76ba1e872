//! Wall-clock time as a trait: the server reads time only through [`Clock`],
//! so tests can move it forward to check expiry without sleeping.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch.
pub type UnixMillis = i64;

pub trait Clock: Send + Sync + 'static {
    fn now_ms(&self) -> UnixMillis;
}

/// The real clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> UnixMillis {
        let since_epoch = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        i64::try_from(since_epoch.as_millis()).unwrap_or(i64::MAX)
    }
}

/// A clock that only moves when told to; starts at the real time.
#[derive(Clone, Debug)]
pub struct ManualClock {
    now_ms: Arc<AtomicI64>,
}

impl Default for ManualClock {
    fn default() -> Self {
        Self {
            now_ms: Arc::new(AtomicI64::new(SystemClock.now_ms())),
        }
    }
}

impl ManualClock {
    pub fn advance_ms(&self, delta_ms: i64) {
        self.now_ms.fetch_add(delta_ms, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> UnixMillis {
        self.now_ms.load(Ordering::SeqCst)
    }
}
