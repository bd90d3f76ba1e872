//! End-to-end encryption's server side: device keys, one-time keys and
//! to-device messages.

use async_trait::async_trait;
use missive_core::model::*;
use missive_core::{AccountId, DeviceId};

use crate::StoreError;

/// Device keys, one-time keys and to-device messages (the server never
/// sees a plaintext).
#[async_trait]
pub trait KeyStore: Send + Sync + 'static {
    /// Stores a device's keys (see [`KeyUpload`]); a one-time key id the
    /// device already holds is kept as it was (an upload may be retried).
    /// Returns how many one-time keys the device now holds and whether this
    /// upload stored its identity keys.
    async fn put_device_keys(&self, upload: KeyUpload) -> Result<KeysStored, StoreError>;

    /// The identity keys of `account`'s devices that uploaded some, by
    /// device id. A revoked device's keys are gone with it.
    async fn device_keys(&self, account: AccountId) -> Result<Vec<DeviceKeys>, StoreError>;

    /// The devices in the session directory (live on some node, or on one
    /// whose lapsed lease is not reaped yet) of `account` and of every
    /// account that is a member of a conversation `account` is a member
    /// of, by id: who is told, live, that `account`'s key listing changed.
    /// Members who left are not included; blocks do not matter (the
    /// listing is public).
    async fn online_devices_sharing_with(
        &self,
        account: AccountId,
    ) -> Result<Vec<DeviceId>, StoreError>;

    /// One one-time key of each of `account`'s devices with identity keys,
    /// each removed as it is handed out: no key is ever handed out twice,
    /// concurrent claims included.
    async fn claim_one_time_keys(&self, account: AccountId) -> Result<Vec<ClaimedKey>, StoreError>;

    /// How many one-time keys `device` holds unclaimed.
    async fn one_time_key_count(&self, device: DeviceId) -> Result<u64, StoreError>;

    /// Stores every message of the batch for its device, or none (see
    /// [`ToDeviceBatch`]). Each device's messages get increasing seqs in
    /// commit order, so a reader that has seen seq N never later finds one
    /// below it.
    async fn send_to_devices(&self, batch: ToDeviceBatch) -> Result<(), StoreError>;

    /// Up to `limit` of `device`'s waiting to-device messages above seq
    /// `after`, oldest first.
    async fn to_device_waiting(
        &self,
        device: DeviceId,
        after: i64,
        limit: usize,
    ) -> Result<Vec<ToDeviceMessage>, StoreError>;

    /// Removes `device`'s to-device messages up to and including seq
    /// `up_to` (cumulative, idempotent); how many went.
    async fn ack_to_device(&self, device: DeviceId, up_to: i64) -> Result<u64, StoreError>;
}
