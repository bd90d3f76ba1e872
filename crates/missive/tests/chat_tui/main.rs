//! `missive chat`, the terminal app, driven as a person would: the real
//! binary in a tmux pane (keys sent with `send-keys`, the screen read with
//! `capture-pane`) against a real server, the other users acting through
//! the CLI. Assertions are on the screen's text.

#[path = "../common/mod.rs"]
mod common;

mod chat;
mod encryption;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

/// A private tmux server (its own socket), killed on drop.
struct Tmux {
    socket: String,
}

static NEXT_SOCKET: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

impl Tmux {
    /// `None` (with the reason printed) when tmux is missing outside CI;
    /// under CI a missing tmux fails the test.
    fn new() -> Option<Self> {
        let present = Command::new("tmux")
            .arg("-V")
            .output()
            .is_ok_and(|out| out.status.success());
        if !present {
            assert!(
                std::env::var_os("CI").is_none(),
                "tmux is not installed (.ci/run installs it)"
            );
            eprintln!("skipped: tmux is not installed");
            return None;
        }
        let n = NEXT_SOCKET.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Some(Self {
            socket: format!("missive-test-{}-{n}", std::process::id()),
        })
    }

    fn tmux(&self, args: &[&str]) -> std::process::Output {
        let output = Command::new("tmux")
            .args(["-u", "-L", &self.socket, "-f", "/dev/null"])
            .args(args)
            .env("LANG", "C.UTF-8")
            .env("LC_ALL", "C.UTF-8")
            .output()
            .expect("run tmux");
        assert!(
            output.status.success(),
            "tmux {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        output
    }

    /// Opens `missive chat --profile <profile>` in a new session named
    /// after the profile, `width` × `height`, working in `config` (where
    /// downloads land).
    fn chat(&self, config: &Path, profile: &str, width: u16, height: u16) {
        let command = format!(
            "env LANG=C.UTF-8 LC_ALL=C.UTF-8 MISSIVE_CONFIG_DIR='{}' '{BIN}' chat --profile {profile}",
            config.display()
        );
        self.tmux(&[
            "new-session",
            "-d",
            "-s",
            profile,
            "-c",
            &config.display().to_string(),
            "-x",
            &width.to_string(),
            "-y",
            &height.to_string(),
            &command,
        ]);
    }

    /// Types `text` literally (no key names).
    fn type_text(&self, session: &str, text: &str) {
        self.tmux(&["send-keys", "-t", session, "-l", text]);
    }

    /// Presses named keys (`Enter`, `Tab`, `Up`, `q`…).
    fn keys(&self, session: &str, keys: &[&str]) {
        let mut args = vec!["send-keys", "-t", session];
        args.extend_from_slice(keys);
        self.tmux(&args);
    }

    fn screen(&self, session: &str) -> String {
        String::from_utf8_lossy(&self.tmux(&["capture-pane", "-p", "-t", session]).stdout)
            .into_owned()
    }

    /// Reads the screen until `ready` holds for it, at most [`PROMPTLY`];
    /// returns that screen. The app has no other way to tell us it has
    /// drawn; the pause between reads spares the machine a busy loop.
    fn wait_for(&self, session: &str, what: &str, ready: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + PROMPTLY;
        loop {
            let screen = self.screen(session);
            if ready(&screen) {
                return screen;
            }
            assert!(
                Instant::now() < deadline,
                "{session}'s screen never showed {what}:\n{screen}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn wait_for_text(&self, session: &str, text: &str) -> String {
        self.wait_for(session, &format!("{text:?}"), |screen| {
            screen.contains(text)
        })
    }

    /// Waits until the conversation's line showing `text` ends with `mark`
    /// (so `✓` is not `✓✓`).
    fn wait_for_mark(&self, session: &str, text: &str, mark: &str) -> String {
        self.wait_for(session, &format!("{text:?} marked {mark}"), |screen| {
            conversation_lines(screen)
                .iter()
                .find(|line| line.contains(text))
                .is_some_and(|line| {
                    let line = line.trim_end_matches(['│', ' ']);
                    line.ends_with(&format!(" {mark}"))
                })
        })
    }

    /// Waits, at most [`PROMPTLY`], for the app in `session` to exit (its
    /// session ends with it), polled like [`Tmux::wait_for`].
    fn wait_for_exit(&self, session: &str, after: &str) {
        let deadline = Instant::now() + PROMPTLY;
        while Command::new("tmux")
            .args(["-L", &self.socket, "has-session", "-t", session])
            .output()
            .is_ok_and(|out| out.status.success())
        {
            assert!(Instant::now() < deadline, "{after} did not quit the app");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["-L", &self.socket, "kill-server"])
            .output();
    }
}

/// The right-hand pane's part of each line (the list is 28 columns wide
/// on a terminal of 84 columns or more).
fn conversation_lines(screen: &str) -> Vec<String> {
    screen
        .lines()
        .map(|line| line.chars().skip(28).collect())
        .collect()
}

fn line_with<'a>(screen: &'a str, text: &str) -> Option<&'a str> {
    screen.lines().find(|line| line.contains(text))
}

/// A server on a fresh data directory, and a fresh CLI config directory
/// in which each of `users` is registered and logged in as a profile of
/// that name: (data directory, config directory, server).
fn server_with_accounts(users: &[&str]) -> (tempfile::TempDir, tempfile::TempDir, ServerProcess) {
    let (data, config, server) = server_and_config_dir();
    accounts(config.path(), &server.url, users);
    (data, config, server)
}

/// Registers and logs in each user under a profile of its name.
fn accounts(config: &Path, server: &str, users: &[&str]) {
    for user in users {
        for args in [
            vec!["register", user],
            vec!["login", user, "--profile", user],
        ] {
            let (code, _, stderr) = cli(config, server, &args);
            assert_eq!(code, 0, "{args:?}: {stderr}");
        }
    }
}

/// Runs a CLI command as `profile`; asserts success and returns its JSON.
fn as_user(config: &Path, server: &str, profile: &str, args: &[&str]) -> Value {
    let mut args = args.to_vec();
    args.extend(["--profile", profile]);
    let (code, stdout, stderr) = cli(config, server, &args);
    assert_eq!(code, 0, "{args:?}: {stderr}");
    serde_json::from_str(stdout.lines().last().unwrap_or("null")).unwrap_or(Value::Null)
}

/// The texts of a conversation's history, oldest first.
fn history_texts(config: &Path, server: &str, profile: &str, conversation: &str) -> Vec<String> {
    let page = as_user(config, server, profile, &["history", conversation]);
    let mut texts: Vec<String> = page["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .filter(|m| m["kind"] == "text")
        .map(|m| m["text"].as_str().unwrap_or_default().to_owned())
        .collect();
    texts.reverse();
    texts
}
