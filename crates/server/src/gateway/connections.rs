//! Live connections counted per client address and per account, beneath
//! the node-wide `limits.connections_max` semaphore.
//!
//! A WebSocket takes its address slot at the upgrade (before it is
//! accepted) and its account slot once `auth` succeeded, before the session
//! registers anywhere; a long-poll takes both before it acks or registers.
//! A refusal therefore changes nothing. A [`Slot`] gives its count back when
//! dropped, so every way a connection ends (close, error, a cancelled poll,
//! a panic) releases it; sessions keep their slots in their `Live`, which
//! drops them before presence is announced, so a client that saw a user go
//! offline knows that user's slots are free.
//!
//! Counts are per node, like `connections_max`. The map holds only keys
//! with a live slot, and every slot is taken under a `connections_max`
//! permit, so it never outgrows twice the node's connection limit.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use missive_core::AccountId;

use crate::service::ServiceError;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Key {
    Ip(IpAddr),
    Account(AccountId),
}

pub struct ConnectionLimits {
    per_ip_max: usize,
    per_account_max: usize,
    counts: Mutex<HashMap<Key, usize>>,
}

/// One counted connection; released on drop.
#[must_use = "the slot is released when dropped"]
pub struct Slot {
    limits: Arc<ConnectionLimits>,
    key: Key,
}

impl std::fmt::Debug for Slot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Slot").field(&self.key).finish()
    }
}

impl ConnectionLimits {
    pub fn new(per_ip_max: usize, per_account_max: usize) -> Arc<Self> {
        Arc::new(Self {
            per_ip_max,
            per_account_max,
            counts: Mutex::new(HashMap::new()),
        })
    }

    /// A slot for one more connection from `ip`, or `rate_limited`.
    pub fn ip(self: &Arc<Self>, ip: IpAddr) -> Result<Slot, ServiceError> {
        self.acquire(Key::Ip(ip), self.per_ip_max).ok_or_else(|| {
            ServiceError::new(
                missive_proto::ErrorCode::RateLimited,
                "too many connections from this address",
            )
        })
    }

    /// A slot for one more connection of `account`, or `rate_limited`.
    pub fn account(self: &Arc<Self>, account: AccountId) -> Result<Slot, ServiceError> {
        self.acquire(Key::Account(account), self.per_account_max)
            .ok_or_else(|| {
                ServiceError::new(
                    missive_proto::ErrorCode::RateLimited,
                    "too many connections for this account",
                )
            })
    }

    fn acquire(self: &Arc<Self>, key: Key, max: usize) -> Option<Slot> {
        let mut counts = crate::poison::lock(&self.counts);
        let count = counts.entry(key).or_insert(0);
        if *count >= max {
            if *count == 0 {
                counts.remove(&key);
            }
            return None;
        }
        *count += 1;
        Some(Slot {
            limits: Arc::clone(self),
            key,
        })
    }

    /// Connections counted for `ip` now.
    pub fn from_ip(&self, ip: IpAddr) -> usize {
        self.count(Key::Ip(ip))
    }

    /// Connections counted for `account` now.
    pub fn of_account(&self, account: AccountId) -> usize {
        self.count(Key::Account(account))
    }

    fn count(&self, key: Key) -> usize {
        crate::poison::lock(&self.counts)
            .get(&key)
            .copied()
            .unwrap_or(0)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut counts = crate::poison::lock(&self.limits.counts);
        if let Some(count) = counts.get_mut(&self.key) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                counts.remove(&self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_count_per_key_and_come_back_on_drop() {
        // Goal: each address and each account has its own count; a refused
        // slot takes nothing; dropping a slot frees it and forgets empty
        // keys, so the map holds only live connections.
        let limits = ConnectionLimits::new(2, 1);
        let a: IpAddr = "203.0.113.1".parse().unwrap();
        let b: IpAddr = "203.0.113.2".parse().unwrap();
        let first = limits.ip(a).unwrap();
        let second = limits.ip(a).unwrap();
        assert_eq!(
            limits.ip(a).unwrap_err().code,
            missive_proto::ErrorCode::RateLimited
        );
        assert_eq!(limits.from_ip(a), 2);
        let other = limits.ip(b).unwrap();
        let alice = limits.account(AccountId(1)).unwrap();
        assert!(limits.account(AccountId(1)).is_err());
        let bob = limits.account(AccountId(2)).unwrap();
        drop(first);
        assert_eq!(limits.from_ip(a), 1);
        let again = limits.ip(a).unwrap();
        drop((second, again, other, alice, bob));
        assert!(crate::poison::lock(&limits.counts).is_empty());
    }
}
