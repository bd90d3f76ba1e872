//! Attempt limiting for logins (per username and per client IP) and
//! registrations (per IP).
//!
//! An attempt is counted *before* the password is checked and refunded on
//! success, so a burst of parallel guesses cannot slip past the limit while
//! Argon2 runs. After `attempts_max` counted attempts inside the window that
//! began with the first of them, further attempts are refused until the
//! window ends.
//!
//! In a cluster each node tells the others how many attempts it counted
//! per key ([`SharedLimit`]), and counts theirs too, so the limit holds
//! across nodes (attempts on several nodes inside one report period may
//! pass it by their number). Refunds and forgetting stay local.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use super::send_limit::SharedLimit;

/// Bound on remembered keys. When full of live entries, new keys are
/// refused (fail closed) rather than forgetting existing lockouts.
const KEYS_MAX: usize = 100_000;

pub struct AttemptLimiter {
    attempts_max: u32,
    window: Duration,
    attempts: Mutex<HashMap<String, (u32, Instant)>>,
    /// Attempts counted here since the last report, net of refunds; `None`
    /// when there is no other node to tell.
    spent: Option<Mutex<HashMap<String, u32>>>,
}

impl AttemptLimiter {
    pub fn new(attempts_max: u32, window: Duration) -> Self {
        Self {
            attempts_max,
            window,
            attempts: Mutex::new(HashMap::new()),
            spent: None,
        }
    }

    /// Tallies what this node counts, for [`SharedLimit::take_spent`].
    pub fn shared(mut self, shared: bool) -> Self {
        self.spent = shared.then(Mutex::default);
        self
    }

    /// Adds `units` attempts to `key`, starting a window if none is open.
    fn count(
        attempts: &mut HashMap<String, (u32, Instant)>,
        key: &str,
        units: u32,
        now: Instant,
        window: Duration,
    ) {
        let entry = attempts.entry(key.to_owned()).or_insert((0, now));
        if now.duration_since(entry.1) >= window {
            *entry = (0, now);
        }
        entry.0 = entry.0.saturating_add(units);
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
            Self::count(&mut attempts, key, 1, now, window);
        }
        drop(attempts);
        if let Some(spent) = &self.spent {
            let mut spent = crate::lock(spent);
            for key in keys {
                *spent.entry(key.clone()).or_insert(0) += 1;
            }
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
        drop(attempts);
        if let Some(spent) = &self.spent {
            let mut spent = crate::lock(spent);
            if let Some(units) = spent.get_mut(key) {
                *units = units.saturating_sub(1);
                if *units == 0 {
                    spent.remove(key);
                }
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

impl SharedLimit for AttemptLimiter {
    fn take_spent(&self) -> Vec<(String, u32)> {
        match &self.spent {
            Some(spent) => crate::lock(spent).drain().collect(),
            None => Vec::new(),
        }
    }

    fn spent_elsewhere(&self, key: &str, units: u32) {
        let now = Instant::now();
        let mut attempts = self.lock();
        // Full of live keys: as `begin`, fail closed by not forgetting any;
        // this node's own attempts of the key are still counted here.
        if attempts.len() >= KEYS_MAX && !attempts.contains_key(key) {
            return;
        }
        Self::count(&mut attempts, key, units, now, self.window);
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

    #[tokio::test(start_paused = true)]
    async fn attempts_on_other_nodes_count_here() {
        // Goal: a node counts the attempts others report against the same
        // keys; it reports its own net of refunds; alone it tallies none.
        let here = AttemptLimiter::new(3, Duration::from_secs(60)).shared(true);
        let there = AttemptLimiter::new(3, Duration::from_secs(60)).shared(true);
        let ip = vec!["ip:1.2.3.4".to_string()];
        assert!(here.begin(&ip).is_ok());
        assert!(here.begin(&ip).is_ok());
        here.refund("ip:1.2.3.4");
        assert!(here.begin(&ip).is_ok());
        let spent = here.take_spent();
        assert_eq!(spent, vec![("ip:1.2.3.4".to_owned(), 2)]);
        assert!(here.take_spent().is_empty());
        for (key, units) in &spent {
            there.spent_elsewhere(key, *units);
        }
        assert!(there.begin(&ip).is_ok(), "two of three counted");
        assert!(there.begin(&ip).is_err());
        tokio::time::advance(Duration::from_secs(61)).await;
        assert!(there.begin(&ip).is_ok(), "the window ended");

        let alone = AttemptLimiter::new(3, Duration::from_secs(60));
        assert!(alone.begin(&ip).is_ok());
        assert!(alone.take_spent().is_empty());
    }
}
