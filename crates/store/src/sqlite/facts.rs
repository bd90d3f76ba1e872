//! What a send needs to know about its conversation (who its members are,
//! their devices, whether a 1:1 is blocked, its settings), kept
//! by the writer thread between sends, so a send to a conversation it has
//! seen before reads none of it from SQLite: three of a send's seven statements. Acks and read
//! pointers use it too, to find whose ticks they move.
//!
//! The cache is only an answer the tables would give, so it is forgotten
//! whenever those tables may have changed:
//! - triggers on the writer's connection (temporary: this connection's
//!   only) call back on every change to `members`, `devices`, `blocks`
//!   or a conversation's settings made through it, whichever code made
//!   it;
//! - `PRAGMA data_version`, read as each batch begins, moves when another
//!   connection committed (an operator's `missive admin` process);
//! - a batch or a job rolled back may have filled it from rows that are
//!   gone, so a rollback forgets it too.
//!
//! It lives in a thread-local of the writer thread, the only thread that
//! runs sends, so it needs no lock.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;

use missive_core::{AccountId, ConversationId, DeviceId};
use rusqlite::Connection;
use rusqlite::functions::FunctionFlags;

use super::writer::backend;
use crate::StoreError;

/// Conversations remembered at most; past it the cache starts over, which
/// costs one read per conversation that sends again.
const CONVERSATIONS_MAX: usize = 16_384;

/// A conversation as a send sees it.
pub(super) struct Conversation {
    /// Sorted.
    members: Vec<AccountId>,
    /// A 1:1 in which either member blocked the other.
    pub(super) blocked: bool,
    /// End-to-end encrypted: its messages must be ciphertext.
    pub(super) encrypted: bool,
    /// Events sent now disappear this long after (0: never).
    pub(super) disappear_secs: i64,
    /// Every device of every member with its account, sorted by device.
    devices: Vec<(DeviceId, AccountId)>,
}

impl Conversation {
    pub(super) fn members(&self) -> &[AccountId] {
        &self.members
    }

    pub(super) fn has_member(&self, account: AccountId) -> bool {
        self.members.binary_search(&account).is_ok()
    }

    /// Every device of every member, sorted.
    pub(super) fn devices(&self) -> impl Iterator<Item = DeviceId> + '_ {
        self.devices.iter().map(|(device, _)| *device)
    }

    /// The member's devices, sorted.
    pub(super) fn devices_of(&self, account: AccountId) -> impl Iterator<Item = DeviceId> + '_ {
        self.devices
            .iter()
            .filter(move |(_, owner)| *owner == account)
            .map(|(device, _)| *device)
    }
}

#[derive(Default)]
struct Known {
    data_version: Option<i64>,
    conversations: HashMap<ConversationId, Rc<Conversation>>,
}

thread_local! {
    static KNOWN: RefCell<Known> = RefCell::new(Known::default());
    /// Only the writer thread's connection has the triggers, so only its
    /// cache is kept true; any other thread reads afresh.
    static ON_WRITER: Cell<bool> = const { Cell::new(false) };
}

/// Marks this thread as the writer's: the one whose cache is kept.
pub(super) fn keep_on_this_thread() {
    ON_WRITER.set(true);
}

/// The function the triggers call.
const FORGET: &str = "missive_facts_changed";

/// Installs the triggers that keep the cache true on the writer's
/// connection.
pub(super) fn install(conn: &Connection) -> Result<(), StoreError> {
    conn.create_scalar_function(FORGET, 0, FunctionFlags::SQLITE_UTF8, |_| {
        forget_all();
        Ok(0)
    })
    .map_err(backend)?;
    let mut sql = String::new();
    for (table, columns) in [
        ("conversations", "encrypted, disappear_secs"),
        ("members", "conversation_id, account_id"),
        ("devices", "id, account_id"),
        ("blocks", "blocker_id, blocked_id"),
    ] {
        for (event, name) in [
            ("INSERT", "insert"),
            ("DELETE", "delete"),
            (&format!("UPDATE OF {columns}") as &str, "update"),
        ] {
            sql.push_str(&format!(
                "CREATE TEMP TRIGGER IF NOT EXISTS facts_{table}_{name} AFTER {event} ON main.{table}
                 BEGIN SELECT {FORGET}(); END;\n"
            ));
        }
    }
    conn.execute_batch(&sql).map_err(backend)
}

/// Forgets everything when another connection committed since the last
/// batch. Called as each batch begins.
pub(super) fn batch_begins(conn: &Connection) -> Result<(), StoreError> {
    let version: i64 = conn
        .prepare_cached("PRAGMA data_version")
        .and_then(|mut stmt| stmt.query_row([], |row| row.get(0)))
        .map_err(backend)?;
    KNOWN.with_borrow_mut(|known| {
        if known.data_version != Some(version) {
            known.conversations.clear();
            known.data_version = Some(version);
        }
    });
    Ok(())
}

/// Forgets every conversation.
pub(super) fn forget_all() {
    KNOWN.with_borrow_mut(|known| known.conversations.clear());
}

/// The conversation's facts, read from the tables unless known; `None` for
/// a conversation with no members (or none at all).
pub(super) fn conversation(
    conn: &Connection,
    id: ConversationId,
) -> Result<Option<Rc<Conversation>>, StoreError> {
    if !ON_WRITER.get() {
        return Ok(read(conn, id)?.map(Rc::new));
    }
    if let Some(known) = KNOWN.with_borrow(|known| known.conversations.get(&id).cloned()) {
        return Ok(Some(known));
    }
    let Some(read) = read(conn, id)? else {
        return Ok(None);
    };
    let read = Rc::new(read);
    KNOWN.with_borrow_mut(|known| {
        if known.conversations.len() >= CONVERSATIONS_MAX {
            known.conversations.clear();
        }
        known.conversations.insert(id, Rc::clone(&read));
    });
    Ok(Some(read))
}

fn read(conn: &Connection, id: ConversationId) -> Result<Option<Conversation>, StoreError> {
    let mut direct = false;
    let mut encrypted = false;
    let mut disappear_secs = 0;
    let mut members = Vec::new();
    {
        let mut stmt = conn
            .prepare_cached(
                "SELECT c.kind, m.account_id, c.encrypted, c.disappear_secs FROM conversations c
                 JOIN members m ON m.conversation_id = c.id WHERE c.id = ?1",
            )
            .map_err(backend)?;
        let mut rows = stmt.query([id.0]).map_err(backend)?;
        while let Some(row) = rows.next().map_err(backend)? {
            direct = row.get::<_, i64>(0).map_err(backend)? == 0;
            members.push(AccountId(row.get(1).map_err(backend)?));
            encrypted = row.get::<_, i64>(2).map_err(backend)? != 0;
            disappear_secs = row.get(3).map_err(backend)?;
        }
    }
    if members.is_empty() {
        return Ok(None);
    }
    members.sort_unstable();
    let blocked = direct && members.len() == 2 && {
        let (a, b) = (members[0].0, members[1].0);
        conn.prepare_cached(
            "SELECT 1 FROM blocks WHERE (blocker_id = ?1 AND blocked_id = ?2)
             OR (blocker_id = ?2 AND blocked_id = ?1)",
        )
        .and_then(|mut stmt| stmt.exists([a, b]))
        .map_err(backend)?
    };
    let devices = {
        let mut stmt = conn
            .prepare_cached(
                "SELECT d.id, d.account_id FROM members m JOIN devices d ON d.account_id = m.account_id
                 WHERE m.conversation_id = ?1 ORDER BY d.id",
            )
            .map_err(backend)?;
        let rows = stmt
            .query_map([id.0], |row| {
                Ok((DeviceId(row.get(0)?), AccountId(row.get(1)?)))
            })
            .map_err(backend)?;
        rows.collect::<Result<Vec<_>, _>>().map_err(backend)?
    };
    Ok(Some(Conversation {
        members,
        blocked,
        encrypted,
        disappear_secs,
        devices,
    }))
}
