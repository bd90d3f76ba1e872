mod common;

// Contacts, blocking, typing and presence (with WhatsApp's reciprocal
// privacy rules) over real REST and WebSocket connections.

use std::collections::{BTreeMap, BTreeSet};

use common::*;
use missive_client::{Api, Connection};
use missive_core::{Clock, DeviceId};
use missive_proto::rest::PresenceVisibility;
use missive_proto::{ClientFrame, ServerFrame, TypingState};

fn conversation_of(frame: &ServerFrame) -> i64 {
    match frame {
        ServerFrame::Sent { conversation, .. } => *conversation,
        other => panic!("expected sent, got {other:?}"),
    }
}

/// The device id of the device whose token this is.
async fn device_id(server: &TestServer, token: &str) -> i64 {
    server
        .devices(token)
        .await
        .iter()
        .find(|device| device.current)
        .expect("the current device")
        .device_id
}

/// Events above the device's positions (what would be sent to it).
async fn waiting(server: &TestServer, device: i64) -> u64 {
    server
        .app
        .state()
        .store
        .waiting(DeviceId(device))
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contacts_are_added_listed_sorted_and_removed() {
    // Goal: the contact list is per owner, sorted by username, idempotent,
    // and refuses unknown users without changing anything.
    // Method: alice adds users out of order (one twice), lists, removes,
    // and tries unknown and malformed names; bob's list stays his own.
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    server.user("carol").await;
    server.user("dave").await;
    let api = &server.api;

    assert!(api.contacts(&alice).await.unwrap().users.is_empty());
    for name in ["dave", "bob", "carol", "bob"] {
        api.add_contact(&alice, name).await.unwrap();
    }
    assert_eq!(
        api.contacts(&alice).await.unwrap().users,
        ["bob", "carol", "dave"]
    );
    // Contacts are one-sided.
    assert!(api.contacts(&bob).await.unwrap().users.is_empty());

    assert_eq!(
        refused_code(api.add_contact(&alice, "zed").await),
        "unknown_user"
    );
    assert_eq!(
        refused_code(api.add_contact(&alice, "Not A Name!").await),
        "unknown_user"
    );
    assert_eq!(
        refused_code(api.remove_contact(&alice, "zed").await),
        "unknown_user"
    );

    api.remove_contact(&alice, "carol").await.unwrap();
    // Removing someone who is not a contact is not an error.
    api.remove_contact(&alice, "carol").await.unwrap();
    assert_eq!(api.contacts(&alice).await.unwrap().users, ["bob", "dave"]);

    assert_eq!(
        refused_code(api.contacts("not-a-token").await),
        "token_invalid"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocking_refuses_one_to_one_sends_both_ways_until_unblocked() {
    // Goal: once bob blocks alice, neither can send in their 1:1 (`blocked`),
    // nothing is stored or sent, the block list shows it; unblocking makes
    // sends work again with no seq gap; blocking oneself is invalid_field.
    // Method: a first message establishes the conversation; refused sends
    // are checked by what waits for bob in the store and by ping round trips on
    // the recipients' live connections; a refused client_msg_id is reused
    // after the unblock and must not be a duplicate.
    let server = TestServer::start().await;
    let alice_token = server.user("alice").await;
    let bob_token = server.user("bob").await;
    let bob_device = device_id(&server, &bob_token).await;
    let mut alice = server.connect(&alice_token).await;
    let mut bob = server.connect(&bob_token).await;
    let api = &server.api;

    let conversation = conversation_of(&alice.send_text("bob", "m1", "before").await.unwrap());
    let first = queued(&mut bob, 1).await;
    assert_eq!(texts(&first), ["before"]);
    ack_received(&mut bob, &first).await;
    assert_eq!(waiting(&server, bob_device).await, 0);
    let receipt = queued(&mut alice, 1).await;
    assert!(
        matches!(&receipt[0], ServerFrame::Delivered { by, seq: 1, .. } if by == "bob"),
        "{receipt:?}"
    );

    api.block(&bob_token, "alice").await.unwrap();
    // Blocking twice is harmless.
    api.block(&bob_token, "alice").await.unwrap();
    assert_eq!(api.blocks(&bob_token).await.unwrap().users, ["alice"]);
    assert!(api.blocks(&alice_token).await.unwrap().users.is_empty());

    // The blocked user cannot send, by username or by conversation id.
    assert_eq!(
        refused_code(alice.send_text("bob", "m2", "blocked?").await),
        "blocked"
    );
    assert_eq!(
        refused_code(alice.send_to(conversation, "m3", "blocked?", None).await),
        "blocked"
    );
    assert_eq!(waiting(&server, bob_device).await, 0);
    assert_nothing_queued(&mut bob).await;
    // Nor can the blocker.
    assert_eq!(
        refused_code(bob.send_text("alice", "b1", "hello?").await),
        "blocked"
    );
    assert_nothing_queued(&mut alice).await;
    // A device connecting later finds nothing either.
    bob.close().await;
    let mut bob = server.connect(&bob_token).await;
    assert_nothing_queued(&mut bob).await;

    assert_eq!(
        refused_code(api.block(&bob_token, "bob").await),
        "invalid_field"
    );
    assert_eq!(
        refused_code(api.block(&bob_token, "zed").await),
        "unknown_user"
    );
    assert_eq!(api.blocks(&bob_token).await.unwrap().users, ["alice"]);

    api.unblock(&bob_token, "alice").await.unwrap();
    assert!(api.blocks(&bob_token).await.unwrap().users.is_empty());
    let again = alice.send_text("bob", "m2", "after").await.unwrap();
    assert!(
        matches!(&again, ServerFrame::Sent { seq: 2, duplicate: false, conversation: c, .. } if *c == conversation),
        "the refused sends stored nothing: {again:?}"
    );
    let arrived = queued(&mut bob, 1).await;
    assert_eq!(texts(&arrived), ["after"]);
    assert_eq!(seqs(&arrived), [2]);
    bob.send_text("alice", "b1", "welcome back").await.unwrap();
    assert_eq!(texts(&queued(&mut alice, 1).await), ["welcome back"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typing_reaches_live_members_only_and_is_never_stored() {
    // Goal: `typing` is answered with `ok` and relayed as a `typing` frame to
    // the other member's live devices only: not to the sender's devices, not
    // to a device that connects later (never stored or queued). Non-members
    // are refused; a burst beyond the budget is rate_limited.
    // Method: a first message gives the conversation id; bob's second
    // device exists (logged in) but is offline while alice types; absence is
    // proven with ping round trips.
    let server = TestServer::start().await;
    let alice_token = server.user("alice").await;
    let alice_laptop_token = server.device("alice").await;
    let bob_token = server.user("bob").await;
    let carol_token = server.user("carol").await;
    let mut alice = server.connect(&alice_token).await;
    let mut bob = server.connect(&bob_token).await;

    let conversation = conversation_of(&alice.send_text("bob", "m1", "hi").await.unwrap());
    let first = queued(&mut bob, 1).await;
    ack_received(&mut bob, &first).await;
    let bob_tablet_token = server.device("bob").await;
    let mut alice_laptop = server.connect(&alice_laptop_token).await;

    typing_reaches_the_other_member_only(
        &server,
        [&mut alice, &mut alice_laptop, &mut bob],
        conversation,
    )
    .await;
    let _bob_tablet = a_device_offline_meanwhile_gets_nothing(&server, &bob_tablet_token).await;
    let _carol = non_members_are_refused(&server, &carol_token, &mut bob, conversation).await;
    a_burst_runs_into_the_limit(&server, &alice_laptop_token, &mut bob, conversation).await;
}

/// alice types: bob is told start and stop; alice's own devices are not.
async fn typing_reaches_the_other_member_only(
    server: &TestServer,
    [alice, alice_laptop, bob]: [&mut Connection; 3],
    conversation: i64,
) {
    alice
        .typing(conversation, TypingState::Start)
        .await
        .unwrap();
    let now = server.clock.now_ms();
    match next_ephemeral(bob).await {
        ServerFrame::Typing {
            conversation: got,
            from,
            state,
            expires_ms,
        } => {
            assert_eq!(
                (got, from.as_str(), state),
                (conversation, "alice", TypingState::Start)
            );
            assert!(expires_ms > now, "expires_ms {expires_ms} not after {now}");
        }
        other => panic!("expected typing, got {other:?}"),
    }
    alice.typing(conversation, TypingState::Stop).await.unwrap();
    assert!(
        matches!(
            next_ephemeral(bob).await,
            ServerFrame::Typing { state: TypingState::Stop, ref from, .. } if from == "alice"
        ),
        "expected typing stop"
    );
    assert_no_ephemeral(bob).await;
    // The typist's own devices are not told.
    assert_no_ephemeral(alice).await;
    assert_no_ephemeral(alice_laptop).await;
}

/// Bob's tablet existed but was offline: it gets neither a typing frame
/// nor the message sent before it existed. Returns its connection.
async fn a_device_offline_meanwhile_gets_nothing(
    server: &TestServer,
    bob_tablet_token: &str,
) -> Connection {
    let mut bob_tablet = server.connect(bob_tablet_token).await;
    assert_no_ephemeral(&mut bob_tablet).await;
    assert_nothing_queued(&mut bob_tablet).await;
    bob_tablet
}

/// carol is in no such conversation; bob is told nothing. Returns her
/// connection.
async fn non_members_are_refused(
    server: &TestServer,
    carol_token: &str,
    bob: &mut Connection,
    conversation: i64,
) -> Connection {
    let mut carol = server.connect(carol_token).await;
    assert_eq!(
        refused_code(carol.typing(conversation, TypingState::Start).await),
        "unknown_conversation"
    );
    assert_eq!(
        refused_code(carol.typing(999_999, TypingState::Start).await),
        "unknown_conversation"
    );
    assert_no_ephemeral(bob).await;
    carol
}

async fn a_burst_runs_into_the_limit(
    server: &TestServer,
    alice_laptop_token: &str,
    bob: &mut Connection,
    conversation: i64,
) {
    // A burst: the budget is 10 frames (refilled one per 500 ms), so 20
    // pipelined frames from a fresh connection must run into the limit.
    let mut burst = server.connect(alice_laptop_token).await;
    const BURST: usize = 20;
    for i in 0..BURST {
        burst
            .send_frame(&ClientFrame::Typing {
                id: Some(format!("burst{i}")),
                conversation,
                state: TypingState::Start,
            })
            .await
            .unwrap();
    }
    let mut replies = BTreeMap::new();
    while replies.len() < BURST {
        match burst.next_frame(PROMPTLY).await.unwrap() {
            ServerFrame::Ok { id: Some(id) } => {
                replies.insert(id, None);
            }
            ServerFrame::Error {
                id: Some(id), code, ..
            } => {
                replies.insert(id, Some(code.as_str()));
            }
            _ => {}
        }
    }
    let refused: Vec<_> = replies.values().flatten().collect();
    assert!(
        !refused.is_empty(),
        "20 rapid typing frames were all accepted"
    );
    assert!(
        refused.iter().all(|code| **code == "rate_limited"),
        "{refused:?}"
    );
    let accepted = BURST - refused.len();
    assert!(
        accepted >= 10,
        "only {accepted} of a fresh budget of 10 accepted"
    );
    for i in 0..10 {
        assert_eq!(
            replies[&format!("burst{i}")],
            None,
            "frame {i} of the budget refused"
        );
    }
    // Refused frames are not relayed: bob sees exactly the accepted ones.
    for _ in 0..accepted {
        assert!(matches!(
            next_ephemeral(bob).await,
            ServerFrame::Typing { .. }
        ));
    }
    assert_no_ephemeral(bob).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocking_hides_typing_and_presence_both_ways() {
    // Goal: after bob blocks alice, neither sees the other's typing or
    // presence; the block and the unblock are announced to a live watcher.
    // Method: bob watches alice's presence (both on the default
    // `everyone`); bob blocks alice; typing in both directions is checked
    // with ping round trips; then unblock restores both.
    let server = TestServer::start().await;
    let alice_token = server.user("alice").await;
    let bob_token = server.user("bob").await;
    let mut alice = server.connect(&alice_token).await;
    let mut bob = server.connect(&bob_token).await;
    let conversation = conversation_of(&alice.send_text("bob", "m1", "hi").await.unwrap());

    let now = bob.subscribe_presence(&["alice"]).await.unwrap();
    assert_eq!(presence_of(&now[0]), ("alice".into(), true, None));

    server.api.block(&bob_token, "alice").await.unwrap();
    assert_eq!(
        presence_of(&next_ephemeral(&mut bob).await),
        ("alice".into(), false, None),
        "the block hides alice at once"
    );
    let now = bob.subscribe_presence(&["alice"]).await.unwrap();
    assert_eq!(presence_of(&now[0]), ("alice".into(), false, None));
    let now = alice.subscribe_presence(&["bob"]).await.unwrap();
    assert_eq!(
        presence_of(&now[0]),
        ("bob".into(), false, None),
        "the blocker is hidden from the blocked user too"
    );

    // Typing is accepted but relayed to nobody, either way.
    alice
        .typing(conversation, TypingState::Start)
        .await
        .unwrap();
    bob.typing(conversation, TypingState::Start).await.unwrap();
    assert_no_ephemeral(&mut bob).await;
    assert_no_ephemeral(&mut alice).await;

    server.api.unblock(&bob_token, "alice").await.unwrap();
    assert_eq!(
        presence_of(&next_ephemeral(&mut bob).await),
        ("alice".into(), true, None)
    );
    assert_eq!(
        presence_of(&next_ephemeral(&mut alice).await),
        ("bob".into(), true, None)
    );
    alice
        .typing(conversation, TypingState::Start)
        .await
        .unwrap();
    assert!(matches!(
        next_ephemeral(&mut bob).await,
        ServerFrame::Typing { ref from, .. } if from == "alice"
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_privacy_matrix() {
    // Goal: `subscribe_presence` shows a target's online state and last seen
    // exactly when the privacy rules allow: the target's setting admits the
    // viewer (everyone / contacts with the viewer in the target's contacts /
    // nobody), reciprocally the viewer's own setting admits the target, and
    // neither blocked the other. Hidden means online false, no last_seen.
    // Method: seven targets leave once (an observer that may see them all
    // waits for each offline announcement, so last_seen is recorded); then
    // privacy, contacts and blocks are configured; three viewers subscribe
    // while the targets are offline (last_seen visible or not) and again
    // after they connect (online visible or not).
    let server = TestServer::start().await;
    let mut tokens = BTreeMap::new();
    for name in ["viewer", "shy", "picky", "obs"].iter().chain(&TARGETS) {
        tokens.insert(*name, server.user(name).await);
    }
    let left_at = the_targets_leave_once(&server, &tokens).await;
    privacy_contacts_and_blocks(&server.api, &tokens).await;
    let mut viewers = viewers_see_last_seen_as_allowed(&server, &tokens, left_at).await;
    let _online_targets = viewers_see_online_as_allowed(&server, &tokens, &mut viewers).await;
}

/// The targets of the presence matrix.
const TARGETS: [&str; 7] = [
    "t_all", "t_cont", "t_cont_x", "t_none", "t_pal", "t_blk", "t_blk2",
];

/// Per viewer, the targets it is shown.
const VISIBLE: [(&str, &[&str]); 3] = [
    // everyone→everyone; contacts with viewer as contact; t_pal is
    // everyone. Hidden: t_cont_x (viewer not its contact), t_none
    // (nobody), t_blk (blocked the viewer), t_blk2 (blocked by the viewer).
    ("viewer", &["t_all", "t_cont", "t_pal"]),
    // Reciprocal: a viewer on `nobody` sees no one.
    ("shy", &[]),
    // Reciprocal: a viewer on `contacts` sees only its contacts (who
    // admit it).
    ("picky", &["t_pal"]),
];

/// Each target connects and leaves once, watched by an observer that
/// waits for every offline announcement; returns when they left.
async fn the_targets_leave_once(server: &TestServer, tokens: &BTreeMap<&str, String>) -> i64 {
    let mut obs = server.connect(&tokens["obs"]).await;
    for frame in obs.subscribe_presence(&TARGETS).await.unwrap() {
        let (user, online, last_seen) = presence_of(&frame);
        assert_eq!((online, last_seen), (false, None), "{user} never connected");
    }
    server.clock.advance_ms(60_000);
    let left_at = server.clock.now_ms();
    for target in TARGETS {
        server.connect(&tokens[target]).await.close().await;
    }
    let mut pending: BTreeSet<&str> = TARGETS.into_iter().collect();
    while !pending.is_empty() {
        if let (user, false, Some(last_seen)) = presence_of(&next_ephemeral(&mut obs).await) {
            assert_eq!(last_seen, left_at, "{user}");
            pending.remove(user.as_str());
        }
    }
    obs.close().await;
    left_at
}

async fn privacy_contacts_and_blocks(api: &Api, tokens: &BTreeMap<&str, String>) {
    let set = |name: &'static str, presence: PresenceVisibility| {
        let token = tokens[name].clone();
        async move {
            let echoed = api.set_privacy(&token, presence).await.unwrap();
            assert_eq!(echoed.presence, presence);
        }
    };
    set("t_cont", PresenceVisibility::Contacts).await;
    api.add_contact(&tokens["t_cont"], "viewer").await.unwrap();
    // Only the target's contact list counts, not the viewer's.
    set("t_cont_x", PresenceVisibility::Contacts).await;
    api.add_contact(&tokens["viewer"], "t_cont_x")
        .await
        .unwrap();
    set("t_none", PresenceVisibility::Nobody).await;
    api.add_contact(&tokens["t_none"], "viewer").await.unwrap();
    set("shy", PresenceVisibility::Nobody).await;
    set("picky", PresenceVisibility::Contacts).await;
    api.add_contact(&tokens["picky"], "t_pal").await.unwrap();
    api.block(&tokens["t_blk"], "viewer").await.unwrap();
    api.block(&tokens["viewer"], "t_blk2").await.unwrap();
}

/// A viewer with the targets it is shown and its connection.
type Viewer = (&'static str, &'static [&'static str], Connection);

/// The viewers subscribe while the targets are offline: last seen shown
/// or not. Returns them, connected.
async fn viewers_see_last_seen_as_allowed(
    server: &TestServer,
    tokens: &BTreeMap<&str, String>,
    left_at: i64,
) -> Vec<Viewer> {
    let mut viewers = Vec::new();
    for (viewer, shown) in VISIBLE {
        let mut connection = server.connect(&tokens[viewer]).await;
        let frames = connection.subscribe_presence(&TARGETS).await.unwrap();
        assert_eq!(frames.len(), TARGETS.len());
        for frame in frames {
            let (user, online, last_seen) = presence_of(&frame);
            let expected = if shown.contains(&user.as_str()) {
                (false, Some(left_at))
            } else {
                (false, None)
            };
            assert_eq!(
                (online, last_seen),
                expected,
                "offline {user} as seen by {viewer}"
            );
        }
        viewers.push((viewer, shown, connection));
    }
    viewers
}

/// The targets connect and the viewers subscribe again: online shown or
/// not. Returns the targets' connections.
async fn viewers_see_online_as_allowed(
    server: &TestServer,
    tokens: &BTreeMap<&str, String>,
    viewers: &mut [Viewer],
) -> Vec<Connection> {
    let mut online_targets = Vec::new();
    for target in TARGETS {
        online_targets.push(server.connect(&tokens[target]).await);
    }
    for (viewer, shown, connection) in viewers {
        let frames = connection.subscribe_presence(&TARGETS).await.unwrap();
        assert_eq!(frames.len(), TARGETS.len());
        for frame in frames {
            let (user, online, last_seen) = presence_of(&frame);
            let expected = (shown.contains(&user.as_str()), None);
            assert_eq!(
                (online, last_seen),
                expected,
                "online {user} as seen by {viewer}"
            );
        }
    }
    online_targets
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_updates_are_pushed_to_subscribers() {
    // Goal: a subscriber is told when the target comes online, when a
    // privacy or contact change alters what it may see, and when the target
    // leaves (with last_seen = the time it left). A refused subscription
    // leaves the previous one in place.
    // Method: vic watches tom; each step waits (bounded) for the next
    // presence frame on vic's connection and checks it is the expected one.
    let server = TestServer::start().await;
    let tom_token = server.user("tom").await;
    let vic_token = server.user("vic").await;
    let api = &server.api;
    let mut vic = server.connect(&vic_token).await;

    let now = vic.subscribe_presence(&["tom"]).await.unwrap();
    assert_eq!(now.len(), 1);
    assert_eq!(presence_of(&now[0]), ("tom".into(), false, None));

    // Refused subscriptions change nothing.
    assert_eq!(
        refused_code(vic.subscribe_presence(&["tom", "ghost"]).await),
        "unknown_user"
    );
    let too_many: Vec<String> = (0..257).map(|i| format!("user{i}")).collect();
    let too_many: Vec<&str> = too_many.iter().map(String::as_str).collect();
    assert_eq!(
        refused_code(vic.subscribe_presence(&too_many).await),
        "invalid_field"
    );

    let tom = server.connect(&tom_token).await;
    assert_eq!(
        presence_of(&next_ephemeral(&mut vic).await),
        ("tom".into(), true, None)
    );

    api.set_privacy(&tom_token, PresenceVisibility::Nobody)
        .await
        .unwrap();
    assert_eq!(
        presence_of(&next_ephemeral(&mut vic).await),
        ("tom".into(), false, None)
    );
    // Still hidden from vic: nothing he may see changed, so no frame.
    api.set_privacy(&tom_token, PresenceVisibility::Contacts)
        .await
        .unwrap();
    assert_no_ephemeral(&mut vic).await;
    api.add_contact(&tom_token, "vic").await.unwrap();
    assert_eq!(
        presence_of(&next_ephemeral(&mut vic).await),
        ("tom".into(), true, None)
    );

    server.clock.advance_ms(5_000);
    let left_at = server.clock.now_ms();
    tom.close().await;
    assert_eq!(
        presence_of(&next_ephemeral(&mut vic).await),
        ("tom".into(), false, Some(left_at))
    );
    assert_no_ephemeral(&mut vic).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changing_ones_own_privacy_updates_what_one_sees() {
    // Goal: the reciprocal rule applies live: when a watcher switches its
    // own presence setting to `nobody`, the targets it watches become hidden
    // to it at once (a `presence` frame with online false), and switching
    // back shows them again.
    // Method: vic watches tom (both `everyone`, tom online); vic changes its
    // own setting over REST and waits (bounded) for tom's presence frame.
    let server = TestServer::start().await;
    let tom_token = server.user("tom").await;
    let vic_token = server.user("vic").await;
    let _tom = server.connect(&tom_token).await;
    let mut vic = server.connect(&vic_token).await;
    let now = vic.subscribe_presence(&["tom"]).await.unwrap();
    assert_eq!(presence_of(&now[0]), ("tom".into(), true, None));

    server
        .api
        .set_privacy(&vic_token, PresenceVisibility::Nobody)
        .await
        .unwrap();
    assert_eq!(
        presence_of(&next_ephemeral(&mut vic).await),
        ("tom".into(), false, None),
        "vic hid himself, so tom must be hidden from vic"
    );
    server
        .api
        .set_privacy(&vic_token, PresenceVisibility::Everyone)
        .await
        .unwrap();
    assert_eq!(
        presence_of(&next_ephemeral(&mut vic).await),
        ("tom".into(), true, None)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_presence_subscription_belongs_to_its_connection() {
    // Goal: `subscribe_presence` replaces the subscription "of this
    // connection": a new connection of the same device (which replaces the
    // old one) starts with no subscription and is told nothing until it
    // subscribes itself.
    // Method: vic's phone subscribes to tom, then the phone connects again
    // (the first connection is closed with `replaced`); tom changes his
    // privacy, which announces his presence to every watcher before the
    // REST call returns; ping round trips prove nothing reached the new
    // connection. Then the new connection subscribes and is told.
    let server = TestServer::start().await;
    let tom_token = server.user("tom").await;
    let vic_token = server.user("vic").await;
    let _tom = server.connect(&tom_token).await;
    let mut first = server.connect(&vic_token).await;
    let now = first.subscribe_presence(&["tom"]).await.unwrap();
    assert_eq!(presence_of(&now[0]), ("tom".into(), true, None));

    let mut second = server.connect(&vic_token).await;
    let closed = loop {
        match first.next_frame(PROMPTLY).await {
            Ok(_) => continue,
            Err(err) => break err,
        }
    };
    assert!(
        matches!(
            &closed,
            missive_client::ClientError::Closed { code: 4004, .. }
        ),
        "{closed:?}"
    );
    server
        .api
        .set_privacy(&tom_token, PresenceVisibility::Nobody)
        .await
        .unwrap();
    assert_no_ephemeral(&mut second).await;

    let now = second.subscribe_presence(&["tom"]).await.unwrap();
    assert_eq!(presence_of(&now[0]), ("tom".into(), false, None));
    server
        .api
        .set_privacy(&tom_token, PresenceVisibility::Everyone)
        .await
        .unwrap();
    assert_eq!(
        presence_of(&next_ephemeral(&mut second).await),
        ("tom".into(), true, None)
    );
}
