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

pub enum Command {
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

pub fn spawn(
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
    let mut connection = match Connection::connect(&api.ws_url(), token).await {
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
    // Encrypted first messages to users: their `sent` names the new
    // conversation the outbound session moves to.
    let mut first_to_users = HashSet::new();
    let mut held_since: Option<Instant> = None;
    loop {
        held_since = match (crypto.holding().await, held_since) {
            (false, _) => None,
            (true, since) => Some(since.unwrap_or_else(Instant::now)),
        };
        let give_up_at = held_since.map(|since| since + HOLD_FOR_KEY);
        tokio::select! {
            command = commands.recv() => match command {
                None => {
                    connection.close().await;
                    return (Ended::Quit, true);
                }
                Some(Command::Reconnect) => {}
                Some(Command::Verify(action)) => {
                    let outcome = crypto.verify(action).await;
                    if let Err(err) = carry_verification(&mut connection, events, outcome).await {
                        return (ended_by(err), true);
                    }
                }
                Some(Command::Frame(frame)) => {
                    let frame = match crypto.seal(&mut connection, frame).await {
                        Ok(frame) => frame,
                        Err(SealError::Lost(err)) => return (ended_by(err), true),
                        Err(SealError::Refused(refusal)) => {
                            if events.send(AppEvent::Frame(*refusal)).is_err() {
                                return (Ended::Quit, true);
                            }
                            continue;
                        }
                    };
                    if let ClientFrame::Send { id: Some(id), to: Some(_), encrypted: true, .. } = &frame {
                        first_to_users.insert(id.clone());
                    }
                    if let Err(err) = connection.send_frame(&frame).await {
                        return (ended_by(err), true);
                    }
                }
            },
            () = wait_until(give_up_at) => {
                let mut acks = BTreeMap::new();
                if !hand_over(crypto.give_up().await, events, &mut acks) {
                    return (Ended::Quit, true);
                }
                if let Err(err) = ack_all(&mut connection, acks, None).await {
                    return (ended_by(err), true);
                }
            },
            // Reading a frame is cancel-safe: a frame is either returned
            // whole or still in the socket.
            frame = connection.next_frame(Duration::from_secs(3600)) => match frame {
                Ok(frame) => {
                    // Hand over every frame already here, then ack each
                    // conversation once, up to the last of them.
                    let mut acks = BTreeMap::new();
                    let mut to_device_done = None;
                    let mut next = Some(Ok(frame));
                    while let Some(result) = next {
                        let frame = match result {
                            Ok(frame) => frame,
                            Err(err) => return (ended_by(err), true),
                        };
                        if let ServerFrame::Sent { id: Some(id), conversation, .. } = &frame
                            && first_to_users.remove(id)
                        {
                            crypto.created(*conversation).await;
                        }
                        let incoming = crypto.incoming(frame).await;
                        to_device_done = incoming.to_device_done.or(to_device_done);
                        if !hand_over(incoming.show, events, &mut acks) {
                            return (Ended::Quit, true);
                        }
                        let verifying = Outcome {
                            send: incoming.verify_send,
                            update: incoming.verify_update,
                        };
                        if let Err(err) = carry_verification(&mut connection, events, verifying).await {
                            return (ended_by(err), true);
                        }
                        // Polled once: a frame already read, or none (the
                        // long timeout never fires, so `None` is "nothing
                        // waiting", not a timeout).
                        next = connection.next_frame(Duration::from_secs(3600)).now_or_never();
                    }
                    if let Err(err) = ack_all(&mut connection, acks, to_device_done).await {
                        return (ended_by(err), true);
                    }
                }
                Err(ClientError::Timeout) => {}
                Err(err) => return (ended_by(err), true),
            },
        }
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
