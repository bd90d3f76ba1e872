//! The push hook: when entries are queued for a device with no live
//! session, POST a signed "device X has N waiting" (never message content)
//! to a webhook — the slot where APNs/FCM plug in.
//!
//! Never blocks delivery: announcements go through a bounded channel (full
//! means dropped) to one worker, which coalesces per device, signs the body
//! with HMAC-SHA256 and retries with backoff a bounded number of times.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hmac::{Hmac, KeyInit, Mac};
use missive_core::{Clock, DeviceId};
use missive_store::Store;
use serde::Serialize;
use sha2::Sha256;
use tokio::sync::{Semaphore, mpsc};
use tokio::time::Instant;

use crate::config::PushConfig;
use crate::router::Router;

/// Devices waiting for the worker; beyond this, announcements are dropped.
const PENDING_MAX: usize = 4096;
/// Devices remembered for coalescing; older entries are forgotten first.
const COALESCE_KEYS_MAX: usize = 100_000;

/// The JSON body of a webhook call.
#[derive(Serialize)]
struct Announcement {
    device_id: i64,
    username: String,
    waiting: u64,
    ts_ms: i64,
}

pub struct Push {
    /// `None` when no webhook is configured.
    pending: Option<mpsc::Sender<DeviceId>>,
    router: Arc<Router>,
}

impl Push {
    /// Starts the worker when `config.webhook_url` is set. Must be called
    /// inside a Tokio runtime.
    pub fn start(
        config: &PushConfig,
        store: Arc<dyn Store>,
        router: Arc<Router>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        let Some(url) = config.webhook_url.clone() else {
            return Self {
                pending: None,
                router,
            };
        };
        let (pending, receiver) = mpsc::channel(PENDING_MAX);
        let worker = Worker {
            url,
            secret: config.secret.clone().into_bytes(),
            coalesce: Duration::from_secs(config.coalesce_secs),
            retries_max: config.retries_max,
            backoff: Duration::from_millis(config.retry_backoff_ms),
            http: reqwest::Client::builder()
                .timeout(Duration::from_millis(config.timeout_ms))
                .build()
                .unwrap_or_default(),
            store,
            clock,
            last_sent: Mutex::new(HashMap::new()),
            calls: Arc::new(Semaphore::new(config.calls_concurrent_max)),
        };
        tokio::spawn(Arc::new(worker).run(receiver));
        Self {
            pending: Some(pending),
            router,
        }
    }

    /// Entries were queued for `devices`: announce those not live here.
    pub fn queued(&self, devices: &[DeviceId]) {
        let Some(pending) = &self.pending else {
            return;
        };
        for device in devices {
            if !self.router.is_live(*device) && pending.try_send(*device).is_err() {
                metrics::counter!("missive_push_dropped_total").increment(1);
            }
        }
    }
}

struct Worker {
    url: String,
    secret: Vec<u8>,
    coalesce: Duration,
    retries_max: u32,
    backoff: Duration,
    http: reqwest::Client,
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    last_sent: Mutex<HashMap<DeviceId, Instant>>,
    calls: Arc<Semaphore>,
}

impl Worker {
    async fn run(self: Arc<Self>, mut receiver: mpsc::Receiver<DeviceId>) {
        while let Some(device) = receiver.recv().await {
            if !self.claim(device) {
                continue;
            }
            let Ok(permit) = Arc::clone(&self.calls).acquire_owned().await else {
                return;
            };
            let worker = Arc::clone(&self);
            tokio::spawn(async move {
                worker.announce(device).await;
                drop(permit);
            });
        }
    }

    /// At most one call per device per coalescing interval.
    fn claim(&self, device: DeviceId) -> bool {
        let now = Instant::now();
        let mut last_sent = self
            .last_sent
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if last_sent
            .get(&device)
            .is_some_and(|at| now.duration_since(*at) < self.coalesce)
        {
            return false;
        }
        if last_sent.len() >= COALESCE_KEYS_MAX {
            let coalesce = self.coalesce;
            last_sent.retain(|_, at| now.duration_since(*at) < coalesce);
        }
        last_sent.insert(device, now);
        true
    }

    async fn announce(&self, device: DeviceId) {
        let waiting = match self.store.waiting(device).await {
            Ok(0) | Err(_) => return,
            Ok(waiting) => waiting,
        };
        let username = match self.store.device_owner(device).await {
            Ok(Some(username)) => username,
            _ => return,
        };
        let body = Announcement {
            device_id: device.0,
            username,
            waiting,
            ts_ms: self.clock.now_ms(),
        };
        let Ok(body) = serde_json::to_vec(&body) else {
            return;
        };
        let signature = sign(&self.secret, &body);
        let mut delay = self.backoff;
        for attempt in 0..=self.retries_max {
            let sent = self
                .http
                .post(&self.url)
                .header("content-type", "application/json")
                .header("x-missive-signature", format!("sha256={signature}"))
                .body(body.clone())
                .send()
                .await;
            match sent {
                Ok(response) if response.status().is_success() => {
                    metrics::counter!("missive_push_sent_total").increment(1);
                    return;
                }
                Ok(response) => {
                    tracing::debug!(status = %response.status(), attempt, "push webhook refused");
                }
                Err(err) => tracing::debug!(%err, attempt, "push webhook unreachable"),
            }
            if attempt < self.retries_max {
                tokio::time::sleep(delay).await;
                delay = delay.saturating_mul(2);
            }
        }
        metrics::counter!("missive_push_failed_total").increment(1);
        tracing::warn!(device = %device, "push webhook failed after retries");
    }
}

/// Hex HMAC-SHA256 of `body` under `secret`.
pub fn sign(secret: &[u8], body: &[u8]) -> String {
    let mut mac =
        <Hmac<Sha256> as KeyInit>::new_from_slice(secret).expect("HMAC accepts keys of any length");
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}
