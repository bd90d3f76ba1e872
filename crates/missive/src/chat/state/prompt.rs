//! The one-line questions the app asks at the bottom of the screen: what
//! each says and which take typed text.

use super::super::text::Editor;
use super::QUICK_REACTIONS;

/// The editor of a prompt that takes typed text, borrowed as `prompt` is
/// (shared or mutable); `None` for a yes/no question.
macro_rules! typed_text {
    ($prompt:expr) => {
        match $prompt {
            Self::Search(editor)
            | Self::NewChat(editor)
            | Self::GroupName(editor)
            | Self::GroupMembers { editor, .. }
            | Self::AddMembers { editor, .. }
            | Self::React { editor, .. } => Some(editor),
            Self::ConfirmDelete { .. }
            | Self::ConfirmQuit
            | Self::VerifyOffer { .. }
            | Self::VerifyCompare { .. } => None,
        }
    };
}

/// A one-line question at the bottom of the screen.
#[derive(Clone, Debug)]
pub(crate) enum Prompt {
    Search(Editor),
    NewChat(Editor),
    GroupName(Editor),
    GroupMembers {
        name: String,
        editor: Editor,
    },
    AddMembers {
        conversation: i64,
        editor: Editor,
    },
    React {
        conversation: i64,
        target: String,
        editor: Editor,
    },
    ConfirmDelete {
        conversation: i64,
        target: String,
    },
    ConfirmQuit,
    /// Another device asks to verify keys.
    VerifyOffer {
        from: String,
        device: i64,
    },
    /// The codes to compare with the other user.
    VerifyCompare {
        user: String,
        code: String,
    },
}

impl Prompt {
    pub(crate) fn label(&self) -> String {
        match self {
            Self::Search(_) => "Search: ".into(),
            Self::NewChat(_) => "Chat with (username): ".into(),
            Self::GroupName(_) => "New group's name: ".into(),
            Self::GroupMembers { .. } => "Members (usernames, comma-separated): ".into(),
            Self::AddMembers { .. } => "Add members (usernames, comma-separated): ".into(),
            Self::React { .. } => {
                let quick: Vec<String> = QUICK_REACTIONS
                    .iter()
                    .enumerate()
                    .map(|(at, emoji)| format!("{} {emoji}", at + 1))
                    .collect();
                format!("React ({} or type one): ", quick.join(" "))
            }
            Self::ConfirmDelete { .. } => "Delete this message for everyone? (y/n) ".into(),
            Self::ConfirmQuit => {
                "Messages are still waiting to be sent; quit anyway? (y/n) ".into()
            }
            Self::VerifyOffer { from, device } => {
                format!("{from} (device {device}) asks to verify keys with you; accept? (y/n) ")
            }
            Self::VerifyCompare { user, code } => {
                format!("Does {user} see {code}? (y/n) ")
            }
        }
    }

    pub(crate) fn editor(&self) -> Option<&Editor> {
        typed_text!(self)
    }

    pub(super) fn editor_mut(&mut self) -> Option<&mut Editor> {
        typed_text!(self)
    }
}
