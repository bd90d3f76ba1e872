//! Account commands: registering, logging in (a new device with new keys),
//! the devices of the account, logging out, and `chat` on the saved login.

use std::process::ExitCode;

use missive_client::Api;

use super::{
    ClientArgs, EXIT_FAILURE, EXIT_USAGE, PasswordArgs, fail, load_profile, password, print_json,
};
use crate::encryption;
use crate::profile::{self, Profile};

/// Runs `missive chat` as the saved login.
pub(crate) async fn chat(args: &ClientArgs) -> ExitCode {
    let saved = match load_profile(args) {
        Ok(saved) => saved,
        Err(code) => return code,
    };
    match crate::chat::run(&args.profile, saved).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: the terminal failed: {err}");
            ExitCode::from(EXIT_FAILURE)
        }
    }
}

pub(crate) async fn register(
    args: &ClientArgs,
    secret: &PasswordArgs,
    username: &str,
    invite: Option<&str>,
) -> ExitCode {
    let password = match password(secret) {
        Ok(password) => password,
        Err(code) => return code,
    };
    match Api::new(args.server())
        .register_with_invite(username, &password, invite)
        .await
    {
        Ok(created) => print_json(&created),
        Err(err) => fail(&err),
    }
}

pub(crate) async fn login(
    args: &ClientArgs,
    secret: &PasswordArgs,
    username: &str,
    device_name: &str,
) -> ExitCode {
    if !profile::valid_name(&args.profile) {
        eprintln!("error: invalid profile name {:?}", args.profile);
        return ExitCode::from(EXIT_USAGE);
    }
    let password = match password(secret) {
        Ok(password) => password,
        Err(code) => return code,
    };
    let session = match Api::new(args.server())
        .login(username, &password, device_name)
        .await
    {
        Ok(session) => session,
        Err(err) => return fail(&err),
    };
    let saved = Profile {
        server: args.server().to_owned(),
        username: session.username.clone(),
        device_id: session.device_id,
        token: session.token,
    };
    if let Err(err) = profile::save(&args.profile, &saved) {
        eprintln!("error: cannot save the profile: {err}");
        return ExitCode::from(EXIT_FAILURE);
    }
    // A new device: new keys, published so others can encrypt for it.
    let mut vault = missive_e2ee::Vault::new(&saved.username, saved.device_id);
    let api = Api::new(&saved.server);
    if let Err(err) = encryption::publish(&api, &saved.token, &mut vault).await {
        return fail(&err);
    }
    if let Err(err) = encryption::save(&args.profile, &vault) {
        eprintln!("error: {err}");
        return ExitCode::from(EXIT_FAILURE);
    }
    print_json(&serde_json::json!({
        "username": saved.username,
        "device_id": saved.device_id,
        "profile": args.profile,
        "server": saved.server,
    }))
}

pub(crate) async fn devices(args: &ClientArgs) -> ExitCode {
    let saved = match load_profile(args) {
        Ok(saved) => saved,
        Err(code) => return code,
    };
    match Api::new(&saved.server).devices(&saved.token).await {
        Ok(list) => print_json(&list),
        Err(err) => fail(&err),
    }
}

pub(crate) async fn revoke(args: &ClientArgs, device_id: i64) -> ExitCode {
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

pub(crate) async fn logout(args: &ClientArgs) -> ExitCode {
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
