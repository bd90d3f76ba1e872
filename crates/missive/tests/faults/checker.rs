//! The fault suite's checker, in the spirit of Jepsen's queue checkers.
//!
//! Every text a workload sends carries its payload `"<device>#<counter>"`
//! (and the client_msg_id `"<device>-<counter>"`), so a delivery names the
//! attempt it came from. The workload records three kinds of event into a
//! [`History`]: an attempt (with the devices that must receive it), a `sent`
//! reply, and every `message` frame any device read, redeliveries included
//! (and any `expired` frame, which no run of the suite should see).
//! After the faults stop and every device has been drained, [`History::check`]
//! classifies each message:
//!
//! - **lost**: got `sent`, but some device that must receive it never did;
//! - **recovered**: never got `sent` (the reply was lost to a fault), yet
//!   delivered; allowed, because the send may have committed;
//! - **unexpected**: a delivery no attempt explains, or to a device that is
//!   not a recipient;
//! - **duplicated**: stored twice, under two message ids (not allowed: a
//!   send is idempotent by client_msg_id). The same message id read again
//!   by one device is a *redelivery*, counted but allowed (at least once: a
//!   device gets every event above its acked position again after a
//!   reconnect, and the drain re-reads what was received but not acked);
//! - **out of order**: on one device, after dropping repeats, a
//!   conversation's seqs are not strictly increasing, or a sender's texts
//!   arrive in another order than it sent them; or, over every device, a
//!   conversation's event times (`ts_ms`) fall as its seqs rise, or one
//!   event is seen with two times;
//! - **gaps**: a seq of a conversation that no one ever saw, a device
//!   missing a seq of its conversation that it did not send itself, or a
//!   device told that events `expired` (passed the offline TTL or were
//!   purged before it got them: within a run, only by a defect).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fmt::Write as _;
use std::sync::Mutex;

use missive_proto::{MessageKind, ServerFrame};
use tokio::sync::watch;

/// The payload of a workload text: who sent it, and its counter.
pub(crate) fn payload(device: &str, counter: u64) -> String {
    format!("{device}#{counter}")
}

pub(crate) fn client_msg_id(device: &str, counter: u64) -> String {
    format!("{device}-{counter}")
}

fn parse_payload(text: &str) -> Option<(&str, u64)> {
    // A workload may pad its texts: the payload ends at the first space.
    let text = text.split(' ').next().unwrap_or(text);
    let (device, counter) = text.rsplit_once('#')?;
    Some((device, counter.parse().ok()?))
}

/// One `message` frame as a device read it.
#[derive(Clone, Debug)]
struct Delivery {
    device: String,
    message_id: String,
    conversation: i64,
    seq: i64,
    from_device: i64,
    kind: MessageKind,
    text: String,
    ts_ms: i64,
}

#[derive(Clone, Debug)]
struct Attempt {
    recipients: BTreeSet<String>,
}

#[derive(Clone, Debug)]
struct Sent {
    message_id: String,
    conversation: i64,
    seq: i64,
    ts_ms: i64,
}

#[derive(Default)]
struct Events {
    attempts: BTreeMap<(String, u64), Attempt>,
    /// Every `sent` reply per attempt (a retry after a fault gets another,
    /// which must name the same message).
    sent: BTreeMap<(String, u64), Vec<Sent>>,
    deliveries: Vec<Delivery>,
    /// `expired` frames: (device, conversation, from_seq, to_seq).
    expired: Vec<(String, i64, i64, i64)>,
    /// Device label → server device id, to tell a device's own sends.
    device_ids: HashMap<String, i64>,
    /// Connections that broke and were opened again.
    reconnects: usize,
    /// Sends refused as `unavailable`/`shutting_down`, and `sent` replies
    /// marked `duplicate` (a retry of a send already stored).
    refused: usize,
    duplicate_replies: usize,
}

/// Everything the workload saw, shared by its tasks.
pub(crate) struct History {
    events: Mutex<Events>,
    /// How many attempts have been acknowledged, and how many calls were
    /// refused as unavailable, for waiting on progress.
    acknowledged: watch::Sender<usize>,
    refusals: watch::Sender<usize>,
    /// Connections opened (a WebSocket authenticated, or a long-poll
    /// answered after a break), for timing reconnect storms.
    connects: watch::Sender<usize>,
}

impl Default for History {
    fn default() -> Self {
        Self {
            events: Mutex::default(),
            acknowledged: watch::Sender::new(0),
            refusals: watch::Sender::new(0),
            connects: watch::Sender::new(0),
        }
    }
}

/// The classification of one run; [`Report::assert_clean`] fails the test
/// on anything the delivery model forbids.
#[derive(Debug, Default)]
pub(crate) struct Report {
    pub attempted: usize,
    pub acknowledged: usize,
    pub deliveries: usize,
    pub reconnects: usize,
    pub refused: usize,
    pub duplicate_replies: usize,
    pub lost: Vec<String>,
    pub recovered: usize,
    pub unexpected: Vec<String>,
    /// Deliveries of a message a device had already read (at least once).
    pub redelivered: usize,
    /// Attempts stored under more than one message id.
    pub duplicated: Vec<String>,
    pub out_of_order: Vec<String>,
    pub gaps: Vec<String>,
    /// The earliest and latest event time (`ts_ms`) seen, if any.
    pub stamped: Option<(i64, i64)>,
}

impl History {
    fn lock(&self) -> std::sync::MutexGuard<'_, Events> {
        self.events.lock().expect("history lock")
    }

    pub(crate) fn reconnected(&self) {
        self.lock().reconnects += 1;
    }

    pub(crate) fn refused(&self) {
        let refused = {
            let mut events = self.lock();
            events.refused += 1;
            events.refused
        };
        self.refusals.send_replace(refused);
    }

    pub(crate) fn device(&self, label: &str, device_id: i64) {
        self.lock().device_ids.insert(label.to_owned(), device_id);
    }

    /// `device` is about to send `counter`; `recipients` must receive it.
    pub(crate) fn attempt(&self, device: &str, counter: u64, recipients: &[String]) {
        self.lock().attempts.insert(
            (device.to_owned(), counter),
            Attempt {
                recipients: recipients.iter().cloned().collect(),
            },
        );
    }

    /// The server answered `sent` for the attempt.
    pub(crate) fn sent(&self, device: &str, counter: u64, frame: &ServerFrame) {
        if let ServerFrame::Sent {
            message_id,
            conversation,
            seq,
            duplicate,
            ts_ms,
            ..
        } = frame
        {
            let acknowledged = {
                let mut events = self.lock();
                events.duplicate_replies += usize::from(*duplicate);
                events
                    .sent
                    .entry((device.to_owned(), counter))
                    .or_default()
                    .push(Sent {
                        message_id: message_id.clone(),
                        conversation: *conversation,
                        seq: *seq,
                        ts_ms: *ts_ms,
                    });
                events.sent.len()
            };
            self.acknowledged.send_replace(acknowledged);
        }
    }

    /// `device` read `frame`; anything but a `message` or `expired` is
    /// ignored (receipts are live cursors, not deliveries).
    pub(crate) fn read(&self, device: &str, frame: &ServerFrame) {
        if let ServerFrame::Expired {
            conversation,
            from_seq,
            to_seq,
        } = frame
        {
            self.lock()
                .expired
                .push((device.to_owned(), *conversation, *from_seq, *to_seq));
        }
        if let ServerFrame::Message {
            message_id,
            conversation,
            seq,
            from_device,
            kind,
            text,
            ts_ms,
            ..
        } = frame
        {
            self.lock().deliveries.push(Delivery {
                device: device.to_owned(),
                message_id: message_id.clone(),
                conversation: *conversation,
                seq: *seq,
                from_device: *from_device,
                kind: *kind,
                text: text.clone(),
                ts_ms: *ts_ms,
            });
        }
    }

    /// How many attempts have been acknowledged so far.
    pub(crate) fn acknowledged(&self) -> usize {
        self.lock().sent.len()
    }

    pub(crate) fn subscribe(&self) -> watch::Receiver<usize> {
        self.acknowledged.subscribe()
    }

    pub(crate) fn subscribe_refusals(&self) -> watch::Receiver<usize> {
        self.refusals.subscribe()
    }

    pub(crate) fn connected(&self) {
        self.connects.send_modify(|connects| *connects += 1);
    }

    pub(crate) fn subscribe_connects(&self) -> watch::Receiver<usize> {
        self.connects.subscribe()
    }

    pub(crate) fn check(&self) -> Report {
        let guard = self.lock();
        let events = &*guard;
        let mut report = Report {
            attempted: events.attempts.len(),
            acknowledged: events.sent.len(),
            deliveries: events.deliveries.len(),
            reconnects: events.reconnects,
            refused: events.refused,
            duplicate_replies: events.duplicate_replies,
            ..Report::default()
        };
        let mut stored_as = events.stored_as_replied();
        let firsts = events.first_reads(&mut stored_as, &mut report);
        check_duplicated(&stored_as, &mut report);
        events.check_lost(&stored_as, &mut report);
        check_order(&firsts, &mut report);
        events.check_times(&mut report);
        events.check_gaps(&firsts, &mut report);
        report
    }
}

/// Message ids per attempt.
type StoredAs = BTreeMap<(String, u64), BTreeSet<String>>;

/// What each device read, first reads only, in arrival order.
type FirstReads<'a> = BTreeMap<&'a str, Vec<&'a Delivery>>;

impl Events {
    /// Message ids per attempt, from `sent` replies.
    fn stored_as_replied(&self) -> StoredAs {
        let mut stored_as = StoredAs::new();
        for (attempt, replies) in &self.sent {
            for sent in replies {
                stored_as
                    .entry(attempt.clone())
                    .or_default()
                    .insert(sent.message_id.clone());
            }
        }
        stored_as
    }

    /// What each device read, first reads only, in arrival order; counts
    /// redeliveries, reports texts no attempt explains, and adds the
    /// message ids deliveries name to `stored_as`.
    fn first_reads(&self, stored_as: &mut StoredAs, report: &mut Report) -> FirstReads<'_> {
        let mut firsts = FirstReads::new();
        let mut read_by: HashSet<(&str, &str)> = HashSet::new();
        for delivery in &self.deliveries {
            if !read_by.insert((delivery.device.as_str(), delivery.message_id.as_str())) {
                report.redelivered += 1;
                continue;
            }
            firsts
                .entry(delivery.device.as_str())
                .or_default()
                .push(delivery);
            if delivery.kind != MessageKind::Text {
                continue;
            }
            let Some((sender, counter)) = parse_payload(&delivery.text) else {
                report.unexpected.push(format!(
                    "{} read unknown text {delivery:?}",
                    delivery.device
                ));
                continue;
            };
            let key = (sender.to_owned(), counter);
            match self.attempts.get(&key) {
                None => report.unexpected.push(format!(
                    "{} read {:?}, never attempted",
                    delivery.device, delivery.text
                )),
                Some(attempt) if !attempt.recipients.contains(&delivery.device) => {
                    report.unexpected.push(format!(
                        "{} read {:?}, not a recipient",
                        delivery.device, delivery.text
                    ));
                }
                Some(_) => {}
            }
            stored_as
                .entry(key)
                .or_default()
                .insert(delivery.message_id.clone());
        }
        firsts
    }

    /// Lost and recovered.
    fn check_lost(&self, stored_as: &StoredAs, report: &mut Report) {
        for (key, attempt) in &self.attempts {
            let acknowledged = self.sent.contains_key(key);
            let ids = stored_as.get(key);
            let delivered_to: BTreeSet<&str> = match ids {
                Some(ids) => self
                    .deliveries
                    .iter()
                    .filter(|d| ids.contains(&d.message_id))
                    .map(|d| d.device.as_str())
                    .collect(),
                None => BTreeSet::new(),
            };
            if acknowledged {
                for recipient in &attempt.recipients {
                    if !delivered_to.contains(recipient.as_str()) {
                        report.lost.push(format!(
                            "{} never reached {recipient}",
                            payload(&key.0, key.1)
                        ));
                    }
                }
            } else if !delivered_to.is_empty() {
                report.recovered += 1;
            }
        }
    }

    /// Times: one per event, never falling as a conversation's seqs rise
    /// (whichever node, with whatever clock, stored each).
    fn check_times(&self, report: &mut Report) {
        let mut times: BTreeMap<(i64, i64), BTreeSet<i64>> = BTreeMap::new();
        let stamps = self
            .deliveries
            .iter()
            .map(|d| (d.conversation, d.seq, d.ts_ms))
            .chain(
                self.sent
                    .values()
                    .flatten()
                    .map(|s| (s.conversation, s.seq, s.ts_ms)),
            );
        for (conversation, seq, ts_ms) in stamps {
            times.entry((conversation, seq)).or_default().insert(ts_ms);
        }
        let mut before: Option<((i64, i64), i64)> = None;
        for (&(conversation, seq), stamped) in &times {
            if stamped.len() > 1 {
                report.out_of_order.push(format!(
                    "conversation {conversation} seq {seq} seen stamped {stamped:?}"
                ));
            }
            let (Some(&first), Some(&last)) = (stamped.first(), stamped.last()) else {
                continue;
            };
            report.stamped = Some(match report.stamped {
                Some((low, high)) => (low.min(first), high.max(last)),
                None => (first, last),
            });
            if let Some(((earlier_conversation, earlier_seq), earlier_ts)) = before {
                if earlier_conversation == conversation && earlier_ts > first {
                    report.out_of_order.push(format!(
                        "conversation {conversation} seq {seq} stamped {first}, \
                         before seq {earlier_seq} at {earlier_ts}"
                    ));
                }
            }
            before = Some(((conversation, seq), last));
        }
    }

    /// Every seq of each conversation, with the device that sent it, from
    /// deliveries and `sent` replies.
    fn seqs_seen(&self) -> BTreeMap<i64, BTreeMap<i64, i64>> {
        let mut seqs: BTreeMap<i64, BTreeMap<i64, i64>> = BTreeMap::new();
        for delivery in &self.deliveries {
            seqs.entry(delivery.conversation)
                .or_default()
                .insert(delivery.seq, delivery.from_device);
        }
        for (key, replies) in &self.sent {
            let own = self.device_ids.get(&key.0).copied().unwrap_or(-1);
            for sent in replies {
                seqs.entry(sent.conversation)
                    .or_default()
                    .insert(sent.seq, own);
            }
        }
        seqs
    }

    /// Gaps: every seq of a conversation was seen by someone, and every
    /// device that read a conversation read all of it but its own sends.
    fn check_gaps(&self, firsts: &FirstReads<'_>, report: &mut Report) {
        for (conversation, by_seq) in &self.seqs_seen() {
            let max = by_seq.keys().next_back().copied().unwrap_or(0);
            let missing: Vec<i64> = (1..=max).filter(|s| !by_seq.contains_key(s)).collect();
            if !missing.is_empty() {
                report.gaps.push(format!(
                    "conversation {conversation}: no one saw seqs {missing:?}"
                ));
            }
            for (device, reads) in firsts {
                let got: BTreeSet<i64> = reads
                    .iter()
                    .filter(|d| d.conversation == *conversation)
                    .map(|d| d.seq)
                    .collect();
                if got.is_empty() {
                    continue;
                }
                let own = self.device_ids.get(*device).copied().unwrap_or(-1);
                let lacking: Vec<i64> = by_seq
                    .iter()
                    .filter(|(seq, from)| **from != own && !got.contains(seq))
                    .map(|(seq, _)| *seq)
                    .collect();
                if !lacking.is_empty() {
                    report.gaps.push(format!(
                        "{device}: conversation {conversation} lacks seqs {lacking:?}"
                    ));
                }
            }
        }
        for (device, conversation, from, to) in &self.expired {
            report.gaps.push(format!(
                "{device}: conversation {conversation} seqs {from}..={to} expired"
            ));
        }
    }
}

/// Attempts stored under more than one message id.
fn check_duplicated(stored_as: &StoredAs, report: &mut Report) {
    for ((sender, counter), ids) in stored_as {
        if ids.len() > 1 {
            report
                .duplicated
                .push(format!("{} stored as {ids:?}", payload(sender, *counter)));
        }
    }
}

/// Order per device: a conversation's seqs rise, and each sender's
/// counters rise with them.
fn check_order(firsts: &FirstReads<'_>, report: &mut Report) {
    for (device, reads) in firsts {
        let mut last_seq: HashMap<i64, i64> = HashMap::new();
        let mut last_counter: HashMap<&str, u64> = HashMap::new();
        for delivery in reads {
            let last = last_seq.entry(delivery.conversation).or_insert(0);
            if delivery.seq <= *last {
                report.out_of_order.push(format!(
                    "{device}: conversation {} seq {} after {}",
                    delivery.conversation, delivery.seq, last
                ));
            }
            *last = delivery.seq.max(*last);
            if delivery.kind == MessageKind::Text {
                if let Some((sender, counter)) = parse_payload(&delivery.text) {
                    if let Some(previous) = last_counter.insert(sender, counter) {
                        if counter <= previous {
                            report.out_of_order.push(format!(
                                "{device}: {} after {}",
                                payload(sender, counter),
                                payload(sender, previous)
                            ));
                        }
                    }
                }
            }
        }
    }
}

impl Report {
    /// One line for the test log (and docs/RELIABILITY.md's figures).
    pub(crate) fn summary(&self) -> String {
        let mut line = String::new();
        let _ = write!(
            line,
            "attempted {} · sent {} (retries answered duplicate {}) · refused {} · reconnects {} · \
             delivered {} (redelivered {}) · lost {} · recovered {} · unexpected {} · \
             duplicated {} · out of order {} · gaps {}",
            self.attempted,
            self.acknowledged,
            self.duplicate_replies,
            self.refused,
            self.reconnects,
            self.deliveries,
            self.redelivered,
            self.lost.len(),
            self.recovered,
            self.unexpected.len(),
            self.duplicated.len(),
            self.out_of_order.len(),
            self.gaps.len()
        );
        line
    }

    pub(crate) fn assert_clean(&self) {
        let first = |items: &[String]| items.iter().take(5).cloned().collect::<Vec<_>>();
        assert!(
            self.lost.is_empty()
                && self.unexpected.is_empty()
                && self.duplicated.is_empty()
                && self.out_of_order.is_empty()
                && self.gaps.is_empty(),
            "{}\nlost: {:?}\nunexpected: {:?}\nduplicated: {:?}\nout of order: {:?}\ngaps: {:?}",
            self.summary(),
            first(&self.lost),
            first(&self.unexpected),
            first(&self.duplicated),
            first(&self.out_of_order),
            first(&self.gaps),
        );
        assert!(self.acknowledged > 0, "the workload sent nothing");
    }
}

#[cfg(test)]
mod tests {
    //! The checker must catch each kind of violation, or a clean report
    //! proves nothing.
    use super::*;

    fn message(device_id: i64, id: &str, seq: i64, text: &str) -> ServerFrame {
        message_at(device_id, id, seq, text, 0)
    }

    fn message_at(device_id: i64, id: &str, seq: i64, text: &str, ts_ms: i64) -> ServerFrame {
        ServerFrame::Message {
            message_id: id.into(),
            conversation: 7,
            seq,
            from: "a".into(),
            from_device: device_id,
            client_msg_id: String::new(),
            kind: MessageKind::Text,
            text: text.into(),
            media: Vec::new(),
            target: None,
            event: None,
            edited_ms: None,
            deleted: false,
            ts_ms,
            expires_ms: None,
        }
    }

    fn sent(id: &str, seq: i64) -> ServerFrame {
        ServerFrame::Sent {
            id: None,
            message_id: id.into(),
            conversation: 7,
            seq,
            ts_ms: 0,
            duplicate: false,
            expires_ms: None,
        }
    }

    /// a (device 1) sends two texts to b; b reads them.
    fn two_sent() -> History {
        let history = History::default();
        history.device("a", 1);
        history.device("b", 2);
        for (counter, id) in [(0, "m0"), (1, "m1")] {
            history.attempt("a", counter, &["b".into()]);
            history.sent("a", counter, &sent(id, counter as i64 + 1));
        }
        history
    }

    #[test]
    fn a_clean_history_is_clean_and_repeats_are_allowed() {
        let history = two_sent();
        history.read("b", &message(1, "m0", 1, "a#0"));
        history.read("b", &message(1, "m0", 1, "a#0"));
        history.read("b", &message(1, "m1", 2, "a#1"));
        let report = history.check();
        report.assert_clean();
        assert_eq!(report.redelivered, 1);
    }

    #[test]
    fn a_redelivery_after_a_reconnect_is_neither_duplicated_nor_out_of_order() {
        // b read both, acked neither, reconnected: everything above its
        // position comes again, in order, under the same message ids.
        let history = two_sent();
        for _ in 0..2 {
            history.read("b", &message(1, "m0", 1, "a#0"));
            history.read("b", &message(1, "m1", 2, "a#1"));
        }
        // Receipt cursors are not deliveries.
        history.read(
            "b",
            &ServerFrame::Delivered {
                conversation: 7,
                by: "a".into(),
                seq: 2,
                ts_ms: 0,
            },
        );
        let report = history.check();
        report.assert_clean();
        assert_eq!((report.redelivered, report.deliveries), (2, 4));
    }

    #[test]
    fn each_violation_is_reported() {
        // Lost: m1 never read.
        let history = two_sent();
        history.read("b", &message(1, "m0", 1, "a#0"));
        let report = history.check();
        assert_eq!(report.lost.len(), 1, "{report:?}");
        assert_eq!(report.gaps.len(), 1, "b lacks seq 2: {report:?}");

        // Out of order.
        let history = two_sent();
        history.read("b", &message(1, "m1", 2, "a#1"));
        history.read("b", &message(1, "m0", 1, "a#0"));
        assert_eq!(history.check().out_of_order.len(), 2);

        // Stored twice: a retry of a#1 became a new message at seq 3.
        let history = two_sent();
        history.read("b", &message(1, "m0", 1, "a#0"));
        history.read("b", &message(1, "m1", 2, "a#1"));
        history.read("b", &message(1, "m1bis", 3, "a#1"));
        let report = history.check();
        assert_eq!(report.duplicated.len(), 1, "{report:?}");

        // Expired: b was told seq 2 will not come.
        let history = two_sent();
        history.read("b", &message(1, "m0", 1, "a#0"));
        history.read(
            "b",
            &ServerFrame::Expired {
                conversation: 7,
                from_seq: 2,
                to_seq: 2,
            },
        );
        let report = history.check();
        assert_eq!(report.lost.len(), 1, "{report:?}");
        assert_eq!(
            report.gaps.len(),
            2,
            "lacks seq 2, told it expired: {report:?}"
        );

        // Unexpected: never attempted, and to a non-recipient.
        let history = two_sent();
        history.read("b", &message(1, "m0", 1, "a#0"));
        history.read("b", &message(1, "m1", 2, "a#1"));
        history.read("b", &message(1, "mx", 3, "a#9"));
        history.read("c", &message(1, "m0", 1, "a#0"));
        assert_eq!(history.check().unexpected.len(), 2);

        // Recovered: no `sent`, delivered anyway; allowed.
        let history = two_sent();
        history.attempt("a", 2, &["b".into()]);
        history.read("b", &message(1, "m0", 1, "a#0"));
        history.read("b", &message(1, "m1", 2, "a#1"));
        history.read("b", &message(1, "m2", 3, "a#2"));
        let report = history.check();
        report.assert_clean();
        assert_eq!(report.recovered, 1);

        // Times: seq 2 read again stamped -5: one event with two times, and
        // one earlier than seq 1's.
        let history = two_sent();
        history.read("b", &message(1, "m0", 1, "a#0"));
        history.read("b", &message(1, "m1", 2, "a#1"));
        assert_eq!(history.check().stamped, Some((0, 0)));
        history.read("b", &message_at(1, "m1", 2, "a#1", -5));
        let report = history.check();
        assert_eq!(report.stamped, Some((-5, 0)));
        assert_eq!(
            report.out_of_order.len(),
            2,
            "seq 2 at -5 after seq 1 at 0, and seq 2 seen at two times: {report:?}"
        );
    }
}
