//! Rate limits as token buckets: for sends (text, reaction, edit or
//! delete), one per device and one per account, both of which a send must
//! pass; the same type, with the device rate off, limits media uploads and
//! group creations per account. Kept per node: a device has one live
//! session, so its bucket lives where it talks; an account's devices spread
//! over N nodes get up to N times the account rate (docs/PROTOCOL.md says
//! so).

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

/// Buckets beyond this many make the next insert drop the full ones (a full
/// bucket is the same as no bucket).
const BUCKETS_BEFORE_PRUNE: usize = 65_536;

pub struct SendLimiter {
    device: Rate,
    account: Rate,
    buckets: Mutex<HashMap<Key, Bucket>>,
}

impl SendLimiter {
    pub fn new(device: Rate, account: Rate) -> Self {
        Self {
            device,
            account,
            buckets: Mutex::new(HashMap::new()),
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
        auth: &missive_store::DeviceAuth,
        what: &'static str,
    ) -> Result<(), crate::error::ApiError> {
        self.take(auth.device, auth.account, Instant::now())
            .map_err(|wait| crate::error::ApiError::rate_limited(wait, what))
    }

    /// Takes one send from both buckets, or neither: `Err(wait)` says how
    /// long until both would have a token again.
    pub fn take(&self, device: DeviceId, account: AccountId, now: Instant) -> Result<(), Duration> {
        let mut buckets = crate::lock(&self.buckets);
        if buckets.len() >= BUCKETS_BEFORE_PRUNE {
            let (device_rate, account_rate) = (self.device, self.account);
            buckets.retain(|key, bucket| {
                let rate = match key {
                    Key::Device(_) => device_rate,
                    Key::Account(_) => account_rate,
                };
                refilled(*bucket, rate, now) < f64::from(rate.burst)
            });
        }
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
        }
        Ok(())
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
