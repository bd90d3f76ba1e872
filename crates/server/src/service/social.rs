//! Contacts, blocking, presence (with WhatsApp's reciprocal privacy) and
//! typing. Presence and typing are ephemeral: they go only to live devices
//! through the Bus and are never stored.

use std::sync::Arc;

use missive_bus::{Bus, DeviceEvent, Invalidation};
use missive_core::model::{DeviceAuth, PresenceVisibility, Relation};
use missive_core::{AccountId, Clock, ConversationId};
use missive_proto::rest::{PresenceVisibility as WireVisibility, Privacy, UserList};
use missive_proto::{ErrorCode, ServerFrame, TypingState};
use missive_store::Store;

use crate::cache::Caches;
use crate::config::LimitsConfig;
use crate::router::Router;
use crate::service::ServiceError;

/// How long a `typing` indication lasts without a refresh.
pub const TYPING_TTL_MS: i64 = 6_000;
/// Users one connection may watch at once.
pub const PRESENCE_WATCH_MAX: usize = 256;
/// Locks that make "count, then add" one step per account (an account
/// hashes to one of these), so parallel adds cannot pass a list limit
/// together on this node.
const LIST_LOCKS: usize = 64;

/// `limit_exceeded` unless `username` may be added to a list that already
/// holds `listed`: there is room, or it is listed already (a no-op).
fn room_for(listed: &[String], username: &str, max: usize, list: &str) -> Result<(), ServiceError> {
    if listed.len() < max || listed.iter().any(|name| name == username) {
        return Ok(());
    }
    Err(ServiceError::new(
        ErrorCode::LimitExceeded,
        format!("at most {max} {list} (limits.{list}_per_account_max); remove one first"),
    ))
}

pub struct Social {
    store: Arc<dyn Store>,
    bus: Arc<dyn Bus>,
    router: Arc<Router>,
    clock: Arc<dyn Clock>,
    /// Leases are compared in the store's time base (cluster.rs).
    lease_clock: Arc<crate::cluster::LeaseClock>,
    caches: Arc<Caches>,
    contacts_max: usize,
    blocks_max: usize,
    list_locks: Box<[tokio::sync::Mutex<()>]>,
}

impl Social {
    pub fn new(
        store: Arc<dyn Store>,
        bus: Arc<dyn Bus>,
        router: Arc<Router>,
        clock: Arc<dyn Clock>,
        lease_clock: Arc<crate::cluster::LeaseClock>,
        caches: Arc<Caches>,
        limits: &LimitsConfig,
    ) -> Self {
        Self {
            store,
            bus,
            router,
            clock,
            lease_clock,
            caches,
            contacts_max: limits.contacts_per_account_max,
            blocks_max: limits.blocks_per_account_max,
            list_locks: (0..LIST_LOCKS)
                .map(|_| tokio::sync::Mutex::new(()))
                .collect(),
        }
    }

    /// Held while an account's contact or block list is counted and added to.
    async fn lock_lists(&self, account: AccountId) -> tokio::sync::MutexGuard<'_, ()> {
        let index = usize::try_from(account.0.rem_euclid(LIST_LOCKS as i64)).unwrap_or(0);
        self.list_locks[index].lock().await
    }

    pub async fn account(&self, username: &str) -> Result<AccountId, ServiceError> {
        super::account_named(&*self.store, username).await
    }

    /// Adds (`present`) or removes `username` in the caller's list of this
    /// relation, within the list's size limit. Either list decides who sees
    /// whose presence, so both accounts are announced again when it
    /// changed; a block also changes who gets ephemeral relays, on every
    /// node.
    pub async fn set_relation(
        &self,
        auth: &DeviceAuth,
        relation: Relation,
        username: &str,
        present: bool,
    ) -> Result<(), ServiceError> {
        let other = self.account(username).await?;
        if relation == Relation::Block && other == auth.account {
            return Err(ServiceError::new(
                ErrorCode::InvalidField,
                "you cannot block yourself",
            ));
        }
        let changed = {
            // Counting and adding are one step for this account.
            let _counting = if present {
                Some(self.lock_lists(auth.account).await)
            } else {
                None
            };
            if present {
                let listed = self.store.related(relation, auth.account).await?;
                let (max, list) = match relation {
                    Relation::Contact => (self.contacts_max, "contacts"),
                    Relation::Block => (self.blocks_max, "blocks"),
                };
                room_for(&listed, username, max, list)?;
            }
            self.store
                .set_relation(relation, auth.account, other, present, self.clock.now_ms())
                .await?
        };
        if changed {
            if relation == Relation::Block {
                self.caches.invalidate(Invalidation::Relays);
                self.bus.publish_invalidation(Invalidation::Relays).await;
            }
            self.announce(auth.account).await;
            self.announce(other).await;
        }
        Ok(())
    }

    /// The caller's list of this relation: its contacts, or whom it blocks.
    pub async fn related(
        &self,
        auth: &DeviceAuth,
        relation: Relation,
    ) -> Result<UserList, ServiceError> {
        Ok(UserList {
            users: self.store.related(relation, auth.account).await?,
        })
    }

    pub async fn privacy(&self, auth: &DeviceAuth) -> Result<Privacy, ServiceError> {
        let profile = self
            .store
            .presence_profile(auth.account)
            .await?
            .ok_or_else(ServiceError::internal)?;
        Ok(Privacy {
            presence: match profile.visibility {
                PresenceVisibility::Everyone => WireVisibility::Everyone,
                PresenceVisibility::Contacts => WireVisibility::Contacts,
                PresenceVisibility::Nobody => WireVisibility::Nobody,
            },
        })
    }

    pub async fn set_privacy(
        &self,
        auth: &DeviceAuth,
        privacy: Privacy,
    ) -> Result<(), ServiceError> {
        let visibility = match privacy.presence {
            WireVisibility::Everyone => PresenceVisibility::Everyone,
            WireVisibility::Contacts => PresenceVisibility::Contacts,
            WireVisibility::Nobody => PresenceVisibility::Nobody,
        };
        self.store
            .set_presence_visibility(auth.account, visibility)
            .await?;
        // Reciprocity: the change alters both what others see of the caller
        // and what the caller sees of everyone they watch.
        self.announce(auth.account).await;
        self.refresh_views_of(auth.account).await;
        Ok(())
    }

    /// Whether `viewer` may see `target`'s presence: neither blocked the
    /// other, the target's setting admits the viewer, and — reciprocally —
    /// the viewer's setting admits the target.
    async fn visible(&self, viewer: AccountId, target: AccountId) -> Result<bool, ServiceError> {
        if viewer == target {
            return Ok(true);
        }
        if self.store.blocked_either_way(viewer, target).await? {
            return Ok(false);
        }
        Ok(self.admits(target, viewer).await? && self.admits(viewer, target).await?)
    }

    /// Whether `owner`'s setting lets `other` see them.
    async fn admits(&self, owner: AccountId, other: AccountId) -> Result<bool, ServiceError> {
        let Some(profile) = self.store.presence_profile(owner).await? else {
            return Ok(false);
        };
        Ok(match profile.visibility {
            PresenceVisibility::Everyone => true,
            PresenceVisibility::Contacts => self.store.is_contact(owner, other).await?,
            PresenceVisibility::Nobody => false,
        })
    }

    /// `target`'s presence as `viewer` may see it.
    async fn view(
        &self,
        viewer: AccountId,
        target: AccountId,
    ) -> Result<ServerFrame, ServiceError> {
        let profile = self
            .store
            .presence_profile(target)
            .await?
            .ok_or_else(ServiceError::internal)?;
        let visible = self.visible(viewer, target).await?;
        let online = visible
            && self
                .store
                .account_online(target, self.lease_clock.now_ms())
                .await?;
        Ok(ServerFrame::Presence {
            user: profile.username,
            online,
            last_seen_ms: (visible && !online && profile.last_seen_ms > 0)
                .then_some(profile.last_seen_ms),
        })
    }

    /// Watches `usernames` from this connection (replacing its earlier
    /// watch list) and returns their presence now.
    pub async fn subscribe(
        &self,
        auth: &DeviceAuth,
        usernames: &[String],
    ) -> Result<Vec<ServerFrame>, ServiceError> {
        let targets = self.targets(usernames).await?;
        self.router
            .watch(auth.device, auth.account, targets.clone());
        let frames = self.views(auth, targets.clone()).await?;
        // What the answer shows is what later changes are compared with.
        for (target, frame) in targets.into_iter().zip(&frames) {
            let text: Arc<str> = frame.to_json().into();
            self.router.show_presence(auth.device, target, &text);
        }
        Ok(frames)
    }

    /// The presence of `usernames` now, without watching (for clients
    /// without a live session).
    pub async fn presence_of(
        &self,
        auth: &DeviceAuth,
        usernames: &[String],
    ) -> Result<Vec<ServerFrame>, ServiceError> {
        let targets = self.targets(usernames).await?;
        self.views(auth, targets).await
    }

    async fn targets(&self, usernames: &[String]) -> Result<Vec<AccountId>, ServiceError> {
        if usernames.len() > PRESENCE_WATCH_MAX {
            return Err(ServiceError::new(
                ErrorCode::InvalidField,
                "at most 256 users per subscription",
            ));
        }
        let mut targets = Vec::with_capacity(usernames.len());
        for username in usernames {
            targets.push(self.account(username).await?);
        }
        targets.sort();
        targets.dedup();
        Ok(targets)
    }

    async fn views(
        &self,
        auth: &DeviceAuth,
        targets: Vec<AccountId>,
    ) -> Result<Vec<ServerFrame>, ServiceError> {
        let mut frames = Vec::with_capacity(targets.len());
        for target in targets {
            frames.push(self.view(auth.account, target).await?);
        }
        Ok(frames)
    }

    /// Tells every watcher of `account`, on every node, its presence as
    /// they may see it.
    pub async fn announce(&self, account: AccountId) {
        self.announce_here(account).await;
        self.bus.publish_presence(account).await;
    }

    /// Tells the watchers of `account` on this node.
    pub async fn announce_here(&self, account: AccountId) {
        for (device, viewer) in self.router.watchers(account) {
            match self.view(viewer, account).await {
                Ok(frame) => {
                    let text: Arc<str> = frame.to_json().into();
                    // Only a change of what this viewer may see: a hidden
                    // user's comings and goings must not show as frames.
                    if self.router.show_presence(device, account, &text) {
                        self.bus.publish(device, DeviceEvent::Ephemeral(text)).await;
                    }
                }
                Err(err) => tracing::debug!(code = err.code.as_str(), "presence view failed"),
            }
        }
    }

    /// Sends `viewer`'s watching devices the presence of everyone they
    /// watch, as `viewer` may now see it.
    async fn refresh_views_of(&self, viewer: AccountId) {
        for (device, targets) in self.router.watched_by(viewer) {
            for target in targets {
                match self.view(viewer, target).await {
                    Ok(frame) => {
                        let text: Arc<str> = frame.to_json().into();
                        if self.router.show_presence(device, target, &text) {
                            self.bus.publish(device, DeviceEvent::Ephemeral(text)).await;
                        }
                    }
                    Err(err) => tracing::debug!(code = err.code.as_str(), "presence view failed"),
                }
            }
        }
    }

    /// A device of `account` connected; announce if it is the first.
    pub async fn device_connected(&self, account: AccountId) {
        self.announce(account).await;
    }

    /// A device of `account` disconnected; if none is left on any node,
    /// record last seen and announce.
    pub async fn device_disconnected(&self, account: AccountId) {
        if self.record_last_seen(account).await {
            self.announce(account).await;
        }
    }

    /// Records that the account was online until now, unless a device of it
    /// still is; whether it recorded (the account is offline). Alone, as a
    /// long-poll ends, it announces nothing, so polling clients do not make
    /// their presence flap.
    pub async fn record_last_seen(&self, account: AccountId) -> bool {
        if self.online_anywhere(account).await {
            return false;
        }
        if let Err(err) = self.store.set_last_seen(account, self.clock.now_ms()).await {
            tracing::debug!(%err, "could not record last seen");
        }
        true
    }

    /// Whether a device of the account is live on any node; when the store
    /// cannot tell, assume so (and record nothing).
    async fn online_anywhere(&self, account: AccountId) -> bool {
        self.store
            .account_online(account, self.lease_clock.now_ms())
            .await
            .unwrap_or(true)
    }

    /// Relays a typing indication to the live devices of the other members
    /// (except those blocked either way). Never stored.
    pub async fn typing(
        &self,
        auth: &DeviceAuth,
        conversation: ConversationId,
        state: TypingState,
    ) -> Result<(), ServiceError> {
        let key = (auth.account, conversation);
        let targets = match self.caches.relay_targets(key) {
            Some(targets) => targets,
            None => {
                let since = self.caches.generation();
                let targets = Arc::new(self.store.relay_targets(auth.account, conversation).await?);
                self.caches
                    .fill_relay_targets(since, key, Arc::clone(&targets));
                targets
            }
        };
        let frame = ServerFrame::Typing {
            conversation: conversation.0,
            from: auth.username.to_string(),
            state,
            expires_ms: self.clock.now_ms().saturating_add(TYPING_TTL_MS),
        };
        let text: Arc<str> = frame.to_json().into();
        // The bus reaches only devices live on some node.
        for (_, device) in targets.iter() {
            self.bus
                .publish(*device, DeviceEvent::Ephemeral(Arc::clone(&text)))
                .await;
        }
        Ok(())
    }
}
