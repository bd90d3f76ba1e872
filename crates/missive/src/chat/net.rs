//! The terminal app's connection: one task that connects, reads the
//! conversation list, then passes frames both ways, acking every stored
//! event it hands to the app; when the connection drops it tries again with
//! a growing pause, until told to stop or the device is revoked.

use std::collections::BTreeMap;
use std::time::Duration;

use futures_util::FutureExt;

use missive_client::{Api, ClientError, Connection};
use missive_proto::{ClientFrame, ErrorCode};
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender};

use super::state::AppEvent;

pub enum Command {
    Frame(ClientFrame),
    /// Try now instead of after the pause (or after a stop).
    Reconnect,
}

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
    events: UnboundedSender<AppEvent>,
) -> UnboundedSender<Command> {
    let (commands, receiver) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(run(api, token, events, receiver));
    commands
}

async fn run(
    api: Api,
    token: String,
    events: UnboundedSender<AppEvent>,
    mut commands: UnboundedReceiver<Command>,
) {
    let mut pause = FIRST_PAUSE;
    loop {
        if events.send(AppEvent::Connecting).is_err() {
            return;
        }
        let (ended, was_online) = session(&api, &token, &events, &mut commands).await;
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
                    Some(Command::Frame(_)) => {}
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
    if events.send(AppEvent::Online { conversations }).is_err() {
        return (Ended::Quit, true);
    }
    loop {
        tokio::select! {
            command = commands.recv() => match command {
                None => {
                    connection.close().await;
                    return (Ended::Quit, true);
                }
                Some(Command::Reconnect) => {}
                Some(Command::Frame(frame)) => {
                    if let Err(err) = connection.send_frame(&frame).await {
                        return (ended_by(err), true);
                    }
                }
            },
            // Reading a frame is cancel-safe: a frame is either returned
            // whole or still in the socket.
            frame = connection.next_frame(Duration::from_secs(3600)) => match frame {
                Ok(frame) => {
                    // Hand over every frame already here, then ack each
                    // conversation once, up to the last of them.
                    let mut acks = BTreeMap::new();
                    let mut next = Some(Ok(frame));
                    while let Some(result) = next {
                        let frame = match result {
                            Ok(frame) => frame,
                            Err(err) => return (ended_by(err), true),
                        };
                        if let Some((conversation, seq)) = frame.ack_point() {
                            acks.insert(conversation, seq);
                        }
                        if events.send(AppEvent::Frame(frame)).is_err() {
                            return (Ended::Quit, true);
                        }
                        // Polled once: a frame already read, or none (the
                        // long timeout never fires, so `None` is "nothing
                        // waiting", not a timeout).
                        next = connection.next_frame(Duration::from_secs(3600)).now_or_never();
                    }
                    for (conversation, seq) in acks {
                        if let Err(err) = connection.ack_quietly(conversation, seq).await {
                            return (ended_by(err), true);
                        }
                    }
                }
                Err(ClientError::Timeout) => {}
                Err(err) => return (ended_by(err), true),
            },
        }
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
