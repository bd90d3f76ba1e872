//! Sends as a batched call (`batcher.rs`): up to [`Sends::MAX`] share one
//! transaction (`send.rs` stores them), except sends that must see each
//! other's effect.

use std::collections::HashSet;

use deadpool_postgres::Transaction;

use super::batcher::Batch;
use super::fault::Outcome;
use super::send::{Answer, append_batch, changed_target};
use crate::model::NewMessage;

pub(super) struct Sends;

/// What a batch already holds: dedup keys, and messages reacted to, edited
/// or deleted.
#[derive(Default)]
pub(super) struct Claimed {
    keys: HashSet<(i64, String)>,
    targets: HashSet<String>,
}

impl Batch for Sends {
    type Item = NewMessage;
    type Answer = crate::model::Appended;
    type Seen = Claimed;
    /// A batch's statements do not grow in number with it, so a larger
    /// batch costs little more than a small one: on one node (`pairs`
    /// 1,000 x 4) 16 gave ~6,700 sends/s, 64 ~14,600, 256 ~15,800
    /// (BENCHMARKS.md, "Issue 15, fifth pass"). A batch holds the locks of
    /// all its conversations until it commits, so batches that touch the
    /// same conversations (from several writers or nodes) wait for each
    /// other; 64 keeps most of the gain with a quarter of the locks.
    const MAX: usize = 64;
    const NAME: &'static str = "sends";

    /// Keeps apart the sends that must not share a transaction with an
    /// earlier one: the same dedup key (a retry racing its original), or
    /// the same message reacted to, edited or deleted (each checks the
    /// target as the batch found it).
    fn admits(seen: &mut Claimed, message: &NewMessage) -> bool {
        let target = changed_target(&message.body);
        let key = (
            message.sender_device.0,
            message.client_msg_id.as_str().to_owned(),
        );
        let key_free = !seen.keys.contains(&key);
        let target_free = target.is_none_or(|target| !seen.targets.contains(target.as_str()));
        if key_free && target_free {
            seen.keys.insert(key);
            if let Some(target) = target {
                seen.targets.insert(target.as_str().to_owned());
            }
        }
        key_free && target_free
    }

    fn store<'a>(
        tx: &'a Transaction<'a>,
        items: &'a [&'a NewMessage],
    ) -> impl Future<Output = Outcome<Vec<Answer>>> + Send + 'a {
        append_batch(tx, items)
    }
}
