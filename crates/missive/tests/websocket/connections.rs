//! Devices and their sockets: the device limit, expiry, revocation,
//! replacement, renaming, shutdown and the slow reader.

use super::*;
use missive_client::Connection;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_at_the_device_limit_replaces_the_device_used_longest_ago() {
    // Goal: nobody is locked out by devices they can no longer reach: at
    // the limit a password login revokes the device used longest ago that
    // is not connected (its token dies, the response names it), and a
    // connected device used even longer ago is kept.
    let server = TestServer::start_with(|config| {
        config.limits.devices_per_account_max = 3;
    })
    .await;
    let phone = server.user("alice").await;
    let mut phone_conn = server.connect(&phone).await;
    server.clock.advance_ms(1_000);
    let laptop = server.api.login("alice", PASSWORD, "laptop").await.unwrap();
    server.clock.advance_ms(1_000);
    let tablet = server.device("alice").await;
    server.clock.advance_ms(1_000);
    // The tablet is used after the laptop was last seen.
    server.api.devices(&tablet).await.unwrap();
    let (laptop_id, laptop) = (laptop.device_id, laptop.token);
    let fresh = server.api.login("alice", PASSWORD, "new").await.unwrap();
    assert_eq!(fresh.replaced_device_id, Some(laptop_id));
    assert_eq!(
        refused_code(server.api.devices(&laptop).await),
        "token_invalid"
    );
    let left: Vec<i64> = server
        .devices(&fresh.token)
        .await
        .iter()
        .map(|device| device.device_id)
        .collect();
    assert_eq!(left.len(), 3);
    assert!(!left.contains(&laptop_id), "{left:?}");
    assert!(
        left.contains(&phone_conn.device_id),
        "the connected phone stays"
    );
    phone_conn
        .send_text("alice", "m1", "still here")
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devices_unused_past_the_expiry_are_revoked_and_used_ones_are_not() {
    // Goal: a device nobody has used for `device_idle_expiry_secs` is
    // revoked by the sweeper; use over HTTP or a live connection keeps a
    // device, however long the connection has been open.
    const DAY_MS: i64 = 24 * 3_600_000;
    let server = TestServer::start_with(|config| {
        config.limits.device_idle_expiry_secs = 30 * 24 * 3600;
    })
    .await;
    let connected = server.user("alice").await;
    let _connection = server.connect(&connected).await;
    let used = server.device("alice").await;
    let idle = server.device("alice").await;
    server.clock.advance_ms(20 * DAY_MS);
    server.api.devices(&used).await.unwrap();
    server.clock.advance_ms(15 * DAY_MS);
    server.app.sweep_now().await.unwrap();
    assert_eq!(
        refused_code(server.api.devices(&idle).await),
        "token_invalid"
    );
    server.api.devices(&used).await.unwrap();
    server.api.devices(&connected).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoking_a_device_closes_its_socket_and_kills_its_token() {
    // Goal: revoke closes the live connection at once with 4003 and the
    // token no longer authenticates (REST or WebSocket).
    let server = TestServer::start().await;
    let phone = server.user("alice").await;
    let laptop = server.device("alice").await;
    let mut laptop_conn = server.connect(&laptop).await;
    let laptop_id = laptop_conn.device_id;
    server.api.revoke(&phone, laptop_id).await.unwrap();
    let closed = loop {
        match laptop_conn.next_frame(PROMPTLY).await {
            Ok(_) => continue,
            Err(err) => break err,
        }
    };
    assert!(
        matches!(&closed, missive_client::ClientError::Closed { code: 4003, reason } if reason == "revoked"),
        "{closed:?}"
    );
    assert_eq!(
        refused_code(server.api.devices(&laptop).await),
        "token_invalid"
    );
    let again = Connection::connect(&server.api.ws_url(), &laptop).await;
    assert_eq!(refused_code(again.map(|_| ())), "token_invalid");
    // Revoking it twice, or someone else's device, is unknown_device.
    assert_eq!(
        refused_code(server.api.revoke(&phone, laptop_id).await),
        "unknown_device"
    );
    let bob = server.user("bob").await;
    let alice_devices = server.api.devices(&phone).await.unwrap();
    let phone_id = alice_devices.devices[0].device_id;
    assert_eq!(
        refused_code(server.api.revoke(&bob, phone_id).await),
        "unknown_device"
    );
    assert_eq!(server.devices(&phone).await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_connection_of_a_device_replaces_the_first() {
    // Goal: the older connection of the same device is closed with 4004.
    let server = TestServer::start().await;
    let token = server.user("alice").await;
    let mut first = server.connect(&token).await;
    let _second = server.connect(&token).await;
    let closed = first.next_frame(PROMPTLY).await.unwrap_err();
    assert!(
        matches!(
            &closed,
            missive_client::ClientError::Closed { code: 4004, .. }
        ),
        "{closed:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_closes_sockets_with_going_away() {
    // Goal: graceful shutdown sends 1001 to connected clients and finishes.
    let mut server = TestServer::start().await;
    let token = server.user("alice").await;
    let mut alice = server.connect(&token).await;
    server.shutdown.cancel();
    let closed = alice.next_frame(PROMPTLY).await.unwrap_err();
    assert!(
        matches!(
            &closed,
            missive_client::ClientError::Closed { code: 1001, .. }
        ),
        "{closed:?}"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_reader_is_disconnected_while_a_fast_one_keeps_going() {
    // Goal: a client that stops reading is closed once a write stalls past
    // the write timeout; a fast client meanwhile gets all its messages; the
    // slow client's messages all stay queued and arrive on reconnect.
    // Method: bob authenticates on a raw socket and does not read while
    // alice sends him ~20 MB, far beyond the loopback socket buffers; he
    // reads again as soon as the server counted him as a slow consumer
    // (watched from the start: on a loaded machine that can come before
    // alice is done), and finds the close frame (4008) after what was
    // already in flight.
    let server = TestServer::start_with(|config| {
        config.limits.write_timeout_ms = 1_500;
        config.limits.text_bytes_max = 200 * 1024;
        // A flood from one device is the point here, not its rate limit.
        config.limits.sends_per_sec_per_device = 0;
        config.limits.sends_per_sec_per_account = 0;
        config.store.fsync = missive_server::config::FsyncMode::Off;
    })
    .await;
    let alice_token = server.user("alice").await;
    let bob_token = server.user("bob").await;
    let carol_token = server.user("carol").await;
    let slow = bob_authenticates_on_a_raw_socket(&server, &bob_token).await;
    let mut carol = server.connect(&carol_token).await;
    let mut alice = server.connect(&alice_token).await;
    let bob_reads_once_counted = bob_reads_once_counted(server.url(), slow);
    alice_floods_bob_while_carol_reads(&mut alice, &mut carol).await;

    let (n_seen, close) = bob_reads_once_counted.await.unwrap();
    assert!(
        n_seen < N_BIG,
        "bob should have been cut off, yet read {n_seen}"
    );
    let close = close.expect("the stream ends with a close frame");
    assert_eq!(u16::from(close.code), 4008, "{close:?}");
    assert_eq!(close.reason.as_str(), "slow_consumer");
    carol_is_told_bob_went_offline(&mut carol).await;

    // Nothing was lost: all N_BIG wait for bob's next connection, in order.
    let mut bob = server.connect(&bob_token).await;
    let frames = queued(&mut bob, N_BIG).await;
    assert_eq!(seqs(&frames), (1..=N_BIG as i64).collect::<Vec<_>>());
}

/// A WebSocket without the client library, read only when the test says.
type RawSocket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// The big texts alice sends to bob.
const N_BIG: usize = 200;

/// bob authenticates on a raw socket and reads only the `ready`.
async fn bob_authenticates_on_a_raw_socket(server: &TestServer, bob_token: &str) -> RawSocket {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;

    let (mut slow, _) = tokio_tungstenite::connect_async(server.api.ws_url())
        .await
        .unwrap();
    slow.send(Message::text(format!(
        r#"{{"type":"auth","token":"{bob_token}"}}"#
    )))
    .await
    .unwrap();
    let ready = slow.next().await.unwrap().unwrap();
    let ready: ServerFrame = serde_json::from_str(ready.to_text().unwrap()).unwrap();
    assert!(matches!(ready, ServerFrame::Ready { .. }), "{ready:?}");
    slow
}

/// Returns the number of texts bob read and the close frame that ended
/// them.
fn bob_reads_once_counted(
    url: String,
    mut slow: RawSocket,
) -> tokio::task::JoinHandle<(
    usize,
    Option<tokio_tungstenite::tungstenite::protocol::CloseFrame>,
)> {
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::Message;

    // The server gives up on bob's stuck socket and counts it; reading
    // from then on (within the server's grace for the close frame), bob
    // gets what was in flight and then the close frame saying why, not a
    // dropped connection.
    tokio::spawn(async move {
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
        while metric(&url, "missive_slow_consumer_closes_total").await < 1.0 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "bob was never counted as a slow consumer"
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        let mut n_seen = 0;
        let mut close = None;
        while let Ok(Some(Ok(message))) = tokio::time::timeout(PROMPTLY, slow.next()).await {
            match message {
                Message::Text(_) => n_seen += 1,
                Message::Close(frame) => close = frame,
                _ => {}
            }
        }
        (n_seen, close)
    })
}

/// alice sends bob N_BIG texts of 100 KiB and carol one in ten; carol,
/// reading normally, gets all of hers.
async fn alice_floods_bob_while_carol_reads(alice: &mut Connection, carol: &mut Connection) {
    let big = "x".repeat(100 * 1024);
    for i in 0..N_BIG {
        alice
            .send_text("bob", &format!("big{i}"), &big)
            .await
            .unwrap();
        if i % 10 == 0 {
            alice
                .send_text("carol", &format!("small{i}"), "hello carol")
                .await
                .unwrap();
        }
    }
    // Carol, reading normally, got all of hers.
    let carols = queued(carol, N_BIG / 10).await;
    assert_eq!(seqs(&carols), (1..=(N_BIG / 10) as i64).collect::<Vec<_>>());
}

/// Carol is told bob went offline.
async fn carol_is_told_bob_went_offline(carol: &mut Connection) {
    let is_bob_offline = |frame: &ServerFrame| matches!(frame, ServerFrame::Presence { user, online: false, .. } if user == "bob");
    let now = carol.subscribe_presence(&["bob"]).await.unwrap();
    if !is_bob_offline(&now[0]) {
        loop {
            let frame = carol
                .next_frame(PROMPTLY)
                .await
                .expect("bob's presence never went offline");
            if is_bob_offline(&frame) {
                break;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_can_be_renamed_by_its_owner_only() {
    // Goal: PATCH /v1/devices/{id} renames one of my devices (the listing
    // shows it), refuses a bad name (invalid_field) and someone else's
    // device or an unknown one (unknown_device), changing nothing.
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let laptop = server.device("alice").await;
    let bob = server.user("bob").await;
    let listed = server.devices(&alice).await;
    let laptop_id = listed.iter().find(|d| !d.current).unwrap().device_id;
    let renamed = server
        .api
        .rename_device(&alice, laptop_id, "Firefox on Windows (work)")
        .await
        .unwrap();
    assert_eq!(renamed.name, "Firefox on Windows (work)");
    assert!(!renamed.current);
    let seen_from_laptop = server.devices(&laptop).await;
    let me = seen_from_laptop.iter().find(|d| d.current).unwrap();
    assert_eq!(
        (me.device_id, me.name.as_str()),
        (laptop_id, "Firefox on Windows (work)")
    );
    for bad in ["", "nul\0here", &"x".repeat(65)] {
        assert_eq!(
            refused_code(server.api.rename_device(&alice, laptop_id, bad).await),
            "invalid_field"
        );
    }
    assert_eq!(
        refused_code(server.api.rename_device(&bob, laptop_id, "mine now").await),
        "unknown_device"
    );
    assert_eq!(
        refused_code(server.api.rename_device(&alice, 999_999, "ghost").await),
        "unknown_device"
    );
    let after = server.devices(&alice).await;
    let names: Vec<&str> = after.iter().map(|d| d.name.as_str()).collect();
    assert!(names.contains(&"Firefox on Windows (work)"), "{names:?}");
    assert!(!names.contains(&"mine now"), "{names:?}");
}
