//! `listen`: printing (and acking) what arrives, over WebSocket or
//! long-polling, encrypted messages opened once their room key is here.

use std::collections::{BTreeMap, VecDeque};
use std::process::ExitCode;
use std::time::Duration;

use missive_client::{Api, ClientError, Connection};
use missive_proto::{ClientFrame, ServerFrame};

use super::{ClientArgs, EXIT_UNREACHABLE, connect_as, fail, load_profile, print_json, warn};
use crate::encryption;

/// Correlation id of the presence subscription `listen --presence` sends.
const LISTEN_SUBSCRIBE_ID: &str = "listen-presence";

/// What `listen` prints besides queued frames, and when it stops.
pub(crate) struct ListenOptions {
    pub count: Option<u64>,
    pub idle_secs: Option<u64>,
    pub ack: bool,
    /// Also print `typing` and `presence` frames (never acked).
    pub ephemeral: bool,
    /// Subscribe to these users' presence first.
    pub presence: Vec<String>,
}

/// Stored events opened (or given up on) and ready to print, in order.
type Ready = VecDeque<(ServerFrame, encryption::Opened)>;

/// How much `listen` has printed, and whether it acked anything (then the
/// last ack is made sure of before leaving).
struct Tally {
    count: Option<u64>,
    printed: u64,
    acked_any: bool,
}

impl Tally {
    /// True once `--count` frames are printed.
    fn full(&self) -> bool {
        self.count.is_some_and(|count| self.printed >= count)
    }
}

pub(crate) async fn listen(args: &ClientArgs, options: ListenOptions) -> ExitCode {
    let (saved, mut connection) = match connect_as(args).await {
        Ok(connected) => connected,
        Err(code) => return code,
    };
    if !options.presence.is_empty() {
        let subscribe = ClientFrame::SubscribePresence {
            id: Some(LISTEN_SUBSCRIBE_ID.into()),
            users: options.presence.clone(),
        };
        if let Err(err) = connection.send_frame(&subscribe).await {
            return fail(&err);
        }
    }
    // Encrypted messages are printed decrypted; one whose room key has not
    // come yet waits (with what follows it in its conversation) for it.
    let mut keys = encryption::DeviceKeys::open(&args.profile, &saved, Box::new(warn));
    let mut ready = Ready::new();
    let mut tally = Tally {
        count: options.count,
        printed: 0,
        acked_any: false,
    };
    let received = receive(&mut connection, &mut keys, &mut ready, &options, &mut tally).await;
    match received {
        Ok(()) => {}
        Err(Stop::Failed(code)) => return code,
        Err(Stop::Refused(err)) => {
            connection.close().await;
            return fail(&err);
        }
    }
    // What still waits for a key is printed as undecryptable, in order.
    for (frame, shown) in ready.into_iter().chain(keys.give_up()) {
        if tally.full() {
            break;
        }
        if let Err(code) = print_and_ack(&mut connection, &frame, &shown, options.ack).await {
            return code;
        }
        tally.printed += 1;
        tally.acked_any |= options.ack;
    }
    keys.save();
    // Make sure the last ack arrived before leaving.
    if tally.acked_any {
        let ping = ClientFrame::Ping {
            id: Some("final".into()),
        };
        if let Err(err) = connection.request(&ping, "final").await {
            return fail(&err);
        }
    }
    connection.close().await;
    ExitCode::SUCCESS
}

/// Why `receive` stopped before `--count` or `--idle` stopped it.
enum Stop {
    /// Failed, the error printed: exit with this.
    Failed(ExitCode),
    /// The server refused the presence subscription: close, then fail.
    Refused(ClientError),
}

/// Prints (and acks) frames as they come until `--count` are printed or
/// none came for `--idle`; stored events wait in `ready` for their key.
async fn receive(
    connection: &mut Connection,
    keys: &mut encryption::DeviceKeys,
    ready: &mut Ready,
    options: &ListenOptions,
    tally: &mut Tally,
) -> Result<(), Stop> {
    let wait = options
        .idle_secs
        .map_or(Duration::from_secs(u64::MAX / 4), Duration::from_secs);
    while !tally.full() {
        if let Some((frame, shown)) = ready.pop_front() {
            print_and_ack(connection, &frame, &shown, options.ack)
                .await
                .map_err(Stop::Failed)?;
            tally.printed += 1;
            tally.acked_any |= options.ack;
            continue;
        }
        let frame = match connection.next_frame(wait).await {
            Ok(frame) => frame,
            Err(ClientError::Timeout) => return Ok(()),
            Err(err) => return Err(Stop::Failed(fail(&err))),
        };
        if let ServerFrame::ToDevice {
            seq,
            from,
            from_device,
            body,
            ..
        } = &frame
        {
            ready.extend(keys.take_share(from, *from_device, body));
            // Kept before acked: the server deletes what is acked.
            keys.save();
            let done = ClientFrame::ToDeviceAck {
                id: None,
                up_to: *seq,
            };
            connection
                .send_frame(&done)
                .await
                .map_err(|err| Stop::Failed(fail(&err)))?;
            continue;
        }
        if let ServerFrame::Error {
            id, code, message, ..
        } = &frame
            && id.as_deref() == Some(LISTEN_SUBSCRIBE_ID)
        {
            return Err(Stop::Refused(ClientError::Refused {
                code: *code,
                message: message.clone(),
            }));
        }
        if print_live(&frame, options.ephemeral) {
            tally.printed += 1;
        } else if frame.ack_point().is_some() {
            ready.extend(keys.offer(frame));
        }
    }
    Ok(())
}

/// Prints a live frame `listen` shows as it comes; false for the others.
fn print_live(frame: &ServerFrame, ephemeral: bool) -> bool {
    match frame {
        // The same live frames `--poll --ephemeral` prints.
        ServerFrame::Typing { .. }
        | ServerFrame::Presence { .. }
        | ServerFrame::KeysLow { .. }
        | ServerFrame::DevicesChanged { .. }
            if ephemeral => {}
        // Receipt cursors are shown but never acked: they are live
        // frames, not stored events.
        ServerFrame::Delivered { .. } | ServerFrame::Read { .. } => {}
        _ => return false,
    }
    print_json(frame);
    true
}

/// Prints a stored event as `listen` shows it and acks it.
async fn print_and_ack(
    connection: &mut Connection,
    frame: &ServerFrame,
    opened: &encryption::Opened,
    ack: bool,
) -> Result<(), ExitCode> {
    print_json(&encryption::printable(frame, opened));
    if let (true, Some((conversation, seq))) = (ack, frame.ack_point()) {
        let frame = ClientFrame::Ack {
            id: None,
            conversation,
            seq,
        };
        connection
            .send_frame(&frame)
            .await
            .map_err(|err| fail(&err))?;
    }
    Ok(())
}

/// What `listen --poll` carries from one poll to the next.
struct Polling {
    /// As `listen`: encrypted messages printed decrypted, held back until
    /// their room key comes.
    keys: encryption::DeviceKeys,
    ready: Ready,
    /// The highest seq printed per conversation, acked by the next poll.
    unacked: BTreeMap<i64, i64>,
    /// The last room key message taken, acked by the next poll.
    to_device_done: Option<i64>,
    printed: u64,
}

impl Polling {
    /// Takes one polled frame: a room key, a stored event to print once
    /// its key is here, or a live frame printed now.
    fn take(&mut self, frame: ServerFrame, ephemeral: bool) {
        match &frame {
            ServerFrame::ToDevice {
                seq,
                from,
                from_device,
                body,
                ..
            } => {
                self.ready
                    .extend(self.keys.take_share(from, *from_device, body));
                // Kept before the next poll acks it.
                self.keys.save();
                self.to_device_done = Some(*seq);
            }
            // Printed below once its key (if it needs one) is there.
            _ if frame.ack_point().is_some() => self.ready.extend(self.keys.offer(frame)),
            ServerFrame::Delivered { .. } | ServerFrame::Read { .. } => {
                print_json(&frame);
                self.printed += 1;
            }
            _ if ephemeral => {
                print_json(&frame);
                self.printed += 1;
            }
            _ => {}
        }
    }

    /// Prints the events ready to print, noting each one's ack point for
    /// the next poll; false once `count` events are printed.
    fn print_ready(&mut self, count: Option<u64>) -> bool {
        while let Some((event, opened)) = self.ready.pop_front() {
            if count.is_some_and(|count| self.printed >= count) {
                return false;
            }
            print_json(&encryption::printable(&event, &opened));
            self.printed += 1;
            if let Some((conversation, seq)) = event.ack_point() {
                let highest = self.unacked.entry(conversation).or_insert(seq);
                *highest = (*highest).max(seq);
            }
        }
        true
    }
}

/// `listen --poll`: the same output and acking as `listen`, over HTTP
/// long-polling. Acks ride on the next poll; the last one is sent as an
/// `ack` frame before exiting.
pub(crate) async fn listen_poll(args: &ClientArgs, options: ListenOptions) -> ExitCode {
    const POLL_WAIT_MS: u64 = 25_000;
    let saved = match load_profile(args) {
        Ok(saved) => saved,
        Err(code) => return code,
    };
    let api = Api::new(&saved.server);
    let wait_ms = options
        .idle_secs
        .map_or(POLL_WAIT_MS, |secs| secs.saturating_mul(1000).min(60_000));
    let mut polling = Polling {
        keys: encryption::DeviceKeys::open(&args.profile, &saved, Box::new(warn)),
        ready: Ready::new(),
        unacked: BTreeMap::new(),
        to_device_done: None,
        printed: 0,
    };
    'polling: while options.count.is_none_or(|count| polling.printed < count) {
        let acks: Vec<(i64, i64)> = if options.ack {
            std::mem::take(&mut polling.unacked).into_iter().collect()
        } else {
            Vec::new()
        };
        let to_device_done = polling.to_device_done.take();
        let response = match api
            .poll_acking_to_device(&saved.token, &acks, to_device_done, wait_ms)
            .await
        {
            Ok(response) => response,
            Err(err) => return fail(&err),
        };
        if let Some(reason) = response.closed {
            eprintln!("error: the poll ended: {reason}");
            return ExitCode::from(EXIT_UNREACHABLE);
        }
        if response.frames.is_empty() && options.idle_secs.is_some() {
            break;
        }
        for frame in response.frames {
            if options.count.is_some_and(|count| polling.printed >= count) {
                break 'polling;
            }
            polling.take(frame, options.ephemeral);
            if !polling.print_ready(options.count) {
                break 'polling;
            }
        }
    }
    // What still waits for a key is printed as undecryptable, in order.
    let given_up = polling.keys.give_up();
    polling.ready.extend(given_up);
    polling.print_ready(options.count);
    polling.keys.save();
    match send_final_acks(&api, &saved.token, polling, options.ack).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => fail(&err),
    }
}

/// The acks no later poll will carry: the last room key taken and, with
/// `--ack`, the last event printed per conversation.
async fn send_final_acks(
    api: &Api,
    token: &str,
    polling: Polling,
    ack: bool,
) -> Result<(), ClientError> {
    if let Some(up_to) = polling.to_device_done {
        let done = ClientFrame::ToDeviceAck {
            id: Some("final-keys".into()),
            up_to,
        };
        api.frame(token, &done).await?;
    }
    for (conversation, seq) in polling.unacked.into_iter().filter(|_| ack) {
        let ack = ClientFrame::Ack {
            id: Some("final".into()),
            conversation,
            seq,
        };
        api.frame(token, &ack).await?;
    }
    Ok(())
}
