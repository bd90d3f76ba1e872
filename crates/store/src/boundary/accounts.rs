//! Accounts and their devices: registration, logins, revocation, operator
//! controls (suspend, delete, invites).

use async_trait::async_trait;
use missive_core::model::*;
use missive_core::{AccountId, DeviceId, TokenHash, UnixMillis, Username};

use crate::StoreError;

/// Accounts, devices and their tokens.
#[async_trait]
pub trait AccountStore: Send + Sync + 'static {
    /// Creates an account; `UsernameTaken` if the name exists. With an
    /// invite, the invite is consumed in the same transaction
    /// (`InviteInvalid` if it is unknown, used or expired: nothing stored).
    async fn create_account(&self, account: NewAccount) -> Result<AccountId, StoreError>;

    /// The account with this username, if any.
    async fn account_by_username(
        &self,
        username: &Username,
    ) -> Result<Option<AccountRecord>, StoreError>;

    /// Adds a device (a login) to an account. When the account already has
    /// `devices_max`: `TooManyDevices`, or, with `replace_least_recent`, the
    /// device last seen longest ago (preferring one with no live session)
    /// is revoked as by `revoke_device` in the same transaction, and
    /// returned as `replaced`.
    async fn create_device(&self, device: NewDevice) -> Result<CreatedDevice, StoreError>;

    /// Up to `limit` accounts with a username after `after`, in username
    /// order.
    async fn list_accounts(
        &self,
        after: Option<Username>,
        limit: usize,
    ) -> Result<Vec<AccountSummary>, StoreError>;

    /// Suspends (or resumes) the account. Suspending revokes every device of
    /// the account as `revoke_device` does, in the same transaction, and
    /// `create_device` refuses a suspended account (`AccountSuspended`), so
    /// no device of it survives. Returns the revoked devices; `None` if
    /// there is no such account.
    async fn set_suspended(
        &self,
        account: AccountId,
        suspended: bool,
    ) -> Result<Option<Vec<RevokedDevice>>, StoreError>;

    /// Deletes an account as an operator does: in one transaction its
    /// username becomes `DELETED_PREFIX` + its id (freeing the name; its
    /// messages stay in others' histories under that name), its password
    /// hash and phone are cleared, it is suspended (no login ever again),
    /// every device is revoked as by `revoke_device`, and its contacts and
    /// blocks, both ways, are dropped. Group memberships are left to the
    /// caller (leaving is a group change with its own event). Returns the
    /// revoked devices; `None` if there is no such account.
    async fn delete_account(
        &self,
        account: AccountId,
    ) -> Result<Option<Vec<RevokedDevice>>, StoreError>;

    /// Stores single-use registration invites.
    async fn create_invites(&self, invites: NewInvites) -> Result<(), StoreError>;

    /// Replaces the account's password hash; `false` if there is no such
    /// account.
    async fn set_password_hash(&self, account: AccountId, hash: String)
    -> Result<bool, StoreError>;

    /// Every revocation (`revoke_device`, a replacement, an expiry) is
    /// numbered in the store, so that every node, and a server that did
    /// not make it (an operator's `missive admin`), hears of it: the
    /// revoked devices numbered above `after`, oldest first, up to `limit`.
    /// The last `REVOCATIONS_KEPT` are kept.
    async fn revocations_after(
        &self,
        after: i64,
        limit: usize,
    ) -> Result<Vec<(i64, DeviceId)>, StoreError>;

    /// The number of the latest revocation (0 if none).
    async fn last_revocation(&self) -> Result<i64, StoreError>;

    /// Records that the device was used at `now_ms` (never moves back).
    async fn touch_device(&self, device: DeviceId, now_ms: UnixMillis) -> Result<(), StoreError>;

    /// Revokes, as `revoke_device` does, up to `limit` devices last seen
    /// before `idle_before_ms` that have no live session; returns them.
    async fn expire_devices(
        &self,
        idle_before_ms: UnixMillis,
        limit: usize,
    ) -> Result<Vec<RevokedDevice>, StoreError>;

    /// The device holding this token, unless revoked.
    async fn authenticate(&self, token: &TokenHash) -> Result<Option<DeviceAuth>, StoreError>;

    /// The account's devices, oldest first.
    async fn list_devices(&self, account: AccountId) -> Result<Vec<DeviceRecord>, StoreError>;

    /// Renames one of the account's devices; `false` if it has no such
    /// device (nothing changes).
    async fn rename_device(
        &self,
        account: AccountId,
        device: DeviceId,
        name: String,
    ) -> Result<bool, StoreError>;

    /// Deletes the device, its token, its positions, its keys and its
    /// waiting to-device messages, and numbers the revocation. `None` if
    /// the account has no such device (nothing changes).
    async fn revoke_device(
        &self,
        account: AccountId,
        device: DeviceId,
    ) -> Result<Option<RevokedDevice>, StoreError>;

    /// The username owning the device, if it exists.
    async fn device_owner(&self, device: DeviceId) -> Result<Option<String>, StoreError>;
}
