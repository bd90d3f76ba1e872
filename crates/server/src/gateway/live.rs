//! A device's live session on this node, shared by WebSocket and long-poll:
//! register in the router, follow the device on the Bus, claim it in the
//! session directory (telling a node that held it to let go), and undo all
//! of it when the session ends.
//!
//! The order matters. Following on the Bus comes before the caller's first
//! queue read, so a message committed after that read wakes the session on
//! whichever node stored it. The directory claim comes before the caller
//! announces presence, so watchers on every node see the device online.

use std::sync::Arc;

use missive_core::model::DeviceAuth;
use missive_core::{AccountId, DeviceId};

use super::connections::Slot;
use crate::AppState;
use crate::router::Registration;

/// How the session shows in presence.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Announce {
    /// Watchers are told when it starts and ends (WebSocket).
    Yes,
    /// Only last seen is recorded (long-poll: one poll after another
    /// would make presence flap).
    No,
}

pub(super) struct Live {
    /// `None` only while dropping.
    registration: Option<Registration>,
    state: Arc<AppState>,
    device: DeviceId,
    account: AccountId,
    announce: Announce,
    ended: bool,
    /// The connection-limit slots the session holds (per address, per
    /// account); given back before presence is recorded.
    slots: Vec<Slot>,
}

/// Opens the session on a task of its own: a long-poll whose client goes
/// away cancels its handler, and half an `open` (followed but not yet
/// guarded) would leak; the task finishes, and a `Live` nobody takes is
/// dropped, which undoes it all. `slots` are held until the session ends.
pub(super) async fn open(
    state: &Arc<AppState>,
    auth: &DeviceAuth,
    announce: Announce,
    slots: Vec<Slot>,
) -> Live {
    let (task_state, auth) = (Arc::clone(state), auth.clone());
    let opened = tokio::spawn(async move { open_here(&task_state, &auth, announce, slots).await });
    match opened.await {
        Ok(live) => live,
        // Only a panic inside `open_here` gets here; repeat it.
        Err(err) => std::panic::resume_unwind(err.into_panic()),
    }
}

async fn open_here(
    state: &Arc<AppState>,
    auth: &DeviceAuth,
    announce: Announce,
    slots: Vec<Slot>,
) -> Live {
    let registration = state.router.register(auth.device, auth.account);
    state.bus.follow(auth.device).await;
    state.cluster.claim(auth.device, auth.account).await;
    Live {
        registration: Some(registration),
        state: Arc::clone(state),
        device: auth.device,
        account: auth.account,
        announce,
        ended: false,
        slots,
    }
}

impl Live {
    pub(super) fn registration(&mut self) -> &mut Registration {
        self.registration
            .as_mut()
            .expect("present until the session is dropped")
    }

    /// Ends the session: leaves the router and the Bus, releases the
    /// directory entry unless a newer connection of the device on this
    /// node holds it, and records presence.
    pub(super) async fn end(mut self) {
        self.ended = true;
        let (state, device, account, announce) = (
            Arc::clone(&self.state),
            self.device,
            self.account,
            self.announce,
        );
        drop(self);
        release(state, device, account, announce).await;
    }
}

async fn release(state: Arc<AppState>, device: DeviceId, account: AccountId, announce: Announce) {
    if !state.router.is_live(device) {
        state.cluster.settle(device, account).await;
    }
    match announce {
        Announce::Yes => state.social.device_disconnected(account).await,
        Announce::No => {
            state.social.record_last_seen(account).await;
        }
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        // The connection is over: its slots are free before anyone can be
        // told it went offline.
        self.slots.clear();
        // Leave the router before releasing, so `release` sees whether a
        // newer connection of the device holds it here.
        drop(self.registration.take());
        self.state.bus.unfollow(self.device);
        if !self.ended {
            // Cancelled (a long-poll whose client went away): finish on a task.
            let (state, device, account, announce) = (
                Arc::clone(&self.state),
                self.device,
                self.account,
                self.announce,
            );
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                runtime.spawn(release(state, device, account, announce));
            }
        }
    }
}
