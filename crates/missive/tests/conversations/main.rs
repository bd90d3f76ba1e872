//! Groups, message kinds (reply, reaction, edit, delete), receipts per
//! member, history and the conversation list, over real sockets.

#[path = "../common/mod.rs"]
mod common;

mod history;
mod membership;
mod messages;

use common::*;
use missive_client::Connection;
use missive_proto::rest::MemberRole;
use missive_proto::{ClientFrame, MessageKind, ServerFrame};

/// (seq, kind, from, text) of each `message` frame.
fn events(frames: &[ServerFrame]) -> Vec<(i64, MessageKind, String, String)> {
    frames
        .iter()
        .filter_map(|frame| match frame {
            ServerFrame::Message {
                seq,
                kind,
                from,
                text,
                ..
            } => Some((*seq, *kind, from.clone(), text.clone())),
            _ => None,
        })
        .collect()
}

fn system_action(frame: &ServerFrame) -> Option<String> {
    match frame {
        ServerFrame::Message {
            kind: MessageKind::System,
            event: Some(event),
            ..
        } => event["action"].as_str().map(str::to_owned),
        _ => None,
    }
}

/// Reads delivery frames until `n` arrived and acks them all (one
/// cumulative ack per conversation).
async fn drain(connection: &mut Connection, n: usize) -> Vec<ServerFrame> {
    let frames = queued(connection, n).await;
    ack_received(connection, &frames).await;
    frames
}
