//! Conversation commands: groups and their members, timers, turning
//! encryption on, history (opened as `listen` opens it), receipts and `read`.

use std::process::ExitCode;

use missive_client::Api;
use missive_proto::ClientFrame;

use super::{
    ClientArgs, conversation_id, fail, find_conversation, load_profile, print_json, rest, warn,
    ws_request,
};
use crate::encryption;

/// Marks the conversation read up to `up_to` (default: its last seq);
/// prints the `read` cursor the server keeps.
pub(crate) async fn read(args: &ClientArgs, named: &str, up_to: Option<i64>) -> ExitCode {
    let saved = match load_profile(args) {
        Ok(saved) => saved,
        Err(code) => return code,
    };
    let (conversation, last_seq) = match find_conversation(&saved, named).await {
        Ok(found) => found,
        Err(code) => return code,
    };
    let seq = up_to.unwrap_or(last_seq);
    let frame = ClientFrame::Read {
        id: Some("read".into()),
        conversation,
        seq,
    };
    ws_request(args, async |connection| {
        connection.request(&frame, "read").await
    })
    .await
}

/// Creates a group; `encrypted: None` takes the server's default.
pub(crate) async fn group_create(
    args: &ClientArgs,
    name: &str,
    members: &[String],
    encrypted: Option<bool>,
) -> ExitCode {
    let request = missive_proto::rest::CreateGroupRequest {
        name: name.to_owned(),
        members: members.to_vec(),
        encrypted,
    };
    rest(args, async |api, token| {
        api.create_group_as(&token, &request).await
    })
    .await
}

/// Sets a conversation's disappearing timer; prints `{"conversation": ID,
/// "disappear_secs": SECS}`.
pub(crate) async fn set_timer(args: &ClientArgs, named: &str, secs: u32) -> ExitCode {
    let conversation = match conversation_id(args, named).await {
        Ok(id) => id,
        Err(code) => return code,
    };
    rest(args, async |api, token| {
        api.set_timer(&token, conversation, secs)
            .await
            .map(|()| serde_json::json!({ "conversation": conversation, "disappear_secs": secs }))
    })
    .await
}

/// Turns end-to-end encryption on in a conversation, for good; prints
/// `{"encrypted": ID}`.
pub(crate) async fn encrypt(args: &ClientArgs, named: &str) -> ExitCode {
    let conversation = match conversation_id(args, named).await {
        Ok(id) => id,
        Err(code) => return code,
    };
    rest(args, async |api, token| {
        api.encrypt_conversation(&token, conversation)
            .await
            .map(|()| serde_json::json!({ "encrypted": conversation }))
    })
    .await
}

pub(crate) async fn group_add(args: &ClientArgs, group: i64, members: &[String]) -> ExitCode {
    let members: Vec<&str> = members.iter().map(String::as_str).collect();
    rest(args, async |api, token| {
        api.add_members(&token, group, &members).await
    })
    .await
}

pub(crate) async fn group_remove(args: &ClientArgs, group: i64, username: &str) -> ExitCode {
    rest(args, async |api, token| {
        api.remove_member(&token, group, username).await
    })
    .await
}

pub(crate) async fn group_leave(args: &ClientArgs, group: i64) -> ExitCode {
    rest(args, async |api, token| {
        api.leave_group(&token, group).await?;
        Ok(serde_json::json!({ "left": group }))
    })
    .await
}

pub(crate) async fn group_info(args: &ClientArgs, group: i64) -> ExitCode {
    rest(args, async |api, token| api.group(&token, group).await).await
}

pub(crate) async fn group_rename(args: &ClientArgs, group: i64, name: &str) -> ExitCode {
    rest(args, async |api, token| {
        api.rename_group(&token, group, name).await
    })
    .await
}

pub(crate) async fn group_promote(args: &ClientArgs, group: i64, username: &str) -> ExitCode {
    rest(args, async |api, token| {
        api.promote(&token, group, username).await
    })
    .await
}

pub(crate) async fn group_demote(args: &ClientArgs, group: i64, username: &str) -> ExitCode {
    rest(args, async |api, token| {
        api.demote(&token, group, username).await
    })
    .await
}

/// Which page of a conversation's history to fetch.
pub(crate) struct HistoryPage {
    pub before: Option<i64>,
    pub after: Option<i64>,
    pub limit: Option<u32>,
}

pub(crate) async fn history(args: &ClientArgs, named: &str, page: HistoryPage) -> ExitCode {
    let conversation = match conversation_id(args, named).await {
        Ok(id) => id,
        Err(code) => return code,
    };
    let mut query = Vec::new();
    if let Some(before) = page.before {
        query.push(format!("before={before}"));
    }
    if let Some(after) = page.after {
        query.push(format!("after={after}"));
    }
    if let Some(limit) = page.limit {
        query.push(format!("limit={limit}"));
    }
    let query = query.join("&");
    let saved = match load_profile(args) {
        Ok(saved) => saved,
        Err(code) => return code,
    };
    let history = match Api::new(&saved.server)
        .history(&saved.token, conversation, &query)
        .await
    {
        Ok(history) => history,
        Err(err) => return fail(&err),
    };
    // Encrypted messages printed as `listen` prints them: decrypted, or
    // with why they cannot be, never as ciphertext.
    let mut printed = serde_json::to_value(&history).unwrap_or_default();
    if history
        .messages
        .iter()
        .any(|message| message.kind == missive_proto::MessageKind::Encrypted)
    {
        let mut keys = encryption::DeviceKeys::open(&args.profile, &saved, Box::new(warn));
        let messages = printed["messages"].as_array_mut().into_iter().flatten();
        for (message, printed) in history.messages.iter().zip(messages) {
            if message.kind == missive_proto::MessageKind::Encrypted && !message.deleted {
                let opened = keys.open_text(
                    conversation,
                    &message.from,
                    message.from_device,
                    &message.text,
                );
                encryption::mark_opened(printed, &opened);
            }
        }
        keys.save();
    }
    print_json(&printed)
}

pub(crate) async fn conversations(args: &ClientArgs) -> ExitCode {
    rest(args, async |api, token| api.conversations(&token).await).await
}

pub(crate) async fn receipts(args: &ClientArgs, conversation: i64, message_id: &str) -> ExitCode {
    rest(args, async |api, token| {
        api.receipts(&token, conversation, message_id).await
    })
    .await
}
