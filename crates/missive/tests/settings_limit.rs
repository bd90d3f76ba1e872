//! The settings-change limit, black-box: every change of a conversation's
//! settings that stores a system event for its members (renames, member
//! changes, the disappearing timer, turning encryption on) spends from one
//! budget per account, whichever transport carries it; past it a change is
//! refused with `rate_limited` and a retry time and stores nothing; other
//! accounts keep their own budgets; leaving a group is never limited.

mod common;

use common::*;

use missive_client::Connection;
use missive_proto::rest::GroupInfo;
use missive_proto::{ClientFrame, ErrorCode, ServerFrame};

/// Settings changes in a burst; the rate is one a second, so a refusal
/// here comes well within the second a token takes to return, and no test
/// step waits for time to pass.
const BURST: u32 = 3;

/// The `action` of every system event of `conversation` that `token`'s
/// account may read, in seq order.
async fn system_actions(server: &TestServer, token: &str, conversation: i64) -> Vec<String> {
    let mut messages = server
        .api
        .history(token, conversation, "limit=256")
        .await
        .expect("history")
        .messages;
    messages.sort_by_key(|message| message.seq);
    messages
        .iter()
        .filter_map(|message| message.event.as_ref())
        .map(|event| event["action"].as_str().unwrap_or("?").to_owned())
        .collect()
}

/// Sends `frame` (whose correlation id is `id`) on `socket` and returns
/// the `retry_after_ms` of the `rate_limited` error answering it.
async fn refused_with_wait(socket: &mut Connection, frame: ClientFrame, id: &str) -> u64 {
    socket.send_frame(&frame).await.expect("send");
    loop {
        match socket.next_frame(PROMPTLY).await.expect("frame") {
            ServerFrame::Error {
                id: Some(answered),
                code,
                retry_after_ms,
                ..
            } if answered == id => {
                assert_eq!(code, ErrorCode::RateLimited, "{id}");
                return retry_after_ms.expect("a retry-after");
            }
            ServerFrame::Ok { id: Some(answered) } if answered == id => {
                panic!("{id} was accepted past the burst")
            }
            _ => {}
        }
    }
}

/// A server whose settings budget per account is a burst of BURST, refilled
/// at one a second.
async fn budgeted_server() -> TestServer {
    TestServer::start_with(|config| {
        config.limits.settings_changes_per_sec_per_account = 1;
        config.limits.settings_change_burst_per_account = BURST;
        config.store.fsync = missive_server::config::FsyncMode::Off;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settings_changes_share_one_budget_per_account() {
    // Goal: alice's settings changes over the WebSocket, /v1/frames and
    // REST spend one budget (creating the group spends none of it); past
    // it, a timer change on the socket is refused with rate_limited and
    // retry_after_ms, a rename over REST with 429 and Retry-After, a
    // rename over /v1/frames and turning encryption on likewise, and none
    // of them stores an event; bob, an admin of the same group, still
    // changes its settings; carol and alice still leave it.
    // Method: bursts of 3 at one a second; what members see is read from
    // history, whose system events are every change that was stored.
    let server = budgeted_server().await;
    let alice = server.user("alice").await;
    let alice_laptop = server.device("alice").await;
    let bob = server.user("bob").await;
    let carol = server.user("carol").await;
    let group = server.group(&alice, "trip", &["bob", "carol"]).await;

    let (mut socket, before) = the_burst(&server, [&alice, &alice_laptop, &carol], group).await;
    past_it_on_every_transport(&server, &mut socket, [&alice, &alice_laptop], group).await;
    let after = nothing_of_it_stored(&server, &carol, group, &before).await;
    others_change_and_anyone_leaves(&server, &mut socket, [&bob, &carol], group, &after).await;
}

/// The burst: one change per transport, from two of alice's devices.
/// Returns alice's socket and the group as carol saw it before the
/// burst's last change.
async fn the_burst(
    server: &TestServer,
    [alice, alice_laptop, carol]: [&str; 3],
    group: i64,
) -> (Connection, GroupInfo) {
    // The burst: one change per transport, from two of alice's devices;
    // the last one just before the refusals, which must come within the
    // second its token takes to return.
    server
        .api
        .promote(alice, group, "bob")
        .await
        .expect("promote over REST");
    let mut socket = server.connect(alice).await;
    socket
        .call(|id| ClientFrame::SetTimer {
            id,
            conversation: group,
            secs: 3_600,
        })
        .await
        .expect("timer on the socket");
    let before = server.api.group(carol, group).await.expect("group");
    let timer_frame = ClientFrame::SetTimer {
        id: Some("t2".into()),
        conversation: group,
        secs: 86_400,
    };
    server
        .api
        .frame(alice_laptop, &timer_frame)
        .await
        .expect("timer over /v1/frames");
    (socket, before)
}

/// Past it, on every transport.
async fn past_it_on_every_transport(
    server: &TestServer,
    socket: &mut Connection,
    [alice, alice_laptop]: [&str; 2],
    group: i64,
) {
    let wait = refused_with_wait(
        socket,
        ClientFrame::SetTimer {
            id: Some("t3".into()),
            conversation: group,
            secs: 0,
        },
        "t3",
    )
    .await;
    assert!((1..=1_000).contains(&wait), "{wait} ms for a token at 1/s");
    let refused = reqwest::Client::new()
        .patch(format!("{}/v1/groups/{group}", server.url()))
        .bearer_auth(alice_laptop)
        .json(&serde_json::json!({ "name": "flood" }))
        .send()
        .await
        .expect("rename");
    assert_eq!(refused.status(), 429);
    assert_eq!(refused.headers()["retry-after"], "1");
    let body: serde_json::Value = refused.json().await.expect("json");
    assert_eq!(body["error"]["code"], "rate_limited", "{body}");
    let rename_frame = ClientFrame::GroupRename {
        id: Some("r1".into()),
        conversation: group,
        name: "flood".into(),
    };
    assert_eq!(
        refused_code(server.api.frame(alice, &rename_frame).await),
        "rate_limited"
    );
    assert_eq!(
        refused_code(server.api.encrypt_conversation(alice, group).await),
        "rate_limited"
    );
    assert_eq!(
        refused_code(server.api.add_members(alice, group, &["bob"]).await),
        "rate_limited",
        "the limit comes before the store's own refusals"
    );
}

/// Nothing of it stored: only the burst's last event, the same name, no
/// encryption, the burst's timer. Returns the group as it is.
async fn nothing_of_it_stored(
    server: &TestServer,
    carol: &str,
    group: i64,
    before: &GroupInfo,
) -> GroupInfo {
    // Nothing of it stored: only the burst's last event, the same name,
    // no encryption, the burst's timer.
    let after = server.api.group(carol, group).await.expect("group");
    assert_eq!(after.last_seq, before.last_seq + 1);
    assert_eq!(after.members, before.members);
    assert_eq!(after.name, "trip");
    assert!(!after.encrypted);
    assert_eq!(after.disappear_secs, 86_400);
    assert_eq!(
        system_actions(server, carol, group).await,
        ["created", "promoted", "timer", "timer"]
    );
    after
}

/// bob's budget is his own; carol and alice (her budget spent) leave.
async fn others_change_and_anyone_leaves(
    server: &TestServer,
    socket: &mut Connection,
    [bob, carol]: [&str; 2],
    group: i64,
    after: &GroupInfo,
) {
    // Another account's budget is its own, in the same group.
    let renamed = server
        .api
        .rename_group(bob, group, "trip 2027")
        .await
        .expect("bob renames");
    assert_eq!(renamed.name, "trip 2027");
    assert_eq!(renamed.last_seq, after.last_seq + 1);

    // Leaving is never limited: carol, then alice with her budget spent.
    server
        .api
        .leave_group(carol, group)
        .await
        .expect("carol leaves");
    socket
        .call(|id| ClientFrame::GroupLeave {
            id,
            conversation: group,
        })
        .await
        .expect("alice leaves with her budget spent");
    assert_eq!(
        system_actions(server, bob, group).await,
        [
            "created", "promoted", "timer", "timer", "renamed", "left", "left"
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_see_no_event_of_a_refused_change() {
    // Goal: the refused changes never reach a member's device: after the
    // burst of timer changes in a 1:1, bob's socket receives the burst's
    // events and nothing more, and a 1:1 counts against the same budget
    // as a group. A rate of 0 would turn the limit off; the default
    // (30 in a burst) is not what this test checks.
    let server = budgeted_server().await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let mut alice_socket = server.connect(&alice).await;
    let sent = alice_socket
        .send_text("bob", "hello", "hello")
        .await
        .expect("a text makes the 1:1");
    let ServerFrame::Sent { conversation, .. } = sent else {
        panic!("expected sent, got {sent:?}");
    };
    let mut accepted = 0;
    let mut refused = 0;
    for secs in [3_600, 86_400, 604_800, 0, 3_600] {
        match server.api.set_timer(&alice, conversation, secs).await {
            Ok(()) => accepted += 1,
            Err(err) => {
                assert_eq!(err.code(), Some(ErrorCode::RateLimited), "{err}");
                refused += 1;
            }
        }
    }
    assert_eq!((accepted, refused), (BURST, 2));

    let mut bob_socket = server.connect(&bob).await;
    let frames = queued(&mut bob_socket, 1 + BURST as usize).await;
    let timers: Vec<_> = frames
        .iter()
        .filter_map(|frame| match frame {
            ServerFrame::Message {
                event: Some(event), ..
            } => event["secs"].as_u64(),
            _ => None,
        })
        .collect();
    assert_eq!(timers, [3_600, 86_400, 604_800]);
    ack_received(&mut bob_socket, &frames).await;
    assert_nothing_queued(&mut bob_socket).await;
    let conversations = server.api.conversations(&bob).await.expect("list");
    assert_eq!(conversations.conversations[0].disappear_secs, 604_800);
}
