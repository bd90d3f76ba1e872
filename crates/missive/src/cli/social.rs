//! Contacts, blocks, the presence privacy setting and a one-shot look at
//! other users' presence.

use std::process::ExitCode;
use std::time::Duration;

use missive_client::ClientError;
use missive_proto::rest::PresenceVisibility;
use missive_proto::{ClientFrame, ServerFrame};

use super::{ClientArgs, connect_as, fail, print_json, rest};

/// How long `presence` waits for the server's answers.
const PRESENCE_WAIT: Duration = Duration::from_secs(30);

/// Subscribes to `users`' presence, prints one `presence` frame per user
/// (the latest state seen before the server answered a following ping) and
/// exits.
pub(crate) async fn presence(args: &ClientArgs, users: &[String]) -> ExitCode {
    let (_, mut connection) = match connect_as(args).await {
        Ok(connected) => connected,
        Err(code) => return code,
    };
    // The server answers frames in order: everything the subscription
    // produces arrives before the pong.
    let frames = [
        ClientFrame::SubscribePresence {
            id: Some("subscribe".into()),
            users: users.to_vec(),
        },
        ClientFrame::Ping {
            id: Some("done".into()),
        },
    ];
    for frame in &frames {
        if let Err(err) = connection.send_frame(frame).await {
            return fail(&err);
        }
    }
    let mut seen: Vec<(String, ServerFrame)> = Vec::new();
    let mut refused = None;
    loop {
        let frame = match connection.next_frame(PRESENCE_WAIT).await {
            Ok(frame) => frame,
            Err(err) => return fail(&err),
        };
        match frame {
            ServerFrame::Presence { ref user, .. } => {
                match seen.iter_mut().find(|(seen_user, _)| seen_user == user) {
                    Some(entry) => entry.1 = frame,
                    None => seen.push((user.clone(), frame)),
                }
            }
            ServerFrame::Error {
                id, code, message, ..
            } if id.as_deref() == Some("subscribe") => {
                refused = Some(ClientError::Refused { code, message });
            }
            ServerFrame::Pong { id } if id.as_deref() == Some("done") => break,
            _ => {}
        }
    }
    connection.close().await;
    if let Some(err) = refused {
        return fail(&err);
    }
    for (_, frame) in &seen {
        print_json(frame);
    }
    ExitCode::SUCCESS
}

pub(crate) async fn contacts(args: &ClientArgs) -> ExitCode {
    rest(args, async |api, token| api.contacts(&token).await).await
}

pub(crate) async fn blocks(args: &ClientArgs) -> ExitCode {
    rest(args, async |api, token| api.blocks(&token).await).await
}

/// A change to one of this account's user lists.
#[derive(Clone, Copy, Debug)]
pub(crate) enum UserListChange {
    AddContact,
    RemoveContact,
    Block,
    Unblock,
}

impl UserListChange {
    /// Makes this change for `username` and prints
    /// `{"<what was done>": username}`.
    pub(crate) async fn run(self, args: &ClientArgs, username: &str) -> ExitCode {
        rest(args, async |api, token| {
            match self {
                Self::AddContact => api.add_contact(&token, username).await,
                Self::RemoveContact => api.remove_contact(&token, username).await,
                Self::Block => api.block(&token, username).await,
                Self::Unblock => api.unblock(&token, username).await,
            }?;
            Ok(serde_json::json!({ self.done(): username }))
        })
        .await
    }

    /// The key of what is printed once it is done.
    fn done(self) -> &'static str {
        match self {
            Self::AddContact => "contact_added",
            Self::RemoveContact => "contact_removed",
            Self::Block => "blocked",
            Self::Unblock => "unblocked",
        }
    }
}

/// `privacy` with no argument prints the current setting; with one, sets it.
pub(crate) async fn privacy(args: &ClientArgs, presence: Option<PresenceVisibility>) -> ExitCode {
    rest(args, async |api, token| match presence {
        Some(presence) => api.set_privacy(&token, presence).await,
        None => api.privacy(&token).await,
    })
    .await
}
