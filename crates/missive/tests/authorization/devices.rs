//! Revoked devices and logout.

use reqwest::Method;
use serde_json::json;

use crate::common::*;
use crate::support::*;
use crate::table::*;

/// The ids of the devices of `token`'s account, and which is `token`'s.
async fn devices_of(server: &TestServer, token: &str) -> (Vec<i64>, i64) {
    let devices = server.devices(token).await;
    let current = devices.iter().find(|device| device.current);
    let current = current.expect("the current device").device_id;
    let ids = devices.iter().map(|device| device.device_id).collect();
    (ids, current)
}

async fn device_ids(server: &TestServer, token: &str) -> Vec<i64> {
    devices_of(server, token).await.0
}

async fn current_device(server: &TestServer, token: &str) -> i64 {
    devices_of(server, token).await.1
}

/// `token` no longer works anywhere: REST, /v1/frames, /v1/poll, WebSocket.
async fn assert_cut_off(server: &TestServer, token: &str) {
    assert_eq!(
        refused_code(server.api.devices(token).await),
        "token_invalid"
    );
    let answer = rest(
        server,
        Method::POST,
        "/v1/frames",
        Some(token),
        Some(json!({"type": "ping", "id": "p"})),
    )
    .await;
    assert_eq!(rest_code(&answer), "token_invalid");
    assert_eq!(
        refused_code(server.api.poll(token, &[], 0).await),
        "token_invalid"
    );
    let connected = missive_client::Connection::connect(&server.api.ws_url(), token).await;
    assert_eq!(
        refused_code(connected.map(|connection| connection.device_id)),
        "token_invalid"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_device_is_cut_off_at_once_everywhere() {
    // Goal: revoking a device stops its token at once for REST, /v1/frames,
    // /v1/poll and new WebSockets (`token_invalid`), closes its open
    // WebSocket with 4003 and ends its waiting poll with "revoked"; logout
    // does the same to the calling device; nobody can revoke a device of
    // another account (`unknown_device`) or log in as its owner.
    // Method: alice has her socket device from the setup, a second socket
    // device, a polling device and a device that only calls REST; mallory
    // tries first, then alice revokes, logs out, and revokes the poller
    // while its poll waits (seen waiting through bob's presence snapshot:
    // it is alice's only live session then).
    let mut world = World::new().await;
    let server = &world.server;
    let on_socket = server.device("alice").await;
    let polling = server.device("alice").await;
    let manager = server.device("alice").await;
    let mut socket = server.connect(&on_socket).await;
    mallory_cannot_touch_alices_devices(&mut world, &mut socket).await;

    // Revoking the second socket device closes its socket at once.
    let server = &world.server;
    let socket_device = socket.device_id;
    server
        .api
        .revoke(&world.alice, socket_device)
        .await
        .expect("revoke");
    assert_eq!(closed_with(&mut socket).await, 4003);
    assert_cut_off(server, &on_socket).await;
    assert_eq!(
        refused_code(server.api.revoke(&world.alice, socket_device).await),
        "unknown_device",
        "a revoked device is gone"
    );

    // Logout: the calling device's socket closes and its token is dead.
    server.api.logout(&world.alice).await.expect("logout");
    assert_eq!(closed_with(&mut world.alice_ws).await, 4003);
    assert_cut_off(server, &world.alice).await;

    revoking_ends_a_waiting_poll(&world, &polling, &manager).await;

    // Bob's message to alice reaches her remaining device only.
    world
        .bob_ws
        .send_text("alice", "b-late", "are you there?")
        .await
        .expect("send");
    let mut manager_ws = world.server.connect(&manager).await;
    assert_eq!(texts(&queued(&mut manager_ws, 1).await), ["are you there?"]);
}

/// Mallory names each of alice's four devices (`unknown_device`) and
/// cannot log in as her: the devices are as they were.
async fn mallory_cannot_touch_alices_devices(
    world: &mut World,
    socket: &mut missive_client::Connection,
) {
    let alice_devices = device_ids(&world.server, &world.alice).await;
    assert_eq!(alice_devices.len(), 4);
    let revokes = alice_devices
        .iter()
        .map(|device| Action::rest(Method::DELETE, format!("/v1/devices/{device}"), None));
    world
        .refuse(rows(Who::Mallory, revokes, "unknown_device"))
        .await;
    let server = &world.server;
    assert_eq!(device_ids(server, &world.alice).await, alice_devices);
    let mallory_list = server.api.devices(&world.mallory).await.expect("devices");
    assert_eq!(
        mallory_list.devices.len(),
        1,
        "mallory sees her own device only"
    );
    // A wrong password creates no device either.
    assert_eq!(
        refused_code(server.api.login("alice", "not the password", "x").await),
        "wrong_credentials"
    );
    assert_eq!(device_ids(server, &world.alice).await, alice_devices);
    assert_nothing_queued(socket).await;
    assert_nothing_queued(&mut world.alice_ws).await;
}

/// The poller waits; alice shows online only through its poll. Revoked
/// (by the `manager` device), the poll ends with "revoked".
async fn revoking_ends_a_waiting_poll(world: &World, polling: &str, manager: &str) {
    let server = &world.server;
    let polling_device = current_device(server, polling).await;
    let manager_device = current_device(server, manager).await;
    let waiting = {
        let api = server.api.clone();
        let polling = polling.to_owned();
        tokio::spawn(async move { api.poll(&polling, &[], 60_000).await })
    };
    let snapshot = json!({"type": "subscribe_presence", "id": "p", "users": ["alice"]});
    let deadline = tokio::time::Instant::now() + PROMPTLY;
    loop {
        let (_, frames) = over_http(server, &world.bob, &snapshot).await;
        if presence_of(&frames[1]).1 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the poll never became live"
        );
        tokio::task::yield_now().await;
    }
    server
        .api
        .revoke(manager, polling_device)
        .await
        .expect("revoke");
    let ended = waiting.await.expect("poll task").expect("the poll answers");
    assert_eq!(ended.closed.as_deref(), Some("revoked"));
    assert!(ended.frames.is_empty());
    assert_cut_off(server, polling).await;
    assert_eq!(device_ids(server, manager).await, [manager_device]);
}
