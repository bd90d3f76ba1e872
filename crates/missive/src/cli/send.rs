//! Sending: texts and files, plain or end-to-end encrypted, and the
//! reactions, edits and deletes that refer to a sent message.

use std::process::ExitCode;

use missive_client::{Api, ClientError, Connection};
use missive_proto::{ClientFrame, ServerFrame};

use super::media::{read_attachment, upload_sealed};
use super::{
    ClientArgs, EXIT_FAILURE, EXIT_REFUSED, connect, conversation_id, fail,
    generated_client_msg_id, load_profile, print_json, warn, ws_request,
};
use crate::encryption;
use crate::file_keys::FileKeys;
use crate::profile::Profile;

/// Where a `send` goes: a user (1:1) or a conversation (group or 1:1).
pub(crate) enum Recipient {
    User(String),
    /// Its id or name, as `find_conversation` takes it.
    Conversation(String),
}

/// What `send` was asked to send.
pub(crate) struct Outgoing {
    pub text: String,
    pub reply_to: Option<String>,
    pub files: Vec<std::path::PathBuf>,
    pub client_msg_id: Option<String>,
    /// Encrypt even if the conversation is not (yet) known to be: a first
    /// message to a user then creates an encrypted 1:1.
    pub encrypted: bool,
}

/// Sends a text, end-to-end encrypted when the conversation is (or when
/// asked to).
pub(crate) async fn send(args: &ClientArgs, to: Recipient, outgoing: Outgoing) -> ExitCode {
    let saved = match load_profile(args) {
        Ok(saved) => saved,
        Err(code) => return code,
    };
    if outgoing.encrypted {
        return send_encrypted(args, &saved, to, outgoing).await;
    }
    // Plain first: the server says when the conversation is encrypted
    // (refusing, storing nothing), so a plain send costs no lookup. Not so
    // with files: they would be uploaded in the clear before the refusal.
    let api = Api::new(&saved.server);
    if !outgoing.files.is_empty() {
        let list = match api.conversations(&saved.token).await {
            Ok(list) => list,
            Err(err) => return fail(&err),
        };
        if find_summary(list, &to, &saved.username).is_some_and(|summary| summary.encrypted) {
            return send_encrypted(args, &saved, to, outgoing).await;
        }
    }
    let media = match upload_plain(&api, &saved, &outgoing.files).await {
        Ok(media) => media,
        Err(code) => return code,
    };
    let (user, conversation) = match &to {
        Recipient::User(username) => (Some(username.clone()), None),
        Recipient::Conversation(named) => match conversation_id(args, named).await {
            Ok(id) => (None, Some(id)),
            Err(code) => return code,
        },
    };
    let mut connection = match connect(&saved).await {
        Ok(connection) => connection,
        Err(code) => return code,
    };
    let client_msg_id = outgoing
        .client_msg_id
        .clone()
        .unwrap_or_else(generated_client_msg_id);
    let result = connection
        .call(|id| ClientFrame::Send {
            id,
            to: user,
            conversation,
            client_msg_id: client_msg_id.clone(),
            text: outgoing.text.clone(),
            reply_to: outgoing.reply_to.clone(),
            media,
            encrypted: false,
        })
        .await;
    connection.close().await;
    match result {
        Ok(reply) => print_json(&reply),
        Err(ClientError::Refused {
            code: missive_proto::ErrorCode::ConversationEncrypted,
            ..
        }) => {
            let outgoing = Outgoing {
                client_msg_id: Some(client_msg_id),
                ..outgoing
            };
            send_encrypted(args, &saved, to, outgoing).await
        }
        Err(err) => fail(&err),
    }
}

/// Uploads each file as it is (plain: the server reads the bytes);
/// their media ids, in order.
async fn upload_plain(
    api: &Api,
    saved: &Profile,
    paths: &[std::path::PathBuf],
) -> Result<Vec<String>, ExitCode> {
    let mut media = Vec::with_capacity(paths.len());
    for file in paths {
        let bytes = read_attachment(file)?;
        let filename = file.file_name().and_then(|name| name.to_str());
        let info = api
            .upload_named_media(&saved.token, bytes, filename)
            .await
            .map_err(|err| fail(&err))?;
        media.push(info.media_id);
    }
    Ok(media)
}

/// Conversation key of a message to a user who has no conversation with
/// us yet: the outbound session moves under the real id once `sent` names
/// it.
const NOT_YET_CREATED: i64 = -1;

/// `send` into an end-to-end encrypted conversation (or creating one):
/// sessions with every member device, the room key to those lacking it,
/// then the ciphertext. The keys are saved before anything is sent, so a
/// crash never makes a ratchet step be used twice.
async fn send_encrypted(
    args: &ClientArgs,
    saved: &Profile,
    to: Recipient,
    outgoing: Outgoing,
) -> ExitCode {
    let api = Api::new(&saved.server);
    let list = match api.conversations(&saved.token).await {
        Ok(list) => list,
        Err(err) => return fail(&err),
    };
    let known = find_summary(list, &to, &saved.username);
    let mut vault = match encryption::load(&args.profile, saved) {
        Ok(vault) => vault,
        Err(err) => {
            eprintln!("error: {err}");
            return ExitCode::from(EXIT_FAILURE);
        }
    };
    let (members, conversation) = match members_of(&to, known, &saved.username) {
        Ok(found) => found,
        Err(code) => return code,
    };
    let mut devices = match encryption::member_devices(&api, saved, &members).await {
        Ok(devices) => devices,
        Err(err) => return fail(&err),
    };
    if let Err(err) = encryption::open_sessions(&api, saved, &mut vault, &mut devices, &warn).await
    {
        return fail(&err);
    }
    // Uploaded before the text is sealed: a failed upload uses no ratchet
    // step.
    let files = match upload_sealed(&api, saved, &outgoing.files).await {
        Ok(files) => files,
        Err(code) => return code,
    };
    let content = sealed_content(&args.profile, &outgoing, &files);
    let media: Vec<String> = files.iter().map(|file| file.media_id.clone()).collect();
    let key = conversation.unwrap_or(NOT_YET_CREATED);
    let sealed = match vault.encrypt(key, &devices, &content.to_string()) {
        Ok(sealed) => sealed,
        Err(err) => {
            eprintln!("error: cannot encrypt: {err}");
            return ExitCode::from(EXIT_FAILURE);
        }
    };
    if let Err(err) = encryption::save(&args.profile, &vault) {
        eprintln!("error: {err}");
        return ExitCode::from(EXIT_FAILURE);
    }
    let recipient = match (conversation, &to) {
        (Some(id), _) => missive_client::Recipient::Conversation(id),
        (None, Recipient::User(user)) => missive_client::Recipient::User(user),
        (None, Recipient::Conversation(_)) => missive_client::Recipient::Conversation(key),
    };
    let client_msg_id = outgoing
        .client_msg_id
        .unwrap_or_else(generated_client_msg_id);
    let message = SealedMessage {
        key,
        sealed,
        recipient,
        client_msg_id: &client_msg_id,
        media,
    };
    let reply = match deliver_sealed(&args.profile, saved, &mut vault, message).await {
        Ok(reply) => reply,
        Err(code) => return code,
    };
    if let (None, ServerFrame::Sent { conversation, .. }) = (conversation, &reply) {
        vault.rename_conversation(NOT_YET_CREATED, *conversation);
        if let Err(err) = encryption::save(&args.profile, &vault) {
            eprintln!("error: {err}");
            return ExitCode::from(EXIT_FAILURE);
        }
    }
    print_json(&reply)
}

/// Who an encrypted message goes to, and its conversation's id (none for a
/// first message to a user: the send creates it).
fn members_of(
    to: &Recipient,
    known: Option<missive_proto::rest::ConversationSummary>,
    me: &str,
) -> Result<(Vec<String>, Option<i64>), ExitCode> {
    match (to, known) {
        (_, Some(summary)) => Ok((summary.members, Some(summary.conversation))),
        (Recipient::User(user), None) => Ok((vec![me.to_owned(), user.clone()], None)),
        (Recipient::Conversation(named), None) => {
            eprintln!("error: unknown_conversation: you have no conversation {named:?}");
            Err(ExitCode::from(EXIT_REFUSED))
        }
    }
}

/// The plaintext an encrypted message carries: the text, what it replies
/// to, and the sealed files with their keys (remembered, so the sender's
/// own downloads open too).
fn sealed_content(
    profile: &str,
    outgoing: &Outgoing,
    files: &[missive_e2ee::SharedFile],
) -> serde_json::Value {
    let mut content = serde_json::json!({ "text": outgoing.text });
    if let Some(reply_to) = &outgoing.reply_to {
        content["reply_to"] = reply_to.as_str().into();
    }
    if !files.is_empty() {
        content["files"] = serde_json::to_value(files).unwrap_or_default();
        let mut file_keys = FileKeys::load(profile);
        file_keys.remember(files);
        if let Err(err) = file_keys.save() {
            eprintln!("warning: {err}");
        }
    }
    content
}

/// An encrypted message sealed and its keys saved, ready to go.
struct SealedMessage<'a> {
    /// The conversation key the room key is kept under.
    key: i64,
    sealed: missive_e2ee::Sealed,
    recipient: missive_client::Recipient<'a>,
    client_msg_id: &'a str,
    media: Vec<String>,
}

/// Sends the room key shares, then the ciphertext; returns the server's
/// `sent`.
async fn deliver_sealed(
    profile: &str,
    saved: &Profile,
    vault: &mut missive_e2ee::Vault,
    message: SealedMessage<'_>,
) -> Result<ServerFrame, ExitCode> {
    let mut connection = connect(saved).await?;
    let SealedMessage {
        key,
        sealed,
        recipient,
        client_msg_id,
        media,
    } = message;
    let shares = sealed.shares.clone();
    let result = async {
        encryption::send_shares(&mut connection, sealed.shares).await?;
        // Delivered: later sends need not share the key again (until they
        // are, every encrypt shares it, so a lost share is sent again).
        vault.mark_shared(key, &shares);
        if let Err(err) = encryption::save(profile, vault) {
            eprintln!("warning: {err}");
        }
        connection
            .send_encrypted(recipient, client_msg_id, &sealed.ciphertext, media)
            .await
    }
    .await;
    connection.close().await;
    result.map_err(|err| fail(&err))
}

/// The conversation `to` names in the list (a 1:1 with a user, or a
/// conversation by id or group name).
fn find_summary(
    list: missive_proto::rest::ConversationList,
    to: &Recipient,
    me: &str,
) -> Option<missive_proto::rest::ConversationSummary> {
    list.conversations.into_iter().find(|summary| match to {
        Recipient::User(user) => {
            summary.kind == missive_proto::rest::ConversationKind::Direct
                && summary.members.iter().any(|member| member == user)
                && user != me
        }
        Recipient::Conversation(named) => match named.parse::<i64>() {
            Ok(id) => summary.conversation == id,
            Err(_) => summary.name.as_deref() == Some(named.as_str()),
        },
    })
}

/// Sets `emoji` as this user's reaction, or removes it when `None`.
pub(crate) async fn react(
    args: &ClientArgs,
    conversation: i64,
    target: &str,
    emoji: Option<&str>,
    client_msg_id: Option<String>,
) -> ExitCode {
    change_message(args, client_msg_id, async |connection, client_msg_id| {
        connection
            .react(conversation, client_msg_id, target, emoji)
            .await
    })
    .await
}

pub(crate) async fn edit(
    args: &ClientArgs,
    conversation: i64,
    target: &str,
    text: &str,
    client_msg_id: Option<String>,
) -> ExitCode {
    change_message(args, client_msg_id, async |connection, client_msg_id| {
        connection
            .edit(conversation, client_msg_id, target, text)
            .await
    })
    .await
}

pub(crate) async fn delete(
    args: &ClientArgs,
    conversation: i64,
    target: &str,
    client_msg_id: Option<String>,
) -> ExitCode {
    change_message(args, client_msg_id, async |connection, client_msg_id| {
        connection.delete(conversation, client_msg_id, target).await
    })
    .await
}

/// Sends one change to a message under `client_msg_id` (a fresh one when
/// not given) and prints the reply.
async fn change_message(
    args: &ClientArgs,
    client_msg_id: Option<String>,
    change: impl AsyncFnOnce(&mut Connection, &str) -> Result<ServerFrame, ClientError>,
) -> ExitCode {
    let client_msg_id = client_msg_id.unwrap_or_else(generated_client_msg_id);
    ws_request(args, async |connection| {
        change(connection, &client_msg_id).await
    })
    .await
}
