//! What `missive migrate` moves from an embedded store to PostgreSQL, and
//! how each table's columns map from one schema to the other.
//!
//! Every table is read from SQLite in the order of a unique key, a batch
//! at a time ([`crate::sqlite::export`]), and written to PostgreSQL by
//! binary COPY, each batch in one transaction with the key it ended at
//! ([`crate::postgres::import`]), so an interrupted migration goes on from
//! the last batch that committed. [`TABLES`] is in the order the foreign
//! keys need. Tables listed in [`NOT_COPIED`] hold live state that a
//! stopped server no longer has (or the migration's own bookkeeping); the
//! tests check that every table of either schema is in one list or the
//! other, so a new table cannot be forgotten here.

use std::error::Error;

use bytes::BytesMut;
use tokio_postgres::types::{IsNull, ToSql, Type, to_sql_checked};

/// One value of a row on its way from SQLite to PostgreSQL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Cell {
    Null,
    Int(i64),
    Text(String),
    Bytes(Vec<u8>),
}

/// A PostgreSQL column's type, which says how a SQLite value is written:
/// SQLite keeps booleans and small enumerations as integers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    BigInt,
    SmallInt,
    Bool,
    Text,
    Bytea,
}

impl Kind {
    pub(crate) fn pg_type(self) -> Type {
        match self {
            Self::BigInt => Type::INT8,
            Self::SmallInt => Type::INT2,
            Self::Bool => Type::BOOL,
            Self::Text => Type::TEXT,
            Self::Bytea => Type::BYTEA,
        }
    }
}

/// A column: the SQLite expression read, the PostgreSQL column written.
#[derive(Debug)]
pub struct Column {
    pub source: &'static str,
    pub target: &'static str,
    pub kind: Kind,
}

const fn col(source: &'static str, target: &'static str, kind: Kind) -> Column {
    Column {
        source,
        target,
        kind,
    }
}

/// A column of the same name on both sides.
const fn same(name: &'static str, kind: Kind) -> Column {
    col(name, name, kind)
}

/// One table's move.
#[derive(Debug)]
pub struct Table {
    /// The PostgreSQL table (and the SQLite one, where `from` is a join).
    pub name: &'static str,
    /// The SQLite `FROM` clause.
    pub from: &'static str,
    /// SQLite expressions that identify a row, in the order it is read;
    /// a batch resumes after the last key of the one before.
    pub key: &'static [&'static str],
    pub columns: &'static [Column],
    /// An id column drawn from a sequence (SQLite AUTOINCREMENT, a
    /// PostgreSQL identity): the target's sequence continues past every id
    /// the source ever handed out, deleted rows' included.
    pub identity: Option<&'static str>,
}

use Kind::{BigInt, Bool, Bytea, SmallInt, Text};

/// Every table that moves, parents before the rows that refer to them.
pub const TABLES: &[Table] = &[
    Table {
        name: "accounts",
        from: "accounts",
        key: &["id"],
        columns: &[
            same("id", BigInt),
            same("username", Text),
            same("password_hash", Text),
            same("phone", Text),
            same("created_ms", BigInt),
            same("presence_visibility", SmallInt),
            same("last_seen_ms", BigInt),
            same("suspended", Bool),
        ],
        identity: Some("id"),
    },
    Table {
        name: "devices",
        from: "devices",
        key: &["id"],
        columns: &[
            same("id", BigInt),
            same("account_id", BigInt),
            same("name", Text),
            same("token_hash", Bytea),
            same("created_ms", BigInt),
            same("last_seen_ms", BigInt),
        ],
        identity: Some("id"),
    },
    // purged_seq and dropped_seq are the SQLite sweep's walk; PostgreSQL's
    // sweep finds old rows by their age index instead.
    Table {
        name: "conversations",
        from: "conversations",
        key: &["id"],
        columns: &[
            same("id", BigInt),
            same("kind", SmallInt),
            same("name", Text),
            same("direct_key", Text),
            same("last_seq", BigInt),
            same("created_ms", BigInt),
            same("last_ts_ms", BigInt),
            same("encrypted", Bool),
            same("disappear_secs", BigInt),
        ],
        identity: Some("id"),
    },
    Table {
        name: "members",
        from: "members",
        key: &["conversation_id", "account_id"],
        columns: &[
            same("conversation_id", BigInt),
            same("account_id", BigInt),
            same("role", SmallInt),
            same("joined_seq", BigInt),
            same("joined_ms", BigInt),
            same("read_seq", BigInt),
            same("read_ms", BigInt),
            same("delivered_seq", BigInt),
            same("delivered_ms", BigInt),
        ],
        identity: None,
    },
    Table {
        name: "departures",
        from: "departures",
        key: &["conversation_id", "account_id"],
        columns: &[
            same("conversation_id", BigInt),
            same("account_id", BigInt),
            same("joined_seq", BigInt),
            same("left_seq", BigInt),
            same("left_ms", BigInt),
        ],
        identity: None,
    },
    // In arrival order (rid, SQLite's own row id, which is not copied).
    Table {
        name: "messages",
        from: "messages",
        key: &["rid"],
        columns: &[
            same("conversation_id", BigInt),
            same("seq", BigInt),
            same("id", Text),
            same("sender_account", BigInt),
            same("sender_device", BigInt),
            same("client_msg_id", Text),
            same("kind", SmallInt),
            same("body", Text),
            same("target_id", Text),
            same("edited_ms", BigInt),
            same("deleted", Bool),
            same("created_ms", BigInt),
            same("fingerprint", BigInt),
            same("expires_ms", BigInt),
        ],
        identity: None,
    },
    Table {
        name: "positions",
        from: "positions",
        key: &["device_id", "conversation_id"],
        columns: &[
            same("device_id", BigInt),
            same("conversation_id", BigInt),
            same("seq", BigInt),
        ],
        identity: None,
    },
    // PostgreSQL keys a reaction by its message's conversation too (the
    // distribution column, docs/CLUSTER.md); a reaction whose message is
    // gone has nothing to show on and is left behind.
    Table {
        name: "reactions",
        from: "reactions r JOIN messages m ON m.id = r.message_id",
        key: &["r.message_id", "r.account_id"],
        columns: &[
            col("m.conversation_id", "conversation_id", BigInt),
            col("r.message_id", "message_id", Text),
            col("r.account_id", "account_id", BigInt),
            col("r.emoji", "emoji", Text),
            col("r.updated_ms", "updated_ms", BigInt),
        ],
        identity: None,
    },
    Table {
        name: "contacts",
        from: "contacts",
        key: &["owner_id", "contact_id"],
        columns: &[
            same("owner_id", BigInt),
            same("contact_id", BigInt),
            same("created_ms", BigInt),
        ],
        identity: None,
    },
    Table {
        name: "blocks",
        from: "blocks",
        key: &["blocker_id", "blocked_id"],
        columns: &[
            same("blocker_id", BigInt),
            same("blocked_id", BigInt),
            same("created_ms", BigInt),
        ],
        identity: None,
    },
    Table {
        name: "media",
        from: "media",
        key: &["id"],
        columns: &[
            same("id", Text),
            same("uploader_id", BigInt),
            same("content_type", Text),
            same("size_bytes", BigInt),
            same("sha256", Text),
            same("created_ms", BigInt),
            same("width", BigInt),
            same("height", BigInt),
            same("thumbnail", Bool),
            same("filename", Text),
        ],
        identity: None,
    },
    Table {
        name: "message_media",
        from: "message_media",
        key: &["message_id", "media_id"],
        columns: &[
            same("message_id", Text),
            same("media_id", Text),
            same("conversation_id", BigInt),
            same("seq", BigInt),
        ],
        identity: None,
    },
    Table {
        name: "revocations",
        from: "revocations",
        key: &["id"],
        columns: &[same("id", BigInt), same("device_id", BigInt)],
        identity: Some("id"),
    },
    Table {
        name: "invites",
        from: "invites",
        key: &["code_hash"],
        columns: &[
            same("code_hash", Bytea),
            same("created_ms", BigInt),
            same("expires_ms", BigInt),
            same("used_by", BigInt),
        ],
        identity: None,
    },
    Table {
        name: "device_keys",
        from: "device_keys",
        key: &["device_id"],
        columns: &[
            same("device_id", BigInt),
            same("account_id", BigInt),
            same("curve25519", Text),
            same("ed25519", Text),
            same("created_ms", BigInt),
        ],
        identity: None,
    },
    Table {
        name: "one_time_keys",
        from: "one_time_keys",
        key: &["device_id", "key_id"],
        columns: &[
            same("device_id", BigInt),
            same("key_id", Text),
            same("key", Text),
            same("signature", Text),
        ],
        identity: None,
    },
    Table {
        name: "to_device",
        from: "to_device",
        key: &["seq"],
        columns: &[
            same("seq", BigInt),
            same("device_id", BigInt),
            same("sender_account", BigInt),
            same("sender_device", BigInt),
            same("body", Text),
            same("created_ms", BigInt),
        ],
        identity: Some("seq"),
    },
];

/// Tables that do not move: which node holds which live connection (a
/// stopped server holds none; the cluster's nodes fill them anew), and
/// each schema's bookkeeping.
pub const NOT_COPIED: &[&str] = &[
    "nodes",
    "sessions",
    "relocation",
    "sqlite_sequence",
    "refinery_schema_history",
    "missive_migration",
    "missive_migration_deferred",
];

/// One batch read from the source: its rows (in `Table::columns` order)
/// and the key of its last row, where the next batch starts.
#[derive(Debug, Default)]
pub struct Batch {
    pub rows: Vec<Vec<Cell>>,
    pub last_key: Option<Vec<Cell>>,
}

/// A key as text, for the progress table: a JSON array.
pub(crate) fn key_to_json(key: &[Cell]) -> String {
    let values: Vec<serde_json::Value> = key
        .iter()
        .map(|cell| match cell {
            Cell::Null => serde_json::Value::Null,
            Cell::Int(value) => (*value).into(),
            Cell::Text(text) => text.as_str().into(),
            Cell::Bytes(bytes) => serde_json::json!({ "bytes": bytes }),
        })
        .collect();
    serde_json::Value::Array(values).to_string()
}

/// The inverse of [`key_to_json`]; `None` for text it did not write.
pub(crate) fn key_from_json(text: &str) -> Option<Vec<Cell>> {
    let serde_json::Value::Array(values) = serde_json::from_str(text).ok()? else {
        return None;
    };
    values
        .into_iter()
        .map(|value| match value {
            serde_json::Value::Null => Some(Cell::Null),
            serde_json::Value::Number(number) => number.as_i64().map(Cell::Int),
            serde_json::Value::String(text) => Some(Cell::Text(text)),
            serde_json::Value::Object(object) => {
                let bytes = object.get("bytes")?.as_array()?;
                bytes
                    .iter()
                    .map(|byte| byte.as_u64().and_then(|b| u8::try_from(b).ok()))
                    .collect::<Option<Vec<u8>>>()
                    .map(Cell::Bytes)
            }
            _ => None,
        })
        .collect()
}

/// A cell written as its column's PostgreSQL type.
#[derive(Debug)]
pub(crate) struct Typed<'a>(pub &'a Cell, pub Kind);

impl ToSql for Typed<'_> {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut BytesMut,
    ) -> Result<IsNull, Box<dyn Error + Sync + Send>> {
        match (self.0, self.1) {
            (Cell::Null, _) => Ok(IsNull::Yes),
            (Cell::Int(value), BigInt) => value.to_sql(ty, out),
            (Cell::Int(value), SmallInt) => i16::try_from(*value)?.to_sql(ty, out),
            (Cell::Int(value), Bool) => (*value != 0).to_sql(ty, out),
            (Cell::Text(text), Text) => text.as_str().to_sql(ty, out),
            (Cell::Bytes(bytes), Bytea) => bytes.as_slice().to_sql(ty, out),
            (cell, kind) => Err(format!("a {cell:?} cannot be written as {kind:?}").into()),
        }
    }

    fn accepts(ty: &Type) -> bool {
        [Type::INT8, Type::INT2, Type::BOOL, Type::TEXT, Type::BYTEA].contains(ty)
    }

    to_sql_checked!();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_survives_its_text_form() {
        let key = vec![
            Cell::Int(-7),
            Cell::Text("0192-ab".into()),
            Cell::Bytes(vec![0, 255, 16]),
            Cell::Null,
        ];
        assert_eq!(key_from_json(&key_to_json(&key)), Some(key));
        assert_eq!(key_from_json("{\"not\": \"a key\"}"), None);
        assert_eq!(key_from_json("[1.5]"), None);
    }

    #[test]
    fn every_table_is_keyed_and_named_once() {
        let mut names: Vec<&str> = TABLES.iter().map(|table| table.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), TABLES.len());
        for table in TABLES {
            assert!(!table.key.is_empty(), "{} has no key", table.name);
            assert!(!NOT_COPIED.contains(&table.name), "{}", table.name);
        }
    }
}
