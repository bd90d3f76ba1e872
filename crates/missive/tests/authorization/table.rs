//! The table: one [`Row`] per (actor, action, target, expected code), and
//! [`World::refuse`], which runs each row over every transport its action
//! exists on: as a frame over the WebSocket and over long-poll
//! (`/v1/frames`), and as its REST call (`/v1/poll` for an ack).

use reqwest::Method;
use serde_json::{Value, json};

use crate::support::{World, error_code, over_http, over_ws, rest, rest_code, status_of};

/// Who tries the action: a user of the [`World`], with her token and her
/// live WebSocket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Who {
    Bob,
    Mallory,
}

/// One action, in each form it has on the wire (the target is named
/// inside: a conversation, a message, a media object, a user).
#[derive(Clone, Debug)]
pub(crate) struct Action {
    /// A client frame with a string `id`: WebSocket and `/v1/frames`.
    pub frame: Option<Value>,
    /// The same action as a REST call: (method, path, JSON body).
    pub rest: Option<(Method, String, Option<Value>)>,
}

impl Action {
    /// An action that exists as a frame only.
    pub(crate) fn frame(frame: Value) -> Self {
        Self {
            frame: Some(frame),
            rest: None,
        }
    }

    /// An action that exists as a REST call only.
    pub(crate) fn rest(method: Method, path: impl Into<String>, body: Option<Value>) -> Self {
        Self {
            frame: None,
            rest: Some((method, path.into(), body)),
        }
    }

    /// The same action is also this REST call.
    pub(crate) fn or_rest(
        mut self,
        method: Method,
        path: impl Into<String>,
        body: Option<Value>,
    ) -> Self {
        self.rest = Some((method, path.into(), body));
        self
    }

    /// The frame form alone (WebSocket and `/v1/frames`), without REST.
    pub(crate) fn frame_only(self) -> Self {
        Self { rest: None, ..self }
    }

    /// Whether it is an ack (frame `ack`, or acks posted with a poll).
    pub(crate) fn is_ack(&self) -> bool {
        self.frame
            .as_ref()
            .is_some_and(|frame| frame["type"] == "ack")
    }
}

/// One expected refusal: `who` tries `action` and gets `code`.
#[derive(Clone, Debug)]
pub(crate) struct Row {
    pub who: Who,
    pub action: Action,
    pub code: &'static str,
}

/// One row per action, all by `who` and all refused with `code`.
pub(crate) fn rows(
    who: Who,
    actions: impl IntoIterator<Item = Action>,
    code: &'static str,
) -> Vec<Row> {
    actions
        .into_iter()
        .map(|action| Row { who, action, code })
        .collect()
}

impl World {
    /// Runs every row over each transport its action exists on; each must
    /// be refused with the row's code (and its HTTP status).
    pub(crate) async fn refuse(&mut self, rows: impl IntoIterator<Item = Row>) {
        for row in rows {
            self.refuse_one(&row).await;
        }
    }

    async fn refuse_one(&mut self, row: &Row) {
        let (token, connection) = match row.who {
            Who::Bob => (&self.bob, &mut self.bob_ws),
            Who::Mallory => (&self.mallory, &mut self.mallory_ws),
        };
        let (who, code) = (row.who, row.code);
        if let Some(frame) = &row.action.frame {
            let reply = over_ws(connection, frame).await;
            assert_eq!(
                error_code(&reply),
                code,
                "{who:?} over the WebSocket: {frame}"
            );
            let (status, replies) = over_http(&self.server, token, frame).await;
            assert_eq!(replies.len(), 1, "{who:?}, {frame}: {replies:?}");
            assert_eq!(
                error_code(&replies[0]),
                code,
                "{who:?} over /v1/frames: {frame}"
            );
            assert_eq!(status, status_of(code), "HTTP status for {frame}");
        }
        if let Some((method, path, body)) = &row.action.rest {
            let answer = rest(
                &self.server,
                method.clone(),
                path,
                Some(token),
                body.clone(),
            )
            .await;
            assert_eq!(rest_code(&answer), code, "{who:?}: {method} {path}");
        }
    }
}

/// Frame ids (and client_msg_ids) `{tag}-{name}`, unique per sweep.
fn id(tag: &str, name: &str) -> String {
    format!("{tag}-{name}")
}

/// A frame of `kind` with id and client_msg_id `{tag}-{name}`, plus
/// `fields`.
pub(crate) fn frame(kind: &str, tag: &str, name: &str, fields: Value) -> Value {
    let mut frame = json!({"type": kind, "id": id(tag, name), "client_msg_id": id(tag, name)});
    for (key, value) in fields.as_object().expect("fields") {
        frame[key] = value.clone();
    }
    frame
}

/// A frame without a client_msg_id (no stored event of its own).
fn plain(kind: &str, tag: &str, name: &str, fields: Value) -> Value {
    let mut frame = frame(kind, tag, name, fields);
    frame
        .as_object_mut()
        .expect("frame")
        .remove("client_msg_id");
    frame
}

/// An ack at `seq`: the `ack` frame, and the same position posted with a
/// `/v1/poll`.
pub(crate) fn ack(conversation: i64, seq: i64, tag: &str) -> Action {
    let c = conversation;
    Action::frame(plain(
        "ack",
        tag,
        "ack",
        json!({"conversation": c, "seq": seq}),
    ))
    .or_rest(
        Method::POST,
        "/v1/poll",
        Some(json!({"acks": [{"conversation": c, "seq": seq}], "timeout_ms": 0})),
    )
}

/// Every action that names message `target` as seen from `conversation`:
/// a reply, react (with `emoji`), unreact, edit, delete (frames) and its
/// receipts (REST).
pub(crate) fn message_actions(
    conversation: i64,
    target: &str,
    emoji: &str,
    tag: &str,
) -> Vec<Action> {
    let (c, t) = (conversation, target);
    vec![
        Action::frame(frame(
            "send",
            tag,
            "reply",
            json!({"conversation": c, "text": "re", "reply_to": t}),
        )),
        Action::frame(frame(
            "react",
            tag,
            "react",
            json!({"conversation": c, "target": t, "emoji": emoji}),
        )),
        Action::frame(frame(
            "react",
            tag,
            "unreact",
            json!({"conversation": c, "target": t}),
        )),
        Action::frame(frame(
            "edit",
            tag,
            "edit",
            json!({"conversation": c, "target": t, "text": "forged"}),
        )),
        Action::frame(frame(
            "delete",
            tag,
            "delete",
            json!({"conversation": c, "target": t}),
        )),
        Action::rest(
            Method::GET,
            format!("/v1/conversations/{c}/messages/{t}/receipts"),
            None,
        ),
    ]
}

/// What a group management sweep tries: rename to `name`, add `add`,
/// remove `remove`, promote `promote`, demote `demote`.
pub(crate) struct GroupChange<'a> {
    pub name: &'a str,
    pub add: &'a str,
    pub remove: &'a str,
    pub promote: &'a str,
    pub demote: &'a str,
}

/// What an outsider tries on a group: rename it, add herself, remove bob,
/// promote herself, demote alice.
pub(crate) const OUTSIDER_CHANGE: GroupChange<'static> = GroupChange {
    name: "pwned",
    add: "mallory",
    remove: "bob",
    promote: "mallory",
    demote: "alice",
};

/// The five admin actions on `conversation`, each as a frame and as REST.
pub(crate) fn group_actions(conversation: i64, tag: &str, change: &GroupChange<'_>) -> Vec<Action> {
    let c = conversation;
    let GroupChange {
        name,
        add,
        remove,
        promote,
        demote,
    } = change;
    vec![
        Action::frame(plain(
            "group_rename",
            tag,
            "rename",
            json!({"conversation": c, "name": name}),
        ))
        .or_rest(
            Method::PATCH,
            format!("/v1/groups/{c}"),
            Some(json!({"name": name})),
        ),
        Action::frame(plain(
            "group_add",
            tag,
            "add",
            json!({"conversation": c, "members": [add]}),
        ))
        .or_rest(
            Method::POST,
            format!("/v1/groups/{c}/members"),
            Some(json!({"members": [add]})),
        ),
        Action::frame(plain(
            "group_remove",
            tag,
            "remove",
            json!({"conversation": c, "username": remove}),
        ))
        .or_rest(
            Method::DELETE,
            format!("/v1/groups/{c}/members/{remove}"),
            None,
        ),
        Action::frame(plain(
            "group_promote",
            tag,
            "promote",
            json!({"conversation": c, "username": promote}),
        ))
        .or_rest(
            Method::POST,
            format!("/v1/groups/{c}/admins"),
            Some(json!({"username": promote})),
        ),
        Action::frame(plain(
            "group_demote",
            tag,
            "demote",
            json!({"conversation": c, "username": demote}),
        ))
        .or_rest(
            Method::DELETE,
            format!("/v1/groups/{c}/admins/{demote}"),
            None,
        ),
    ]
}

/// Every action that names a conversation, aimed at `conversation` and
/// its message `target`; `tag` keeps ids and client_msg_ids unique.
pub(crate) fn conversation_actions(conversation: i64, target: &str, tag: &str) -> Vec<Action> {
    let c = conversation;
    let history = |query: &str| {
        Action::rest(
            Method::GET,
            format!("/v1/conversations/{c}/messages{query}"),
            None,
        )
    };
    let mut actions = vec![Action::frame(frame(
        "send",
        tag,
        "send",
        json!({"conversation": c, "text": "let me in"}),
    ))];
    actions.extend(message_actions(c, target, "💩", tag));
    actions.extend([
        Action::frame(plain(
            "typing",
            tag,
            "typing",
            json!({"conversation": c, "state": "start"}),
        )),
        Action::frame(plain(
            "read",
            tag,
            "read",
            json!({"conversation": c, "seq": 1_000}),
        )),
        ack(c, 1, tag),
        history(""),
        history("?before=1000&limit=5"),
        history("?after=0"),
        Action::frame(plain("group_info", tag, "info", json!({"conversation": c}))).or_rest(
            Method::GET,
            format!("/v1/groups/{c}"),
            None,
        ),
    ]);
    actions.extend(group_actions(c, tag, &OUTSIDER_CHANGE));
    actions.push(
        Action::frame(plain(
            "group_leave",
            tag,
            "leave",
            json!({"conversation": c}),
        ))
        .or_rest(Method::POST, format!("/v1/groups/{c}/leave"), None),
    );
    actions
}
