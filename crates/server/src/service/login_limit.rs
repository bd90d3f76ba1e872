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
//! per key, net of refunds ([`SharedLimit`]), and counts theirs too, so
//! the limit holds across nodes (attempts on several nodes inside one
//! report period may pass it by their number). Forgetting a key gives back
//! everything this node counted for it, others' reports included, so a
//! login that succeeds on one node clears its username on all.

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
    /// Attempts counted here since the last report, net of refunds (so
    /// possibly negative); `None` when there is no other node to tell.
    spent: Option<Mutex<HashMap<String, i64>>>,
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
        for key in keys {
            self.tally(key, 1);
        }
        Ok(())
    }

    /// Adds `units` to what the next report says of `key`.
    fn tally(&self, key: &str, units: i64) {
        if let Some(spent) = &self.spent {
            let mut spent = crate::poison::lock(spent);
            let net = spent.entry(key.to_owned()).or_insert(0);
            *net += units;
            if *net == 0 {
                spent.remove(key);
            }
        }
    }

    /// Takes back one counted attempt of `key` (a successful login).
    pub fn refund(&self, key: &str) {
        let mut attempts = self.lock();
        let Some(entry) = attempts.get_mut(key) else {
            return;
        };
        entry.0 = entry.0.saturating_sub(1);
        if entry.0 == 0 {
            attempts.remove(key);
        }
        drop(attempts);
        self.tally(key, -1);
    }

    /// Forgets every attempt of `key` (a username that just logged in).
    pub fn forget(&self, key: &str) {
        let forgotten = self.lock().remove(key).map_or(0, |(count, _)| count);
        if forgotten > 0 {
            self.tally(key, -i64::from(forgotten));
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (u32, Instant)>> {
        crate::poison::lock(&self.attempts)
    }
}

impl SharedLimit for AttemptLimiter {
    fn take_spent(&self) -> Vec<(String, i64)> {
        match &self.spent {
            Some(spent) => crate::poison::lock(spent).drain().collect(),
            None => Vec::new(),
        }
    }

    fn spent_elsewhere(&self, key: &str, units: i64) {
        let now = Instant::now();
        let mut attempts = self.lock();
        if units < 0 {
            let given_back = u32::try_from(units.unsigned_abs()).unwrap_or(u32::MAX);
            if let Some(entry) = attempts.get_mut(key) {
                entry.0 = entry.0.saturating_sub(given_back);
                if entry.0 == 0 {
                    attempts.remove(key);
                }
            }
            return;
        }
        // Full of live keys: as `begin`, fail closed by not forgetting any;
        // this node's own attempts of the key are still counted here.
        if attempts.len() >= KEYS_MAX && !attempts.contains_key(key) {
            return;
        }
        let units = u32::try_from(units).unwrap_or(u32::MAX);
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

        // A refund after its attempt was reported is reported too (a
        // successful login elsewhere must not count against the address).
        let both = vec!["ip:1.2.3.4".to_string(), "u:alice".to_string()];
        let third = AttemptLimiter::new(3, Duration::from_secs(60)).shared(true);
        assert!(third.begin(&both).is_ok());
        let mut reported = third.take_spent();
        third.refund("ip:1.2.3.4");
        third.forget("u:alice");
        reported.extend(third.take_spent());
        reported.sort();
        assert_eq!(
            reported,
            vec![
                ("ip:1.2.3.4".to_owned(), -1),
                ("ip:1.2.3.4".to_owned(), 1),
                ("u:alice".to_owned(), -1),
                ("u:alice".to_owned(), 1),
            ]
        );
        for (key, units) in reported.iter().filter(|(_, units)| *units < 0) {
            there.spent_elsewhere(key, *units);
        }
        assert!(there.begin(&ip).is_ok(), "one given back");
        there.spent_elsewhere("u:alice", -5);
        tokio::time::advance(Duration::from_secs(61)).await;
        assert!(there.begin(&ip).is_ok(), "the window ended");

        let alone = AttemptLimiter::new(3, Duration::from_secs(60));
        assert!(alone.begin(&ip).is_ok());
        assert!(alone.take_spent().is_empty());
    }
}
