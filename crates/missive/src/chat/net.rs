//! The terminal app's connection: one task that connects, reads the
//! conversation list, then passes frames both ways, acking every stored
//! event it hands to the app; when the connection drops it tries again with
//! a growing pause, until told to stop or the device is revoked.

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

use futures_util::FutureExt;

use missive_client::{Api, ClientError, Connection};
use missive_proto::{ClientFrame, ErrorCode, ServerFrame};
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender};

use super::crypto::{Crypto, SealError};
use super::state::AppEvent;
use super::verify::{Outcome, VerifyAction};

pub(super) enum Command {
    Frame(ClientFrame),
    /// The user's decision in a key verification.
    Verify(VerifyAction),
    /// Try now instead of after the pause (or after a stop).
    Reconnect,
}

/// How long an encrypted message waits for its room key (sent just before
/// it, on another queue) before it is shown as unreadable.
const HOLD_FOR_KEY: Duration = Duration::from_secs(5);
const FIRST_PAUSE: Duration = Duration::from_millis(250);
const LONGEST_PAUSE: Duration = Duration::from_secs(8);
/// Close codes after which reconnecting would not help (docs/PROTOCOL.md).
const CLOSE_REVOKED: u16 = 4003;
const CLOSE_REPLACED: u16 = 4004;

/// How a connection ended.
enum Ended {
    /// Try again after a pause.
    Lost(String),
    /// Wait for the user to ask.
    Stopped(String),
    /// The app is gone.
    Quit,
}

pub(super) fn spawn(
    api: Api,
    token: String,
    crypto: Crypto,
    events: UnboundedSender<AppEvent>,
) -> UnboundedSender<Command> {
    let (commands, receiver) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(run(api, token, crypto, events, receiver));
    commands
}

async fn run(
    api: Api,
    token: String,
    crypto: Crypto,
    events: UnboundedSender<AppEvent>,
    mut commands: UnboundedReceiver<Command>,
) {
    let mut pause = FIRST_PAUSE;
    loop {
        if events.send(AppEvent::Connecting).is_err() {
            return;
        }
        let (ended, was_online) = session(&api, &token, &crypto, &events, &mut commands).await;
        if was_online {
            pause = FIRST_PAUSE;
        }
        let wait = match ended {
            Ended::Quit => return,
            Ended::Lost(reason) => {
                let _ = events.send(AppEvent::Offline {
                    reason,
                    retry_in: pause,
                });
                Some(pause)
            }
            Ended::Stopped(reason) => {
                let _ = events.send(AppEvent::Stopped { reason });
                None
            }
        };
        // Frames the app sends while we are away are dropped: what must
        // not be lost (texts) waits in the app's outbox.
        let retry = async {
            match wait {
                Some(pause) => tokio::time::sleep(pause).await,
                None => std::future::pending().await,
            }
        };
        tokio::pin!(retry);
        loop {
            tokio::select! {
                () = &mut retry => break,
                command = commands.recv() => match command {
                    None => return,
                    Some(Command::Reconnect) => break,
                    Some(Command::Frame(_) | Command::Verify(_)) => {}
                },
            }
        }
        pause = (pause * 2).min(LONGEST_PAUSE);
    }
}

/// One connection, from connecting to its end; whether it got online.
async fn session(
    api: &Api,
    token: &str,
    crypto: &Crypto,
    events: &UnboundedSender<AppEvent>,
    commands: &mut UnboundedReceiver<Command>,
) -> (Ended, bool) {
    let connection = match Connection::connect(&api.ws_url(), token).await {
        Ok(connection) => connection,
        Err(err) => return (ended_by(err), false),
    };
    let conversations = match api.conversations(token).await {
        Ok(list) => list,
        Err(err) => return (ended_by(err), false),
    };
    // Before anything is read: a device that others drained while it was
    // away has keys to be claimed again by the time it is online.
    crypto.top_up_if_low().await;
    if events.send(AppEvent::Online { conversations }).is_err() {
        return (Ended::Quit, true);
    }
    let mut online = Online {
        connection,
        crypto,
        events,
        first_to_users: HashSet::new(),
    };
    let mut held_since: Option<Instant> = None;
    loop {
        held_since = match (crypto.holding().await, held_since) {
            (false, _) => None,
            (true, since) => Some(since.unwrap_or_else(Instant::now)),
        };
        let give_up_at = held_since.map(|since| since + HOLD_FOR_KEY);
        let step = tokio::select! {
            command = commands.recv() => match command {
                None => {
                    online.connection.close().await;
                    return (Ended::Quit, true);
                }
                Some(command) => online.on_command(command).await,
            },
            () = wait_until(give_up_at) => online.give_up_holding().await,
            // Reading a frame is cancel-safe: a frame is either returned
            // whole or still in the socket.
            frame = online.connection.next_frame(Duration::from_secs(3600)) => match frame {
                Ok(frame) => online.on_burst(frame).await,
                Err(ClientError::Timeout) => Ok(()),
                Err(err) => Err(ended_by(err)),
            },
        };
        if let Err(ended) = step {
            return (ended, true);
        }
    }
}

/// A connection that got online, and what its loop keeps between frames.
struct Online<'a> {
    connection: Connection,
    crypto: &'a Crypto,
    events: &'a UnboundedSender<AppEvent>,
    /// Encrypted first messages to users: their `sent` names the new
    /// conversation the outbound session moves to.
    first_to_users: HashSet<String>,
}

impl Online<'_> {
    /// Carries out what the app asked.
    async fn on_command(&mut self, command: Command) -> Result<(), Ended> {
        match command {
            Command::Reconnect => Ok(()),
            Command::Verify(action) => {
                let outcome = self.crypto.verify(action).await;
                carry_verification(&mut self.connection, self.events, outcome)
                    .await
                    .map_err(ended_by)
            }
            Command::Frame(frame) => self.send(frame).await,
        }
    }

    /// Sends a frame from the app, sealed first when it is to be encrypted;
    /// a refusal to seal goes back to the app as the server's would.
    async fn send(&mut self, frame: ClientFrame) -> Result<(), Ended> {
        let frame = match self.crypto.seal(&mut self.connection, frame).await {
            Ok(frame) => frame,
            Err(SealError::Lost(err)) => return Err(ended_by(err)),
            Err(SealError::Refused(refusal)) => {
                return self
                    .events
                    .send(AppEvent::Frame(*refusal))
                    .map_err(|_| Ended::Quit);
            }
        };
        if let ClientFrame::Send {
            id: Some(id),
            to: Some(_),
            encrypted: true,
            ..
        } = &frame
        {
            self.first_to_users.insert(id.clone());
        }
        self.connection.send_frame(&frame).await.map_err(ended_by)
    }

    /// What waited too long for its room key: shown as unreadable, acked.
    async fn give_up_holding(&mut self) -> Result<(), Ended> {
        let mut acks = BTreeMap::new();
        if !hand_over(self.crypto.give_up().await, self.events, &mut acks) {
            return Err(Ended::Quit);
        }
        ack_all(&mut self.connection, acks, None)
            .await
            .map_err(ended_by)
    }

    /// Hands over every frame already here, then acks each conversation
    /// once, up to the last of them.
    async fn on_burst(&mut self, first: ServerFrame) -> Result<(), Ended> {
        let mut acks = BTreeMap::new();
        let mut to_device_done = None;
        let mut next = Some(Ok(first));
        while let Some(result) = next {
            let frame = result.map_err(ended_by)?;
            if let ServerFrame::Sent {
                id: Some(id),
                conversation,
                ..
            } = &frame
                && self.first_to_users.remove(id)
            {
                self.crypto.created(*conversation).await;
            }
            let incoming = self.crypto.incoming(frame).await;
            to_device_done = incoming.to_device_done.or(to_device_done);
            if !hand_over(incoming.show, self.events, &mut acks) {
                return Err(Ended::Quit);
            }
            let verifying = Outcome {
                send: incoming.verify_send,
                update: incoming.verify_update,
            };
            carry_verification(&mut self.connection, self.events, verifying)
                .await
                .map_err(ended_by)?;
            // Polled once: a frame already read, or none (the long timeout
            // never fires, so `None` is "nothing waiting", not a timeout).
            next = self
                .connection
                .next_frame(Duration::from_secs(3600))
                .now_or_never();
        }
        ack_all(&mut self.connection, acks, to_device_done)
            .await
            .map_err(ended_by)
    }
}

/// Gives frames to the app, noting each conversation's highest stored
/// event to ack; false once the app is gone.
fn hand_over(
    frames: Vec<ServerFrame>,
    events: &UnboundedSender<AppEvent>,
    acks: &mut BTreeMap<i64, i64>,
) -> bool {
    for frame in frames {
        if let Some((conversation, seq)) = frame.ack_point() {
            acks.insert(conversation, seq);
        }
        if events.send(AppEvent::Frame(frame)).is_err() {
            return false;
        }
    }
    true
}

/// Acks what the app was given: stored events per conversation, and the
/// to-device messages taken.
async fn ack_all(
    connection: &mut Connection,
    acks: BTreeMap<i64, i64>,
    to_device_done: Option<i64>,
) -> Result<(), ClientError> {
    for (conversation, seq) in acks {
        connection.ack_quietly(conversation, seq).await?;
    }
    if let Some(up_to) = to_device_done {
        let done = ClientFrame::ToDeviceAck { id: None, up_to };
        connection.send_frame(&done).await?;
    }
    Ok(())
}

/// Sends a verification step's messages and shows its state.
async fn carry_verification(
    connection: &mut Connection,
    events: &UnboundedSender<AppEvent>,
    outcome: Outcome,
) -> Result<(), ClientError> {
    if !outcome.send.is_empty() {
        let frame = ClientFrame::ToDevice {
            id: None,
            messages: outcome.send,
        };
        connection.send_frame(&frame).await?;
    }
    if let Some(update) = outcome.update {
        let _ = events.send(AppEvent::Verify(update));
    }
    Ok(())
}

async fn wait_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

fn ended_by(err: ClientError) -> Ended {
    match err {
        ClientError::Closed {
            code: CLOSE_REVOKED,
            ..
        } => Ended::Stopped("this device was logged out; run `missive login` again".into()),
        ClientError::Closed {
            code: CLOSE_REPLACED,
            ..
        } => Ended::Stopped(
            "this device connected from somewhere else; press r to take over again".into(),
        ),
        ClientError::Refused { code, message }
            if matches!(
                code,
                ErrorCode::TokenInvalid | ErrorCode::AccountSuspended | ErrorCode::NotAuthenticated
            ) =>
        {
            Ended::Stopped(format!(
                "the server refused this device: {message} ({}); log in again",
                code.as_str()
            ))
        }
        ClientError::Refused { code, message } => {
            Ended::Lost(format!("{message} ({})", code.as_str()))
        }
        ClientError::Closed { code, reason } if reason.is_empty() => {
            Ended::Lost(format!("connection closed ({code})"))
        }
        ClientError::Closed { reason, .. } => Ended::Lost(format!("connection closed: {reason}")),
        other => Ended::Lost(other.to_string()),
    }
}
