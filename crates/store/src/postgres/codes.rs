//! The numeric codes stored for enumerations (the same as SQLite's).

use crate::model::{EventKind, PresenceVisibility, Role};

/// `queue.kind`.
pub(super) const QUEUE_MESSAGE: i16 = 0;
pub(super) const QUEUE_DELIVERED: i16 = 1;
pub(super) const QUEUE_READ: i16 = 2;

/// `messages.kind`.
pub(super) const EVENT_TEXT: i16 = 0;
pub(super) const EVENT_SYSTEM: i16 = 1;
pub(super) const EVENT_REACTION: i16 = 2;
pub(super) const EVENT_EDIT: i16 = 3;
pub(super) const EVENT_DELETE: i16 = 4;

/// `members.role`.
pub(super) const ROLE_MEMBER: i16 = 0;
pub(super) const ROLE_ADMIN: i16 = 1;

/// `conversations.kind`.
pub(super) const CONVERSATION_GROUP: i16 = 1;

pub(super) fn event_kind(code: i16) -> EventKind {
    match code {
        EVENT_SYSTEM => EventKind::System,
        EVENT_REACTION => EventKind::Reaction,
        EVENT_EDIT => EventKind::Edit,
        EVENT_DELETE => EventKind::Delete,
        _ => EventKind::Text,
    }
}

pub(super) fn role(code: i16) -> Role {
    if code == ROLE_ADMIN {
        Role::Admin
    } else {
        Role::Member
    }
}

pub(super) fn visibility_code(visibility: PresenceVisibility) -> i16 {
    match visibility {
        PresenceVisibility::Everyone => 0,
        PresenceVisibility::Contacts => 1,
        PresenceVisibility::Nobody => 2,
    }
}

pub(super) fn visibility(code: i16) -> PresenceVisibility {
    match code {
        1 => PresenceVisibility::Contacts,
        2 => PresenceVisibility::Nobody,
        _ => PresenceVisibility::Everyone,
    }
}
