//! Loss and duplicate accounting. Senders note which device should get
//! each message they were told is `sent`; receivers note every message
//! frame they get. At the end the two are compared: every expected message
//! must arrive (else it is lost), at most once per device (else the extras
//! are duplicates), and each device must see a conversation's new messages
//! in increasing seq.

use std::collections::{HashMap, HashSet};

use serde::{Deserialize, Serialize};

/// A message id as a number (the UUID's 128 bits): compact for millions.
pub(super) type MessageKey = u128;

pub(super) fn message_key(message_id: &str) -> Option<MessageKey> {
    // Once per received frame: no allocation.
    let mut key: MessageKey = 0;
    let mut digits = 0;
    for byte in message_id.bytes().filter(|b| *b != b'-') {
        key = (key << 4) | MessageKey::from(char::from(byte).to_digit(16)?);
        digits += 1;
    }
    (digits == 32).then_some(key)
}

/// One receiving device's view of what arrived, in arrival order.
#[derive(Default)]
pub(super) struct Received {
    /// (message, conversation, seq)
    pub frames: Vec<(MessageKey, i64, i64)>,
}

impl Received {
    pub(super) fn note(&mut self, message: MessageKey, conversation: i64, seq: i64) {
        self.frames.push((message, conversation, seq));
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Tally {
    /// (device, message) pairs that should have arrived.
    pub expected: u64,
    /// Distinct expected pairs that arrived.
    pub delivered: u64,
    pub lost: u64,
    /// Arrivals beyond the first of the same message on the same device.
    pub duplicated: u64,
    /// Messages that arrived but no sender was told were sent.
    pub unexpected: u64,
    /// First arrivals whose seq was not above the device's last one in
    /// that conversation.
    pub out_of_order: u64,
}

impl Tally {
    pub(crate) fn merge(&mut self, other: &Tally) {
        self.expected += other.expected;
        self.delivered += other.delivered;
        self.lost += other.lost;
        self.duplicated += other.duplicated;
        self.unexpected += other.unexpected;
        self.out_of_order += other.out_of_order;
    }

    pub(crate) fn is_clean(&self) -> bool {
        self.lost == 0 && self.duplicated == 0 && self.unexpected == 0 && self.out_of_order == 0
    }
}

/// Compares what one device should have got with what it got.
pub(super) fn tally(expected: &HashSet<MessageKey>, received: &Received) -> Tally {
    let mut seen: HashSet<MessageKey> = HashSet::with_capacity(received.frames.len());
    let mut last_seq: HashMap<i64, i64> = HashMap::new();
    let mut tally = Tally {
        expected: expected.len() as u64,
        ..Tally::default()
    };
    for &(message, conversation, seq) in &received.frames {
        if !seen.insert(message) {
            tally.duplicated += 1;
            continue;
        }
        let last = last_seq.entry(conversation).or_insert(0);
        if seq <= *last {
            tally.out_of_order += 1;
        }
        *last = (*last).max(seq);
        if expected.contains(&message) {
            tally.delivered += 1;
        } else {
            tally.unexpected += 1;
        }
    }
    tally.lost = tally.expected - tally.delivered;
    tally
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_ids_become_keys() {
        // Goal: a UUID parses to its 128 bits; anything else is refused.
        assert_eq!(
            message_key("01a226e2-8d61-733f-837e-9a4a4f8d3829"),
            Some(0x01a226e28d61733f837e9a4a4f8d3829)
        );
        assert_eq!(message_key("not-a-uuid"), None);
        assert_eq!(message_key("01a226e2-8d61-733f-837e-9a4a4f8d382"), None);
    }

    #[test]
    fn tallies_count_loss_duplicates_strays_and_reordering() {
        // Goal: each kind of fault is counted once, a clean run is clean.
        let expected: HashSet<MessageKey> = [1, 2, 3, 4].into_iter().collect();
        let mut clean = Received::default();
        for (key, seq) in [(1, 1), (2, 2), (3, 3), (4, 4)] {
            clean.note(key, 10, seq);
        }
        let t = tally(&expected, &clean);
        assert!(t.is_clean(), "{t:?}");
        assert_eq!((t.expected, t.delivered), (4, 4));

        let mut faulty = Received::default();
        faulty.note(1, 10, 1);
        faulty.note(3, 10, 3);
        faulty.note(1, 10, 1); // redelivered
        faulty.note(2, 10, 2); // after 3: out of order
        faulty.note(9, 10, 9); // nobody sent it
        faulty.note(7, 11, 1); // another conversation restarts its seqs
        let t = tally(&expected, &faulty);
        assert_eq!(
            t,
            Tally {
                expected: 4,
                delivered: 3,
                lost: 1,
                duplicated: 1,
                unexpected: 2,
                out_of_order: 1,
            }
        );
        assert!(!t.is_clean());
        let mut sum = t;
        sum.merge(&tally(&expected, &clean));
        assert_eq!((sum.expected, sum.lost, sum.duplicated), (8, 1, 1));
    }
}
