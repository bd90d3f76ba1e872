//! Cumulative acks, many devices' to a transaction (`batcher.rs` gathers
//! them): a batch costs the same few statements whatever the number of
//! acks, devices or conversations in it (in store-and-forward, plus one
//! purge per position that moved). Each ack is still judged alone
//! (a refused one changes nothing, the others of its batch commit) and
//! answered with the device's positions after the batch.
//!
//! A batch runs in two pipelined rounds:
//! 1. **Scopes**: where each (account, device, conversation) the batch
//!    names stands (the conversation's last seq, the account's membership
//!    or departure, the device's stored position), and the usernames
//!    receipts are reported under.
//! 2. **Writes**, in the lock order every transaction keeps (module doc of
//!    `postgres`): positions move forward (never back), ascending by
//!    (device, conversation); the member rows whose delivered cursor moves
//!    are locked ascending by (conversation, account), so the next
//!    statement reads the latest cursor (another device of the account may
//!    be acking on another node); the devices whose ticks change are read;
//!    the cursors move; and in store-and-forward, a per-conversation
//!    advisory lock and the purge of what everyone now has.
//!
//! Two acks of one device, or of two devices of one account, in the same
//! batch merge: a position or cursor moves to the highest seq named.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::future::Future;

use deadpool_postgres::{GenericClient, Transaction};
use missive_core::{ConversationId, DeviceId, Seq};
use tokio_postgres::Row;

use super::batcher::Batch;
use super::codes::EVENT_TEXT;
use super::delivery::PURGE_DELIVERED;
use super::fault::{Fault, Outcome};
use super::sql::{Step, execute, in_order, only_if, pipeline, rows};
use crate::StoreError;
use crate::model::{AckOutcome, AckRequest, ReceiptMoved};

pub(super) struct Acks;

impl Batch for Acks {
    type Item = AckRequest;
    type Answer = AckOutcome;
    type Seen = ();
    const MAX: usize = 256;
    const NAME: &'static str = "acks";

    fn store<'a>(
        tx: &'a Transaction<'a>,
        items: &'a [&'a AckRequest],
    ) -> impl Future<Output = Outcome<Vec<Result<AckOutcome, StoreError>>>> + Send + 'a {
        ack_batch(tx, items)
    }
}

/// Where each (account, device, conversation) stands. A missing `last_seq`
/// is a conversation that does not exist. Each lookup is an index probe
/// whatever the statistics (`OFFSET 0` keeps it a nested loop).
const SCOPES: &str = "SELECT k.account_id, k.device_id, k.conversation_id, c.last_seq,
            m.joined_seq, x.joined_seq, x.left_seq, p.seq
     FROM unnest($1::bigint[], $2::bigint[], $3::bigint[]) AS k(account_id, device_id, conversation_id)
     LEFT JOIN LATERAL (SELECT last_seq FROM conversations WHERE id = k.conversation_id
                        OFFSET 0) c ON true
     LEFT JOIN LATERAL (SELECT joined_seq FROM members
                        WHERE conversation_id = k.conversation_id AND account_id = k.account_id
                        OFFSET 0) m ON true
     LEFT JOIN LATERAL (SELECT joined_seq, left_seq FROM departures
                        WHERE conversation_id = k.conversation_id AND account_id = k.account_id
                        OFFSET 0) x ON true
     LEFT JOIN LATERAL (SELECT seq FROM positions
                        WHERE device_id = k.device_id AND conversation_id = k.conversation_id
                        OFFSET 0) p ON true";

const USERNAMES: &str = "SELECT id, username FROM accounts WHERE id = ANY($1)";

/// Moves positions forward (never back); the rows come sorted by (device,
/// conversation), the order they are locked in.
const ADVANCE_POSITIONS: &str = "INSERT INTO positions (device_id, conversation_id, seq)
     SELECT device_id, conversation_id, seq
     FROM unnest($1::bigint[], $2::bigint[], $3::bigint[]) AS p(device_id, conversation_id, seq)
     ORDER BY device_id, conversation_id
     ON CONFLICT (device_id, conversation_id) DO UPDATE SET seq = GREATEST(positions.seq, excluded.seq)
     RETURNING device_id, conversation_id, seq";

/// Locks the member rows whose delivered cursor moves, one probe per row in
/// the order given (sorted by conversation, then account).
const LOCK_CURSORS: &str = "SELECT count(*) FROM unnest($1::bigint[], $2::bigint[], $3::bigint[])
         AS p(account_id, conversation_id, seq)
     CROSS JOIN LATERAL (
         SELECT 1 FROM members
         WHERE conversation_id = p.conversation_id AND account_id = p.account_id
           AND delivered_seq < p.seq
         FOR NO KEY UPDATE) locked";

/// For each cursor that moves: the devices of the other members who wrote a
/// text in the range it newly covers (only their ticks change). One row per
/// device; a cursor whose range holds no such text still has a row, with a
/// NULL device.
const CURSOR_NOTIFY: &str = "SELECT p.account_id, p.conversation_id, d.id
     FROM unnest($1::bigint[], $2::bigint[], $3::bigint[]) AS p(account_id, conversation_id, seq)
     CROSS JOIN LATERAL (
         SELECT delivered_seq FROM members
         WHERE conversation_id = p.conversation_id AND account_id = p.account_id
           AND delivered_seq < p.seq
         OFFSET 0) me
     LEFT JOIN LATERAL (
         SELECT d.id FROM members mb JOIN devices d ON d.account_id = mb.account_id
         WHERE mb.conversation_id = p.conversation_id AND mb.account_id <> p.account_id
           AND mb.account_id IN (
               SELECT g.sender_account FROM messages g
               WHERE g.conversation_id = p.conversation_id
                 AND g.seq > me.delivered_seq AND g.seq <= p.seq AND g.kind IN ($4::smallint, 5))
     ) d ON true
     ORDER BY 1, 2, 3";

const MOVE_CURSORS: &str = "UPDATE members m SET delivered_seq = p.seq, delivered_ms = p.now_ms
     FROM unnest($1::bigint[], $2::bigint[], $3::bigint[], $4::bigint[])
         AS p(account_id, conversation_id, seq, now_ms)
     WHERE m.conversation_id = p.conversation_id AND m.account_id = p.account_id
       AND m.delivered_seq < p.seq
     RETURNING m.account_id, m.conversation_id";

/// Store-and-forward: serializes the purge decisions of one conversation
/// (ascending, so batches naming several cannot deadlock). Taken after the
/// batch's positions are written: whoever comes next sees them committed,
/// so two devices acking the last two copies at once on two nodes cannot
/// both leave the bodies behind. Keyed by schema too, so databases shared
/// by several schemas (tests) do not wait on each other.
const LOCK_PURGES: &str = "SELECT count(pg_advisory_xact_lock(k)) FROM (
         SELECT hashtextextended(
                    'missive purge ' || coalesce(current_schema(), '') || ' ' || c, 0) AS k
         FROM unnest($1::bigint[]) AS c ORDER BY c
     ) keys";

/// Where an account stands in one conversation an ack names.
struct Scope {
    joined_seq: Seq,
    /// Still a member (a departure has no delivered cursor).
    member: bool,
    /// The device's effective position before the batch.
    before: Seq,
}

/// One ack's highest point per conversation.
fn targets(ack: &AckRequest) -> BTreeMap<i64, Seq> {
    let mut targets: BTreeMap<i64, Seq> = BTreeMap::new();
    for (conversation, seq) in &ack.points {
        let target = targets.entry(conversation.0).or_insert(*seq);
        *target = (*target).max(*seq);
    }
    targets
}

/// The scope of each conversation of `ack`, or its refusal, judged point by
/// point in the order given. `found` is a `SCOPES` row per conversation.
fn judge<'r>(
    ack: &AckRequest,
    found: impl Fn(i64) -> Option<&'r Row>,
) -> Outcome<Result<BTreeMap<i64, Scope>, StoreError>> {
    let mut scopes = BTreeMap::new();
    for (conversation, seq) in &ack.points {
        let row = found(conversation.0).ok_or(Fault::Raced)?;
        let last_seq: Option<Seq> = row.try_get(3)?;
        let member_joined: Option<Seq> = row.try_get(4)?;
        let departed_joined: Option<Seq> = row.try_get(5)?;
        let left_seq: Option<Seq> = row.try_get(6)?;
        let stored: Option<Seq> = row.try_get(7)?;
        let Some(last_seq) = last_seq else {
            return Ok(Err(StoreError::UnknownConversation));
        };
        let (joined_seq, end, member) = match (member_joined, departed_joined, left_seq) {
            (Some(joined), _, _) => (joined, last_seq, true),
            (None, Some(joined), Some(left)) => (joined, left, false),
            // Never a member: as if it did not exist.
            _ => return Ok(Err(StoreError::UnknownConversation)),
        };
        if *seq < 0 || *seq > end {
            return Ok(Err(StoreError::SeqOutOfRange));
        }
        scopes.insert(
            conversation.0,
            Scope {
                joined_seq,
                member,
                before: stored.unwrap_or(0).max(joined_seq),
            },
        );
    }
    Ok(Ok(scopes))
}

/// What the accepted acks of a batch move, merged.
#[derive(Default)]
struct Moves {
    /// (device, conversation) → (highest seq, position before, purge).
    positions: BTreeMap<(i64, i64), (Seq, Seq, bool)>,
    /// (conversation, account) → (highest seq, latest time).
    cursors: BTreeMap<(i64, i64), (Seq, i64)>,
}

impl Moves {
    fn add(
        &mut self,
        ack: &AckRequest,
        targets: &BTreeMap<i64, Seq>,
        scopes: &BTreeMap<i64, Scope>,
    ) {
        for (conversation, seq) in targets {
            let Some(scope) = scopes.get(conversation) else {
                continue;
            };
            if *seq > scope.before {
                let moved = self
                    .positions
                    .entry((ack.device.0, *conversation))
                    .or_insert((*seq, scope.before, false));
                moved.0 = moved.0.max(*seq);
                moved.2 |= ack.purge_delivered_bodies;
            }
            if scope.member {
                let moved = self
                    .cursors
                    .entry((*conversation, ack.account.0))
                    .or_insert((*seq, ack.now_ms));
                moved.0 = moved.0.max(*seq);
                moved.1 = moved.1.max(ack.now_ms);
            }
        }
    }
}

/// What the writes of a batch found.
struct Written {
    /// (device, conversation) → stored position after the batch.
    positions: HashMap<(i64, i64), Seq>,
    /// (account, conversation) → the other members' devices to tell.
    notify: HashMap<(i64, i64), Vec<DeviceId>>,
    /// (account, conversation) of the cursors that moved, ascending.
    moved: BTreeSet<(i64, i64)>,
}

pub(super) async fn ack_batch(
    tx: &Transaction<'_>,
    acks: &[&AckRequest],
) -> Outcome<Vec<Result<AckOutcome, StoreError>>> {
    let targets: Vec<BTreeMap<i64, Seq>> = acks.iter().map(|ack| targets(ack)).collect();
    let keys: BTreeSet<(i64, i64, i64)> = acks
        .iter()
        .zip(&targets)
        .flat_map(|(ack, targets)| {
            targets
                .keys()
                .map(|conversation| (ack.account.0, ack.device.0, *conversation))
        })
        .collect();
    if keys.is_empty() {
        return Ok(acks.iter().map(|_| Ok(AckOutcome::default())).collect());
    }
    let accounts: Vec<i64> = keys
        .iter()
        .map(|key| key.0)
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let (key_accounts, key_devices, key_conversations) = columns3(keys.iter().copied());
    let (found, names) = pipeline!(
        rows(
            tx,
            SCOPES,
            &[&key_accounts, &key_devices, &key_conversations]
        ),
        rows(tx, USERNAMES, &[&accounts]),
    )?;
    let mut by_key: HashMap<(i64, i64, i64), &Row> = HashMap::with_capacity(found.len());
    for row in &found {
        by_key.insert((row.try_get(0)?, row.try_get(1)?, row.try_get(2)?), row);
    }
    let mut usernames: HashMap<i64, String> = HashMap::with_capacity(names.len());
    for row in &names {
        usernames.insert(row.try_get(0)?, row.try_get(1)?);
    }

    // Every ack is judged before anything moves: a refused one changes
    // nothing.
    let mut judged: Vec<Result<BTreeMap<i64, Scope>, StoreError>> = Vec::with_capacity(acks.len());
    let mut moves = Moves::default();
    for (ack, targets) in acks.iter().zip(&targets) {
        let scopes = judge(ack, |conversation| {
            by_key
                .get(&(ack.account.0, ack.device.0, conversation))
                .copied()
        })?;
        if let Ok(scopes) = &scopes {
            moves.add(ack, targets, scopes);
        }
        judged.push(scopes);
    }
    let written = write(tx, &moves).await?;

    let answered = Answered {
        written: &written,
        moves: &moves,
        usernames: &usernames,
    };
    answered.answers(acks, &targets, judged)
}

/// What answering a batch's acks reads: round 2's results, the moves, and
/// the acking accounts' usernames.
struct Answered<'a> {
    written: &'a Written,
    moves: &'a Moves,
    usernames: &'a HashMap<i64, String>,
}

impl Answered<'_> {
    /// Each ack's answer, in batch order.
    fn answers(
        &self,
        acks: &[&AckRequest],
        targets: &[BTreeMap<i64, Seq>],
        judged: Vec<Result<BTreeMap<i64, Scope>, StoreError>>,
    ) -> Outcome<Vec<Result<AckOutcome, StoreError>>> {
        // Each moved cursor is reported once, by the first ack that moved it.
        let mut reported: BTreeSet<(i64, i64)> = BTreeSet::new();
        let mut answers = Vec::with_capacity(acks.len());
        for ((ack, targets), scopes) in acks.iter().zip(targets).zip(judged) {
            let scopes = match scopes {
                Ok(scopes) => scopes,
                Err(refused) => {
                    answers.push(Err(refused));
                    continue;
                }
            };
            let positions = ack
                .points
                .iter()
                .map(|(conversation, _)| {
                    let scope = scopes.get(&conversation.0);
                    let before = scope.map_or(0, |scope| scope.before);
                    let joined = scope.map_or(0, |scope| scope.joined_seq);
                    let at = self
                        .written
                        .positions
                        .get(&(ack.device.0, conversation.0))
                        .map_or(before, |stored| (*stored).max(joined));
                    (*conversation, at)
                })
                .collect();
            let receipts = self.receipts(ack, targets, &mut reported)?;
            answers.push(Ok(AckOutcome {
                positions,
                receipts,
            }));
        }
        Ok(answers)
    }

    /// The receipt cursors `ack` moved that no earlier ack of the batch
    /// reported.
    fn receipts(
        &self,
        ack: &AckRequest,
        targets: &BTreeMap<i64, Seq>,
        reported: &mut BTreeSet<(i64, i64)>,
    ) -> Outcome<Vec<ReceiptMoved>> {
        let mut receipts = Vec::new();
        for conversation in targets.keys() {
            let key = (ack.account.0, *conversation);
            if !self.written.moved.contains(&key) || !reported.insert(key) {
                continue;
            }
            let (seq, ts_ms) = self
                .moves
                .cursors
                .get(&(*conversation, ack.account.0))
                .copied()
                .ok_or(Fault::Raced)?;
            let by = self.usernames.get(&ack.account.0).cloned().ok_or_else(|| {
                Fault::Corrupt(format!("member account {} has no username", ack.account.0))
            })?;
            receipts.push(ReceiptMoved {
                conversation: ConversationId(*conversation),
                by,
                seq,
                ts_ms,
                notify: self.written.notify.get(&key).cloned().unwrap_or_default(),
            });
        }
        Ok(receipts)
    }
}

/// The writes of round 2 (see the module doc).
async fn write<C: GenericClient>(db: &C, moves: &Moves) -> Outcome<Written> {
    let (position_devices, position_conversations, position_seqs) = columns3(
        moves
            .positions
            .iter()
            .map(|((device, conversation), (seq, _, _))| (*device, *conversation, *seq)),
    );
    let (cursor_accounts, cursor_conversations, cursor_seqs) = columns3(
        moves
            .cursors
            .iter()
            .map(|((conversation, account), (seq, _))| (*account, *conversation, *seq)),
    );
    let cursor_times: Vec<i64> = moves.cursors.values().map(|(_, now)| *now).collect();
    let purged: Vec<(i64, Seq, Seq)> = moves
        .positions
        .iter()
        .filter(|(_, (_, _, purge))| *purge)
        .map(|((_, conversation), (to, from, _))| (*conversation, *from, *to))
        .collect();
    let purged_conversations: Vec<i64> = purged
        .iter()
        .map(|(conversation, _, _)| *conversation)
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let cursors = !moves.cursors.is_empty();
    let (advanced, _, notify, moved, _, ()) = pipeline!(
        only_if(
            !moves.positions.is_empty(),
            rows(
                db,
                ADVANCE_POSITIONS,
                &[&position_devices, &position_conversations, &position_seqs],
            ),
        ),
        only_if(
            cursors,
            execute(
                db,
                LOCK_CURSORS,
                &[&cursor_accounts, &cursor_conversations, &cursor_seqs],
            ),
        ),
        only_if(
            cursors,
            rows(
                db,
                CURSOR_NOTIFY,
                &[
                    &cursor_accounts,
                    &cursor_conversations,
                    &cursor_seqs,
                    &EVENT_TEXT,
                ],
            ),
        ),
        only_if(
            cursors,
            rows(
                db,
                MOVE_CURSORS,
                &[
                    &cursor_accounts,
                    &cursor_conversations,
                    &cursor_seqs,
                    &cursor_times,
                ],
            ),
        ),
        only_if(
            !purged.is_empty(),
            execute(db, LOCK_PURGES, &[&purged_conversations]),
        ),
        purge_delivered(db, &purged),
    )?;
    Written::from_rows(&advanced, &notify, &moved)
}

impl Written {
    /// Round 2's answers: the positions stored, the devices to tell, the
    /// cursors that moved.
    fn from_rows(advanced: &[Row], notify: &[Row], moved: &[Row]) -> Outcome<Self> {
        let mut positions = HashMap::with_capacity(advanced.len());
        for row in advanced {
            positions.insert((row.try_get(0)?, row.try_get(1)?), row.try_get(2)?);
        }
        let mut devices: HashMap<(i64, i64), Vec<DeviceId>> = HashMap::new();
        for row in notify {
            let listed = devices
                .entry((row.try_get(0)?, row.try_get(1)?))
                .or_default();
            if let Some(device) = row.try_get::<_, Option<i64>>(2)? {
                listed.push(DeviceId(device));
            }
        }
        for listed in devices.values_mut() {
            listed.dedup();
        }
        let mut moved_keys = BTreeSet::new();
        for row in moved {
            moved_keys.insert((row.try_get(0)?, row.try_get(1)?));
        }
        Ok(Self {
            positions,
            notify: devices,
            moved: moved_keys,
        })
    }
}

/// Purges, per position that moved, what that move made everyone's (see
/// [`PURGE_DELIVERED`]).
async fn purge_delivered<C: GenericClient>(db: &C, purged: &[(i64, Seq, Seq)]) -> Outcome<()> {
    let steps: Vec<Step<'_, u64>> = purged
        .iter()
        .map(|(conversation, from, to)| -> Step<'_, u64> {
            Box::pin(async move { execute(db, PURGE_DELIVERED, &[conversation, from, to]).await })
        })
        .collect();
    in_order(steps).await?;
    Ok(())
}

/// Three parallel columns, for `unnest`.
fn columns3(rows: impl Iterator<Item = (i64, i64, i64)>) -> (Vec<i64>, Vec<i64>, Vec<i64>) {
    let mut columns = (Vec::new(), Vec::new(), Vec::new());
    for (a, b, c) in rows {
        columns.0.push(a);
        columns.1.push(b);
        columns.2.push(c);
    }
    columns
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MessageStore;
    use crate::Store;
    use crate::postgres::testing::{FreshSchema, account, ack, chat, device, store_batch, text};

    #[tokio::test]
    async fn acks_of_many_devices_in_one_batch_are_judged_alone_and_merged() {
        // Goal: one batch carrying acks of several accounts and devices
        // answers each as if alone: a refused ack changes nothing and does
        // not stop the others; two devices of one account moving the same
        // cursor report it once, at the higher seq, to the sender's device.
        // Method: alice sends 3 texts to bob and 2 to carol; one batch holds
        // bob's phone acking 2, bob's laptop acking 3, carol acking 2, and
        // carol acking bob's conversation (never a member).
        let Some((schema, store)) = FreshSchema::store("acks").await else {
            return;
        };
        let alice = account(&store, "alice").await;
        let bob = account(&store, "bob").await;
        let bob_laptop = (bob.0, device(&store, bob.0, "bob-laptop").await);
        let carol = account(&store, "carol").await;
        let with_bob = chat(&store, alice, bob).await;
        let with_carol = chat(&store, alice, carol).await;
        for (i, conversation) in [with_bob, with_bob, with_bob, with_carol, with_carol]
            .into_iter()
            .enumerate()
        {
            store
                .append_message(text(conversation, alice, &format!("m{i}")))
                .await
                .expect("append");
        }
        let batch = [
            ack(bob, &[(with_bob, 2)]),
            ack(carol, &[(with_bob, 1)]),
            ack(bob_laptop, &[(with_bob, 3)]),
            ack(carol, &[(with_carol, 2)]),
        ];
        let items: Vec<&AckRequest> = batch.iter().collect();
        let answers = store_batch::<Acks>(&store, &items).await;

        let [phone, outsider, laptop, carols] = &answers[..] else {
            panic!("{answers:?}")
        };
        assert_eq!(outsider, &Err(StoreError::UnknownConversation));
        let phone = phone.as_ref().expect("bob's phone");
        let laptop = laptop.as_ref().expect("bob's laptop");
        let carols = carols.as_ref().expect("carol");
        assert_eq!(phone.positions, vec![(with_bob, 2)]);
        assert_eq!(laptop.positions, vec![(with_bob, 3)]);
        assert_eq!(carols.positions, vec![(with_carol, 2)]);
        // Bob's cursor moved once, to 3, reported by the first of his acks.
        assert_eq!(phone.receipts.len(), 1, "{phone:?}");
        assert!(laptop.receipts.is_empty(), "{laptop:?}");
        let receipt = &phone.receipts[0];
        assert_eq!(
            (receipt.conversation, receipt.by.as_str(), receipt.seq),
            (with_bob, "bob", 3)
        );
        assert_eq!(receipt.notify, vec![alice.1]);
        assert_eq!(carols.receipts.len(), 1, "{carols:?}");
        assert_eq!(carols.receipts[0].notify, vec![alice.1]);

        // The refused ack moved nothing: carol has no position in bob's
        // conversation, and a second batch sees the stored positions.
        let again = store
            .ack(ack(bob, &[(with_bob, 1)]))
            .await
            .expect("ack again");
        assert_eq!(again.positions, vec![(with_bob, 2)], "never back");
        assert!(again.receipts.is_empty(), "the cursor is already past 1");
        let outsider = store.ack(ack(carol, &[(with_bob, 1)])).await;
        assert_eq!(outsider, Err(StoreError::UnknownConversation));
        store.shutdown().await;
        schema.drop().await;
    }
}
