//! The numeric codes stored for enumerations (the same as SQLite's; event
//! kinds live in `crate::rules`, which both adapters use).

use crate::model::{EventKind, PresenceVisibility, Role};

/// `messages.kind`: shared with SQLite in `crate::rules`.
pub(super) use crate::rules::{EVENT_DELETE, EVENT_EDIT, EVENT_REACTION, EVENT_SYSTEM, EVENT_TEXT};

/// `members.role`.
pub(super) const ROLE_MEMBER: i16 = 0;
pub(super) const ROLE_ADMIN: i16 = 1;

/// `conversations.kind`.
pub(super) const CONVERSATION_GROUP: i16 = 1;

pub(super) fn event_kind(code: i16) -> EventKind {
    crate::rules::event_kind(i64::from(code))
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
