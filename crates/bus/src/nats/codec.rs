//! The wire format of bus payloads: one tag byte, then the tag's data
//! (device events), or plain text (presence, invalidations, spending
//! reports). Only missive nodes of the same build read them.

use std::sync::Arc;

use missive_core::{AccountId, ConversationId, DeviceId};

use crate::{DeviceEvent, Invalidation, Spent};

pub(super) fn decode_presence(payload: &[u8]) -> Option<AccountId> {
    std::str::from_utf8(payload)
        .ok()?
        .parse()
        .ok()
        .map(AccountId)
}

pub(super) fn encode_event(event: &DeviceEvent) -> Vec<u8> {
    let (tag, data): (u8, &str) = match event {
        DeviceEvent::QueueChanged => (b'q', ""),
        DeviceEvent::Committed {
            conversation,
            seq,
            frame,
        } => {
            // The place first (16 bytes, big-endian), then the frame.
            let mut payload = Vec::with_capacity(17 + frame.len());
            payload.push(b'm');
            payload.extend_from_slice(&conversation.0.to_be_bytes());
            payload.extend_from_slice(&seq.to_be_bytes());
            payload.extend_from_slice(frame.as_bytes());
            return payload;
        }
        DeviceEvent::Revoked => (b'r', ""),
        DeviceEvent::Ephemeral(frame) => (b'e', frame),
        DeviceEvent::TakenOver { node } => (b't', node),
    };
    let mut payload = Vec::with_capacity(1 + data.len());
    payload.push(tag);
    payload.extend_from_slice(data.as_bytes());
    payload
}

pub(super) fn decode_event(payload: &[u8]) -> Option<DeviceEvent> {
    let (&tag, data) = payload.split_first()?;
    let text = || std::str::from_utf8(data).ok().map(Arc::<str>::from);
    Some(match tag {
        b'q' => DeviceEvent::QueueChanged,
        b'm' => {
            let (conversation, rest) = data.split_first_chunk::<8>()?;
            let (seq, frame) = rest.split_first_chunk::<8>()?;
            DeviceEvent::Committed {
                conversation: ConversationId(i64::from_be_bytes(*conversation)),
                seq: i64::from_be_bytes(*seq),
                frame: Arc::from(std::str::from_utf8(frame).ok()?),
            }
        }
        b'r' => DeviceEvent::Revoked,
        b'e' => DeviceEvent::Ephemeral(text()?),
        b't' => DeviceEvent::TakenOver { node: text()? },
        _ => return None,
    })
}

pub(super) fn encode_invalidation(what: Invalidation) -> String {
    match what {
        Invalidation::Device(device) => format!("d{}", device.0),
        Invalidation::Conversation(conversation) => format!("c{}", conversation.0),
        Invalidation::Relays => "r".to_owned(),
        Invalidation::Everything => "*".to_owned(),
    }
}

pub(super) fn decode_invalidation(payload: &[u8]) -> Option<Invalidation> {
    let text = std::str::from_utf8(payload).ok()?;
    match text {
        "*" => return Some(Invalidation::Everything),
        "r" => return Some(Invalidation::Relays),
        _ => {}
    }
    let (tag, id) = text.split_at_checked(1)?;
    let id: i64 = id.parse().ok()?;
    match tag {
        "d" => Some(Invalidation::Device(DeviceId(id))),
        "c" => Some(Invalidation::Conversation(ConversationId(id))),
        _ => None,
    }
}

/// One line per entry: `<limit> <key> <units>`. An entry whose name or key
/// would break the format is left out (none does: both are built by the
/// server from ids, addresses and validated usernames).
pub(super) fn encode_spent(spent: &[Spent]) -> String {
    let fits = |text: &str| !text.is_empty() && !text.contains(char::is_whitespace);
    let mut payload = String::new();
    for entry in spent {
        if fits(&entry.limit) && fits(&entry.key) {
            payload.push_str(&format!("{} {} {}\n", entry.limit, entry.key, entry.units));
        }
    }
    payload
}

/// The entries of a report; `None` if any line is malformed.
pub(super) fn decode_spent(payload: &[u8]) -> Option<Vec<Spent>> {
    std::str::from_utf8(payload)
        .ok()?
        .lines()
        .map(|line| {
            let mut fields = line.split(' ');
            let (limit, key, units) = (fields.next()?, fields.next()?, fields.next()?);
            if fields.next().is_some() || limit.is_empty() || key.is_empty() {
                return None;
            }
            Some(Spent {
                limit: limit.to_owned(),
                key: key.to_owned(),
                units: units.parse().ok()?,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spending_reports_round_trip() {
        // Goal: a report decodes to itself; a malformed line spoils it.
        let spent = vec![
            Spent {
                limit: "send".into(),
                key: "a:7".into(),
                units: 3,
            },
            Spent {
                limit: "registration".into(),
                key: "ip:2001:db8::1".into(),
                units: 1,
            },
            Spent {
                limit: "login".into(),
                key: "u:alice".into(),
                units: -2,
            },
        ];
        assert_eq!(decode_spent(encode_spent(&spent).as_bytes()), Some(spent));
        assert_eq!(decode_spent(b""), Some(Vec::new()));
        for bad in [
            &b"send a:7"[..],
            b"send a:7 x",
            b"send a:7 1 2",
            b" a:7 1",
            b"\xff",
        ] {
            assert_eq!(
                decode_spent(bad),
                None,
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        let spaced = Spent {
            limit: "send".into(),
            key: "a 7".into(),
            units: 1,
        };
        assert_eq!(
            encode_spent(&[spaced]),
            "",
            "a key with a space is left out"
        );
    }

    #[test]
    fn events_and_invalidations_round_trip() {
        // Goal: every variant decodes to itself; garbage decodes to nothing.
        for event in [
            DeviceEvent::QueueChanged,
            DeviceEvent::Committed {
                conversation: ConversationId(7),
                seq: 1 << 40,
                frame: Arc::from("{\"type\":\"message\"}"),
            },
            DeviceEvent::Revoked,
            DeviceEvent::Ephemeral(Arc::from("{\"type\":\"typing\"}")),
            DeviceEvent::TakenOver {
                node: Arc::from("node-b"),
            },
        ] {
            assert_eq!(decode_event(&encode_event(&event)), Some(event));
        }
        for what in [
            Invalidation::Device(DeviceId(42)),
            Invalidation::Conversation(ConversationId(7)),
            Invalidation::Relays,
            Invalidation::Everything,
        ] {
            assert_eq!(
                decode_invalidation(encode_invalidation(what).as_bytes()),
                Some(what)
            );
        }
        assert_eq!(decode_event(b""), None);
        assert_eq!(decode_event(b"x"), None);
        assert_eq!(decode_event(b"e\xff"), None);
        assert_eq!(decode_event(b"m\x00\x01"), None, "a place cut short");
        assert_eq!(decode_invalidation(b"d"), None);
        assert_eq!(decode_invalidation(b"dx1"), None);
        assert_eq!(decode_invalidation(b"q1"), None);
        assert_eq!(decode_presence(b"42"), Some(AccountId(42)));
        assert_eq!(decode_presence(b"x42"), None);
    }
}
