//! `devices_changed` (issue 22): telling whoever may encrypt to an account
//! that its list of devices with published keys changed, because one of
//! its devices published identity keys for the first time or one that had
//! was revoked. Clients keep the keys they read (`GET
//! /v1/users/{user}/keys`); without this notice they would go on
//! encrypting to a revoked device and leave a new one unable to read.
//!
//! Who is told: the devices in the session directory (connected to any
//! node) of the account itself and of every account sharing a
//! conversation with it, read from the store, since this node knows only
//! its own connections. Each gets the frame over the Bus, so the node that
//! holds it writes it, on a WebSocket or into a waiting poll. Live only:
//! a device that was away reads the keys again before it encrypts.

use std::collections::BTreeMap;
use std::sync::Arc;

use missive_bus::{Bus, DeviceEvent};
use missive_core::model::RevokedDevice;
use missive_core::{AccountId, Clock, DeviceId};
use missive_proto::ServerFrame;
use missive_store::Store;

pub struct DeviceListNotices {
    store: Arc<dyn Store>,
    bus: Arc<dyn Bus>,
    clock: Arc<dyn Clock>,
}

impl DeviceListNotices {
    pub fn new(store: Arc<dyn Store>, bus: Arc<dyn Bus>, clock: Arc<dyn Clock>) -> Self {
        Self { store, bus, clock }
    }

    /// `changed` (devices of `user`, account `account`) came into or went
    /// out of the key listing: tells the devices concerned, except those.
    /// Called after the change committed, so nothing is returned: a failed
    /// read of who to tell is logged, and those devices learn of the
    /// change when they next read the keys.
    pub async fn changed(&self, account: AccountId, user: &str, changed: &[DeviceId]) {
        let devices = match self.store.online_devices_sharing_with(account).await {
            Ok(devices) => devices,
            Err(err) => {
                tracing::warn!(%err, %account, "could not tell contacts that a device list changed");
                return;
            }
        };
        let frame: Arc<str> = ServerFrame::DevicesChanged {
            user: user.to_owned(),
            ts_ms: self.clock.now_ms(),
        }
        .to_json()
        .into();
        // The revoked device's session row may outlive it for a moment,
        // and an uploading device knows what it uploaded.
        for device in devices.into_iter().filter(|d| !changed.contains(d)) {
            self.bus
                .publish(device, DeviceEvent::Ephemeral(Arc::clone(&frame)))
                .await;
        }
    }

    /// After `revoked` (devices of the one account named `user`) were
    /// revoked: one notice if any of them had published keys, none for
    /// devices that never showed in the listing.
    pub async fn revoked(&self, user: &str, revoked: &[RevokedDevice]) {
        let Some(keyed) = revoked.iter().find(|r| r.had_keys) else {
            return;
        };
        let devices: Vec<DeviceId> = revoked.iter().map(|r| r.device).collect();
        self.changed(keyed.account, user, &devices).await;
    }

    /// After idle devices of any accounts expired: one notice per account
    /// that lost a device with keys. The store named only the accounts, so
    /// each one's name is read (with its presence profile, the record that
    /// carries it).
    pub async fn expired(&self, expired: &[RevokedDevice]) {
        let mut by_account: BTreeMap<AccountId, Vec<RevokedDevice>> = BTreeMap::new();
        for revoked in expired {
            by_account
                .entry(revoked.account)
                .or_default()
                .push(*revoked);
        }
        for (account, revoked) in by_account {
            if !revoked.iter().any(|r| r.had_keys) {
                continue;
            }
            match self.store.presence_profile(account).await {
                Ok(Some(profile)) => self.revoked(&profile.username, &revoked).await,
                Ok(None) => {}
                Err(err) => {
                    tracing::warn!(%err, %account, "could not tell contacts that a device expired");
                }
            }
        }
    }
}
