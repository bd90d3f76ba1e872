//! Hot-path caches of this node: token → device (every request and
//! connection authenticates) and (account, conversation) → relay targets
//! (every typing indication). Both are dropped on every change that could
//! make them wrong, on this node at once and on the others over the Bus.
//!
//! **Invariant:** a cached authorization is never served after its device's
//! revocation has been applied on this node. Inserts race with invalidations
//! through a generation counter: an entry filled from a read that started
//! before an invalidation is removed again. While the Bus is disconnected,
//! invalidations from other nodes could be lost, so callers bypass the token
//! cache (see `Accounts::authenticate`) and everything is dropped when it
//! reconnects.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use missive_bus::Invalidation;
use missive_core::model::DeviceAuth;
use missive_core::{AccountId, ConversationId, DeviceId, TokenHash};
use moka::sync::Cache;

/// Backstops for anything an invalidation missed.
const TOKEN_TTL: Duration = Duration::from_secs(60);
/// Relay targets also change when a member adds a device, which is not
/// invalidated (a new device may miss typing indications this long).
const RELAY_TTL: Duration = Duration::from_secs(30);
const TOKENS_MAX: u64 = 200_000;
const RELAYS_MAX: u64 = 100_000;

pub type RelayTargets = Arc<Vec<(AccountId, DeviceId)>>;

pub struct Caches {
    tokens: Cache<TokenHash, DeviceAuth>,
    relays: Cache<(AccountId, ConversationId), RelayTargets>,
    generation: AtomicU64,
}

impl Default for Caches {
    fn default() -> Self {
        Self {
            tokens: Cache::builder()
                .max_capacity(TOKENS_MAX)
                .time_to_live(TOKEN_TTL)
                .support_invalidation_closures()
                .build(),
            relays: Cache::builder()
                .max_capacity(RELAYS_MAX)
                .time_to_live(RELAY_TTL)
                .support_invalidation_closures()
                .build(),
            generation: AtomicU64::new(0),
        }
    }
}

/// Where a read for the cache began; see [`Caches::fill_token`].
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Generation(u64);

impl Caches {
    pub fn generation(&self) -> Generation {
        Generation(self.generation.load(Ordering::SeqCst))
    }

    pub fn token(&self, hash: &TokenHash) -> Option<DeviceAuth> {
        self.tokens.get(hash)
    }

    /// Caches what a read begun at `since` found, unless an invalidation
    /// came in between.
    pub fn fill_token(&self, since: Generation, hash: TokenHash, auth: DeviceAuth) {
        if self.generation.load(Ordering::SeqCst) != since.0 {
            return;
        }
        self.tokens.insert(hash.clone(), auth);
        // An invalidation between the check and the insert may have missed
        // the new entry; it has bumped the generation, so take it out again.
        if self.generation.load(Ordering::SeqCst) != since.0 {
            self.tokens.invalidate(&hash);
        }
    }

    pub fn relay_targets(&self, key: (AccountId, ConversationId)) -> Option<RelayTargets> {
        self.relays.get(&key)
    }

    pub fn fill_relay_targets(
        &self,
        since: Generation,
        key: (AccountId, ConversationId),
        targets: RelayTargets,
    ) {
        if self.generation.load(Ordering::SeqCst) != since.0 {
            return;
        }
        self.relays.insert(key, targets);
        if self.generation.load(Ordering::SeqCst) != since.0 {
            self.relays.invalidate(&key);
        }
    }

    pub fn invalidate(&self, what: Invalidation) {
        // Bump first: fills racing with this call then undo themselves.
        self.generation.fetch_add(1, Ordering::SeqCst);
        let result = match what {
            Invalidation::Device(device) => {
                // Its relay targets elsewhere are harmless (a revoked
                // device has no live connection to relay to).
                self.tokens
                    .invalidate_entries_if(move |_, auth| auth.device == device)
                    .map(|_| ())
            }
            Invalidation::Conversation(conversation) => self
                .relays
                .invalidate_entries_if(move |(_, c), _| *c == conversation)
                .map(|_| ()),
            Invalidation::Relays => {
                self.relays.invalidate_all();
                Ok(())
            }
            Invalidation::Everything => {
                self.tokens.invalidate_all();
                self.relays.invalidate_all();
                Ok(())
            }
        };
        if let Err(err) = result {
            // Only if closures were not enabled at build; fall back to all.
            tracing::warn!(%err, "selective invalidation failed; dropping every entry");
            self.tokens.invalidate_all();
            self.relays.invalidate_all();
        }
    }
}

#[cfg(test)]
mod tests {
    use missive_core::Username;

    use super::*;

    fn auth(device: i64) -> DeviceAuth {
        DeviceAuth {
            account: AccountId(1),
            device: DeviceId(device),
            username: Username::parse("alice").unwrap(),
        }
    }

    #[test]
    fn invalidation_removes_entries_and_beats_racing_fills() {
        // Goal: a device's invalidation removes its token; a fill whose read
        // began before an invalidation is not cached; conversation
        // invalidation removes only that conversation's targets.
        let caches = Caches::default();
        let (one, two) = (TokenHash::of("one"), TokenHash::of("two"));
        let start = caches.generation();
        caches.fill_token(start, one.clone(), auth(1));
        caches.fill_token(start, two.clone(), auth(2));
        assert_eq!(caches.token(&one), Some(auth(1)));
        caches.invalidate(Invalidation::Device(DeviceId(1)));
        assert_eq!(caches.token(&one), None);
        assert_eq!(caches.token(&two), Some(auth(2)));
        // A read that began before that invalidation must not fill.
        caches.fill_token(start, one.clone(), auth(1));
        assert_eq!(caches.token(&one), None);

        let now = caches.generation();
        let targets: RelayTargets = Arc::new(vec![(AccountId(2), DeviceId(5))]);
        caches.fill_relay_targets(now, (AccountId(1), ConversationId(10)), targets.clone());
        caches.fill_relay_targets(now, (AccountId(1), ConversationId(11)), targets.clone());
        caches.invalidate(Invalidation::Conversation(ConversationId(10)));
        assert_eq!(
            caches.relay_targets((AccountId(1), ConversationId(10))),
            None
        );
        assert_eq!(
            caches.relay_targets((AccountId(1), ConversationId(11))),
            Some(targets)
        );
        caches.invalidate(Invalidation::Everything);
        assert_eq!(
            caches.relay_targets((AccountId(1), ConversationId(11))),
            None
        );
        assert_eq!(caches.token(&two), None);
    }
}
