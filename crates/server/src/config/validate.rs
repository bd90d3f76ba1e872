//! Checks on a parsed [`Config`] that serde cannot express: values that
//! must be positive, settings that need each other, and the shapes of URLs
//! and origins. Each error names the offending key.

use super::{BlobsBackend, Config, ConfigError};

impl Config {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        self.validate_positive()?;
        self.validate_backends()?;
        self.validate_bursts()?;
        self.validate_origins()
    }

    /// Counts, sizes and intervals for which 0 means nothing works.
    fn validate_positive(&self) -> Result<(), ConfigError> {
        let positive = [
            ("store.batch_max", self.store.batch_max as u64),
            ("store.readers", self.store.readers as u64),
            ("store.pool_size", self.store.pool_size as u64),
            ("bus.recheck_ms", self.bus.recheck_ms),
            ("cluster.lease_ms", self.cluster.lease_ms),
            (
                "delivery.sweep_interval_secs",
                self.delivery.sweep_interval_secs,
            ),
            ("delivery.page_size", self.delivery.page_size as u64),
            (
                "limits.devices_per_account_max",
                self.limits.devices_per_account_max as u64,
            ),
            (
                "limits.group_members_max",
                self.limits.group_members_max as u64,
            ),
            (
                "push.calls_concurrent_max",
                self.push.calls_concurrent_max as u64,
            ),
            ("limits.keepalive_secs", self.limits.keepalive_secs),
            (
                "limits.request_head_timeout_ms",
                self.limits.request_head_timeout_ms,
            ),
            (
                "limits.unauthenticated_per_ip_max",
                self.limits.unauthenticated_per_ip_max as u64,
            ),
            ("limits.connections_max", self.limits.connections_max as u64),
            (
                "limits.connections_per_ip_max",
                self.limits.connections_per_ip_max as u64,
            ),
            (
                "limits.contacts_per_account_max",
                self.limits.contacts_per_account_max as u64,
            ),
            (
                "limits.blocks_per_account_max",
                self.limits.blocks_per_account_max as u64,
            ),
            (
                "limits.password_hashes_concurrent_max",
                self.limits.password_hashes_concurrent_max as u64,
            ),
        ];
        for (key, value) in positive {
            if value == 0 {
                return Err(ConfigError(format!("{key} must be greater than 0")));
            }
        }
        Ok(())
    }

    /// Backends, push, and limits that depend on one another.
    fn validate_backends(&self) -> Result<(), ConfigError> {
        if self.blobs.backend == BlobsBackend::S3 && self.blobs.s3_bucket.is_empty() {
            return Err(ConfigError(
                "blobs.s3_bucket must be set when blobs.backend = \"s3\"".into(),
            ));
        }
        if self.push.webhook_url.is_some() && self.push.secret.len() < 16 {
            return Err(ConfigError(
                "push.secret must be at least 16 bytes when push.webhook_url is set".into(),
            ));
        }
        if !self.store.url.is_empty() && !self.store.url.starts_with("postgres") {
            return Err(ConfigError(
                "store.url must be empty (SQLite) or a postgres:// URL".into(),
            ));
        }
        if !self.bus.url.is_empty() && !self.bus.url.starts_with("nats://") {
            return Err(ConfigError(
                "bus.url must be empty (in-process) or a nats:// URL".into(),
            ));
        }
        if self.limits.connections_per_account_max < self.limits.devices_per_account_max {
            // Fewer would keep some of an account's devices offline for good.
            return Err(ConfigError(
            "limits.connections_per_account_max must be at least limits.devices_per_account_max"
                .into(),
        ));
        }
        if self.limits.frame_bytes_max < 1024 {
            return Err(ConfigError(
                "limits.frame_bytes_max must be at least 1024".into(),
            ));
        }
        Ok(())
    }

    /// A rate limit that is on needs a burst of at least one.
    fn validate_bursts(&self) -> Result<(), ConfigError> {
        for (rate, burst, key) in [
            (
                self.limits.sends_per_sec_per_device,
                self.limits.send_burst_per_device,
                "limits.send_burst_per_device",
            ),
            (
                self.limits.sends_per_sec_per_account,
                self.limits.send_burst_per_account,
                "limits.send_burst_per_account",
            ),
            (
                self.limits.uploads_per_sec_per_account,
                self.limits.upload_burst_per_account,
                "limits.upload_burst_per_account",
            ),
            (
                self.limits.group_creates_per_sec_per_account,
                self.limits.group_create_burst_per_account,
                "limits.group_create_burst_per_account",
            ),
            (
                self.limits.settings_changes_per_sec_per_account,
                self.limits.settings_change_burst_per_account,
                "limits.settings_change_burst_per_account",
            ),
            (
                self.limits.key_claims_per_sec_per_account,
                self.limits.key_claim_burst_per_account,
                "limits.key_claim_burst_per_account",
            ),
        ] {
            if rate > 0 && burst == 0 {
                return Err(ConfigError(format!(
                    "{key} must be at least 1 when its rate is set"
                )));
            }
        }
        Ok(())
    }

    fn validate_origins(&self) -> Result<(), ConfigError> {
        if let Some(origin) = self
            .web
            .allowed_origins
            .iter()
            .find(|origin| !is_origin(origin))
        {
            return Err(ConfigError(format!(
                "web.allowed_origins: {origin:?} is not an origin (scheme://host[:port], no path)"
            )));
        }
        Ok(())
    }
}

/// `http(s)://host[:port]` and nothing more: what a browser's `Origin`
/// header holds, so an allow-list entry can ever match one exactly.
fn is_origin(origin: &str) -> bool {
    let Some(authority) = origin
        .strip_prefix("https://")
        .or_else(|| origin.strip_prefix("http://"))
    else {
        return false;
    };
    !authority.is_empty()
        && authority
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-.:[]".contains(c))
}
