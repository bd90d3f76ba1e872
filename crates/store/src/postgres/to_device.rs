//! To-device messages: opaque bodies for one device each, waiting until it
//! acks them. A send locks its recipients' device rows (in id order, so
//! two sends cannot deadlock) before drawing seqs, so one device's seqs
//! increase in commit order, as a reader that remembers the last one it
//! saw needs.

use std::collections::BTreeMap;

use deadpool_postgres::GenericClient;
use missive_core::DeviceId;

use super::fault::Outcome;
use super::sql::{execute, rows, unsigned};
use crate::StoreError;
use crate::model::*;

/// In a transaction; every check before the first write.
pub(super) async fn send<C: GenericClient>(db: &C, batch: &ToDeviceBatch) -> Outcome<()> {
    let mut adding: BTreeMap<(i64, i64), u64> = BTreeMap::new();
    for message in &batch.messages {
        *adding
            .entry((message.recipient.0, message.recipient_account.0))
            .or_default() += 1;
    }
    let devices: Vec<i64> = adding.keys().map(|(device, _)| *device).collect();
    let accounts: Vec<i64> = adding.keys().map(|(_, account)| *account).collect();
    let found = rows(
        db,
        "SELECT d.id FROM devices d
         JOIN unnest($1::bigint[], $2::bigint[]) AS r(device, account)
           ON d.id = r.device AND d.account_id = r.account
         ORDER BY d.id FOR UPDATE OF d",
        &[&devices, &accounts],
    )
    .await?;
    if found.len() != adding.len() {
        return Err(StoreError::UnknownDevice.into());
    }
    let held = rows(
        db,
        "SELECT device_id, count(*), count(*) FILTER (WHERE sender_account = $2)
         FROM to_device WHERE device_id = ANY($1) GROUP BY device_id",
        &[&devices, &batch.sender_account.0],
    )
    .await?;
    let held: BTreeMap<i64, (i64, i64)> = held
        .iter()
        .map(|row| Ok((row.try_get(0)?, (row.try_get(1)?, row.try_get(2)?))))
        .collect::<Outcome<_>>()?;
    for ((device, _), new) in &adding {
        let (all, from_sender) = held.get(device).copied().unwrap_or((0, 0));
        let all = unsigned(all, "to-device count")? + new;
        let from_sender = unsigned(from_sender, "to-device count")? + new;
        if all > batch.waiting_max || from_sender > batch.waiting_per_sender_max {
            return Err(StoreError::InboxFull.into());
        }
    }
    let recipients: Vec<i64> = batch.messages.iter().map(|m| m.recipient.0).collect();
    let bodies: Vec<&str> = batch.messages.iter().map(|m| m.body.as_str()).collect();
    execute(
        db,
        "INSERT INTO to_device (device_id, sender_account, sender_device, body, created_ms)
         SELECT r.device, $2, $3, r.body, $4
         FROM unnest($1::bigint[], $5::text[]) WITH ORDINALITY AS r(device, body, n)
         ORDER BY r.n",
        &[
            &recipients,
            &batch.sender_account.0,
            &batch.sender_device.0,
            &batch.now_ms,
            &bodies,
        ],
    )
    .await?;
    Ok(())
}

pub(super) async fn waiting<C: GenericClient>(
    db: &C,
    device: DeviceId,
    after: i64,
    limit: usize,
) -> Outcome<Vec<ToDeviceMessage>> {
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    rows(
        db,
        "SELECT t.seq, a.username, t.sender_device, t.body, t.created_ms
         FROM to_device t JOIN accounts a ON a.id = t.sender_account
         WHERE t.device_id = $1 AND t.seq > $2 ORDER BY t.seq LIMIT $3",
        &[&device.0, &after, &limit],
    )
    .await?
    .iter()
    .map(|row| {
        Ok(ToDeviceMessage {
            seq: row.try_get(0)?,
            from: row.try_get(1)?,
            from_device: DeviceId(row.try_get(2)?),
            body: row.try_get(3)?,
            created_ms: row.try_get(4)?,
        })
    })
    .collect()
}

pub(super) async fn ack<C: GenericClient>(db: &C, device: DeviceId, up_to: i64) -> Outcome<u64> {
    execute(
        db,
        "DELETE FROM to_device WHERE device_id = $1 AND seq <= $2",
        &[&device.0, &up_to],
    )
    .await
}

/// A device's messages go with it.
pub(super) async fn forget_device<C: GenericClient>(db: &C, device: DeviceId) -> Outcome<()> {
    execute(
        db,
        "DELETE FROM to_device WHERE device_id = $1",
        &[&device.0],
    )
    .await?;
    Ok(())
}
