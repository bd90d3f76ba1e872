//! Group management: create, rename, add/remove, promote/demote, leave,
//! info; and turning end-to-end encryption on (in a 1:1 too). Every change is one Store transaction that also stores the system
//! event; the devices it was queued for are woken.
//!
//! Every change but a leave spends from the actor's account budget of
//! settings changes ([`Groups::settings_limit`]), here rather than in the
//! gateway so that the REST endpoints, the frames on the WebSocket and on
//! `/v1/frames` all spend from the one budget. Creating a group has its own
//! budget (the app's `group_create_limit`).

use std::sync::Arc;

use missive_bus::{Bus, DeviceEvent, Invalidation};
use missive_core::model::{
    ConversationKind, DeviceAuth, GroupChange, GroupChangeRequest, GroupChanged, GroupName,
    NewGroup, Role, Setting, SettingRequest,
};
use missive_core::{AccountId, Clock, ConversationId, DeviceId, Username};
use missive_proto::ErrorCode;
use missive_proto::rest::{GroupInfo, MemberInfo, MemberRole};
use missive_store::Store;

use super::push::Push;
use super::send_limit::{SendLimiter, SharedLimit};
use crate::cache::Caches;
use crate::config::{E2eePolicy, LimitsConfig};
use crate::service::ServiceError;

/// The disappearing timers a conversation may have: off, an hour, a day,
/// a week, 90 days.
pub const DISAPPEAR_SECS: [u32; 5] = [0, 3_600, 86_400, 604_800, 7_776_000];

pub struct Groups {
    store: Arc<dyn Store>,
    bus: Arc<dyn Bus>,
    clock: Arc<dyn Clock>,
    push: Arc<Push>,
    caches: Arc<Caches>,
    members_max: usize,
    e2ee: E2eePolicy,
    /// Settings changes per account: each stores a system event that every
    /// member's devices receive, so without it one member could flood a
    /// conversation by toggling a setting.
    settings_changes: SendLimiter,
}

impl Groups {
    pub fn new(
        store: Arc<dyn Store>,
        bus: Arc<dyn Bus>,
        clock: Arc<dyn Clock>,
        push: Arc<Push>,
        caches: Arc<Caches>,
        limits: &LimitsConfig,
        e2ee: E2eePolicy,
    ) -> Self {
        let settings_changes = SendLimiter::per_account(
            limits.settings_changes_per_sec_per_account,
            limits.settings_change_burst_per_account,
        )
        .shared(bus.has_peers());
        Self {
            store,
            bus,
            clock,
            push,
            caches,
            members_max: limits.group_members_max,
            e2ee,
            settings_changes,
        }
    }

    /// The settings-change budget, which other nodes spend from too.
    pub fn settings_limit(&self) -> &dyn SharedLimit {
        &self.settings_changes
    }

    /// Takes one settings change from `auth`'s account budget, or refuses
    /// with `rate_limited` and the wait. Called after every check that
    /// needs no write, so a request refused for its content costs nothing,
    /// and before the write, so a refused change stores nothing.
    fn spend_settings_change(&self, auth: &DeviceAuth) -> Result<(), ServiceError> {
        self.settings_changes
            .check(auth, "too many conversation settings changes; slow down")
    }

    /// Creates a group; `encrypted: None` takes the server's default (on
    /// only under `e2ee = "required"`).
    pub async fn create(
        &self,
        auth: &DeviceAuth,
        name: &str,
        usernames: &[String],
        encrypted: Option<bool>,
    ) -> Result<GroupInfo, ServiceError> {
        let encrypted = encrypted.unwrap_or(self.e2ee == E2eePolicy::Required);
        super::check_e2ee(self.e2ee, encrypted)?;
        let name = parse_name(name)?;
        if usernames.len() > self.members_max {
            return Err(ServiceError::new(ErrorCode::GroupFull, "too many members"));
        }
        let members = self.accounts(usernames).await?;
        self.check_not_blocked(auth.account, &members).await?;
        let now_ms = self.clock.now_ms();
        let created = self
            .store
            .create_group(NewGroup {
                creator: auth.account,
                creator_device: auth.device,
                encrypted,
                name,
                members,
                members_max: self.members_max,
                now_ms,
            })
            .await?;
        self.wake(&created).await;
        self.info(auth, created.conversation).await
    }

    /// Changes a conversation setting in a 1:1 (any member) or a group (an
    /// admin): end-to-end encryption on (for good, under the `e2ee`
    /// policy), or the disappearing timer (one of [`DISAPPEAR_SECS`]); the
    /// members' devices get the system event.
    pub async fn set(
        &self,
        auth: &DeviceAuth,
        conversation: ConversationId,
        setting: Setting,
    ) -> Result<(), ServiceError> {
        match setting {
            Setting::Encrypt => super::check_e2ee(self.e2ee, true)?,
            Setting::DisappearAfter(secs) => {
                if !DISAPPEAR_SECS.contains(&secs) {
                    return Err(ServiceError::new(
                        ErrorCode::InvalidField,
                        "secs must be 0 (off), 3600, 86400, 604800 or 7776000",
                    ));
                }
            }
        }
        self.spend_settings_change(auth)?;
        let changed = self
            .store
            .change_setting(SettingRequest {
                actor: auth.account,
                actor_device: auth.device,
                conversation,
                setting,
                now_ms: self.clock.now_ms(),
            })
            .await?;
        self.wake(&changed).await;
        Ok(())
    }

    /// Takes `account` out of every group it is in, as if it left each one
    /// (an operator deleting it); returns how many it left. The leave
    /// events carry no device of the account's (`DeviceId(0)` names none).
    pub async fn leave_all(
        &self,
        account: AccountId,
        username: &Username,
    ) -> Result<usize, ServiceError> {
        let auth = DeviceAuth {
            account,
            username: username.clone(),
            device: DeviceId(0),
        };
        let mut left = 0;
        for record in self.store.conversations(account).await? {
            if record.kind != ConversationKind::Group {
                continue;
            }
            match self
                .change(&auth, record.conversation, GroupChange::Leave)
                .await
            {
                Ok(_) => left += 1,
                // Left meanwhile: nothing to do.
                Err(err) if err.code == ErrorCode::NotMember => {}
                Err(err) => return Err(err),
            }
        }
        Ok(left)
    }

    /// Applies `change` as `auth`; returns the seq of the system event.
    /// Every change but a leave spends from the settings-change budget: a
    /// member must always be able to get out of a conversation (one being
    /// flooded above all), and leaves cannot flood one, as each needs an
    /// admin's add, which spends, before the next.
    pub async fn change(
        &self,
        auth: &DeviceAuth,
        conversation: ConversationId,
        change: GroupChange,
    ) -> Result<i64, ServiceError> {
        if !matches!(change, GroupChange::Leave) {
            self.spend_settings_change(auth)?;
        }
        let now_ms = self.clock.now_ms();
        let changed = self
            .store
            .change_group(GroupChangeRequest {
                actor: auth.account,
                actor_device: auth.device,
                conversation,
                change,
                members_max: self.members_max,
                now_ms,
            })
            .await?;
        // Relay targets of the conversation changed, on every node.
        self.caches
            .invalidate(Invalidation::Conversation(conversation));
        self.bus
            .publish_invalidation(Invalidation::Conversation(conversation))
            .await;
        self.wake(&changed).await;
        Ok(changed.seq)
    }

    pub async fn add(
        &self,
        auth: &DeviceAuth,
        conversation: ConversationId,
        usernames: &[String],
    ) -> Result<GroupInfo, ServiceError> {
        if usernames.is_empty() || usernames.len() > self.members_max {
            return Err(ServiceError::new(
                ErrorCode::InvalidField,
                "members must list 1 to group_members_max usernames",
            ));
        }
        let accounts = self.accounts(usernames).await?;
        self.check_not_blocked(auth.account, &accounts).await?;
        self.change(auth, conversation, GroupChange::Add(accounts))
            .await?;
        self.info(auth, conversation).await
    }

    pub async fn change_member(
        &self,
        auth: &DeviceAuth,
        conversation: ConversationId,
        username: &str,
        change: fn(AccountId) -> GroupChange,
    ) -> Result<GroupInfo, ServiceError> {
        let account = self.account(username).await?;
        self.change(auth, conversation, change(account)).await?;
        self.info(auth, conversation).await
    }

    pub async fn rename(
        &self,
        auth: &DeviceAuth,
        conversation: ConversationId,
        name: &str,
    ) -> Result<GroupInfo, ServiceError> {
        let name = parse_name(name)?;
        self.change(auth, conversation, GroupChange::Rename(name))
            .await?;
        self.info(auth, conversation).await
    }

    pub async fn info(
        &self,
        auth: &DeviceAuth,
        conversation: ConversationId,
    ) -> Result<GroupInfo, ServiceError> {
        let group = self.store.group_info(auth.account, conversation).await?;
        Ok(GroupInfo {
            conversation: group.conversation.0,
            name: group.name,
            encrypted: group.encrypted,
            disappear_secs: group.disappear_secs,
            last_seq: group.last_seq,
            members: group
                .members
                .into_iter()
                .map(|member| MemberInfo {
                    username: member.username,
                    role: match member.role {
                        Role::Admin => MemberRole::Admin,
                        Role::Member => MemberRole::Member,
                    },
                    joined_ms: member.joined_ms,
                })
                .collect(),
        })
    }

    async fn account(&self, username: &str) -> Result<AccountId, ServiceError> {
        super::account_named(&*self.store, username).await
    }

    async fn accounts(&self, usernames: &[String]) -> Result<Vec<AccountId>, ServiceError> {
        let mut accounts = Vec::with_capacity(usernames.len());
        for username in usernames {
            accounts.push(self.account(username).await?);
        }
        Ok(accounts)
    }

    /// Refuses when `actor` and one of `accounts` blocked the other: a
    /// group must not be a way around a block (as a 1:1 send is refused).
    async fn check_not_blocked(
        &self,
        actor: AccountId,
        accounts: &[AccountId],
    ) -> Result<(), ServiceError> {
        if self
            .store
            .blocked_with_any(actor, accounts.to_vec())
            .await?
        {
            return Err(ServiceError::new(
                ErrorCode::Blocked,
                "you cannot add a user who blocked you or whom you blocked",
            ));
        }
        Ok(())
    }

    async fn wake(&self, changed: &GroupChanged) {
        for device in &changed.recipients {
            self.bus.publish(*device, DeviceEvent::QueueChanged).await;
        }
        self.push.queued(&changed.recipients);
    }
}

fn parse_name(raw: &str) -> Result<GroupName, ServiceError> {
    GroupName::parse(raw).ok_or_else(|| {
        ServiceError::new(
            ErrorCode::InvalidField,
            "group name must be 1-64 bytes, not blank",
        )
    })
}
