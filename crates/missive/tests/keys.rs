//! End-to-end encryption keys over REST (issue 22, the key directory) and
//! to-device messages over WebSocket and long-poll:
//! uploads checked for form, identity keys fixed per device, one-time keys
//! claimed once each under concurrent claims, blocks and revocations
//! respected, claims rate-limited; every refusal typed and changing
//! nothing.

mod common;

use common::*;
use missive_client::{Api, Connection};
use missive_proto::rest::{IdentityKeysBody, KeyUploadRequest};
use missive_proto::{ClientFrame, ServerFrame};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_are_published_claimed_once_and_gone_with_their_device() {
    // Goal: a device publishes identity keys and one-time keys; others
    // read the identity keys and claim one-time keys, none handed out
    // twice when ten claims race for five keys; other identity keys for
    // the same device, malformed keys and oversized uploads are refused
    // with their codes and store nothing; a block stops claims both ways;
    // a revoked device's keys are gone; claims past the budget are
    // rate-limited; a connected device is told when claims leave it few
    // keys.
    let server = TestServer::start_with(|config| {
        config.limits.key_claims_per_sec_per_account = 1;
        config.limits.key_claim_burst_per_account = 14;
    })
    .await;
    let api = &server.api;
    let alice = server.user("alice").await;
    let alice_other = server.device("alice").await;
    let bob = server.user("bob").await;
    let carol = server.user("carol").await;

    malformed_uploads_store_nothing(api, &alice, &bob).await;
    uploads_are_retried_checked_and_bounded(api, &alice).await;
    let published = only_the_publishing_device_is_listed(api, &bob).await;
    ten_claims_race_for_five_keys(&server, &bob, &carol).await;
    blocks_stop_claims_both_ways(api, &bob, &carol).await;
    a_revoked_devices_keys_go_with_it(api, &alice_other, &bob, published).await;
    claims_past_the_budget_are_refused(api, &bob).await;
}

/// Refusals first: nothing is stored by any of them.
async fn malformed_uploads_store_nothing(api: &Api, alice: &str, bob: &str) {
    let no_identity = top_up("a", 1);
    assert_eq!(
        refused_code(api.upload_keys(alice, &no_identity).await),
        "invalid_field"
    );
    let mut short = one_time_keys("a", 1);
    short[0].key.pop();
    let malformed = [
        KeyUploadRequest {
            identity: Some(IdentityKeysBody {
                curve25519: "not base64!".into(),
                ed25519: public_key("e"),
            }),
            one_time_keys: Vec::new(),
        },
        KeyUploadRequest {
            identity: Some(identity("a")),
            one_time_keys: short,
        },
        KeyUploadRequest {
            identity: Some(identity("a")),
            one_time_keys: one_time_keys("a", 101),
        },
        KeyUploadRequest {
            identity: Some(identity("a")),
            one_time_keys: [one_time_keys("a", 1), one_time_keys("a", 1)].concat(),
        },
    ];
    for upload in &malformed {
        assert_eq!(
            refused_code(api.upload_keys(alice, upload).await),
            "invalid_field"
        );
    }
    assert_eq!(api.key_count(alice).await.unwrap().one_time_keys, 0);
    assert!(
        api.user_keys(bob, "alice")
            .await
            .unwrap()
            .devices
            .is_empty()
    );
}

/// alice's device publishes keys: a retried upload adds nothing, other
/// identity keys are refused, and a device holds at most 200 one-time keys.
async fn uploads_are_retried_checked_and_bounded(api: &Api, alice: &str) {
    let first = KeyUploadRequest {
        identity: Some(identity("a")),
        one_time_keys: one_time_keys("a", 5),
    };
    assert_eq!(
        api.upload_keys(alice, &first).await.unwrap().one_time_keys,
        5
    );
    // A retried upload adds nothing; other identity keys are refused.
    assert_eq!(
        api.upload_keys(alice, &first).await.unwrap().one_time_keys,
        5
    );
    let other_identity = KeyUploadRequest {
        identity: Some(identity("x")),
        one_time_keys: one_time_keys("b", 1),
    };
    assert_eq!(
        refused_code(api.upload_keys(alice, &other_identity).await),
        "identity_key_mismatch"
    );
    assert_eq!(api.key_count(alice).await.unwrap().one_time_keys, 5);
    // Past the 200 a device may hold: limit_exceeded, nothing added.
    let more = top_up("m", 100);
    assert_eq!(
        api.upload_keys(alice, &more).await.unwrap().one_time_keys,
        105
    );
    let too_many = top_up("z", 96);
    assert_eq!(
        refused_code(api.upload_keys(alice, &too_many).await),
        "limit_exceeded"
    );
    assert_eq!(api.key_count(alice).await.unwrap().one_time_keys, 105);
}

/// Only the device that published keys is listed; returns its id.
async fn only_the_publishing_device_is_listed(api: &Api, bob: &str) -> i64 {
    let listed = api.user_keys(bob, "alice").await.unwrap();
    assert_eq!(listed.devices.len(), 1);
    assert_eq!(listed.devices[0].curve25519, identity("a").curve25519);
    assert_eq!(listed.devices[0].ed25519, identity("a").ed25519);
    listed.devices[0].device_id
}

/// Carol's device publishes five keys; ten claims race for them.
async fn ten_claims_race_for_five_keys(server: &TestServer, bob: &str, carol: &str) {
    let api = &server.api;
    let carol_keys = KeyUploadRequest {
        identity: Some(identity("c")),
        one_time_keys: one_time_keys("c", 5),
    };
    api.upload_keys(carol, &carol_keys).await.unwrap();
    // Carol's device is connected: each claim that leaves her fewer than
    // 20 keys tells it how many are left.
    let mut carol_live = server.connect(carol).await;
    let claims = (0..10).map(|_| {
        let api = api.clone();
        let bob = bob.to_owned();
        tokio::spawn(async move { api.claim_keys(&bob, "carol").await })
    });
    let mut handed_out = Vec::new();
    for claim in claims {
        let claim = claim.await.unwrap().unwrap();
        assert_eq!(claim.devices.len(), 1);
        handed_out.extend(claim.devices[0].one_time_key.clone().map(|key| key.key_id));
    }
    handed_out.sort();
    let count = handed_out.len();
    handed_out.dedup();
    assert_eq!(
        (count, handed_out.len()),
        (5, 5),
        "each key once, all of them"
    );
    assert_eq!(api.key_count(carol).await.unwrap().one_time_keys, 0);
    let mut told = Vec::new();
    while told.len() < 5 {
        if let ServerFrame::KeysLow { one_time_keys } =
            carol_live.next_frame(PROMPTLY).await.expect("frame")
        {
            told.push(one_time_keys);
        }
    }
    told.sort_unstable();
    assert_eq!(told, [0, 1, 2, 3, 4]);
    assert_no_ephemeral(&mut carol_live).await;
}

/// Blocked either way: no claim.
async fn blocks_stop_claims_both_ways(api: &Api, bob: &str, carol: &str) {
    api.block(carol, "bob").await.unwrap();
    assert_eq!(refused_code(api.claim_keys(bob, "carol").await), "blocked");
    assert_eq!(refused_code(api.claim_keys(carol, "bob").await), "blocked");
    assert_eq!(
        refused_code(api.claim_keys(bob, "nobody").await),
        "unknown_user"
    );
}

/// A revoked device's keys go with it.
async fn a_revoked_devices_keys_go_with_it(
    api: &Api,
    alice_other: &str,
    bob: &str,
    published: i64,
) {
    let devices = api.devices(alice_other).await.unwrap();
    assert!(
        devices
            .devices
            .iter()
            .any(|device| device.device_id == published)
    );
    api.revoke(alice_other, published).await.unwrap();
    assert!(
        api.user_keys(bob, "alice")
            .await
            .unwrap()
            .devices
            .is_empty()
    );
    let claim = api.claim_keys(bob, "alice").await.unwrap();
    assert!(claim.devices.is_empty());
}

async fn claims_past_the_budget_are_refused(api: &Api, bob: &str) {
    // Bob has made 13 claims (refused ones count too: the budget is
    // checked first); a budget of 14 at 1/s runs out within a few more.
    let mut limited = false;
    for _ in 0..5 {
        match api.claim_keys(bob, "alice").await {
            Ok(_) => continue,
            Err(err) => {
                assert_eq!(refused_code(Err::<(), _>(err)), "rate_limited");
                limited = true;
                break;
            }
        }
    }
    assert!(limited, "claims past the budget are refused");
}

/// The `to_device` frames among `frames`, as (seq, from, body).
fn to_device_of(frames: &[ServerFrame]) -> Vec<(i64, String, String)> {
    frames
        .iter()
        .filter_map(|frame| match frame {
            ServerFrame::ToDevice {
                seq, from, body, ..
            } => Some((*seq, from.clone(), body.clone())),
            _ => None,
        })
        .collect()
}

/// Reads frames until `n` to-device messages came.
async fn to_device_frames(connection: &mut Connection, n: usize) -> Vec<(i64, String, String)> {
    let mut got = Vec::new();
    while got.len() < n {
        let frame = connection.next_frame(PROMPTLY).await.expect("frame");
        got.extend(to_device_of(std::slice::from_ref(&frame)));
    }
    got
}

/// Asserts that no to-device message arrives: everything before the
/// `pong` has been written, so this is no sleep.
async fn assert_no_to_device(connection: &mut Connection) {
    connection
        .send_frame(&ClientFrame::Ping {
            id: Some("quiet".into()),
        })
        .await
        .expect("ping");
    loop {
        match connection.next_frame(PROMPTLY).await.expect("frame") {
            ServerFrame::Pong { id } if id.as_deref() == Some("quiet") => return,
            frame @ ServerFrame::ToDevice { .. } => panic!("unexpected {frame:?}"),
            _ => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn to_device_messages_reach_their_device_until_it_acks_them() {
    // Goal: a `to_device` frame stores one message per named device (all
    // or none) and answers `ok`; a connected device gets its messages at
    // once, in order; unacked ones come again on its next connection, and
    // in every poll until acked (frame or poll field); a refused frame
    // (unknown device, another user's device, a blocked user, an empty or
    // oversized body) stores nothing; a revoked device's messages go.
    let server = TestServer::start().await;
    let api = &server.api;
    let alice = server.user("alice").await;
    let bob_ws = server.user("bob").await;
    let bob_poll = server.device("bob").await;
    let carol = server.user("carol").await;
    let devices = api.devices(&bob_ws).await.unwrap().devices;
    let (bob_ws_id, bob_poll_id) = (devices[0].device_id, devices[1].device_id);
    let carol_id = api.devices(&carol).await.unwrap().devices[0].device_id;

    let mut bob_live = server.connect(&bob_ws).await;
    let mut sender = server.connect(&alice).await;
    let bob_ids = [bob_ws_id, bob_poll_id];
    let live =
        a_connected_device_gets_its_messages_at_once(&mut sender, &mut bob_live, bob_ids).await;
    refusals_store_nothing(api, &carol, &mut sender, &mut bob_live, bob_ws_id, carol_id).await;
    let bob_live = unacked_messages_come_again_until_acked(&server, &bob_ws, bob_live, &live).await;
    the_polling_device_gets_them_until_acked(api, &bob_poll).await;
    a_revoked_devices_messages_go(api, &mut sender, &bob_ws, bob_poll_id).await;
    bob_live.close().await;
    sender.close().await;
}

/// alice sends three messages, two for bob's live device: it gets them at
/// once, in order. Returns them.
async fn a_connected_device_gets_its_messages_at_once(
    sender: &mut Connection,
    bob_live: &mut Connection,
    [bob_ws_id, bob_poll_id]: [i64; 2],
) -> Vec<(i64, String, String)> {
    let send = to_device;
    let reply = sender
        .request(
            &send(vec![
                share("bob", bob_ws_id, "room key 1"),
                share("bob", bob_poll_id, "room key 2"),
                share("bob", bob_ws_id, "room key 3"),
            ]),
            "td",
        )
        .await
        .unwrap();
    assert!(matches!(reply, ServerFrame::Ok { .. }), "{reply:?}");
    let live = to_device_frames(bob_live, 2).await;
    assert_eq!(
        live.iter()
            .map(|(_, from, body)| (from.as_str(), body.as_str()))
            .collect::<Vec<_>>(),
        [("alice", "room key 1"), ("alice", "room key 3")]
    );
    assert!(live[0].0 < live[1].0);
    live
}

/// Refusals store nothing.
async fn refusals_store_nothing(
    api: &Api,
    carol: &str,
    sender: &mut Connection,
    bob_live: &mut Connection,
    bob_ws_id: i64,
    carol_id: i64,
) {
    let send = to_device;
    let oversized = "x".repeat(65_537);
    for (messages, code) in [
        (
            vec![share("bob", bob_ws_id, "x"), share("bob", 987_654, "y")],
            "unknown_device",
        ),
        (vec![share("bob", carol_id, "x")], "unknown_device"),
        (vec![share("nobody", bob_ws_id, "x")], "unknown_user"),
        (vec![share("bob", bob_ws_id, "")], "invalid_field"),
        (vec![share("bob", bob_ws_id, &oversized)], "invalid_field"),
        (Vec::new(), "invalid_field"),
    ] {
        assert_eq!(
            refused_code(sender.request(&send(messages), "td").await),
            code
        );
    }
    api.block(carol, "alice").await.unwrap();
    assert_eq!(
        refused_code(
            sender
                .request(&send(vec![share("carol", carol_id, "x")]), "td")
                .await
        ),
        "blocked"
    );
    assert_no_to_device(bob_live).await;
}

/// Not acked: again on the next connection; acked: never again. Returns
/// the live device's last connection.
async fn unacked_messages_come_again_until_acked(
    server: &TestServer,
    bob_ws: &str,
    bob_live: Connection,
    live: &[(i64, String, String)],
) -> Connection {
    bob_live.close().await;
    let mut bob_live = server.connect(bob_ws).await;
    let again = to_device_frames(&mut bob_live, 2).await;
    assert_eq!(again, live);
    let acked = bob_live
        .request(
            &ClientFrame::ToDeviceAck {
                id: Some("ack".into()),
                up_to: live[1].0,
            },
            "ack",
        )
        .await
        .unwrap();
    assert!(matches!(acked, ServerFrame::Ok { .. }), "{acked:?}");
    bob_live.close().await;
    let mut bob_live = server.connect(bob_ws).await;
    assert_no_to_device(&mut bob_live).await;
    bob_live
}

/// The polling device: in every poll until acked through the poll.
async fn the_polling_device_gets_them_until_acked(api: &Api, bob_poll: &str) {
    let polled = to_device_of(&api.poll(bob_poll, &[], 0).await.unwrap().frames);
    assert_eq!(
        polled
            .iter()
            .map(|(_, _, body)| body.as_str())
            .collect::<Vec<_>>(),
        ["room key 2"]
    );
    assert_eq!(
        to_device_of(&api.poll(bob_poll, &[], 0).await.unwrap().frames),
        polled
    );
    let after_ack = api
        .poll_acking_to_device(bob_poll, &[], Some(polled[0].0), 0)
        .await
        .unwrap();
    assert!(to_device_of(&after_ack.frames).is_empty());
}

/// A revoked device's messages go with it.
async fn a_revoked_devices_messages_go(
    api: &Api,
    sender: &mut Connection,
    bob_ws: &str,
    bob_poll_id: i64,
) {
    let send = to_device;
    sender
        .request(&send(vec![share("bob", bob_poll_id, "room key 4")]), "td")
        .await
        .unwrap();
    api.revoke(bob_ws, bob_poll_id).await.unwrap();
    assert_eq!(
        refused_code(
            sender
                .request(&send(vec![share("bob", bob_poll_id, "x")]), "td")
                .await
        ),
        "unknown_device"
    );
}
