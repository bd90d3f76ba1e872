//! The sweeper: expired queue entries, bodies past retention, orphans, old
//! dedup records. Every node may run it at once: each batch is picked with
//! `FOR UPDATE SKIP LOCKED`, so concurrent sweepers take disjoint rows and
//! never wait on each other or on the transactions using those rows.

use deadpool_postgres::GenericClient;

use super::fault::Outcome;
use super::sql::{execute, limit, pipeline};
use crate::model::*;

pub(super) async fn sweep<C: GenericClient>(db: &C, sweep: &SweepRequest) -> Outcome<SweepOutcome> {
    let n = limit(sweep.limit);
    // In this order, pipelined: a body whose last entry expired in the
    // first statement is purged by the second.
    let (expired_entries, purged_bodies, _, _, _, purged_dedup) = pipeline!(
        execute(
            db,
            "DELETE FROM queue WHERE pos IN (
                 SELECT pos FROM queue WHERE expires_ms <= $1 LIMIT $2 FOR UPDATE SKIP LOCKED)",
            &[&sweep.now_ms, &n],
        ),
        execute(
            db,
            "DELETE FROM messages WHERE id IN (
                 SELECT id FROM messages m WHERE m.created_ms < $1
                 AND NOT EXISTS (SELECT 1 FROM queue q WHERE q.message_id = m.id AND q.kind = 0)
                 LIMIT $2 FOR UPDATE SKIP LOCKED)",
            &[&sweep.bodies_before_ms, &n],
        ),
        // Receipts, reactions and media links whose message body is gone
        // go with it (unlinked media are then collected after their grace).
        execute(
            db,
            "DELETE FROM message_media WHERE (message_id, media_id) IN (
                 SELECT t.message_id, t.media_id FROM message_media t
                 WHERE NOT EXISTS (SELECT 1 FROM messages m WHERE m.id = t.message_id)
                 LIMIT $1 FOR UPDATE SKIP LOCKED)",
            &[&n],
        ),
        execute(
            db,
            "DELETE FROM receipts WHERE (message_id, account_id) IN (
                 SELECT t.message_id, t.account_id FROM receipts t
                 WHERE NOT EXISTS (SELECT 1 FROM messages m WHERE m.id = t.message_id)
                 LIMIT $1 FOR UPDATE SKIP LOCKED)",
            &[&n],
        ),
        execute(
            db,
            "DELETE FROM reactions WHERE (message_id, account_id) IN (
                 SELECT t.message_id, t.account_id FROM reactions t
                 WHERE NOT EXISTS (SELECT 1 FROM messages m WHERE m.id = t.message_id)
                 LIMIT $1 FOR UPDATE SKIP LOCKED)",
            &[&n],
        ),
        execute(
            db,
            "DELETE FROM dedup WHERE (device_id, client_msg_id) IN (
                 SELECT device_id, client_msg_id FROM dedup WHERE created_ms < $1
                 LIMIT $2 FOR UPDATE SKIP LOCKED)",
            &[&sweep.dedup_before_ms, &n],
        ),
    )?;
    Ok(SweepOutcome {
        expired_entries,
        purged_bodies,
        purged_dedup,
    })
}
