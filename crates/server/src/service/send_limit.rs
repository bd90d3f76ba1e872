//! Rate limits as token buckets: for sends (text, reaction, edit or
//! delete), one per device and one per account, both of which a send must
//! pass; the same type, with the device rate off, limits media uploads,
//! group creations, conversation settings changes and key claims per
//! account.
//!
//! In a cluster each node keeps its own buckets and tells the others what
//! it took from account budgets ([`SharedLimit`], reported every
//! `cluster::SPENT_REPORT_PERIOD` over the bus); each debits what the
//! others took from the same buckets. Device budgets stay with the node a
//! device talks to (it has one live session).
//! So a budget holds across nodes at its rate, with no store round trip and
//! no bus message per send; the slack is what nodes take before they hear
//! of each other: a burst spent at once on several nodes, and a report
//! period's worth of the rate.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use missive_core::{AccountId, DeviceId};

/// A rate and the burst allowed above it; a rate of 0 turns it off.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Rate {
    pub per_sec: u32,
    pub burst: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Key {
    Device(DeviceId),
    Account(AccountId),
}

#[derive(Clone, Copy, Debug)]
struct Bucket {
    tokens: f64,
    updated: Instant,
}

impl Key {
    /// As named in spending reports.
    fn name(self) -> String {
        match self {
            Key::Device(device) => format!("d:{}", device.0),
            Key::Account(account) => format!("a:{}", account.0),
        }
    }

    fn parse(name: &str) -> Option<Self> {
        let (tag, id) = name.split_once(':')?;
        let id: i64 = id.parse().ok()?;
        match tag {
            "d" => Some(Key::Device(DeviceId(id))),
            "a" => Some(Key::Account(AccountId(id))),
            _ => None,
        }
    }
}

/// Buckets beyond this many make the next insert drop the full ones (a full
/// bucket is the same as no bucket); after a prune the bound doubles past
/// what is left, so a map of many live buckets is not scanned on every send.
const BUCKETS_BEFORE_PRUNE: usize = 65_536;

/// A budget that other nodes spend too: what this node took since it last
/// reported, and what another node reported it took.
pub trait SharedLimit: Send + Sync {
    /// What this node took since the last call, by key, net of what it
    /// gave back (never zero); empties the tally.
    fn take_spent(&self) -> Vec<(String, i64)>;

    /// Another node took `units` from `key`'s budget (gave back, if
    /// negative).
    fn spent_elsewhere(&self, key: &str, units: i64);
}

struct Buckets {
    buckets: HashMap<Key, Bucket>,
    /// The size at which the next insert prunes full buckets.
    prune_at: usize,
    /// What this node took from account budgets since its last report (kept
    /// only in a cluster). Device budgets are not shared: a device has one
    /// live session, so its sends nearly all pass one node, and sharing them
    /// would put a bucket for every active device of the cluster on every
    /// node.
    spent: HashMap<Key, u32>,
}

impl Default for Buckets {
    fn default() -> Self {
        Self {
            buckets: HashMap::new(),
            prune_at: BUCKETS_BEFORE_PRUNE,
            spent: HashMap::new(),
        }
    }
}

impl Buckets {
    /// Drops the full buckets once the map reaches its bound.
    fn prune(&mut self, now: Instant, rate_of: impl Fn(Key) -> Rate) {
        if self.buckets.len() < self.prune_at {
            return;
        }
        self.buckets.retain(|key, bucket| {
            let rate = rate_of(*key);
            refilled(*bucket, rate, now) < f64::from(rate.burst)
        });
        self.prune_at = BUCKETS_BEFORE_PRUNE.max(2 * self.buckets.len());
    }
}

pub struct SendLimiter {
    device: Rate,
    account: Rate,
    /// Whether to tally what is taken for other nodes.
    shared: bool,
    buckets: Mutex<Buckets>,
}

impl SendLimiter {
    pub fn new(device: Rate, account: Rate) -> Self {
        Self {
            device,
            account,
            shared: false,
            buckets: Mutex::default(),
        }
    }

    /// Tallies what this node takes, for [`SharedLimit::take_spent`].
    pub fn shared(mut self, shared: bool) -> Self {
        self.shared = shared;
        self
    }

    fn rate(&self, key: Key) -> Rate {
        match key {
            Key::Device(_) => self.device,
            Key::Account(_) => self.account,
        }
    }

    /// A limiter of accounts only (the device rate off).
    pub fn per_account(per_sec: u32, burst: u32) -> Self {
        Self::new(
            Rate {
                per_sec: 0,
                burst: 0,
            },
            Rate { per_sec, burst },
        )
    }

    /// [`SendLimiter::take`] for `auth` now, as the typed refusal the
    /// client gets: `rate_limited` with `what` and the wait.
    pub fn check(
        &self,
        auth: &missive_core::model::DeviceAuth,
        what: &'static str,
    ) -> Result<(), crate::service::ServiceError> {
        self.take(auth.device, auth.account, Instant::now())
            .map_err(|wait| crate::service::ServiceError::rate_limited(wait, what))
    }

    /// Takes one send from both buckets, or neither: `Err(wait)` says how
    /// long until both would have a token again.
    pub fn take(&self, device: DeviceId, account: AccountId, now: Instant) -> Result<(), Duration> {
        let mut state = crate::poison::lock(&self.buckets);
        state.prune(now, |key| self.rate(key));
        let Buckets { buckets, spent, .. } = &mut *state;
        let limited = [
            (Key::Device(device), self.device),
            (Key::Account(account), self.account),
        ]
        .into_iter()
        .filter(|(_, rate)| rate.per_sec > 0);
        let mut wait = Duration::ZERO;
        // At most two buckets: no allocation on the send path.
        let mut takes = [None, None];
        for (slot, (key, rate)) in takes.iter_mut().zip(limited) {
            let tokens = buckets
                .get(&key)
                .map_or(f64::from(rate.burst), |bucket| refilled(*bucket, rate, now));
            if tokens < 1.0 {
                wait = wait.max(Duration::from_secs_f64(
                    (1.0 - tokens) / f64::from(rate.per_sec),
                ));
            }
            *slot = Some((key, tokens));
        }
        if !wait.is_zero() {
            return Err(wait);
        }
        for (key, tokens) in takes.into_iter().flatten() {
            buckets.insert(
                key,
                Bucket {
                    tokens: tokens - 1.0,
                    updated: now,
                },
            );
            if self.shared && matches!(key, Key::Account(_)) {
                *spent.entry(key).or_insert(0) += 1;
            }
        }
        Ok(())
    }

    /// [`SharedLimit::spent_elsewhere`] at `now`: the bucket may go below
    /// zero (the tokens were taken), down to minus the burst, so a budget
    /// overdrawn on several nodes at once is paid back before the next take.
    fn debit(&self, key: Key, units: u32, now: Instant) {
        let rate = self.rate(key);
        if rate.per_sec == 0 || !matches!(key, Key::Account(_)) {
            return;
        }
        let mut state = crate::poison::lock(&self.buckets);
        state.prune(now, |key| self.rate(key));
        let tokens = state
            .buckets
            .get(&key)
            .map_or(f64::from(rate.burst), |bucket| refilled(*bucket, rate, now));
        state.buckets.insert(
            key,
            Bucket {
                tokens: (tokens - f64::from(units)).max(-f64::from(rate.burst)),
                updated: now,
            },
        );
    }
}

impl SharedLimit for SendLimiter {
    fn take_spent(&self) -> Vec<(String, i64)> {
        let mut state = crate::poison::lock(&self.buckets);
        state
            .spent
            .drain()
            .map(|(key, units)| (key.name(), i64::from(units)))
            .collect()
    }

    fn spent_elsewhere(&self, key: &str, units: i64) {
        // A send is never given back.
        if let (Some(key), Ok(units)) = (Key::parse(key), u32::try_from(units)) {
            self.debit(key, units, Instant::now());
        }
    }
}

/// The bucket's tokens at `now`: what it had plus what the rate earned
/// since, up to the burst.
fn refilled(bucket: Bucket, rate: Rate, now: Instant) -> f64 {
    let earned =
        now.saturating_duration_since(bucket.updated).as_secs_f64() * f64::from(rate.per_sec);
    (bucket.tokens + earned).min(f64::from(rate.burst))
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEVICE: DeviceId = DeviceId(1);
    const OTHER_DEVICE: DeviceId = DeviceId(2);
    const ACCOUNT: AccountId = AccountId(7);

    #[test]
    fn a_burst_then_the_rate() {
        // Goal: `burst` sends pass at once, the next waits 1/rate, and time
        // refills the bucket at the rate, never above the burst.
        let limiter = SendLimiter::new(
            Rate {
                per_sec: 10,
                burst: 3,
            },
            Rate {
                per_sec: 0,
                burst: 0,
            },
        );
        let start = Instant::now();
        for _ in 0..3 {
            assert!(limiter.take(DEVICE, ACCOUNT, start).is_ok());
        }
        let wait = limiter.take(DEVICE, ACCOUNT, start).unwrap_err();
        assert_eq!(wait, Duration::from_millis(100));
        assert!(limiter.take(DEVICE, ACCOUNT, start + wait).is_ok());
        assert!(limiter.take(DEVICE, ACCOUNT, start + wait).is_err());
        // A long pause refills to the burst, not beyond.
        let later = start + Duration::from_secs(60);
        for _ in 0..3 {
            assert!(limiter.take(DEVICE, ACCOUNT, later).is_ok());
        }
        assert!(limiter.take(DEVICE, ACCOUNT, later).is_err());
    }

    #[test]
    fn an_accounts_devices_share_its_bucket() {
        // Goal: the account limit counts every device of the account; a
        // refused send takes from neither bucket.
        let limiter = SendLimiter::new(
            Rate {
                per_sec: 100,
                burst: 5,
            },
            Rate {
                per_sec: 1,
                burst: 4,
            },
        );
        let now = Instant::now();
        for device in [DEVICE, OTHER_DEVICE, DEVICE, OTHER_DEVICE] {
            assert!(limiter.take(device, ACCOUNT, now).is_ok());
        }
        let wait = limiter.take(DEVICE, ACCOUNT, now).unwrap_err();
        assert_eq!(wait, Duration::from_secs(1));
        // Another account is unaffected.
        assert!(limiter.take(DeviceId(3), AccountId(8), now).is_ok());
        // The refusal took nothing: one second later exactly one more fits.
        let later = now + Duration::from_secs(1);
        assert!(limiter.take(DEVICE, ACCOUNT, later).is_ok());
        assert!(limiter.take(DEVICE, ACCOUNT, later).is_err());
    }

    #[test]
    fn nodes_spend_one_budget_by_telling_each_other() {
        // Goal: in a cluster, what one node takes from an account's budget
        // the others debit too; the debit may overdraw, down to minus the
        // burst; a limit that is off tallies nothing; keys round-trip.
        let account = Rate {
            per_sec: 10,
            burst: 5,
        };
        let off = Rate {
            per_sec: 0,
            burst: 0,
        };
        let here = SendLimiter::new(off, account).shared(true);
        let there = SendLimiter::new(off, account).shared(true);
        let now = Instant::now();
        for _ in 0..5 {
            assert!(here.take(DEVICE, ACCOUNT, now).is_ok());
        }
        let spent = here.take_spent();
        assert_eq!(spent, vec![("a:7".to_owned(), 5)]);
        assert!(here.take_spent().is_empty(), "a report empties the tally");
        for (key, units) in &spent {
            there.spent_elsewhere(key, *units);
        }
        assert!(there.take(OTHER_DEVICE, ACCOUNT, Instant::now()).is_err());
        // Overdrawn by far more than the burst: paid back from minus the
        // burst, i.e. one token is (5 + 1) / 10 s away.
        there.spent_elsewhere("a:7", 1_000);
        let wait = there
            .take(OTHER_DEVICE, ACCOUNT, Instant::now())
            .unwrap_err();
        assert!(wait > Duration::from_millis(500), "{wait:?}");
        assert!(wait <= Duration::from_millis(600), "{wait:?}");
        // Unknown keys and limits that are off change nothing.
        there.spent_elsewhere("x:1", 1);
        there.spent_elsewhere("d:1", 1);
        there.spent_elsewhere("a:7", -1_000);
        assert!(
            there.take(OTHER_DEVICE, ACCOUNT, Instant::now()).is_err(),
            "a send is never given back"
        );
        assert!(there.take_spent().is_empty());
        // Device budgets are not shared.
        let both = SendLimiter::new(account, account).shared(true);
        assert!(both.take(DEVICE, ACCOUNT, now).is_ok());
        assert_eq!(both.take_spent(), vec![("a:7".to_owned(), 1)]);
        // Not shared: nothing is tallied.
        let alone = SendLimiter::new(off, account);
        assert!(alone.take(DEVICE, ACCOUNT, now).is_ok());
        assert!(alone.take_spent().is_empty());
    }

    #[test]
    fn a_zero_rate_is_no_limit() {
        // Goal: rate 0 turns a limit off.
        let off = Rate {
            per_sec: 0,
            burst: 0,
        };
        let limiter = SendLimiter::new(off, off);
        let now = Instant::now();
        for _ in 0..10_000 {
            assert!(limiter.take(DEVICE, ACCOUNT, now).is_ok());
        }
    }
}
