//! Taking TCP connections in, so that no client can keep others out. Every
//! connection holds an [`Admitted`] ticket until it closes (a WebSocket
//! session keeps its own). Until a request on it authenticates, it counts
//! against its address (`limits.unauthenticated_per_ip_max`); in all,
//! connections stay below the process's open-file limit less a reserve for
//! the store, the media and new arrivals, so the server never reaches
//! `EMFILE` and refuses the surplus at once instead. A request head must
//! arrive within `limits.request_head_timeout_ms`, or the connection is
//! closed, and a failing `accept` backs off instead of spinning.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::pin::pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::Request;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

/// Files kept free of connections: the store, its WAL, media being read
/// or written, logs, and room to accept (and at once refuse) more.
const FILES_RESERVED: u64 = 256;
/// Longest pause after a failing `accept`, and how often it is logged.
const BACKOFF_MAX: Duration = Duration::from_secs(1);
const ACCEPT_ERROR_LOG_EVERY: Duration = Duration::from_secs(10);

/// Connections the kernel completes before the server accepts them. A
/// reconnect storm arrives faster than one accept loop takes connections
/// in, and a full queue drops the client's SYN, which it sends again only
/// after a second (then three, then seven): at the old default of 128,
/// 256 devices connecting at once lost 5 % of their SYNs and the connect
/// rate fell to a fifth. The kernel caps it at `net.core.somaxconn`.
const LISTEN_BACKLOG: u32 = 4096;

/// A listener on `addr` with room for a reconnect storm in its queue.
pub fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    // A restarted server binds at once, with its old connections still in
    // TIME_WAIT.
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// Who is connected, by address, until they authenticate.
pub struct Admission {
    /// Connections open (all of them).
    open: AtomicUsize,
    open_max: usize,
    unauthenticated: Mutex<HashMap<IpAddr, usize>>,
    unauthenticated_per_ip_max: usize,
}

impl Admission {
    /// At most `connections_max` connections, and fewer when the open-file
    /// limit is lower (less `FILES_RESERVED`); one address holds at most
    /// `unauthenticated_per_ip_max` unauthenticated ones, and at most a
    /// quarter of all.
    pub fn new(connections_max: usize, unauthenticated_per_ip_max: usize) -> Self {
        let by_files = open_files_limit()
            .map_or(usize::MAX, |limit| {
                usize::try_from(limit.saturating_sub(FILES_RESERVED)).unwrap_or(usize::MAX)
            })
            .max(1);
        let open_max = connections_max.min(by_files);
        Self {
            open: AtomicUsize::new(0),
            open_max,
            unauthenticated: Mutex::new(HashMap::new()),
            // One address never holds more than a quarter of the places,
            // so others still get in while it waits out the deadlines.
            unauthenticated_per_ip_max: unauthenticated_per_ip_max.min(open_max / 4).max(1),
        }
    }

    /// The most connections open at once.
    pub fn open_max(&self) -> usize {
        self.open_max
    }

    /// A ticket for a new connection from `ip`, or `None` when the server
    /// or that address has its maximum.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Option<Arc<Admitted>> {
        if self.open.fetch_add(1, Ordering::SeqCst) >= self.open_max {
            self.open.fetch_sub(1, Ordering::SeqCst);
            return None;
        }
        let mut unauthenticated = self
            .unauthenticated
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let count = unauthenticated.entry(ip).or_insert(0);
        if *count >= self.unauthenticated_per_ip_max {
            drop(unauthenticated);
            self.open.fetch_sub(1, Ordering::SeqCst);
            return None;
        }
        *count += 1;
        Some(Arc::new(Admitted {
            admission: Arc::clone(self),
            ip,
            authenticated: AtomicBool::new(false),
        }))
    }

    fn forget_unauthenticated(&self, ip: IpAddr) {
        let mut unauthenticated = self
            .unauthenticated
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(count) = unauthenticated.get_mut(&ip) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                unauthenticated.remove(&ip);
            }
        }
    }
}

/// One admitted connection; it stops counting when the last holder drops
/// it (the HTTP connection's task, or a WebSocket session).
pub struct Admitted {
    admission: Arc<Admission>,
    ip: IpAddr,
    authenticated: AtomicBool,
}

impl Admitted {
    /// A request on this connection authenticated: it no longer counts
    /// against its address.
    pub fn authenticated(&self) {
        if !self.authenticated.swap(true, Ordering::SeqCst) {
            self.admission.forget_unauthenticated(self.ip);
        }
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        if !self.authenticated.load(Ordering::SeqCst) {
            self.admission.forget_unauthenticated(self.ip);
        }
        self.admission.open.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The soft limit on open files of this process, if it can be read (from
/// `/proc/self/limits`, on Linux; elsewhere none is assumed).
fn open_files_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    soft_open_files(&limits)
}

/// The soft "Max open files" of a `/proc/<pid>/limits` text.
fn soft_open_files(limits: &str) -> Option<u64> {
    let line = limits
        .lines()
        .find(|line| line.starts_with("Max open files"))?;
    line["Max open files".len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Serves `app` on `listener` until `stop`, then lets every connection
/// finish its request (WebSocket sessions end on their own signal).
pub async fn serve(
    listener: TcpListener,
    app: Router,
    admission: Arc<Admission>,
    head_timeout: Duration,
    stop: CancellationToken,
) {
    // Each connection holds a receiver; `closing` going away asks them to
    // finish, and `all_closed` resolves once the last one is gone.
    let (closing, _) = watch::channel(());
    let (done, all_closed) = watch::channel(());
    let mut backoff = Duration::from_millis(5);
    let mut last_logged: Option<Instant> = None;
    loop {
        let (stream, peer) = tokio::select! {
            () = stop.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => {
                    backoff = Duration::from_millis(5);
                    accepted
                }
                Err(err) if is_connection_error(&err) => continue,
                Err(err) => {
                    if last_logged.is_none_or(|at| at.elapsed() >= ACCEPT_ERROR_LOG_EVERY) {
                        tracing::error!(%err, "accept failed; backing off");
                        last_logged = Some(Instant::now());
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                    continue;
                }
            },
        };
        let Some(ticket) = admission.admit(peer.ip()) else {
            // Closed at once: better than holding a socket the server
            // would never read.
            metrics::counter!("missive_connections_refused_total").increment(1);
            drop(stream);
            continue;
        };
        // No Nagle: frames are small and written as they come, and a write
        // held back for the ACK of the previous one waits out the peer's
        // delayed ACK (40 ms on Linux) — that was the p99 of a delivery.
        if let Err(err) = stream.set_nodelay(true) {
            tracing::debug!(%err, "cannot set TCP_NODELAY on a connection");
        }
        let closing = closing.subscribe();
        spawn_connection(
            stream,
            peer,
            &app,
            ticket,
            head_timeout,
            closing,
            done.clone(),
        );
    }
    drop(listener);
    let _ = closing.send(());
    drop(done);
    wait_all_closed(all_closed).await;
}

/// Serves one accepted connection on a task of its own: HTTP/1 with a
/// deadline for each request head, upgrades allowed, and a graceful
/// shutdown once `closing` changes. The task holds `ticket` and `done`
/// until the connection ends.
fn spawn_connection(
    stream: TcpStream,
    peer: SocketAddr,
    app: &Router,
    ticket: Arc<Admitted>,
    head_timeout: Duration,
    mut closing: watch::Receiver<()>,
    done: watch::Sender<()>,
) {
    let for_requests = Arc::clone(&ticket);
    let service = app.clone().map_request(move |request: Request<Incoming>| {
        let mut request = request.map(Body::new);
        request.extensions_mut().insert(ConnectInfo(peer));
        request.extensions_mut().insert(Arc::clone(&for_requests));
        request
    });
    let service = TowerToHyperService::new(service);
    tokio::spawn(async move {
        let mut builder = http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(head_timeout);
        let mut connection = pin!(
            builder
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades()
        );
        let mut asked = false;
        loop {
            tokio::select! {
                served = connection.as_mut() => {
                    if let Err(err) = served {
                        tracing::trace!(%err, "connection ended with an error");
                    }
                    break;
                }
                changed = closing.changed(), if !asked => {
                    let _ = changed;
                    asked = true;
                    connection.as_mut().graceful_shutdown();
                }
            }
        }
        drop(ticket);
        drop(done);
    });
}

/// Resolves once every connection task has dropped its sender.
async fn wait_all_closed(mut all_closed: watch::Receiver<()>) {
    while all_closed.changed().await.is_ok() {}
}

fn is_connection_error(err: &std::io::Error) -> bool {
    matches!(
        err.kind(),
        std::io::ErrorKind::ConnectionRefused
            | std::io::ErrorKind::ConnectionAborted
            | std::io::ErrorKind::ConnectionReset
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_listener_queues_a_storm_it_has_not_accepted_yet() {
        // Goal: a burst of connects larger than the old default backlog
        // (128) all complete while the server accepts none of them; with
        // a short queue the surplus SYNs would be dropped and their
        // connects would hang in retries, never completing.
        let listener = listen("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = listener.local_addr().unwrap();
        let somaxconn = std::fs::read_to_string("/proc/sys/net/core/somaxconn")
            .ok()
            .and_then(|text| text.trim().parse::<usize>().ok())
            .unwrap_or(4096);
        // The kernel caps the queue at somaxconn; stay below both.
        let burst = 300.min(somaxconn.saturating_sub(1));
        let connects = (0..burst).map(|_| TcpStream::connect(addr));
        let connected = tokio::time::timeout(
            Duration::from_secs(30),
            futures_util::future::join_all(connects),
        )
        .await
        .expect("every connect completes without being accepted");
        assert_eq!(connected.iter().filter(|c| c.is_ok()).count(), burst);
        drop(listener);
    }

    #[test]
    fn the_open_file_limit_is_read_from_proc() {
        // Goal: the soft limit is the first number; "unlimited" is none.
        let limits = "Limit                     Soft Limit           Hard Limit           Units\n\
                      Max processes             95412                95412                processes\n\
                      Max open files            20000                20000                files\n";
        assert_eq!(soft_open_files(limits), Some(20_000));
        assert_eq!(
            soft_open_files(
                "Max open files            unlimited            unlimited            files"
            ),
            None
        );
    }

    #[test]
    fn addresses_are_capped_until_they_authenticate() {
        // Goal: one address holds at most its quota of unauthenticated
        // connections; authenticating or closing one frees its place; the
        // total stays under the cap whatever the addresses.
        let admission = Arc::new(Admission {
            open: AtomicUsize::new(0),
            open_max: 4,
            unauthenticated: Mutex::new(HashMap::new()),
            unauthenticated_per_ip_max: 2,
        });
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let first = admission.admit(a).expect("first");
        let second = admission.admit(a).expect("second");
        assert!(admission.admit(a).is_none(), "a third from a");
        first.authenticated();
        let third = admission.admit(a).expect("the authenticated one left room");
        drop(second);
        let fourth = admission.admit(a).expect("a closed one left room");
        let from_b = admission.admit(b).expect("b");
        assert!(admission.admit(b).is_none(), "the total cap of 4");
        drop(first);
        assert!(admission.admit(b).is_some(), "room again");
        drop((third, fourth, from_b));
        assert_eq!(admission.open.load(Ordering::SeqCst), 0);
        assert!(admission.unauthenticated.lock().unwrap().is_empty());
    }
}
