//! 1:1 conversations and the membership checks every conversation call
//! starts with.

use deadpool_postgres::GenericClient;
use missive_core::{AccountId, ConversationId, UnixMillis};

use super::fault::{Fault, Outcome};
use super::sql::{execute, row};
use crate::StoreError;

fn direct_key(a: AccountId, b: AccountId) -> (AccountId, AccountId, String) {
    let (low, high) = if a <= b { (a, b) } else { (b, a) };
    (low, high, format!("{}:{}", low.0, high.0))
}

pub(super) async fn find_direct<C: GenericClient>(
    db: &C,
    a: AccountId,
    b: AccountId,
) -> Outcome<Option<ConversationId>> {
    let (_, _, key) = direct_key(a, b);
    row(
        db,
        "SELECT id FROM conversations WHERE direct_key = $1",
        &[&key],
    )
    .await?
    .map(|row| Ok(ConversationId(row.try_get(0)?)))
    .transpose()
}

/// Creates the 1:1 conversation, or finds the one another node created at
/// the same moment (the unique key makes this call wait for it).
pub(super) async fn create_direct<C: GenericClient>(
    db: &C,
    a: AccountId,
    b: AccountId,
    now_ms: UnixMillis,
    encrypted: bool,
) -> Outcome<ConversationId> {
    let (low, high, key) = direct_key(a, b);
    let created = row(
        db,
        "INSERT INTO conversations (direct_key, created_ms, encrypted) VALUES ($1, $2, $3)
         ON CONFLICT (direct_key) DO NOTHING RETURNING id",
        &[&key, &now_ms, &encrypted],
    )
    .await?;
    let Some(created) = created else {
        return find_direct(db, a, b).await?.ok_or(Fault::Raced);
    };
    let id: i64 = created.try_get(0)?;
    execute(
        db,
        "INSERT INTO members (conversation_id, account_id) VALUES ($1, $2), ($1, $3)
         ON CONFLICT DO NOTHING",
        &[&id, &low.0, &high.0],
    )
    .await?;
    Ok(ConversationId(id))
}

/// `UnknownConversation` or `NotMember` unless `account` is a member.
pub(super) async fn check_member<C: GenericClient>(
    db: &C,
    conversation: ConversationId,
    account: AccountId,
) -> Outcome<()> {
    let found = row(
        db,
        "SELECT EXISTS (SELECT 1 FROM members WHERE conversation_id = $1 AND account_id = $2),
                EXISTS (SELECT 1 FROM departures WHERE conversation_id = $1 AND account_id = $2)",
        &[&conversation.0, &account.0],
    )
    .await?;
    let (member, departed): (bool, bool) = match found {
        Some(row) => (row.try_get(0)?, row.try_get(1)?),
        None => (false, false),
    };
    refusal(departed, member).map_or(Ok(()), |refused| Err(refused.into()))
}

/// Whether `account` left, or was removed from, the conversation.
pub(super) async fn has_departed<C: GenericClient>(
    db: &C,
    conversation: ConversationId,
    account: AccountId,
) -> Outcome<bool> {
    Ok(row(
        db,
        "SELECT 1 FROM departures WHERE conversation_id = $1 AND account_id = $2",
        &[&conversation.0, &account.0],
    )
    .await?
    .is_some())
}

/// The refusal for a caller who is a member (none), who left or was
/// removed (`NotMember`), or who never was one (`UnknownConversation`, as
/// for an id that names nothing: only those who were members learn that a
/// conversation exists).
pub(super) fn refusal(departed: bool, member: bool) -> Option<StoreError> {
    if member {
        None
    } else if departed {
        Some(StoreError::NotMember)
    } else {
        Some(StoreError::UnknownConversation)
    }
}
