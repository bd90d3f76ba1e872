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
    /// A batch holds the locks of all its conversations until it commits,
    /// so batches from several nodes that touch the same conversations wait
    /// for each other; 16 did as well as 64 on one node and better on three
    /// (BENCHMARKS.md).
    const MAX: usize = 16;
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
