//! Setting up a run: users with unique names (so runs never collide),
//! spread over the given servers, logged in and connected, with progress.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use anyhow::Context;
use futures_util::{StreamExt, TryStreamExt, stream};
use indicatif::{ProgressBar, ProgressStyle};
use missive_client::{Api, Connection};

use super::Common;

pub(super) const PASSWORD: &str = "bench password";

/// A short prefix unique to this run: usernames are `<prefix><role><n>`.
pub(super) fn run_prefix() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| elapsed.as_nanos())
        .unwrap_or(0);
    format!(
        "b{:x}",
        (nanos ^ u128::from(std::process::id())) % 0xffff_ffff_ffff
    )
}

/// Set in worker processes: their parent shows the progress.
static PROGRESS_HIDDEN: AtomicBool = AtomicBool::new(false);

pub(super) fn hide_progress() {
    PROGRESS_HIDDEN.store(true, Ordering::Relaxed);
}

pub(super) fn progress(len: u64, label: &str) -> ProgressBar {
    if PROGRESS_HIDDEN.load(Ordering::Relaxed) {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(len);
    if let Ok(style) =
        ProgressStyle::with_template("{msg:>12} [{bar:40}] {pos}/{len} {per_sec} eta {eta}")
    {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message(label.to_owned());
    bar
}

/// A user of the run: where it talks and its device's token.
#[derive(Clone)]
pub(super) struct Member {
    pub username: String,
    pub server: String,
    pub token: String,
}

impl Member {
    pub(super) fn ws_url(&self) -> String {
        missive_client::ws_url(&self.server)
    }
}

/// Registers `names` and logs each in once, user `i` on server
/// `server_of(i)`, a few at a time (the server hashes passwords slowly on
/// purpose).
pub(super) async fn members(
    common: &Common,
    names: Vec<String>,
    server_of: impl Fn(usize) -> usize,
) -> anyhow::Result<Vec<Member>> {
    let bar = progress(names.len() as u64, "accounts");
    let servers = &common.servers;
    let jobs = names.into_iter().enumerate().map(|(i, username)| {
        let server = servers[server_of(i) % servers.len()].clone();
        let bar = bar.clone();
        async move {
            let api = Api::new(&server);
            api.register(&username, PASSWORD)
                .await
                .with_context(|| format!("registering {username} at {server}"))?;
            let token = api
                .login(&username, PASSWORD, "bench")
                .await
                .with_context(|| format!("logging in {username}"))?
                .token;
            bar.inc(1);
            Ok::<_, anyhow::Error>(Member {
                username,
                server,
                token,
            })
        }
    });
    let members = stream::iter(jobs)
        .buffered(common.setup_concurrency.max(1))
        .try_collect()
        .await;
    bar.finish_and_clear();
    members
}

/// The source address of connection `i`: 127.0.0.1 … 127.0.0.<sources>.
pub(super) fn source(common: &Common, i: usize) -> Option<IpAddr> {
    (common.sources > 1).then(|| {
        let last = 1 + (i % usize::from(common.sources)) as u8;
        IpAddr::V4(Ipv4Addr::new(127, 0, 0, last))
    })
}

/// Connects every member (in order), a few at a time; returns the
/// connections and the connect rate (connections per second).
pub(super) async fn connect_all(
    common: &Common,
    members: &[Member],
    concurrency: usize,
) -> anyhow::Result<(Vec<Connection>, f64)> {
    let bar = progress(members.len() as u64, "connecting");
    let started = Instant::now();
    let common = Arc::new(common.clone());
    let jobs = members.iter().enumerate().map(|(i, member)| {
        let (url, token, bar, common) = (
            member.ws_url(),
            member.token.clone(),
            bar.clone(),
            common.clone(),
        );
        async move {
            let connection = Connection::connect_from(&url, &token, source(&common, i))
                .await
                .with_context(|| format!("connecting to {url}"))?;
            bar.inc(1);
            Ok::<_, anyhow::Error>(connection)
        }
    });
    let connections: Vec<Connection> = stream::iter(jobs)
        .buffered(concurrency.max(1))
        .try_collect()
        .await?;
    let rate = connections.len() as f64 / started.elapsed().as_secs_f64().max(1e-9);
    bar.finish_and_clear();
    Ok((connections, rate))
}

/// Message texts carry nanoseconds since the run's epoch (when the message
/// was sent, or scheduled), so a receiver in the same process times it
/// without asking the sender.
pub(super) fn elapsed_since_stamp(epoch: Instant, text: &str) -> Option<std::time::Duration> {
    let stamp = text.split_once('.').map_or(text, |(stamp, _)| stamp);
    let sent = std::time::Duration::from_nanos(stamp.parse().ok()?);
    epoch.elapsed().checked_sub(sent)
}
