//! `--output text`: what the client commands print, for people. The JSON
//! form (the default) is for scripts and stays the contract; this one is
//! rendered from the same JSON value, so every command has it: messages,
//! conversations, devices and receipts get their own lines, anything else
//! one `key: value` line per field.

use chrono::{Local, TimeZone};
use serde_json::Value;

/// Which form the client commands print in.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Output {
    /// One JSON value per line (the default; for scripts).
    #[default]
    Json,
    /// Lines for people.
    Text,
}

/// `value` as lines for a person.
pub(crate) fn render(value: &Value) -> String {
    if let Some(kind) = value.get("type").and_then(Value::as_str) {
        if let Some(line) = frame(kind, value) {
            return line;
        }
    }
    if let Some(messages) = value.get("messages").and_then(Value::as_array) {
        return lines(messages, message, "(no messages)");
    }
    if let Some(conversations) = value.get("conversations").and_then(Value::as_array) {
        return lines(conversations, conversation, "(no conversations)");
    }
    if let Some(devices) = value.get("devices").and_then(Value::as_array) {
        return lines(devices, device, "(no devices)");
    }
    if let Some(users) = value.get("users").and_then(Value::as_array) {
        return lines(users, user, "(nobody)");
    }
    fields(value)
}

fn lines(items: &[Value], line: fn(&Value) -> String, none: &str) -> String {
    if items.is_empty() {
        return none.to_owned();
    }
    items.iter().map(line).collect::<Vec<_>>().join("\n")
}

/// A live frame `listen` prints.
fn frame(kind: &str, value: &Value) -> Option<String> {
    let conversation = value.get("conversation").and_then(Value::as_i64);
    let seq = value.get("seq").and_then(Value::as_i64);
    let who = |key: &str| str_of(value, key).to_owned();
    Some(match kind {
        "message" => format!("#{} {}", conversation?, message(value)),
        "delivered" => format!("#{} {} received up to {}", conversation?, who("by"), seq?),
        "read" => format!("#{} {} read up to {}", conversation?, who("by"), seq?),
        "expired" => format!(
            "#{} messages {} to {} expired before they reached this device",
            conversation?,
            value.get("from_seq")?,
            value.get("to_seq")?
        ),
        "typing" => format!(
            "#{} {} is {}",
            conversation?,
            who("from"),
            if str_of(value, "state") == "start" {
                "typing"
            } else {
                "no longer typing"
            }
        ),
        "presence" => {
            let user = who("user");
            if value.get("online").and_then(Value::as_bool) == Some(true) {
                format!("{user} is online")
            } else {
                match value.get("last_seen_ms").and_then(Value::as_i64) {
                    Some(ms) => format!("{user} was last seen {}", time(ms)),
                    None => format!("{user} is offline"),
                }
            }
        }
        "sent" => format!(
            "sent: #{} seq {}{}",
            conversation?,
            seq?,
            if value.get("duplicate").and_then(Value::as_bool) == Some(true) {
                " (already sent before)"
            } else {
                ""
            }
        ),
        _ => return None,
    })
}

/// `[time] seq from: text`, with what a text carries or what an event did.
fn message(value: &Value) -> String {
    let at = value
        .get("ts_ms")
        .and_then(Value::as_i64)
        .map_or_else(String::new, time);
    let seq = value.get("seq").and_then(Value::as_i64).unwrap_or_default();
    let from = str_of(value, "from");
    let text = str_of(value, "text");
    let body = match str_of(value, "kind") {
        "reaction" if text.is_empty() => "removed a reaction".to_owned(),
        "reaction" => format!("reacted {text}"),
        "edit" => format!("edited a message: {text}"),
        "delete" => "deleted a message".to_owned(),
        "system" => value
            .get("event")
            .map_or_else(|| "changed the group".to_owned(), system_event),
        _ if value.get("deleted").and_then(Value::as_bool) == Some(true) => "(deleted)".to_owned(),
        _ => {
            let mut body = text.to_owned();
            for media in value
                .get("media")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let name = media
                    .get("filename")
                    .and_then(Value::as_str)
                    .unwrap_or_else(|| str_of(media, "content_type"));
                let attachment = format!("[{name}, {}]", size(media.get("size_bytes")));
                body = if body.is_empty() {
                    attachment
                } else {
                    format!("{body} {attachment}")
                };
            }
            if value
                .get("edited_ms")
                .is_some_and(|edited| !edited.is_null())
            {
                body.push_str(" (edited)");
            }
            body
        }
    };
    format!("[{at}] {seq} {from}: {body}")
}

fn system_event(event: &Value) -> String {
    let action = str_of(event, "action");
    let users: Vec<&str> = event
        .get("users")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    if users.is_empty() {
        action.to_owned()
    } else {
        format!("{action} {}", users.join(", "))
    }
}

/// `#id  title  (n unread)  last: …`
fn conversation(value: &Value) -> String {
    let id = value
        .get("conversation")
        .and_then(Value::as_i64)
        .unwrap_or_default();
    let title = match value.get("name").and_then(Value::as_str) {
        Some(name) => name.to_owned(),
        None => value
            .get("members")
            .and_then(Value::as_array)
            .map(|members| {
                members
                    .iter()
                    .filter_map(Value::as_str)
                    .collect::<Vec<_>>()
                    .join(", ")
            })
            .unwrap_or_default(),
    };
    let mut line = format!("#{id}  {title}");
    let unread = value.get("unread").and_then(Value::as_i64).unwrap_or(0);
    if unread > 0 {
        line.push_str(&format!("  ({unread} unread)"));
    }
    if let Some(last) = value.get("last_message").filter(|last| !last.is_null()) {
        line.push_str(&format!("  last: {}", message(last)));
    }
    line
}

/// `id  name  last seen …  (this device)`
fn device(value: &Value) -> String {
    let id = value
        .get("device_id")
        .and_then(Value::as_i64)
        .unwrap_or_default();
    let mut line = format!("{id}  {}", str_of(value, "name"));
    if let Some(seen) = value.get("last_seen_ms").and_then(Value::as_i64) {
        line.push_str(&format!("  last used {}", time(seen)));
    }
    if value.get("current").and_then(Value::as_bool) == Some(true) {
        line.push_str("  (this device)");
    }
    line
}

fn user(value: &Value) -> String {
    match value {
        Value::String(name) => name.clone(),
        other => fields(other).replace('\n', "  "),
    }
}

/// One `key: value` line per field (nested values as compact JSON).
fn fields(value: &Value) -> String {
    match value {
        Value::Object(map) => map
            .iter()
            .map(|(key, value)| match value {
                Value::String(text) => format!("{key}: {text}"),
                other => format!("{key}: {other}"),
            })
            .collect::<Vec<_>>()
            .join("\n"),
        Value::String(text) => text.clone(),
        other => other.to_string(),
    }
}

fn str_of<'a>(value: &'a Value, key: &str) -> &'a str {
    value.get(key).and_then(Value::as_str).unwrap_or("")
}

/// A time in this machine's zone, to the minute.
fn time(ms: i64) -> String {
    Local.timestamp_millis_opt(ms).single().map_or_else(
        || ms.to_string(),
        |at| at.format("%Y-%m-%d %H:%M").to_string(),
    )
}

fn size(bytes: Option<&Value>) -> String {
    let bytes = bytes.and_then(Value::as_u64).unwrap_or(0);
    match bytes {
        0..1_000 => format!("{bytes} B"),
        1_000..1_000_000 => format!("{:.1} KB", bytes as f64 / 1e3),
        _ => format!("{:.1} MB", bytes as f64 / 1e6),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn messages_and_frames_read_as_lines() {
        // Goal: the common shapes get their own lines (time aside, which
        // depends on the machine's zone); a deleted text says so; media
        // show their names and sizes; receipts read as sentences.
        let text = json!({"type": "message", "conversation": 7, "seq": 3, "from": "alice",
            "kind": "text", "text": "hello", "ts_ms": 0,
            "media": [{"media_id": "x", "content_type": "application/pdf", "size_bytes": 2048,
                       "filename": "ticket.pdf"}]});
        let line = render(&text);
        assert!(line.starts_with("#7 ["), "{line}");
        assert!(
            line.ends_with("] 3 alice: hello [ticket.pdf, 2.0 KB]"),
            "{line}"
        );
        let deleted = json!({"seq": 4, "from": "bob", "kind": "text", "text": "", "deleted": true, "ts_ms": 0});
        assert!(render(&json!({"messages": [deleted]})).ends_with("4 bob: (deleted)"));
        assert_eq!(render(&json!({"messages": []})), "(no messages)");
        let read = json!({"type": "read", "conversation": 7, "by": "bob", "seq": 41, "ts_ms": 0});
        assert_eq!(render(&read), "#7 bob read up to 41");
        let sent = json!({"type": "sent", "conversation": 7, "seq": 5, "message_id": "m"});
        assert_eq!(render(&sent), "sent: #7 seq 5");
    }

    #[test]
    fn lists_and_other_answers_read_as_lines() {
        // Goal: conversations and devices get one line each; any other
        // answer is one `key: value` line per field.
        let list = json!({"conversations": [{"conversation": 2, "kind": "group", "name": "trip",
            "members": ["alice", "bob"], "unread": 2, "last_message": null}]});
        assert_eq!(render(&list), "#2  trip  (2 unread)");
        let devices = json!({"devices": [{"device_id": 3, "name": "laptop", "current": true}]});
        assert_eq!(render(&devices), "3  laptop  (this device)");
        let other = json!({"account_id": 1, "username": "alice"});
        assert_eq!(render(&other), "account_id: 1\nusername: alice");
    }
}
