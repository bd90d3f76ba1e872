//! The operator's `missive admin`: devices, passwords, invites, suspension,
//! deletion and closed registration.

use super::*;

/// Runs `missive admin` on the store in `data_dir`, with `password` in
/// the environment; returns (exit status, stdout, stderr).
fn admin(data_dir: &std::path::Path, args: &[&str], password: &str) -> (i32, String, String) {
    let output = std::process::Command::new(BIN)
        .arg("admin")
        .arg("--data-dir")
        .arg(data_dir)
        .args(args)
        .env("MISSIVE_PASSWORD", password)
        .output()
        .expect("run missive admin");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// `admin` on a blocking thread, so the test's runtime keeps serving its
/// connections meanwhile.
async fn admin_off_thread(
    data_dir: &std::path::Path,
    args: &[&str],
    password: &'static str,
) -> (i32, String, String) {
    let data_dir = data_dir.to_path_buf();
    let args: Vec<String> = args.iter().map(ToString::to_string).collect();
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        admin(&data_dir, &args, password)
    })
    .await
    .expect("admin thread")
}

/// The binary, with registration in `mode`.
fn start_in_mode(data_dir: &std::path::Path, mode: &str) -> ServerProcess {
    ServerProcess::start_with_env(data_dir, &[("MISSIVE_REGISTRATION__MODE", mode)])
}

/// What `GET /v1/registration` says of the mode.
async fn registration_mode(url: &str) -> serde_json::Value {
    reqwest::get(format!("{url}/v1/registration"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_revokes_devices_and_resets_a_password_while_the_server_runs() {
    // Goal: `missive admin` works on the store of a running embedded
    // server: it lists users and devices; a device it revokes is closed on
    // the server (4003) and its token dies, though the server never heard
    // from the admin process; a reset password works at once and, with
    // --revoke-devices, ends every session; an unknown user is refused.
    let data_dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(data_dir.path());
    let api = Api::new(&server.url);
    api.register("alice", PASSWORD).await.unwrap();
    let phone = api.login("alice", PASSWORD, "phone").await.unwrap();
    let laptop = api.login("alice", PASSWORD, "laptop").await.unwrap();
    let mut phone_ws = Connection::connect(&api.ws_url(), &phone.token)
        .await
        .unwrap();
    let dir = data_dir.path().to_path_buf();

    let (code, stdout, stderr) = admin_off_thread(&dir, &["users"], "").await;
    assert_eq!(code, 0, "{stderr}");
    let users: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(users["users"][0]["username"], "alice", "{stdout}");
    assert_eq!(users["users"][0]["devices"], 2, "{stdout}");
    let (code, stdout, _) = admin_off_thread(&dir, &["devices", "alice"], "").await;
    assert_eq!(code, 0);
    assert!(stdout.contains("\"laptop\""), "{stdout}");

    let phone_id = phone.device_id.to_string();
    let (code, stdout, stderr) = admin_off_thread(&dir, &["revoke", "alice", &phone_id], "").await;
    assert_eq!(code, 0, "{stderr}");
    let revoked: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(revoked, serde_json::json!({"revoked": [phone.device_id]}));
    assert_eq!(close_code(&mut phone_ws).await, 4003);
    assert_eq!(
        refused_code(api.devices(&phone.token).await),
        "token_invalid"
    );
    api.devices(&laptop.token).await.unwrap();

    let mut laptop_ws = Connection::connect(&api.ws_url(), &laptop.token)
        .await
        .unwrap();
    let (code, stdout, stderr) = admin_off_thread(
        &dir,
        &["reset-password", "alice", "--revoke-devices"],
        "a brand new password",
    )
    .await;
    assert_eq!(code, 0, "{stderr}");
    let revoked: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(
        revoked,
        serde_json::json!({"revoked": [laptop.device_id]}),
        "only the laptop was left to revoke"
    );
    assert_eq!(close_code(&mut laptop_ws).await, 4003);
    assert_eq!(
        refused_code(api.devices(&laptop.token).await),
        "token_invalid"
    );
    assert_eq!(
        refused_code(api.login("alice", PASSWORD, "old").await),
        "wrong_credentials"
    );
    api.login("alice", "a brand new password", "new")
        .await
        .unwrap();

    let (code, _, stderr) = admin_off_thread(&dir, &["devices", "nobody"], "").await;
    assert_eq!(code, 3, "{stderr}");
    assert!(stderr.contains("unknown_user"), "{stderr}");
    drop(server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_works_on_the_store_of_a_stopped_server_and_every_action_is_logged() {
    // Goal: `missive admin` needs no running server: with it stopped, it
    // creates a user, revokes all of another's devices (`--all`) and makes
    // invites, each action logged on stderr; `--output text` lists users
    // for people; the server started again honours all of it (the revoked
    // tokens are dead, the new user logs in, an invite registers).
    let data_dir = tempfile::tempdir().unwrap();
    let mut server =
        ServerProcess::start_with_env(data_dir.path(), &[("MISSIVE_REGISTRATION__MODE", "invite")]);
    let api = Api::new(&server.url);
    let (code, stdout, stderr) = admin_off_thread(data_dir.path(), &["invite"], "").await;
    assert_eq!(code, 0, "{stderr}");
    let invite: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    let invite = invite["invites"][0].as_str().unwrap().to_string();
    api.register_with_invite("alice", PASSWORD, Some(&invite))
        .await
        .unwrap();
    let phone = api.login("alice", PASSWORD, "phone").await.unwrap();
    let laptop = api.login("alice", PASSWORD, "laptop").await.unwrap();
    server.kill_9();
    let dir = data_dir.path().to_path_buf();

    let (code, stdout, stderr) = admin(&dir, &["create", "carol"], "carol's password");
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("\"carol\""), "{stdout}");
    assert!(
        stderr.contains("account created by an operator"),
        "{stderr}"
    );
    let (code, stdout, stderr) = admin(&dir, &["revoke", "alice", "--all"], "");
    assert_eq!(code, 0, "{stderr}");
    let revoked: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    let mut revoked: Vec<i64> = serde_json::from_value(revoked["revoked"].clone()).unwrap();
    revoked.sort_unstable();
    assert_eq!(revoked, [phone.device_id, laptop.device_id]);
    assert_eq!(
        stderr.matches("device revoked by an operator").count(),
        2,
        "{stderr}"
    );
    let (code, stdout, stderr) = admin(&dir, &["invite", "--count", "2"], "");
    assert_eq!(code, 0, "{stderr}");
    let invites: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(invites["invites"].as_array().unwrap().len(), 2, "{stdout}");
    assert!(
        stderr.contains("invites created by an operator"),
        "{stderr}"
    );
    let (code, stdout, stderr) = admin(&dir, &["--output", "text", "users"], "");
    assert_eq!(code, 0, "{stderr}");
    assert!(
        serde_json::from_str::<serde_json::Value>(stdout.trim()).is_err(),
        "text, not JSON: {stdout}"
    );
    for name in ["alice", "carol"] {
        assert!(
            stdout.lines().any(|line| line.contains(name)),
            "{name} missing from {stdout}"
        );
    }

    let server =
        ServerProcess::start_with_env(data_dir.path(), &[("MISSIVE_REGISTRATION__MODE", "invite")]);
    let api = Api::new(&server.url);
    for token in [&phone.token, &laptop.token] {
        assert_eq!(refused_code(api.devices(token).await), "token_invalid");
    }
    api.login("carol", "carol's password", "phone")
        .await
        .unwrap();
    let second = invites["invites"][1].as_str().unwrap();
    api.register_with_invite("dave", PASSWORD, Some(second))
        .await
        .unwrap();
    drop(server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_invites_creates_suspends_and_resumes_users() {
    // Goal: with registration by invite, the server says so, refuses a
    // registration without an invite (invite_required) or with a bad one
    // (invite_invalid) and takes one `missive admin invite` code once;
    // `admin create` makes an account whatever the mode; `admin suspend`
    // closes the user's live connection (4003), kills its token and
    // refuses logins (account_suspended, only once the password is right);
    // `admin resume` lets them log in again; `admin users` shows it.
    let data_dir = tempfile::tempdir().unwrap();
    let server = start_in_mode(data_dir.path(), "invite");
    let api = Api::new(&server.url);
    assert_eq!(
        registration_mode(&server.url).await,
        serde_json::json!({"mode": "invite"})
    );
    assert_eq!(
        refused_code(api.register("alice", PASSWORD).await),
        "invite_required"
    );
    assert_eq!(
        refused_code(
            api.register_with_invite("alice", PASSWORD, Some("0123"))
                .await
        ),
        "invite_invalid"
    );

    let dir = data_dir.path().to_path_buf();
    invites_are_used_once_and_create_needs_none(&api, &dir).await;
    suspend_and_resume(&api, &dir).await;
    drop(server);
}

/// Two invites from `admin invite`: one registers alice and no one else;
/// `admin create` makes bob without one.
async fn invites_are_used_once_and_create_needs_none(api: &Api, dir: &std::path::Path) {
    let (code, stdout, stderr) = admin_off_thread(dir, &["invite", "--count", "2"], "").await;
    assert_eq!(code, 0, "{stderr}");
    let invites: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    let codes: Vec<String> = invites["invites"]
        .as_array()
        .unwrap()
        .iter()
        .map(|code| code.as_str().unwrap().to_owned())
        .collect();
    assert_eq!(codes.len(), 2, "{stdout}");
    api.register_with_invite("alice", PASSWORD, Some(&codes[0]))
        .await
        .unwrap();
    assert_eq!(
        refused_code(
            api.register_with_invite("carol", PASSWORD, Some(&codes[0]))
                .await
        ),
        "invite_invalid",
        "an invite is used once"
    );
    let (code, stdout, stderr) = admin_off_thread(dir, &["create", "bob"], PASSWORD).await;
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("\"bob\""), "{stdout}");
    api.login("bob", PASSWORD, "phone").await.unwrap();
}

/// `admin suspend` closes alice's live connection, kills its token and
/// refuses her logins; `admin users` shows it; `admin resume` undoes it.
async fn suspend_and_resume(api: &Api, dir: &std::path::Path) {
    let phone = api.login("alice", PASSWORD, "phone").await.unwrap();
    let mut phone_ws = Connection::connect(&api.ws_url(), &phone.token)
        .await
        .unwrap();
    let (code, stdout, stderr) = admin_off_thread(dir, &["suspend", "alice"], "").await;
    assert_eq!(code, 0, "{stderr}");
    let revoked: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(revoked, serde_json::json!({"revoked": [phone.device_id]}));
    assert_eq!(close_code(&mut phone_ws).await, 4003);
    assert_eq!(
        refused_code(api.devices(&phone.token).await),
        "token_invalid"
    );
    assert_eq!(
        refused_code(api.login("alice", PASSWORD, "again").await),
        "account_suspended"
    );
    assert_eq!(
        refused_code(api.login("alice", "not the password", "again").await),
        "wrong_credentials",
        "the suspension is told only to whoever knows the password"
    );
    let (code, stdout, _) = admin_off_thread(dir, &["users"], "").await;
    assert_eq!(code, 0);
    let users: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(users["users"][0]["username"], "alice", "{stdout}");
    assert_eq!(users["users"][0]["suspended"], true, "{stdout}");
    assert_eq!(users["users"][1]["suspended"], false, "{stdout}");

    let (code, _, stderr) = admin_off_thread(dir, &["resume", "alice"], "").await;
    assert_eq!(code, 0, "{stderr}");
    api.login("alice", PASSWORD, "again").await.unwrap();
    let (code, _, stderr) = admin_off_thread(dir, &["suspend", "nobody"], "").await;
    assert_eq!(code, 3, "{stderr}");
    assert!(stderr.contains("unknown_user"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_deletes_a_user_for_good() {
    // Goal: `missive admin delete` on a running server's store closes the
    // user's connection (4003), takes them out of their groups (the other
    // members see a "left" event), keeps their messages under
    // "deleted.<id>", refuses their login, and frees the name for a new
    // account; names of that form cannot be registered.
    let data_dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(data_dir.path());
    let api = Api::new(&server.url);
    for user in ["alice", "bob"] {
        api.register(user, PASSWORD).await.unwrap();
    }
    let alice = api.login("alice", PASSWORD, "phone").await.unwrap();
    let bob = api.login("bob", PASSWORD, "phone").await.unwrap();
    let group = api
        .create_group(&bob.token, "trip", &["alice"])
        .await
        .unwrap()
        .conversation;
    let mut alice_ws = Connection::connect(&api.ws_url(), &alice.token)
        .await
        .unwrap();
    alice_ws
        .send_to(group, "a-1", "hello from alice", None)
        .await
        .unwrap();

    let dir = data_dir.path().to_path_buf();
    let (code, stdout, stderr) =
        tokio::task::spawn_blocking(move || admin(&dir, &["delete", "alice"], ""))
            .await
            .unwrap();
    assert_eq!(code, 0, "{stderr}");
    let deleted: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(
        deleted,
        serde_json::json!({"deleted": "alice", "revoked": [alice.device_id], "groups_left": 1})
    );
    assert_eq!(close_code(&mut alice_ws).await, 4003);
    assert_eq!(
        refused_code(api.login("alice", PASSWORD, "again").await),
        "wrong_credentials"
    );
    let info = api.group(&bob.token, group).await.unwrap();
    let members: Vec<&str> = info.members.iter().map(|m| m.username.as_str()).collect();
    assert_eq!(members, ["bob"]);
    let history = api.history(&bob.token, group, "").await.unwrap();
    let tombstone = format!("deleted.{}", deleted_id(&history));
    assert!(
        history
            .messages
            .iter()
            .any(|m| m.text == "hello from alice" && m.from == tombstone),
        "{history:?}"
    );
    assert_eq!(
        refused_code(api.register(&tombstone, PASSWORD).await),
        "invalid_username"
    );
    api.register("alice", PASSWORD).await.unwrap();
    drop(server);
}

/// The account id in the name the deleted sender's messages now carry.
fn deleted_id(history: &missive_proto::rest::History) -> String {
    history
        .messages
        .iter()
        .find_map(|m| m.from.strip_prefix("deleted.").map(str::to_owned))
        .expect("a message from the deleted account")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_server_takes_no_registrations() {
    // Goal: registration mode `closed` refuses every registration with
    // registration_closed (even with an invite) and says so.
    let data_dir = tempfile::tempdir().unwrap();
    let server = start_in_mode(data_dir.path(), "closed");
    let api = Api::new(&server.url);
    assert_eq!(
        registration_mode(&server.url).await,
        serde_json::json!({"mode": "closed"})
    );
    assert_eq!(
        refused_code(api.register("alice", PASSWORD).await),
        "registration_closed"
    );
    assert_eq!(
        refused_code(api.register_with_invite("alice", PASSWORD, Some("x")).await),
        "registration_closed"
    );
    drop(server);
}
