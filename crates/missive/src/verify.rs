//! `missive verify`: compares short codes with another device to verify
//! its identity key (missive-e2ee's SAS exchange, as to-device messages).
//! One side runs `missive verify USER` (or clicks Verify in the browser),
//! the other accepts (`missive verify --accept`, or the browser's dialog);
//! both show the same seven emoji if no one in between swapped keys, and
//! each user confirms on their own device. `missive verify USER --status`
//! lists the user's devices and whether this one verified each.
//!
//! Output, one JSON line per step: `{"verify":"compare","emoji":[…],
//! "decimals":[…],"text":"…"}` when the codes are ready (the question goes
//! to standard error and the answer, `y` or `n`, is read from standard
//! input), then `{"verify":"done","user":…,"device_id":…,"forwarded":N}`.
//! Verifying a new device of your own account forwards it the room keys
//! this device holds (`forwarded`: how many), so it can read the history
//! it could not.

use std::io::BufRead;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use missive_client::{Api, ClientError, Connection};
use missive_e2ee::{Vault, Verification, VerifyError, VerifyMessage};
use missive_proto::{ClientFrame, ServerFrame, ToDeviceOut};

use crate::cli::{self, ClientArgs};
use crate::encryption;
use crate::profile::Profile;

/// What `verify` was asked.
pub(crate) struct VerifyOptions {
    pub user: Option<String>,
    pub device: Option<i64>,
    pub accept: bool,
    pub status: bool,
    pub timeout: Duration,
}

pub(crate) async fn verify(args: &ClientArgs, options: VerifyOptions) -> ExitCode {
    let saved = match cli::load_profile(args) {
        Ok(saved) => saved,
        Err(code) => return code,
    };
    let mut vault = match encryption::load(&args.profile, &saved) {
        Ok(vault) => vault,
        Err(err) => return cli::failure(&err),
    };
    let api = Api::new(&saved.server);
    if options.status {
        let Some(user) = &options.user else {
            return cli::usage("--status needs a USER");
        };
        return status(&api, &saved, &vault, user).await;
    }
    let mut connection = match cli::connect(&saved).await {
        Ok(connection) => connection,
        Err(code) => return code,
    };
    let mut exchange = Exchange {
        api: &api,
        saved: &saved,
        profile: &args.profile,
        vault: &mut vault,
        connection: &mut connection,
        deadline: Instant::now() + options.timeout,
    };
    let result = if options.accept {
        exchange.respond(options.user.as_deref()).await
    } else {
        let Some(user) = &options.user else {
            return cli::usage("name the USER to verify, or --accept");
        };
        exchange.initiate(user, options.device).await
    };
    connection.close().await;
    match result {
        Ok(done) => cli::print_json(&serde_json::json!({
            "verify": "done",
            "user": done.user,
            "device_id": done.device_id,
            "forwarded": done.forwarded,
        })),
        Err(Failed::Client(err)) => cli::fail(&err),
        Err(Failed::Said(message)) => cli::failure(&message),
    }
}

/// `--status`: the user's devices with keys, and whether each is verified.
async fn status(api: &Api, saved: &Profile, vault: &Vault, user: &str) -> ExitCode {
    match api.user_keys(&saved.token, user).await {
        Ok(listed) => {
            let devices: Vec<_> = listed
                .devices
                .iter()
                .map(|device| {
                    serde_json::json!({
                        "device_id": device.device_id,
                        "ed25519": device.ed25519,
                        "verified": vault.is_verified(user, device.device_id, &device.ed25519),
                    })
                })
                .collect();
            cli::print_json(&serde_json::json!({ "user": user, "devices": devices }))
        }
        Err(err) => cli::fail(&err),
    }
}

struct Done {
    user: String,
    device_id: i64,
    /// Room keys forwarded to it (a device of this account), else 0.
    forwarded: usize,
}

enum Failed {
    Client(ClientError),
    Said(String),
}

impl From<ClientError> for Failed {
    fn from(err: ClientError) -> Self {
        Self::Client(err)
    }
}

impl From<VerifyError> for Failed {
    fn from(err: VerifyError) -> Self {
        Self::Said(format!("verification failed: {err}"))
    }
}

struct Exchange<'a> {
    api: &'a Api,
    saved: &'a Profile,
    profile: &'a str,
    vault: &'a mut Vault,
    connection: &'a mut Connection,
    deadline: Instant,
}

impl Exchange<'_> {
    fn me(&self) -> (&str, i64) {
        (&self.saved.username, self.saved.device_id)
    }

    /// Verifies `user`'s device `device` (or their only device).
    async fn initiate(&mut self, user: &str, device: Option<i64>) -> Result<Done, Failed> {
        let listed = encryption::member_devices(self.api, self.saved, &[user.to_owned()]).await?;
        let candidates: Vec<i64> = listed
            .iter()
            .map(|listed| listed.device_id)
            .filter(|id| device.is_none_or(|wanted| wanted == *id))
            .collect();
        let device_id = match candidates.as_slice() {
            [one] => *one,
            [] => return Err(Failed::Said(format!("{user} has no such device with keys"))),
            several => {
                return Err(Failed::Said(format!(
                    "{user} has several devices ({several:?}): pick one with --device"
                )));
            }
        };
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |since| since.as_nanos());
        let txn = format!("cli-{nanos:x}-{}", self.saved.device_id);
        let (verification, start) = Verification::start(self.me(), (user, device_id), &txn);
        self.send(user, device_id, &start).await?;
        self.run(verification).await
    }

    /// Waits for another device's `start` (from `from`, if given) and
    /// answers it.
    async fn respond(&mut self, from: Option<&str>) -> Result<Done, Failed> {
        loop {
            let (sender, sender_device, message) = self.next_message().await?;
            if message.verify != missive_e2ee::Step::Start
                || from.is_some_and(|user| user != sender)
            {
                continue;
            }
            let (verification, accept) =
                Verification::accept(self.me(), (&sender, sender_device), &message);
            self.send(&sender, sender_device, &accept).await?;
            return self.run(verification).await;
        }
    }

    /// The exchange after the first message, to its end.
    async fn run(&mut self, mut verification: Verification) -> Result<Done, Failed> {
        let (user, device_id) = (verification.them().0.to_owned(), verification.them().1);
        let their_key = self
            .api
            .user_keys(&self.saved.token, &user)
            .await?
            .devices
            .into_iter()
            .find(|device| device.device_id == device_id)
            .map(|device| device.ed25519)
            .ok_or_else(|| Failed::Said(format!("{user}'s device {device_id} has no keys")))?;
        let mut asked = false;
        loop {
            if !asked && let Some(code) = verification.short_code() {
                asked = true;
                cli::print_json(&serde_json::json!({
                    "verify": "compare",
                    "user": user,
                    "device_id": device_id,
                    "emoji": code.emoji.iter().map(|(symbol, _)| symbol).collect::<Vec<_>>(),
                    "decimals": [code.decimals.0, code.decimals.1, code.decimals.2],
                    "text": code.describe(),
                }));
                if !confirmed_by_user().await {
                    let cancel = VerifyMessage::cancel(verification.txn(), "mismatch");
                    self.send(&user, device_id, &cancel).await?;
                    return Err(Failed::Said("the codes do not match: not verified".into()));
                }
                let mac = verification.confirm(self.vault)?;
                self.send(&user, device_id, &mac).await?;
            }
            if verification.ready_to_finish() {
                verification.finish(self.vault, &their_key)?;
                encryption::save(self.profile, self.vault).map_err(Failed::Said)?;
                let forwarded = if user == self.saved.username {
                    self.forward_keys(device_id).await?
                } else {
                    0
                };
                return Ok(Done {
                    user,
                    device_id,
                    forwarded,
                });
            }
            let (sender, sender_device, message) = self.next_message().await?;
            if sender != user || sender_device != device_id || message.txn != verification.txn() {
                continue;
            }
            for reply in verification.receive(&message)? {
                self.send(&user, device_id, &reply).await?;
            }
        }
    }

    /// Hands this device's room keys to `device_id`, the account's device
    /// just verified; how many.
    async fn forward_keys(&mut self, device_id: i64) -> Result<usize, Failed> {
        let me = [self.saved.username.clone()];
        let mut devices = encryption::member_devices(self.api, self.saved, &me).await?;
        devices.retain(|device| device.device_id == device_id);
        encryption::open_sessions(self.api, self.saved, self.vault, &mut devices, &|warning| {
            eprintln!("warning: {warning}");
        })
        .await?;
        let Some(device) = devices.first() else {
            return Err(Failed::Said(format!(
                "verified, but no session with device {device_id} to hand it the room keys"
            )));
        };
        let forwarded = self.vault.room_key_count();
        let shares = self
            .vault
            .forward_keys(device)
            .map_err(|err| Failed::Said(err.to_string()))?;
        encryption::save(self.profile, self.vault).map_err(Failed::Said)?;
        encryption::send_shares(self.connection, shares).await?;
        Ok(forwarded)
    }

    async fn send(
        &mut self,
        user: &str,
        device_id: i64,
        message: &VerifyMessage,
    ) -> Result<(), ClientError> {
        let messages = vec![ToDeviceOut {
            user: user.to_owned(),
            device_id,
            body: message.to_json(),
        }];
        self.connection
            .call(|id| ClientFrame::ToDevice { id, messages })
            .await
            .map(drop)
    }

    /// The next verification message for this device; room keys that come
    /// meanwhile are taken (and every to-device message acked).
    async fn next_message(&mut self) -> Result<(String, i64, VerifyMessage), Failed> {
        loop {
            let left = self.deadline.saturating_duration_since(Instant::now());
            let frame = match self.connection.next_frame(left).await {
                Err(ClientError::Timeout) => {
                    return Err(Failed::Said(
                        "no answer from the other device in time".into(),
                    ));
                }
                other => other?,
            };
            let ServerFrame::ToDevice {
                seq,
                from,
                from_device,
                body,
                ..
            } = frame
            else {
                continue;
            };
            let done = ClientFrame::ToDeviceAck {
                id: None,
                up_to: seq,
            };
            self.connection.send_frame(&done).await?;
            if let Some(message) = VerifyMessage::parse(&body) {
                return Ok((from, from_device, message));
            }
            if self.vault.receive_share(&from, from_device, &body).is_ok() {
                encryption::save(self.profile, self.vault).map_err(Failed::Said)?;
            }
        }
    }
}

/// Asks on standard error whether the codes match; reads `y`/`yes` from
/// standard input (anything else, or its end, is no).
async fn confirmed_by_user() -> bool {
    eprintln!("Do the emoji (or numbers) match on the other device? [y/N]");
    tokio::task::spawn_blocking(|| {
        let mut line = String::new();
        std::io::stdin().lock().read_line(&mut line).is_ok()
            && matches!(line.trim().to_lowercase().as_str(), "y" | "yes")
    })
    .await
    .unwrap_or(false)
}
