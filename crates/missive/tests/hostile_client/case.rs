//! One case: mallory's sequence sent, then the victim's state compared.

use std::collections::BTreeMap;
use std::sync::Mutex;

use missive_client::Connection;
use missive_proto::rest::FrameReplies;
use missive_proto::{ClientFrame, ServerFrame};
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;

use crate::common::*;
use crate::strategy::*;

/// Everything of the victim's that the server shows, as JSON text.
pub(crate) async fn victim_state(server: &TestServer, victim: &Victim) -> Vec<String> {
    let api = &server.api;
    let token = &victim.token;
    let mut state = vec![
        json(&api.conversations(token).await.expect("conversations")),
        json(&api.devices(token).await.expect("devices")),
        json(&api.contacts(token).await.expect("contacts")),
        json(&api.blocks(token).await.expect("blocks")),
        json(&api.privacy(token).await.expect("privacy")),
        json(&api.group(token, victim.group).await.expect("group")),
    ];
    for &conversation in &victim.conversations {
        state.push(json(
            &api.history(token, conversation, "limit=256")
                .await
                .expect("history"),
        ));
    }
    for (conversation, message_id) in &victim.messages {
        state.push(json(
            &api.receipts(token, *conversation, message_id)
                .await
                .expect("receipts"),
        ));
    }
    // What waits for the victim's second device, read by it, live only
    // for this poll: it acks nothing, so its positions stay where they are.
    let waiting = api.poll(&victim.dormant_token, &[], 0).await.expect("poll");
    state.push(json(&waiting.frames));
    state
}

fn json<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string(value).expect("serialise")
}

/// What every case starts from.
pub(crate) struct World {
    pub victim: Victim,
    /// Mallory's token.
    pub mallory: String,
    pub pools: Pools,
    /// The victim's state before any case.
    pub before: Vec<String>,
}

pub(crate) struct Victim {
    pub token: String,
    pub dormant_token: String,
    pub group: i64,
    pub conversations: Vec<i64>,
    /// (conversation, message id) of the victim's conversations' texts.
    pub messages: Vec<(i64, String)>,
}

/// Sends `ping` and returns every frame before its `pong`; `None` when the
/// connection closed instead.
async fn until_pong(connection: &mut Connection, id: &str) -> Option<Vec<ServerFrame>> {
    let ping = ClientFrame::Ping {
        id: Some(id.into()),
    };
    connection.send_frame(&ping).await.ok()?;
    let mut frames = Vec::new();
    loop {
        match connection.next_frame(PROMPTLY).await {
            Ok(ServerFrame::Pong { id: Some(pong) }) if pong == id => return Some(frames),
            Ok(frame) => frames.push(frame),
            Err(_) => return None,
        }
    }
}

/// The conversation a reply frame describes, if any.
fn named_conversation(frame: &ServerFrame) -> Option<i64> {
    match frame {
        ServerFrame::Sent { conversation, .. }
        | ServerFrame::Message { conversation, .. }
        | ServerFrame::Delivered { conversation, .. }
        | ServerFrame::Read { conversation, .. }
        | ServerFrame::ReadOk { conversation, .. }
        | ServerFrame::Typing { conversation, .. } => Some(*conversation),
        ServerFrame::Group { group, .. } => Some(group.conversation),
        _ => None,
    }
}

async fn post_frames(server: &TestServer, token: &str, body: Vec<u8>) -> (u16, Vec<ServerFrame>) {
    let response = reqwest::Client::new()
        .post(format!("{}/v1/frames", server.url()))
        .bearer_auth(token)
        .body(body)
        .send()
        .await
        .expect("post /v1/frames");
    let status = response.status().as_u16();
    let text = response.text().await.expect("body");
    let frames = serde_json::from_str::<FrameReplies>(&text)
        .map(|replies| replies.frames)
        .unwrap_or_default();
    (status, frames)
}

/// Runs one hostile sequence and checks the victim is untouched.
pub(crate) async fn run_case(
    server: &TestServer,
    world: &World,
    victim_live: &mut Connection,
    sequence: &Sequence,
    mallory_messages: &Mutex<Vec<String>>,
    refusals: &Mutex<BTreeMap<String, usize>>,
) -> Result<(), TestCaseError> {
    let mut pools = world.pools.clone();
    pools
        .message_ids
        .extend(mallory_messages.lock().unwrap().iter().cloned());
    let mut hostile = server.connect(&world.mallory).await;
    let replies = send_sequence(server, &world.mallory, &mut hostile, sequence, &pools).await?;
    if sequence.end_oversized {
        end_oversized(&mut hostile).await?;
    } else {
        hostile.close().await;
    }
    for reply in &replies {
        match reply {
            ServerFrame::Sent { message_id, .. } => {
                mallory_messages.lock().unwrap().push(message_id.clone());
            }
            ServerFrame::Error { code, .. } => {
                *refusals
                    .lock()
                    .unwrap()
                    .entry(code.as_str().to_owned())
                    .or_default() += 1;
            }
            _ => {}
        }
        if let Some(conversation) = named_conversation(reply) {
            prop_assert!(
                !pools.victim_conversations.contains(&conversation),
                "mallory was answered about the victim's conversation: {reply:?}"
            );
        }
    }
    assert_victim_untouched(server, world, victim_live).await
}

/// The frame (or text) of one action.
fn action_text(action: &Action, pools: &Pools) -> String {
    match action {
        Action::Frame { kind, picks } => {
            serde_json::to_string(&build_frame(*kind, picks, pools)).expect("encode")
        }
        Action::Raw(text) => text.clone(),
        Action::Legit(n) => serde_json::to_string(&ClientFrame::Send {
            id: Some(format!("legit-{n}")),
            to: Some("carol".into()),
            conversation: None,
            client_msg_id: format!("legit-{n}"),
            text: "hello carol".into(),
            reply_to: None,
            media: Vec::new(),
            encrypted: false,
        })
        .expect("encode"),
    }
}

/// Sends every action of `sequence` (over the socket or `/v1/frames`), and
/// the over-limit `/v1/frames` body if asked; every reply, up to the pong
/// that follows the last frame.
async fn send_sequence(
    server: &TestServer,
    mallory: &str,
    hostile: &mut Connection,
    sequence: &Sequence,
    pools: &Pools,
) -> Result<Vec<ServerFrame>, TestCaseError> {
    let mut replies = Vec::new();
    for (action, over_http) in &sequence.actions {
        let text = action_text(action, pools);
        if *over_http {
            let (_, frames) = post_frames(server, mallory, text.into_bytes()).await;
            replies.extend(frames);
        } else {
            hostile.send_raw(&text).await.expect("send to the server");
        }
    }
    if sequence.http_oversized {
        let (status, _) = post_frames(server, mallory, vec![b' '; OVERSIZED_FRAME]).await;
        prop_assert_eq!(status, 413, "an over-limit /v1/frames body");
    }
    // Frames are processed in order: after the pong, all of them were.
    let Some(frames) = until_pong(hostile, "sync").await else {
        return Err(TestCaseError::fail(
            "the server closed mallory's connection (only error frames were due)",
        ));
    };
    replies.extend(frames);
    Ok(replies)
}

/// Sends a frame over `frame_bytes_max`: the socket must close.
async fn end_oversized(hostile: &mut Connection) -> Result<(), TestCaseError> {
    let huge = format!(
        r#"{{"type":"ping","id":"{}"}}"#,
        "x".repeat(OVERSIZED_FRAME)
    );
    // The server may close while the frame is still being written, and
    // a reset may overtake its close frame: either way it must not stay
    // open.
    let _ = hostile.send_raw(&huge).await;
    loop {
        match hostile.next_frame(PROMPTLY).await {
            Ok(_) => continue,
            Err(missive_client::ClientError::Closed { code, .. }) => {
                prop_assert!(
                    code == 1009 || code == 1006,
                    "an over-limit frame closes with 1009, not {code}"
                );
                return Ok(());
            }
            Err(missive_client::ClientError::Timeout) => {
                return Err(TestCaseError::fail(
                    "an over-limit frame left the socket open",
                ));
            }
            Err(_) => return Ok(()),
        }
    }
}

/// Nothing reached the victim's live connection (no queued frame, no
/// typing or presence) and the victim's state is as before.
async fn assert_victim_untouched(
    server: &TestServer,
    world: &World,
    victim_live: &mut Connection,
) -> Result<(), TestCaseError> {
    assert_nothing_queued(victim_live).await;
    assert_no_ephemeral(victim_live).await;
    let after = victim_state(server, &world.victim).await;
    for (before, after) in world.before.iter().zip(&after) {
        prop_assert_eq!(before, after, "the victim's state changed");
    }
    prop_assert_eq!(world.before.len(), after.len());
    Ok(())
}
