//! Every WebSocket text frame and every `/v1/frames` body goes through
//! `missive_proto::decode_client_frame` before anything else looks at it
//! (the socket hands it UTF-8 text; `/v1/frames` decodes its body with
//! `String::from_utf8_lossy` first, as here). Checks: no panic; a decoded
//! frame re-encodes to JSON that decodes to the same frame (what the client
//! library sends is what the server reads); an error becomes an `error`
//! frame; the field parsers the services apply next accept or refuse
//! without panicking.
#![no_main]

use libfuzzer_sys::fuzz_target;
use missive_core::{ClientMsgId, MessageId, MessageText, Username};
use missive_proto::{ClientFrame, ServerFrame, decode_client_frame};

/// `limits.text_bytes_max`'s default.
const TEXT_BYTES_MAX: usize = 65_536;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    match decode_client_frame(&text) {
        Ok(frame) => {
            let encoded = serde_json::to_string(&frame).expect("a decoded frame encodes");
            assert_eq!(
                decode_client_frame(&encoded).as_ref(),
                Ok(&frame),
                "re-encoded as {encoded}"
            );
            parse_fields(&frame);
        }
        Err(err) => {
            let reply = ServerFrame::error(err.id, err.code, err.message).to_json();
            assert!(reply.starts_with(r#"{"type":"error""#), "{reply}");
        }
    }
});

fn parse_fields(frame: &ClientFrame) {
    match frame {
        ClientFrame::Send {
            to,
            client_msg_id,
            text,
            reply_to,
            ..
        } => {
            let _ = to.as_deref().map(Username::parse);
            let _ = ClientMsgId::parse(client_msg_id);
            let _ = MessageText::parse(text, TEXT_BYTES_MAX);
            let _ = reply_to.as_deref().map(MessageId::parse);
        }
        ClientFrame::React {
            client_msg_id,
            target,
            ..
        }
        | ClientFrame::Delete {
            client_msg_id,
            target,
            ..
        } => {
            let _ = ClientMsgId::parse(client_msg_id);
            let _ = MessageId::parse(target);
        }
        ClientFrame::Edit {
            client_msg_id,
            target,
            text,
            ..
        } => {
            let _ = ClientMsgId::parse(client_msg_id);
            let _ = MessageId::parse(target);
            let _ = MessageText::parse(text, TEXT_BYTES_MAX);
        }
        ClientFrame::SubscribePresence { users, .. }
        | ClientFrame::GroupCreate { members: users, .. }
        | ClientFrame::GroupAdd { members: users, .. } => {
            for user in users {
                let _ = Username::parse(user);
            }
        }
        ClientFrame::GroupRemove { username, .. }
        | ClientFrame::GroupPromote { username, .. }
        | ClientFrame::GroupDemote { username, .. } => {
            let _ = Username::parse(username);
        }
        _ => {}
    }
}
