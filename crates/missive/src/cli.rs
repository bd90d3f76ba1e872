//! The scriptable client commands. Output is JSON on stdout; errors go to
//! stderr as `error: <code>: <message>` with a stable exit status:
//!
//! | status | meaning |
//! |---|---|
//! | 0 | success |
//! | 1 | unexpected failure (I/O, protocol) |
//! | 2 | bad usage or no password given |
//! | 3 | the server refused the request (typed error code printed) |
//! | 4 | the server could not be reached, or closed the connection |
//! | 5 | not logged in under this profile |

use std::io::{BufRead, Write};
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use missive_client::{Api, ClientError, Connection};
use missive_proto::ClientFrame;

use crate::profile::{self, Profile};

#[derive(clap::Args)]
pub struct ClientArgs {
    /// Server base URL.
    #[arg(long, env = "MISSIVE_SERVER", default_value = "http://127.0.0.1:8080")]
    server: String,
    /// Which saved login to use.
    #[arg(long, env = "MISSIVE_PROFILE", default_value = "default")]
    profile: String,
    /// Password for register/login; read from stdin when absent.
    #[arg(long, env = "MISSIVE_PASSWORD", hide_env_values = true)]
    password: Option<String>,
}

const EXIT_FAILURE: u8 = 1;
const EXIT_USAGE: u8 = 2;
const EXIT_REFUSED: u8 = 3;
const EXIT_UNREACHABLE: u8 = 4;
const EXIT_NOT_LOGGED_IN: u8 = 5;

fn fail(err: &ClientError) -> ExitCode {
    match err {
        ClientError::Refused { code, message } => {
            eprintln!("error: {}: {message}", code.as_str());
            ExitCode::from(EXIT_REFUSED)
        }
        ClientError::Transport(_) | ClientError::Closed { .. } | ClientError::Timeout => {
            eprintln!("error: {err}");
            ExitCode::from(EXIT_UNREACHABLE)
        }
        ClientError::Protocol(_) => {
            eprintln!("error: {err}");
            ExitCode::from(EXIT_FAILURE)
        }
    }
}

fn print_json(value: &impl serde::Serialize) -> ExitCode {
    match serde_json::to_string(value) {
        Ok(text) => {
            let mut stdout = std::io::stdout().lock();
            let _ = writeln!(stdout, "{text}");
            let _ = stdout.flush();
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("error: {err}");
            ExitCode::from(EXIT_FAILURE)
        }
    }
}

fn password(args: &ClientArgs) -> Result<String, ExitCode> {
    if let Some(password) = &args.password {
        return Ok(password.clone());
    }
    let mut line = String::new();
    match std::io::stdin().lock().read_line(&mut line) {
        Ok(n) if n > 0 => Ok(line.trim_end_matches(['\r', '\n']).to_owned()),
        _ => {
            eprintln!(
                "error: no password: pass --password, set MISSIVE_PASSWORD, or write it to stdin"
            );
            Err(ExitCode::from(EXIT_USAGE))
        }
    }
}

fn load_profile(args: &ClientArgs) -> Result<Profile, ExitCode> {
    if !profile::valid_name(&args.profile) {
        eprintln!("error: invalid profile name {:?}", args.profile);
        return Err(ExitCode::from(EXIT_USAGE));
    }
    profile::load(&args.profile).map_err(|_| {
        eprintln!(
            "error: not logged in under profile {:?}; run `missive login`",
            args.profile
        );
        ExitCode::from(EXIT_NOT_LOGGED_IN)
    })
}

pub async fn register(args: &ClientArgs, username: &str) -> ExitCode {
    let password = match password(args) {
        Ok(password) => password,
        Err(code) => return code,
    };
    match Api::new(&args.server).register(username, &password).await {
        Ok(created) => print_json(&created),
        Err(err) => fail(&err),
    }
}

pub async fn login(args: &ClientArgs, username: &str, device_name: &str) -> ExitCode {
    if !profile::valid_name(&args.profile) {
        eprintln!("error: invalid profile name {:?}", args.profile);
        return ExitCode::from(EXIT_USAGE);
    }
    let password = match password(args) {
        Ok(password) => password,
        Err(code) => return code,
    };
    let session = match Api::new(&args.server)
        .login(username, &password, device_name)
        .await
    {
        Ok(session) => session,
        Err(err) => return fail(&err),
    };
    let saved = Profile {
        server: args.server.clone(),
        username: session.username.clone(),
        device_id: session.device_id,
        token: session.token,
    };
    if let Err(err) = profile::save(&args.profile, &saved) {
        eprintln!("error: cannot save the profile: {err}");
        return ExitCode::from(EXIT_FAILURE);
    }
    print_json(&serde_json::json!({
        "username": saved.username,
        "device_id": saved.device_id,
        "profile": args.profile,
    }))
}

fn generated_client_msg_id() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("cli-{nanos:x}-{:x}", std::process::id())
}

pub async fn send(
    args: &ClientArgs,
    to: &str,
    text: &str,
    client_msg_id: Option<String>,
) -> ExitCode {
    let saved = match load_profile(args) {
        Ok(saved) => saved,
        Err(code) => return code,
    };
    let api = Api::new(&saved.server);
    let mut connection = match Connection::connect(&api.ws_url(), &saved.token).await {
        Ok(connection) => connection,
        Err(err) => return fail(&err),
    };
    let client_msg_id = client_msg_id.unwrap_or_else(generated_client_msg_id);
    let result = connection.send_text(to, &client_msg_id, text).await;
    connection.close().await;
    match result {
        Ok(sent) => print_json(&sent),
        Err(err) => fail(&err),
    }
}

pub async fn listen(
    args: &ClientArgs,
    count: Option<u64>,
    idle_secs: Option<u64>,
    ack: bool,
) -> ExitCode {
    let saved = match load_profile(args) {
        Ok(saved) => saved,
        Err(code) => return code,
    };
    let api = Api::new(&saved.server);
    let mut connection = match Connection::connect(&api.ws_url(), &saved.token).await {
        Ok(connection) => connection,
        Err(err) => return fail(&err),
    };
    let wait = idle_secs.map_or(Duration::from_secs(u64::MAX / 4), Duration::from_secs);
    let mut printed = 0u64;
    while count.is_none_or(|count| printed < count) {
        let frame = match connection.next_frame(wait).await {
            Ok(frame) => frame,
            Err(ClientError::Timeout) => break,
            Err(err) => return fail(&err),
        };
        let Some(pos) = frame.queue_pos() else {
            continue;
        };
        print_json(&frame);
        printed += 1;
        if ack {
            let frame = ClientFrame::Ack {
                id: None,
                up_to: Some(pos),
                positions: Vec::new(),
            };
            if let Err(err) = connection.send_frame(&frame).await {
                return fail(&err);
            }
        }
    }
    // Make sure the last ack arrived before leaving.
    if ack && printed > 0 {
        let ping = ClientFrame::Ping {
            id: Some("final".into()),
        };
        if let Err(err) = connection.request(&ping, "final").await {
            return fail(&err);
        }
    }
    connection.close().await;
    ExitCode::SUCCESS
}

pub async fn devices(args: &ClientArgs) -> ExitCode {
    let saved = match load_profile(args) {
        Ok(saved) => saved,
        Err(code) => return code,
    };
    match Api::new(&saved.server).devices(&saved.token).await {
        Ok(list) => print_json(&list),
        Err(err) => fail(&err),
    }
}

pub async fn revoke(args: &ClientArgs, device_id: i64) -> ExitCode {
    let saved = match load_profile(args) {
        Ok(saved) => saved,
        Err(code) => return code,
    };
    match Api::new(&saved.server)
        .revoke(&saved.token, device_id)
        .await
    {
        Ok(()) => print_json(&serde_json::json!({ "revoked": device_id })),
        Err(err) => fail(&err),
    }
}

pub async fn logout(args: &ClientArgs) -> ExitCode {
    let saved = match load_profile(args) {
        Ok(saved) => saved,
        Err(code) => return code,
    };
    if let Err(err) = Api::new(&saved.server).logout(&saved.token).await {
        return fail(&err);
    }
    let _ = profile::remove(&args.profile);
    print_json(&serde_json::json!({ "logged_out": saved.device_id }))
}
