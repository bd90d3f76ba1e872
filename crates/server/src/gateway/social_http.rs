//! REST handlers for groups, conversations and history, contacts, blocks
//! and privacy.

use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Extension, Path, Query, State};
use axum::http::StatusCode;
use missive_core::model::{ConversationKind, GroupChange, Relation, Setting};
use missive_core::{AccountId, ConversationId};
use missive_proto::ErrorCode;
use missive_proto::rest::{
    AddMembersRequest, ConversationKind as WireKind, ConversationList, ConversationSummary,
    CreateGroupRequest, GroupInfo, History, MemberReceipts, MessageInfo, Privacy, ReceiptEntry,
    RenameGroupRequest, TimerRequest, UserList, UsernameBody,
};
use serde::Deserialize;

use super::http::{Authenticated, json_body};
use crate::AppState;
use crate::service::ServiceError;
use crate::wire::history_message;

type Shared = State<Arc<AppState>>;

fn conversation_id(raw: &str) -> Result<ConversationId, ServiceError> {
    raw.parse().map(ConversationId).map_err(|_| {
        ServiceError::new(
            ErrorCode::InvalidField,
            "conversation id must be an integer",
        )
    })
}

/// `POST /v1/groups`
pub(super) async fn create_group(
    State(state): Shared,
    Authenticated(auth): Authenticated,
    body: Result<Json<CreateGroupRequest>, JsonRejection>,
) -> Result<(StatusCode, Json<GroupInfo>), ServiceError> {
    let request = json_body(body)?;
    state
        .group_create_limit
        .check(&auth, "too many groups created; slow down")?;
    let info = state
        .groups
        .create(&auth, &request.name, &request.members, request.encrypted)
        .await?;
    Ok((StatusCode::CREATED, Json(info)))
}

/// `GET /v1/groups/{id}`
pub(super) async fn group_info(
    State(state): Shared,
    Authenticated(auth): Authenticated,
    Path(id): Path<String>,
) -> Result<Json<GroupInfo>, ServiceError> {
    Ok(Json(state.groups.info(&auth, conversation_id(&id)?).await?))
}

/// `PATCH /v1/groups/{id}`: rename (admins).
pub(super) async fn rename_group(
    State(state): Shared,
    Authenticated(auth): Authenticated,
    Path(id): Path<String>,
    body: Result<Json<RenameGroupRequest>, JsonRejection>,
) -> Result<Json<GroupInfo>, ServiceError> {
    let request = json_body(body)?;
    Ok(Json(
        state
            .groups
            .rename(&auth, conversation_id(&id)?, &request.name)
            .await?,
    ))
}

/// `POST /v1/groups/{id}/members` (admins).
pub(super) async fn add_members(
    State(state): Shared,
    Authenticated(auth): Authenticated,
    Path(id): Path<String>,
    body: Result<Json<AddMembersRequest>, JsonRejection>,
) -> Result<Json<GroupInfo>, ServiceError> {
    let request = json_body(body)?;
    Ok(Json(
        state
            .groups
            .add(&auth, conversation_id(&id)?, &request.members)
            .await?,
    ))
}

/// The change a member route makes to the named member (`Remove` or
/// `Demote`), given to [`change_named_member`] by its route.
pub(super) type MemberChange = fn(AccountId) -> GroupChange;

/// `DELETE /v1/groups/{id}/members/{username}` and
/// `DELETE /v1/groups/{id}/admins/{username}` (admins): removes or demotes
/// the member the path names.
pub(super) async fn change_named_member(
    State(state): Shared,
    Extension(change): Extension<MemberChange>,
    Authenticated(auth): Authenticated,
    Path((id, username)): Path<(String, String)>,
) -> Result<Json<GroupInfo>, ServiceError> {
    let conversation = conversation_id(&id)?;
    Ok(Json(
        state
            .groups
            .change_member(&auth, conversation, &username, change)
            .await?,
    ))
}

/// `POST /v1/groups/{id}/admins` (admins).
pub(super) async fn promote(
    State(state): Shared,
    Authenticated(auth): Authenticated,
    Path(id): Path<String>,
    body: Result<Json<UsernameBody>, JsonRejection>,
) -> Result<Json<GroupInfo>, ServiceError> {
    let request = json_body(body)?;
    let conversation = conversation_id(&id)?;
    Ok(Json(
        state
            .groups
            .change_member(&auth, conversation, &request.username, GroupChange::Promote)
            .await?,
    ))
}

/// `POST /v1/groups/{id}/leave`
pub(super) async fn leave(
    State(state): Shared,
    Authenticated(auth): Authenticated,
    Path(id): Path<String>,
) -> Result<StatusCode, ServiceError> {
    state
        .groups
        .change(&auth, conversation_id(&id)?, GroupChange::Leave)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /v1/conversations/{id}/encrypt`: end-to-end encryption on, for
/// good (any member of a 1:1, an admin of a group).
pub(super) async fn encrypt(
    State(state): Shared,
    Authenticated(auth): Authenticated,
    Path(id): Path<String>,
) -> Result<StatusCode, ServiceError> {
    state
        .groups
        .set(&auth, conversation_id(&id)?, Setting::Encrypt)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `PUT /v1/conversations/{id}/timer` `{"secs": 86400}`: the disappearing
/// timer for messages sent from now on (0: off).
pub(super) async fn set_timer(
    State(state): Shared,
    Authenticated(auth): Authenticated,
    Path(id): Path<String>,
    body: Result<Json<TimerRequest>, JsonRejection>,
) -> Result<StatusCode, ServiceError> {
    let request = json_body(body)?;
    state
        .groups
        .set(
            &auth,
            conversation_id(&id)?,
            Setting::DisappearAfter(request.secs),
        )
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /v1/conversations`
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ConversationsQuery {
    before: Option<String>,
    limit: Option<usize>,
}

/// `GET /v1/conversations[?before=CURSOR][&limit=N]`
pub(super) async fn conversations(
    State(state): Shared,
    Authenticated(auth): Authenticated,
    query: Result<Query<ConversationsQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<ConversationList>, ServiceError> {
    let Query(query) = query
        .map_err(|rejection| ServiceError::new(ErrorCode::InvalidField, rejection.body_text()))?;
    if query.limit == Some(0) {
        return Err(ServiceError::new(
            ErrorCode::InvalidField,
            "limit must be at least 1",
        ));
    }
    let (records, next) = state
        .messaging
        .conversations(&auth, query.before.as_deref(), query.limit)
        .await?;
    Ok(Json(ConversationList {
        next,
        conversations: records
            .into_iter()
            .map(|record| ConversationSummary {
                conversation: record.conversation.0,
                kind: match record.kind {
                    ConversationKind::Direct => WireKind::Direct,
                    ConversationKind::Group => WireKind::Group,
                },
                name: record.name,
                encrypted: record.encrypted,
                disappear_secs: record.disappear_secs,
                members: record.members,
                last_seq: record.last_seq,
                read_seq: record.read_seq,
                unread: record.unread,
                last_message: record.last_event.map(history_message),
                receipts: record
                    .receipts
                    .into_iter()
                    .map(|member| MemberReceipts {
                        user: member.username,
                        delivered_seq: member.delivered_seq,
                        read_seq: member.read_seq,
                    })
                    .collect(),
            })
            .collect(),
    }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct HistoryQuery {
    before: Option<i64>,
    after: Option<i64>,
    limit: Option<usize>,
    /// Search: only texts containing this.
    q: Option<String>,
}

/// `GET /v1/conversations/{id}/messages?before=&after=&limit=[&q=]`
pub(super) async fn history(
    State(state): Shared,
    Authenticated(auth): Authenticated,
    Path(id): Path<String>,
    query: Result<Query<HistoryQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<History>, ServiceError> {
    let Query(query) = query
        .map_err(|rejection| ServiceError::new(ErrorCode::InvalidField, rejection.body_text()))?;
    if query.before.is_some() && query.after.is_some() {
        return Err(ServiceError::new(
            ErrorCode::InvalidField,
            "give at most one of before and after",
        ));
    }
    if query.limit == Some(0) {
        return Err(ServiceError::new(
            ErrorCode::InvalidField,
            "limit must be at least 1",
        ));
    }
    if let Some(text) = &query.q {
        if query.after.is_some() {
            return Err(ServiceError::new(
                ErrorCode::InvalidField,
                "a search goes back from before; after is not taken with q",
            ));
        }
        let (found, next_before) = state
            .messaging
            .search(
                &auth,
                conversation_id(&id)?,
                text,
                query.before,
                query.limit,
            )
            .await?;
        return Ok(Json(History {
            messages: found.into_iter().map(history_message).collect(),
            next_before,
        }));
    }
    let events = state
        .messaging
        .history(
            &auth,
            conversation_id(&id)?,
            query.before,
            query.after,
            query.limit,
        )
        .await?;
    // A full newest-first page may have older events behind it; the next
    // page (possibly empty) tells.
    let limit = query
        .limit
        .unwrap_or(crate::service::messaging::HISTORY_PAGE_DEFAULT)
        .clamp(1, state.config.delivery.page_size);
    let next_before = if query.after.is_none() && events.len() >= limit {
        events.last().map(|event| event.seq)
    } else {
        None
    };
    Ok(Json(History {
        messages: events.into_iter().map(history_message).collect(),
        next_before,
    }))
}

/// `GET /v1/conversations/{id}/messages/{message_id}/receipts`
pub(super) async fn receipts(
    State(state): Shared,
    Authenticated(auth): Authenticated,
    Path((id, message_id)): Path<(String, String)>,
) -> Result<Json<MessageInfo>, ServiceError> {
    let record = state
        .messaging
        .receipts(&auth, conversation_id(&id)?, &message_id)
        .await?;
    let entries = |list: Vec<(String, i64)>| {
        list.into_iter()
            .map(|(user, ts_ms)| ReceiptEntry { user, ts_ms })
            .collect()
    };
    Ok(Json(MessageInfo {
        message_id: record.message_id.to_string(),
        seq: record.seq,
        delivered: entries(record.delivered),
        read: entries(record.read),
    }))
}

/// `GET /v1/contacts`, `GET /v1/blocks`: the caller's list of the route's
/// relation.
pub(super) async fn related(
    State(state): Shared,
    Extension(relation): Extension<Relation>,
    Authenticated(auth): Authenticated,
) -> Result<Json<UserList>, ServiceError> {
    Ok(Json(state.social.related(&auth, relation).await?))
}

/// `POST /v1/contacts`, `POST /v1/blocks`: adds the named user.
pub(super) async fn relate(
    State(state): Shared,
    Extension(relation): Extension<Relation>,
    Authenticated(auth): Authenticated,
    body: Result<Json<UsernameBody>, JsonRejection>,
) -> Result<StatusCode, ServiceError> {
    let username = json_body(body)?.username;
    state
        .social
        .set_relation(&auth, relation, &username, true)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `DELETE /v1/contacts/{username}`, `DELETE /v1/blocks/{username}`.
pub(super) async fn unrelate(
    State(state): Shared,
    Extension(relation): Extension<Relation>,
    Authenticated(auth): Authenticated,
    Path(username): Path<String>,
) -> Result<StatusCode, ServiceError> {
    state
        .social
        .set_relation(&auth, relation, &username, false)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /v1/privacy`
pub(super) async fn privacy(
    State(state): Shared,
    Authenticated(auth): Authenticated,
) -> Result<Json<Privacy>, ServiceError> {
    Ok(Json(state.social.privacy(&auth).await?))
}

/// `PUT /v1/privacy`
pub(super) async fn set_privacy(
    State(state): Shared,
    Authenticated(auth): Authenticated,
    body: Result<Json<Privacy>, JsonRejection>,
) -> Result<Json<Privacy>, ServiceError> {
    let privacy = json_body(body)?;
    state.social.set_privacy(&auth, privacy.clone()).await?;
    Ok(Json(privacy))
}
