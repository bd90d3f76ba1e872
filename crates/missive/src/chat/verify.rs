//! The terminal app's side of key verification by short codes
//! (missive-e2ee's SAS, docs/SECURITY.md "Verification"): another device's
//! request shows as a prompt (accept?), the emoji to compare as another
//! (do they match?), and `v` on a 1:1 in the list starts one. The exchange
//! itself runs here, in the connection task, beside the device's keys.

use missive_client::Api;
use missive_e2ee::{Step, Verification, VerifyError, VerifyMessage};
use missive_proto::ToDeviceOut;

use crate::encryption::{self, DeviceKeys};
use crate::profile::Profile;

/// What the user decided.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum VerifyAction {
    /// Verify this user's (first unverified) device.
    Start {
        user: String,
    },
    Accept,
    Decline,
    Match,
    Mismatch,
}

/// What the app shows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum VerifyUpdate {
    Offered {
        from: String,
        device: i64,
    },
    Waiting {
        user: String,
    },
    Compare {
        user: String,
        code: String,
    },
    /// `forwarded`: room keys handed to it (a device of this account).
    Verified {
        user: String,
        device: i64,
        forwarded: usize,
    },
    Failed(String),
}

enum Stage {
    Idle,
    Offered {
        from: String,
        device: i64,
        start: VerifyMessage,
    },
    Running {
        verification: Box<Verification>,
        user: String,
        device: i64,
        confirmed: bool,
    },
}

/// Messages to send and what to show, after one step.
#[derive(Default)]
pub(super) struct Outcome {
    pub send: Vec<ToDeviceOut>,
    pub update: Option<VerifyUpdate>,
}

pub(super) struct Verifier {
    stage: Stage,
}

impl Default for Verifier {
    fn default() -> Self {
        Self { stage: Stage::Idle }
    }
}

fn to(user: &str, device: i64, message: &VerifyMessage) -> ToDeviceOut {
    ToDeviceOut {
        user: user.to_owned(),
        device_id: device,
        body: message.to_json(),
    }
}

fn failed(err: impl std::fmt::Display) -> Outcome {
    Outcome {
        send: Vec::new(),
        update: Some(VerifyUpdate::Failed(format!("Not verified: {err}"))),
    }
}

impl Verifier {
    /// A verification message from another device.
    pub(super) async fn receive(
        &mut self,
        keys: &mut DeviceKeys,
        api: &Api,
        saved: &Profile,
        (from, device): (&str, i64),
        message: VerifyMessage,
    ) -> Outcome {
        if message.verify == Step::Start {
            if !matches!(self.stage, Stage::Idle) {
                let busy = VerifyMessage::cancel(&message.txn, "busy");
                return Outcome {
                    send: vec![to(from, device, &busy)],
                    update: None,
                };
            }
            self.stage = Stage::Offered {
                from: from.to_owned(),
                device,
                start: message,
            };
            return Outcome {
                send: Vec::new(),
                update: Some(VerifyUpdate::Offered {
                    from: from.to_owned(),
                    device,
                }),
            };
        }
        let Stage::Running {
            verification,
            user,
            device: their_device,
            confirmed,
        } = &mut self.stage
        else {
            return Outcome::default();
        };
        if user != from || *their_device != device || verification.txn() != message.txn {
            return Outcome::default();
        }
        let confirmed = *confirmed;
        let replies = match verification.receive(&message) {
            Ok(replies) => replies,
            Err(err) => {
                self.stage = Stage::Idle;
                return failed(err);
            }
        };
        let mut send: Vec<ToDeviceOut> = replies
            .iter()
            .map(|reply| to(from, device, reply))
            .collect();
        let mut outcome = self.progress(keys, api, saved, confirmed).await;
        // The replies first, then whatever finishing sends (room keys
        // forwarded to a device of this account).
        send.append(&mut outcome.send);
        outcome.send = send;
        outcome
    }

    /// What the user decided.
    pub(super) async fn act(
        &mut self,
        keys: &mut DeviceKeys,
        api: &Api,
        saved: &Profile,
        action: VerifyAction,
    ) -> Outcome {
        match (action, std::mem::replace(&mut self.stage, Stage::Idle)) {
            (VerifyAction::Start { user }, Stage::Idle) => self.start(keys, api, saved, user).await,
            (
                VerifyAction::Accept,
                Stage::Offered {
                    from,
                    device,
                    start,
                },
            ) => self.accept(saved, from, device, &start),
            (
                VerifyAction::Decline,
                Stage::Offered {
                    from,
                    device,
                    start,
                },
            ) => Outcome {
                send: vec![to(
                    &from,
                    device,
                    &VerifyMessage::cancel(&start.txn, "declined"),
                )],
                update: None,
            },
            (
                VerifyAction::Match,
                Stage::Running {
                    verification,
                    user,
                    device,
                    ..
                },
            ) => {
                let running = (verification, user, device);
                self.confirm_match(keys, api, saved, running).await
            }
            (
                VerifyAction::Mismatch,
                Stage::Running {
                    verification,
                    user,
                    device,
                    ..
                },
            ) => {
                let cancel = VerifyMessage::cancel(verification.txn(), "mismatch");
                Outcome {
                    send: vec![to(&user, device, &cancel)],
                    update: Some(VerifyUpdate::Failed(
                        "Not verified: the codes differ. Do not trust that device.".into(),
                    )),
                }
            }
            (_, stage) => {
                // Not for this stage (a key pressed twice): nothing changes.
                self.stage = stage;
                Outcome::default()
            }
        }
    }

    /// `v` on a 1:1: starts verifying the user's first unverified device.
    async fn start(
        &mut self,
        keys: &mut DeviceKeys,
        api: &Api,
        saved: &Profile,
        user: String,
    ) -> Outcome {
        let me = (saved.username.as_str(), saved.device_id);
        let device = match first_unverified(keys, api, saved, &user).await {
            Ok(device) => device,
            Err(err) => return failed(err),
        };
        let txn = format!("tui-{}-{}", super::state::now_ms(), saved.device_id);
        let (verification, start) = Verification::start(me, (&user, device), &txn);
        let send = vec![to(&user, device, &start)];
        self.stage = Stage::Running {
            verification: Box::new(verification),
            user: user.clone(),
            device,
            confirmed: false,
        };
        Outcome {
            send,
            update: Some(VerifyUpdate::Waiting { user }),
        }
    }

    /// The user accepts another device's request: the exchange runs.
    fn accept(
        &mut self,
        saved: &Profile,
        from: String,
        device: i64,
        start: &VerifyMessage,
    ) -> Outcome {
        let me = (saved.username.as_str(), saved.device_id);
        let (verification, accept) = Verification::accept(me, (&from, device), start);
        self.stage = Stage::Running {
            verification: Box::new(verification),
            user: from.clone(),
            device,
            confirmed: false,
        };
        Outcome {
            send: vec![to(&from, device, &accept)],
            update: Some(VerifyUpdate::Waiting { user: from }),
        }
    }

    /// The user says the codes match: our MAC goes to the other device, and
    /// the exchange ends if theirs is already here.
    async fn confirm_match(
        &mut self,
        keys: &mut DeviceKeys,
        api: &Api,
        saved: &Profile,
        (mut verification, user, device): (Box<Verification>, String, i64),
    ) -> Outcome {
        let Some(vault) = keys.vault_mut() else {
            return failed("this device has no keys");
        };
        let mac = match verification.confirm(vault) {
            Ok(mac) => mac,
            Err(err) => return failed(err),
        };
        let send = vec![to(&user, device, &mac)];
        self.stage = Stage::Running {
            verification,
            user: user.clone(),
            device,
            confirmed: true,
        };
        let mut outcome = self.progress(keys, api, saved, true).await;
        if outcome.update.is_none() {
            outcome.update = Some(VerifyUpdate::Waiting { user });
        }
        outcome.send = send;
        outcome
    }

    /// After a step of a running exchange: the codes once there are some,
    /// the end once both sides confirmed.
    async fn progress(
        &mut self,
        keys: &mut DeviceKeys,
        api: &Api,
        saved: &Profile,
        confirmed: bool,
    ) -> Outcome {
        let Stage::Running {
            verification,
            user,
            device,
            ..
        } = &self.stage
        else {
            return Outcome::default();
        };
        let (user, device) = (user.clone(), *device);
        if verification.ready_to_finish() {
            let result = finish(keys, api, saved, verification, (&user, device)).await;
            self.stage = Stage::Idle;
            return match result {
                Ok(forward) => Outcome {
                    update: Some(VerifyUpdate::Verified {
                        user,
                        device,
                        forwarded: forward.count,
                    }),
                    send: forward.shares,
                },
                Err(err) => failed(err),
            };
        }
        match verification.short_code() {
            Some(code) if !confirmed => Outcome {
                send: Vec::new(),
                update: Some(VerifyUpdate::Compare {
                    user,
                    code: code.describe(),
                }),
            },
            _ => Outcome::default(),
        }
    }
}

/// Room keys handed to a device of this account once it is verified.
#[derive(Default)]
struct Forward {
    count: usize,
    shares: Vec<ToDeviceOut>,
}

/// Checks the MAC against the key the directory lists and saves the
/// verified key; a device of this account is then handed every room key
/// this one holds, so it reads what came before it.
async fn finish(
    keys: &mut DeviceKeys,
    api: &Api,
    saved: &Profile,
    verification: &Verification,
    (user, device): (&str, i64),
) -> Result<Forward, String> {
    let listed = api
        .user_keys(&saved.token, user)
        .await
        .map_err(|err| err.to_string())?;
    let key = listed
        .devices
        .into_iter()
        .find(|listed| listed.device_id == device)
        .map(|listed| listed.ed25519)
        .ok_or_else(|| format!("{user}'s device {device} has no keys any more"))?;
    let profile = keys.profile().to_owned();
    let vault = keys.vault_mut().ok_or("this device has no keys")?;
    verification
        .finish(vault, &key)
        .map_err(|err: VerifyError| err.to_string())?;
    encryption::save(&profile, vault)?;
    if user != saved.username {
        return Ok(Forward::default());
    }
    let mut devices = encryption::member_devices(api, saved, std::slice::from_ref(&saved.username))
        .await
        .map_err(|err| err.to_string())?;
    devices.retain(|listed| listed.device_id == device);
    encryption::open_sessions(api, saved, vault, &mut devices, &|_| {})
        .await
        .map_err(|err| err.to_string())?;
    let target = devices.first().ok_or_else(|| {
        format!("verified, but no session with device {device} to hand it the room keys")
    })?;
    let count = vault.room_key_count();
    let shares = vault.forward_keys(target).map_err(|err| err.to_string())?;
    encryption::save(&profile, vault)?;
    Ok(Forward {
        count,
        shares: shares
            .into_iter()
            .map(|share| ToDeviceOut {
                user: share.user,
                device_id: share.device_id,
                body: share.body,
            })
            .collect(),
    })
}

/// The first of `user`'s devices (not this one) not verified yet, else
/// their first.
async fn first_unverified(
    keys: &mut DeviceKeys,
    api: &Api,
    saved: &Profile,
    user: &str,
) -> Result<i64, String> {
    let devices = encryption::member_devices(api, saved, &[user.to_owned()])
        .await
        .map_err(|err| err.to_string())?;
    let vault = keys.vault_mut().ok_or("this device has no keys")?;
    devices
        .iter()
        .find(|device| !vault.is_verified(user, device.device_id, &device.identity.ed25519))
        .or(devices.first())
        .map(|device| device.device_id)
        .ok_or_else(|| format!("{user} has no device with encryption keys"))
}

/// Whether every device of `user` (with keys, not this one) is verified.
pub(super) async fn all_verified(
    keys: &mut DeviceKeys,
    api: &Api,
    saved: &Profile,
    user: &str,
) -> Option<bool> {
    let devices = encryption::member_devices(api, saved, &[user.to_owned()])
        .await
        .ok()?;
    let vault = keys.vault_mut()?;
    Some(
        !devices.is_empty()
            && devices
                .iter()
                .all(|device| vault.is_verified(user, device.device_id, &device.identity.ed25519)),
    )
}
