//! `missive chat`: the full-screen terminal client. [`state`] holds what
//! the app knows ([`model`]: its records) and turns keys and frames into
//! effects, [`net`] keeps the
//! WebSocket connection (reconnecting, acking), [`crypto`] opens and seals
//! end-to-end encrypted messages between the two, [`view`] draws, and this
//! file runs the loop that joins them and carries out the effects (frames
//! to the connection, REST reads and downloads on tasks of their own).

mod crypto;
mod model;
mod net;
mod state;
mod text;
mod verify;
mod view;

use std::path::PathBuf;
use std::time::Duration;

use missive_client::Api;
use ratatui::crossterm::event::{DisableBracketedPaste, EnableBracketedPaste};
use ratatui::crossterm::execute;
use tokio::sync::mpsc::UnboundedSender;

use crate::profile::Profile;
use crypto::Crypto;
use state::{App, AppEvent, Effect};

/// How often the screen is redrawn without input (typing indicators and
/// the retry countdown lapse on it).
const TICK: Duration = Duration::from_millis(250);

/// Runs the app until the user quits; the terminal is restored on every
/// way out, a panic included (ratatui's `init` installs that hook).
pub(crate) async fn run(profile_name: &str, profile: Profile) -> std::io::Result<()> {
    let api = Api::new(&profile.server);
    let (events, mut incoming) = tokio::sync::mpsc::unbounded_channel();
    let crypto = Crypto::start(&api, profile_name, &profile, &events).await;
    let commands = net::spawn(
        api.clone(),
        profile.token.clone(),
        crypto.clone(),
        events.clone(),
    );
    let (keys, mut input) = tokio::sync::mpsc::unbounded_channel();
    // crossterm's reads block: one thread waits for the terminal.
    std::thread::spawn(move || {
        while let Ok(event) = ratatui::crossterm::event::read() {
            if keys.send(event).is_err() {
                break;
            }
        }
    });
    let mut terminal = ratatui::init();
    let _ = execute!(std::io::stdout(), EnableBracketedPaste);
    let mut app = App::new(&profile.username, &profile.server);
    let mut tick = tokio::time::interval(TICK);
    let result = loop {
        if let Err(err) = terminal.draw(|frame| view::draw(frame, &app)) {
            break Err(err);
        }
        tokio::select! {
            Some(event) = input.recv() => app.on_input(event),
            Some(event) = incoming.recv() => app.on_event(event),
            _ = tick.tick() => app.on_tick(),
        }
        // Whatever else is already here joins this draw (a burst of queued
        // messages is one redraw and one `read`, not one per frame).
        while let Ok(event) = incoming.try_recv() {
            app.on_event(event);
        }
        while let Ok(event) = input.try_recv() {
            app.on_input(event);
        }
        for effect in app.take_effects() {
            carry_out(effect, &api, &profile.token, &crypto, &commands, &events);
        }
        if app.quit {
            break Ok(());
        }
    };
    let _ = execute!(std::io::stdout(), DisableBracketedPaste);
    ratatui::restore();
    result
}

fn carry_out(
    effect: Effect,
    api: &Api,
    token: &str,
    crypto: &Crypto,
    commands: &UnboundedSender<net::Command>,
    events: &UnboundedSender<AppEvent>,
) {
    let (api, token, events) = (api.clone(), token.to_owned(), events.clone());
    let crypto = crypto.clone();
    match effect {
        Effect::Frame(frame) => {
            let _ = commands.send(net::Command::Frame(frame));
        }
        Effect::Reconnect => {
            let _ = commands.send(net::Command::Reconnect);
        }
        Effect::Verify(action) => {
            let _ = commands.send(net::Command::Verify(action));
        }
        Effect::CheckVerified { user } => {
            tokio::spawn(async move {
                if let Some(verified) = crypto.peer_verified(&user).await {
                    let _ = events.send(AppEvent::PeerVerified { user, verified });
                }
            });
        }
        Effect::LoadConversations => {
            tokio::spawn(async move {
                let result = api.conversations(&token).await;
                let _ = events.send(AppEvent::Conversations(result));
            });
        }
        Effect::LoadHistory {
            conversation,
            before,
        } => {
            tokio::spawn(async move {
                let query = match before {
                    Some(before) => format!("before={before}&limit={}", state::HISTORY_PAGE),
                    None => format!("limit={}", state::HISTORY_PAGE),
                };
                let mut result = api.history(&token, conversation, &query).await;
                if let Ok(history) = &mut result {
                    crypto.open_history(history).await;
                }
                let _ = events.send(AppEvent::History {
                    conversation,
                    older: before.is_some(),
                    result,
                });
            });
        }
        Effect::Download(media) => {
            tokio::spawn(async move {
                let key = crypto.file(&media.media_id).await;
                let outcome = download(&api, &token, &media, key).await;
                let _ = events.send(AppEvent::Downloaded(outcome));
            });
        }
    }
}

/// Saves an attachment in the current directory under the name it was
/// sent with, never over an existing file; one of an encrypted message
/// (`key`) decrypted, and only if it is the file the message names.
async fn download(
    api: &Api,
    token: &str,
    media: &missive_proto::rest::MediaRef,
    key: Option<missive_e2ee::SharedFile>,
) -> Result<String, String> {
    let download = api
        .download_named_media(token, &media.media_id)
        .await
        .map_err(|err| format!("Download failed: {}", model::describe(&err)))?;
    let (name, bytes) = match key {
        Some(file) => (
            file.name.clone(),
            missive_e2ee::open_file(&download.bytes, &file.key)
                .map_err(|err| format!("Download failed: {err}"))?,
        ),
        None => (download.filename, download.bytes),
    };
    let name = crate::cli::safe_file_name(name.as_deref(), &media.media_id);
    let path = free_path(PathBuf::from(&name));
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&path)
        .and_then(|mut file| std::io::Write::write_all(&mut file, &bytes));
    match written {
        Ok(()) => Ok(format!(
            "Saved {} ({})",
            path.display(),
            view::size(bytes.len() as u64)
        )),
        Err(err) => Err(format!("Cannot write {}: {err}", path.display())),
    }
}

/// `name`, or `name (1)`, `name (2)`… before its extension: the first
/// that does not exist.
fn free_path(path: PathBuf) -> PathBuf {
    if !path.exists() {
        return path;
    }
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let extension = path
        .extension()
        .map(|e| format!(".{}", e.to_string_lossy()))
        .unwrap_or_default();
    (1..)
        .map(|n| path.with_file_name(format!("{stem} ({n}){extension}")))
        .find(|candidate| !candidate.exists())
        .unwrap_or(path)
}
