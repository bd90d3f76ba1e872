//! The sweeper: disappearing messages at their expiry, bodies past
//! retention and the offline TTL, rows of purged
//! bodies past the dedup window, old departures. Every node may run it at
//! once: each batch is picked with `FOR UPDATE SKIP LOCKED`, so concurrent
//! sweepers take disjoint rows and never wait on each other or on the
//! transactions using those rows.

use deadpool_postgres::GenericClient;

use super::fault::Outcome;
use super::sql::{execute, limit, pipeline, scalar, unsigned};
use crate::model::*;

/// Purges the bodies of up to `$2` events matching `$condition` (on `$1`),
/// with what hangs off them (reactions, media links: unlinked media are
/// collected after their grace), and counts them. A send changing the
/// message holds its row, so the sweep skips it rather than purge under it.
macro_rules! purge_bodies_where {
    ($condition:literal) => {
        concat!(
            "WITH purged AS (
                 UPDATE messages SET body = NULL WHERE (conversation_id, seq) IN (
                     SELECT conversation_id, seq FROM messages
                     WHERE ",
            $condition,
            " AND body IS NOT NULL
                     LIMIT $2 FOR UPDATE SKIP LOCKED)
                 RETURNING id, conversation_id
             ),
             reactions_gone AS (DELETE FROM reactions WHERE (conversation_id, message_id) IN
                                (SELECT conversation_id, id FROM purged)),
             media_gone AS (DELETE FROM message_media WHERE message_id IN (SELECT id FROM purged))
             SELECT count(*) FROM purged"
        )
    };
}

/// Bodies stored before `$1`, walking `messages_by_age` (bodies only).
const PURGE_OLD_BODIES: &str = purge_bodies_where!("created_ms < $1");

/// Disappearing messages at their expiry (`$1` is now), whatever the
/// cursors, walking `messages_by_expiry`.
const PURGE_EXPIRED: &str = purge_bodies_where!("expires_ms <= $1");

/// Deletes up to `$2` rows of bodies purged before `$1` (walking
/// `messages_purged_by_age`): their client_msg_id stops deduplicating.
const DROP_PURGED: &str = "DELETE FROM messages WHERE (conversation_id, seq) IN (
         SELECT conversation_id, seq FROM messages
         WHERE created_ms < $1 AND body IS NULL
         LIMIT $2 FOR UPDATE SKIP LOCKED)";

/// Departures older than the offline TTL: nothing of theirs is delivered
/// any more.
const DROP_DEPARTURES: &str = "DELETE FROM departures WHERE (conversation_id, account_id) IN (
         SELECT conversation_id, account_id FROM departures WHERE left_ms < $1
         LIMIT $2 FOR UPDATE SKIP LOCKED)";

pub(super) async fn sweep<C: GenericClient>(db: &C, sweep: &SweepRequest) -> Outcome<SweepOutcome> {
    let n = limit(sweep.limit);
    // A body goes once it is past retention and past the offline TTL (no
    // device may still be waiting for it then).
    let purge_before = sweep.bodies_before_ms.min(sweep.undelivered_before_ms);
    // In this order: a body purged by the first statement and already past
    // the dedup window goes with the second.
    let (expired, purged_bodies, purged_dedup, _) = pipeline!(
        scalar::<_, i64>(db, PURGE_EXPIRED, &[&sweep.now_ms, &n]),
        scalar::<_, i64>(db, PURGE_OLD_BODIES, &[&purge_before, &n]),
        execute(db, DROP_PURGED, &[&sweep.dedup_before_ms, &n]),
        execute(db, DROP_DEPARTURES, &[&sweep.undelivered_before_ms, &n]),
    )?;
    Ok(SweepOutcome {
        purged_bodies: unsigned(purged_bodies, "purged body count")?
            + unsigned(expired, "expired body count")?,
        purged_dedup,
    })
}
