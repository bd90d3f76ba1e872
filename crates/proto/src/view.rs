//! A server frame's routing fields, read straight from its JSON text: one
//! pass, strings borrowed from the frame. For a client that needs only
//! these (the load generator's receiving devices): decoding a delivery
//! into a [`ServerFrame`](crate::ServerFrame) buffers the whole object
//! before serde can pick the variant (`type` is a tag) and owns a string
//! per field; that was a quarter of the load generator's CPU in `drain`.

use std::borrow::Cow;

use serde::Deserialize;

/// The fields of a server frame a receiver routes and acks by; absent
/// ones are `None` (so any frame parses).
#[derive(Deserialize)]
pub struct FrameView<'a> {
    #[serde(rename = "type", borrow)]
    pub frame_type: Cow<'a, str>,
    #[serde(default)]
    pub conversation: Option<i64>,
    #[serde(default)]
    pub seq: Option<i64>,
    /// Of an `expired` range: what to ack.
    #[serde(default)]
    pub to_seq: Option<i64>,
    #[serde(default, borrow)]
    pub message_id: Option<Cow<'a, str>>,
    /// The stored event's kind (`text`, `system`, …).
    #[serde(default, borrow)]
    pub kind: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    pub text: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    pub id: Option<Cow<'a, str>>,
}

impl<'a> FrameView<'a> {
    pub fn parse(text: &'a str) -> Option<Self> {
        serde_json::from_str(text).ok()
    }

    /// `(conversation, seq)` to ack for a stored event: a `message`, or
    /// the end of an `expired` range (as `ServerFrame::ack_point`).
    pub fn ack_point(&self) -> Option<(i64, i64)> {
        match self.frame_type.as_ref() {
            "message" => Some((self.conversation?, self.seq?)),
            "expired" => Some((self.conversation?, self.to_seq?)),
            _ => None,
        }
    }

    /// A message members write, plain or encrypted (not a group's system
    /// event, a reaction, …).
    pub fn is_text(&self) -> bool {
        self.frame_type == "message"
            && self
                .kind
                .as_deref()
                .is_none_or(|kind| kind == "text" || kind == "encrypted")
    }
}

#[cfg(test)]
mod tests {
    use crate::{MessageKind, ServerFrame};

    use super::FrameView;

    #[test]
    fn the_view_reads_what_the_full_decoder_reads() {
        // Goal: for every frame a receiver sees, the view's ack point and
        // text agree with `ServerFrame`'s, escapes included.
        let message = |kind: MessageKind, event: Option<serde_json::Value>| ServerFrame::Message {
            message_id: "01a2-b3".into(),
            conversation: 7,
            seq: 42,
            from: "bob".into(),
            from_device: 3,
            client_msg_id: "c\"1".into(),
            kind,
            text: "12\n34".into(),
            media: Vec::new(),
            target: None,
            event,
            edited_ms: None,
            deleted: false,
            ts_ms: 5,
            expires_ms: None,
        };
        let created = serde_json::json!({"v": 1, "action": "created"});
        let frames = [
            message(MessageKind::Text, None),
            message(MessageKind::Encrypted, None),
            message(MessageKind::System, Some(created)),
            ServerFrame::Expired {
                conversation: 7,
                from_seq: 1,
                to_seq: 9,
            },
            ServerFrame::Delivered {
                conversation: 7,
                by: "bob".into(),
                seq: 4,
                ts_ms: 1,
            },
            ServerFrame::Pong {
                id: Some("end".into()),
            },
        ];
        for frame in frames {
            let json = frame.to_json();
            let view = FrameView::parse(&json).expect(&json);
            assert_eq!(view.ack_point(), frame.ack_point(), "{json}");
            if let ServerFrame::Message {
                kind,
                text,
                message_id,
                ..
            } = &frame
            {
                assert_eq!(
                    view.is_text(),
                    matches!(kind, MessageKind::Text | MessageKind::Encrypted),
                    "{json}"
                );
                assert_eq!(view.text.as_deref(), Some(text.as_str()));
                assert_eq!(view.message_id.as_deref(), Some(message_id.as_str()));
            } else {
                assert!(!view.is_text(), "{json}");
            }
        }
        assert!(FrameView::parse("not json").is_none());
    }
}
