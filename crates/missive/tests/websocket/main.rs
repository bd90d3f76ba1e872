//! The delivery model over real WebSockets against an in-process server.

#[path = "../common/mod.rs"]
mod common;

mod acks;
mod connections;
mod delivery;

use common::*;
use missive_proto::{ClientFrame, ServerFrame};

fn sent_seq(frame: &ServerFrame) -> (String, i64, bool) {
    match frame {
        ServerFrame::Sent {
            message_id,
            seq,
            duplicate,
            ..
        } => (message_id.clone(), *seq, *duplicate),
        other => panic!("expected sent, got {other:?}"),
    }
}
