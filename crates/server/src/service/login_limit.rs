//! Failed-login limiting per username and per client IP: after
//! `failures_max` failures inside the window, further attempts are refused
//! until the window that began with the first failure ends.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// Bound on remembered keys, so a flood of distinct usernames cannot grow
/// memory without limit; when full, expired keys are dropped first.
const KEYS_MAX: usize = 100_000;

pub struct LoginLimiter {
    failures_max: u32,
    window: Duration,
    failures: Mutex<HashMap<String, (u32, Instant)>>,
}

impl LoginLimiter {
    pub fn new(failures_max: u32, window: Duration) -> Self {
        Self {
            failures_max,
            window,
            failures: Mutex::new(HashMap::new()),
        }
    }

    /// `Err(seconds to wait)` when any key is over its limit.
    pub fn check(&self, keys: &[String]) -> Result<(), u64> {
        let now = Instant::now();
        let failures = self.lock();
        for key in keys {
            if let Some((count, since)) = failures.get(key) {
                let elapsed = now.duration_since(*since);
                if *count >= self.failures_max && elapsed < self.window {
                    return Err((self.window - elapsed).as_secs().max(1));
                }
            }
        }
        Ok(())
    }

    pub fn record_failure(&self, keys: &[String]) {
        let now = Instant::now();
        let mut failures = self.lock();
        if failures.len() >= KEYS_MAX {
            let window = self.window;
            failures.retain(|_, (_, since)| now.duration_since(*since) < window);
            if failures.len() >= KEYS_MAX {
                failures.clear();
            }
        }
        for key in keys {
            let entry = failures.entry(key.clone()).or_insert((0, now));
            if now.duration_since(entry.1) >= self.window {
                *entry = (0, now);
            }
            entry.0 += 1;
        }
    }

    pub fn clear(&self, key: &str) {
        self.lock().remove(key);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (u32, Instant)>> {
        self.failures
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn limits_then_forgives_after_the_window() {
        // Goal: the (max+1)th attempt is refused; after the window it is allowed.
        let limiter = LoginLimiter::new(3, Duration::from_secs(60));
        let keys = vec!["u:alice".to_string(), "ip:1.2.3.4".to_string()];
        for _ in 0..3 {
            assert!(limiter.check(&keys).is_ok());
            limiter.record_failure(&keys);
        }
        let wait = limiter.check(&keys).unwrap_err();
        assert!((1..=60).contains(&wait));
        // Another username from the same IP is refused too.
        assert!(
            limiter
                .check(&["u:bob".into(), "ip:1.2.3.4".into()])
                .is_err()
        );
        tokio::time::advance(Duration::from_secs(61)).await;
        assert!(limiter.check(&keys).is_ok());
    }
}
