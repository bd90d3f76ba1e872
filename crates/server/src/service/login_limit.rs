//! Attempt limiting for logins (per username and per client IP) and
//! registrations (per IP).
//!
//! An attempt is counted *before* the password is checked and refunded on
//! success, so a burst of parallel guesses cannot slip past the limit while
//! Argon2 runs. After `attempts_max` counted attempts inside the window that
//! began with the first of them, further attempts are refused until the
//! window ends.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// Bound on remembered keys. When full of live entries, new keys are
/// refused (fail closed) rather than forgetting existing lockouts.
const KEYS_MAX: usize = 100_000;

pub struct AttemptLimiter {
    attempts_max: u32,
    window: Duration,
    attempts: Mutex<HashMap<String, (u32, Instant)>>,
}

impl AttemptLimiter {
    pub fn new(attempts_max: u32, window: Duration) -> Self {
        Self {
            attempts_max,
            window,
            attempts: Mutex::new(HashMap::new()),
        }
    }

    /// Counts an attempt against every key, or refuses it with the seconds
    /// to wait when any key is at its limit (then nothing is counted).
    pub fn begin(&self, keys: &[String]) -> Result<(), u64> {
        let now = Instant::now();
        let window = self.window;
        let mut attempts = self.lock();
        for key in keys {
            if let Some((count, since)) = attempts.get(key) {
                let elapsed = now.duration_since(*since);
                if *count >= self.attempts_max && elapsed < window {
                    return Err((window - elapsed).as_secs().max(1));
                }
            }
        }
        let n_new = keys
            .iter()
            .filter(|key| !attempts.contains_key(*key))
            .count();
        if attempts.len() + n_new > KEYS_MAX {
            attempts.retain(|_, (_, since)| now.duration_since(*since) < window);
            if attempts.len() + n_new > KEYS_MAX {
                return Err(window.as_secs().max(1));
            }
        }
        for key in keys {
            let entry = attempts.entry(key.clone()).or_insert((0, now));
            if now.duration_since(entry.1) >= window {
                *entry = (0, now);
            }
            entry.0 += 1;
        }
        Ok(())
    }

    /// Takes back one counted attempt of `key` (a successful login).
    pub fn refund(&self, key: &str) {
        let mut attempts = self.lock();
        if let Some(entry) = attempts.get_mut(key) {
            entry.0 = entry.0.saturating_sub(1);
            if entry.0 == 0 {
                attempts.remove(key);
            }
        }
    }

    /// Forgets every attempt of `key` (a username that just logged in).
    pub fn forget(&self, key: &str) {
        self.lock().remove(key);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (u32, Instant)>> {
        crate::lock(&self.attempts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn limits_then_forgives_after_the_window() {
        // Goal: the (max+1)th attempt is refused even before any outcome is
        // known; refunds free a slot; after the window all is allowed again.
        let limiter = AttemptLimiter::new(3, Duration::from_secs(60));
        let keys = vec!["u:alice".to_string(), "ip:1.2.3.4".to_string()];
        for _ in 0..3 {
            assert!(limiter.begin(&keys).is_ok());
        }
        let wait = limiter.begin(&keys).unwrap_err();
        assert!((1..=60).contains(&wait));
        // Another username from the same IP is refused too.
        assert!(
            limiter
                .begin(&["u:bob".into(), "ip:1.2.3.4".into()])
                .is_err()
        );
        limiter.refund("ip:1.2.3.4");
        limiter.forget("u:alice");
        assert!(limiter.begin(&keys).is_ok());
        assert!(limiter.begin(&keys).is_err());
        tokio::time::advance(Duration::from_secs(61)).await;
        assert!(limiter.begin(&keys).is_ok());
    }
}
