//! The server's typed configuration. Layers, later wins: built-in defaults
//! < TOML file (`--config`) < `MISSIVE_*` environment variables (nested keys
//! joined by `__`, e.g. `MISSIVE_STORE__FSYNC=off`) < command-line flags.
//! Unknown keys are errors that name the key.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

mod validate;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address the HTTP/WebSocket listener binds.
    pub listen: SocketAddr,
    /// Holds `missive.sqlite` (and, later, media).
    pub data_dir: PathBuf,
    pub log: LogConfig,
    pub store: StoreConfig,
    pub delivery: DeliveryConfig,
    pub limits: LimitsConfig,
    pub registration: RegistrationConfig,
    pub push: PushConfig,
    pub blobs: BlobsConfig,
    pub bus: BusConfig,
    pub cluster: ClusterConfig,
    pub web: WebConfig,
    /// End-to-end encrypted conversations: `off`, `optional` (the
    /// default: each conversation chooses) or `required` (no plaintext).
    pub e2ee: E2eePolicy,
}

/// The operator's end-to-end encryption policy.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum E2eePolicy {
    /// No encrypted conversations: ciphertext and turning encryption on
    /// are refused (`encryption_disabled`).
    Off,
    /// A conversation is encrypted when created so or switched on.
    #[default]
    Optional,
    /// Every message is ciphertext: plaintext is refused
    /// (`encryption_required`) and new conversations are encrypted.
    Required,
}

/// Who may create an account through the API. Operators create accounts
/// with `missive admin create` whatever the mode.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RegistrationConfig {
    pub mode: RegistrationMode,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RegistrationMode {
    /// Anyone who reaches the port (within `limits.registrations_per_ip_max`).
    #[default]
    Open,
    /// Only with a single-use invite code (`missive admin invite`).
    Invite,
    /// Nobody.
    Closed,
}

impl RegistrationMode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Open => "open",
            Self::Invite => "invite",
            Self::Closed => "closed",
        }
    }
}

/// How nodes tell each other about live devices (see `missive-bus`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BusConfig {
    /// Empty: in-process (one node). `nats://host:port`: core NATS.
    pub url: String,
    /// NATS subjects start with this, so clusters can share a server.
    pub subject_prefix: String,
    /// With NATS, each node asks the store this often which of its live
    /// devices have something waiting, and wakes those: a safety net for a
    /// lost bus message no node sees (every loss a node sees, it answers
    /// with a resync at once), and so the bound on how long such a loss can
    /// delay a delivery. One statement per thousand live devices.
    pub recheck_ms: u64,
}

impl Default for BusConfig {
    fn default() -> Self {
        Self {
            url: String::new(),
            subject_prefix: "missive".into(),
            recheck_ms: 60_000,
        }
    }
}

/// This node's identity in the session directory.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterConfig {
    /// Names this node in logs and the session directory; empty: a random
    /// id per start.
    pub node_id: String,
    /// A node that stops renewing its lease for this long (it crashed) is
    /// reaped by the others: its users show offline and its devices'
    /// sessions end. It renews every quarter of this.
    pub lease_ms: u64,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        Self {
            node_id: String::new(),
            lease_ms: 10_000,
        }
    }
}

/// The browser app served at `/`, and which pages may open WebSockets.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebConfig {
    /// Origins (exactly as browsers send them, e.g.
    /// `https://chat.example.com`) whose pages may open a WebSocket, besides
    /// the server's own origin. A WebSocket without an `Origin` header is
    /// not from a browser page and is always let through.
    pub allowed_origins: Vec<String>,
    /// Serve the app's files from this directory instead of the copies
    /// built into the binary: for working on the app without rebuilding.
    pub assets_dir: Option<PathBuf>,
}

/// Where media bytes live.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BlobsConfig {
    pub backend: BlobsBackend,
    /// For `s3`: the bucket, its region and, for S3-compatible services,
    /// the endpoint URL. Credentials come from `AWS_ACCESS_KEY_ID` /
    /// `AWS_SECRET_ACCESS_KEY` in the environment.
    pub s3_bucket: String,
    pub s3_region: String,
    pub s3_endpoint: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BlobsBackend {
    /// `<data_dir>/media`.
    Local,
    S3,
}

impl Default for BlobsConfig {
    fn default() -> Self {
        Self {
            backend: BlobsBackend::Local,
            s3_bucket: String::new(),
            s3_region: "us-east-1".into(),
            s3_endpoint: None,
        }
    }
}

/// The push webhook (see `service/push.rs`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PushConfig {
    /// Where to POST announcements; no URL, no webhook.
    pub webhook_url: Option<String>,
    /// HMAC-SHA256 key for the `X-Missive-Signature` header. Set it from
    /// the environment (`MISSIVE_PUSH__SECRET`), not in a file.
    pub secret: String,
    /// At most one call per device per this many seconds.
    pub coalesce_secs: u64,
    /// Retries after a failed call, with doubling backoff from
    /// `retry_backoff_ms`.
    pub retries_max: u32,
    pub retry_backoff_ms: u64,
    pub timeout_ms: u64,
    /// Webhook calls in flight at once.
    pub calls_concurrent_max: usize,
}

impl Default for PushConfig {
    fn default() -> Self {
        Self {
            webhook_url: None,
            secret: String::new(),
            coalesce_secs: 30,
            retries_max: 3,
            retry_backoff_ms: 500,
            timeout_ms: 5_000,
            calls_concurrent_max: 16,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    pub format: LogFormat,
    /// A `tracing` filter such as `info` or `missive_server=debug`;
    /// `RUST_LOG` overrides it.
    pub level: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Pretty,
    Json,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreConfig {
    /// Empty: the embedded SQLite file in `data_dir`.
    /// `postgres://user@host:port/db`: PostgreSQL (cluster mode).
    pub url: String,
    /// PostgreSQL connections per node. The batch writers of sends (a
    /// quarter) and acks (an eighth) have their own, so reads, however
    /// many, never hold a send back; the rest serve reads and other writes.
    pub pool_size: usize,
    /// `always`: `sent` only after the batch is fsynced. `off`: no fsync
    /// (benchmarks only; a power cut can lose acknowledged messages).
    pub fsync: FsyncMode,
    /// Most operations committed in one transaction.
    pub batch_max: usize,
    /// Read-only connections for queries, each with a thread of its own
    /// (embedded store).
    pub readers: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FsyncMode {
    Always,
    Off,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DeliveryConfig {
    /// How long message bodies are kept for history: `forever` (the
    /// default), a duration (`90d`, `12h`, or seconds), or `0` for
    /// store-and-forward (a body is deleted once every device has acked it).
    pub history_retention: Retention,
    /// How long an undelivered queue entry waits before it expires.
    pub offline_ttl_secs: u64,
    /// How often the sweeper deletes expired entries and old bodies.
    pub sweep_interval_secs: u64,
    /// Queue entries read from the store per page while draining; also the
    /// largest history page.
    pub page_size: usize,
    /// How long after sending an author may edit a message.
    pub edit_window_secs: u64,
    /// Uploaded media no message references are deleted after this long.
    pub media_grace_secs: u64,
}

/// How long message bodies are kept for history. Written `forever`, `0`,
/// a whole number of seconds, or a number with a unit: `s`, `m`, `h`, `d`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Retention {
    /// Kept until their author deletes them.
    Forever,
    /// Store-and-forward: a body is deleted once every member device has it.
    UntilDelivered,
    /// Kept this many seconds, and at least as long as the offline TTL.
    Secs(u64),
}

impl Retention {
    /// Bodies older than this many milliseconds may go; `i64::MAX` for never.
    pub fn keep_ms(self) -> i64 {
        match self {
            Retention::Forever => i64::MAX,
            Retention::UntilDelivered => 0,
            Retention::Secs(secs) => i64::try_from(secs.saturating_mul(1000)).unwrap_or(i64::MAX),
        }
    }

    fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        if text.eq_ignore_ascii_case("forever") {
            return Ok(Retention::Forever);
        }
        let (digits, unit_secs) = match text.char_indices().last() {
            Some((at, 's')) => (&text[..at], 1),
            Some((at, 'm')) => (&text[..at], 60),
            Some((at, 'h')) => (&text[..at], 60 * 60),
            Some((at, 'd')) => (&text[..at], DAY_SECS),
            _ => (text, 1),
        };
        let n: u64 = digits.trim().parse().map_err(|_| {
            format!("{text:?} is not a retention: use \"forever\", 0, or a duration such as \"90d\", \"12h\" or a number of seconds")
        })?;
        Ok(Retention::from_secs(n.saturating_mul(unit_secs)))
    }

    fn from_secs(secs: u64) -> Self {
        if secs == 0 {
            Retention::UntilDelivered
        } else {
            Retention::Secs(secs)
        }
    }
}

impl std::fmt::Display for Retention {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Retention::Forever => f.write_str("forever"),
            Retention::UntilDelivered => f.write_str("until delivered"),
            Retention::Secs(secs) if secs % DAY_SECS == 0 => write!(f, "{}d", secs / DAY_SECS),
            Retention::Secs(secs) => write!(f, "{secs}s"),
        }
    }
}

impl Serialize for Retention {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Retention::Forever => serializer.serialize_str("forever"),
            Retention::UntilDelivered => serializer.serialize_u64(0),
            Retention::Secs(secs) => serializer.serialize_u64(*secs),
        }
    }
}

impl<'de> Deserialize<'de> for Retention {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        // A number from TOML, or text (TOML strings and every environment
        // variable figment did not read as a number).
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Written {
            Secs(u64),
            Text(String),
        }
        match Written::deserialize(deserializer)? {
            Written::Secs(secs) => Ok(Retention::from_secs(secs)),
            Written::Text(text) => Retention::parse(&text).map_err(serde::de::Error::custom),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    pub devices_per_account_max: usize,
    /// At `devices_per_account_max`, a password login revokes the device
    /// used longest ago (one not connected, if any) instead of refusing.
    pub login_replaces_least_recent_device: bool,
    /// A device neither connected nor used for this long is revoked by
    /// the sweeper; 0 keeps devices until revoked.
    pub device_idle_expiry_secs: u64,
    pub group_members_max: usize,
    pub text_bytes_max: usize,
    /// Largest media upload.
    pub media_bytes_max: u64,
    /// Largest WebSocket message accepted; larger closes with 1009.
    pub frame_bytes_max: usize,
    /// A write to a connection that cannot go on for this long (the
    /// client stopped reading and the socket's buffer is full) closes it as
    /// a slow consumer.
    pub write_timeout_ms: u64,
    /// A WebSocket must authenticate within this time.
    pub auth_timeout_ms: u64,
    /// A connection whose request head has not fully arrived this long
    /// after it opened (or after its previous answer) is closed.
    pub request_head_timeout_ms: u64,
    /// Connections one client address may hold before any request on them
    /// authenticates (pages, sign-up, a WebSocket before `auth`).
    pub unauthenticated_per_ip_max: usize,
    /// Server pings an idle connection this often; silence for three
    /// intervals closes it.
    pub keepalive_secs: u64,
    /// Live connections (WebSockets, waiting long-polls) on this node.
    pub connections_max: usize,
    /// The same from one client address (see `trusted_proxies`), counted
    /// from the upgrade or poll request on; refused with `rate_limited`.
    pub connections_per_ip_max: usize,
    /// The same for all devices of one account, counted from
    /// authentication on; at least `devices_per_account_max`.
    pub connections_per_account_max: usize,
    /// Contacts one account may list.
    pub contacts_per_account_max: usize,
    /// Users one account may block.
    pub blocks_per_account_max: usize,
    /// Failed logins allowed per username and per client IP in the window.
    pub login_failures_max: u32,
    pub login_failure_window_secs: u64,
    /// Accounts one client IP may register per window.
    pub registrations_per_ip_max: u32,
    pub registration_window_secs: u64,
    /// Concurrent Argon2 hashes (each uses ~19 MiB).
    pub password_hashes_concurrent_max: usize,
    /// Sends (texts, reactions, edits, deletes) one device may make per
    /// second, beyond a burst of `send_burst_per_device`; 0: no limit.
    pub sends_per_sec_per_device: u32,
    pub send_burst_per_device: u32,
    /// The same for all devices of one account together (across the
    /// cluster).
    pub sends_per_sec_per_account: u32,
    pub send_burst_per_account: u32,
    /// Media uploads one account may start per second (across the
    /// cluster), beyond a burst of `upload_burst_per_account`; 0: no limit.
    pub uploads_per_sec_per_account: u32,
    pub upload_burst_per_account: u32,
    /// Groups one account may create per second (across the cluster),
    /// beyond a burst of `group_create_burst_per_account`; 0: no limit.
    pub group_creates_per_sec_per_account: u32,
    pub group_create_burst_per_account: u32,
    /// Conversation settings changes one account may make per second
    /// (across the cluster), beyond a burst of
    /// `settings_change_burst_per_account`: group renames, adds, removals,
    /// promotions and demotions, the disappearing timer, turning
    /// encryption on. Each stores a system event for every member; leaving
    /// a group is never limited. 0: no limit.
    pub settings_changes_per_sec_per_account: u32,
    pub settings_change_burst_per_account: u32,
    /// Key claims (`POST /v1/keys/claim`) one account may make per second
    /// (across the cluster), beyond a burst of
    /// `key_claim_burst_per_account`: each takes a one-time key of every
    /// device of the user claimed from; 0: no limit.
    pub key_claims_per_sec_per_account: u32,
    pub key_claim_burst_per_account: u32,
    /// Peers whose `X-Forwarded-For` names the client (a load balancer);
    /// per-address limits use that client address instead of theirs.
    pub trusted_proxies: Vec<std::net::IpAddr>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            data_dir: PathBuf::from("missive-data"),
            log: LogConfig::default(),
            store: StoreConfig::default(),
            delivery: DeliveryConfig::default(),
            limits: LimitsConfig::default(),
            registration: RegistrationConfig::default(),
            push: PushConfig::default(),
            blobs: BlobsConfig::default(),
            bus: BusConfig::default(),
            cluster: ClusterConfig::default(),
            web: WebConfig::default(),
            e2ee: E2eePolicy::default(),
        }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            format: LogFormat::Pretty,
            level: "info".into(),
        }
    }
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            url: String::new(),
            pool_size: 16,
            fsync: FsyncMode::Always,
            batch_max: 512,
            readers: 4,
        }
    }
}

const DAY_SECS: u64 = 24 * 60 * 60;

impl Default for DeliveryConfig {
    fn default() -> Self {
        Self {
            history_retention: Retention::Forever,
            offline_ttl_secs: 30 * DAY_SECS,
            sweep_interval_secs: 60,
            page_size: 256,
            edit_window_secs: 15 * 60,
            media_grace_secs: DAY_SECS,
        }
    }
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            devices_per_account_max: 5,
            login_replaces_least_recent_device: true,
            device_idle_expiry_secs: 90 * DAY_SECS,
            group_members_max: 1024,
            text_bytes_max: 64 * 1024,
            media_bytes_max: 16 * 1024 * 1024,
            frame_bytes_max: 256 * 1024,
            write_timeout_ms: 10_000,
            auth_timeout_ms: 5_000,
            request_head_timeout_ms: 10_000,
            unauthenticated_per_ip_max: 1_000,
            keepalive_secs: 30,
            connections_max: 100_000,
            connections_per_ip_max: 1_000,
            connections_per_account_max: 20,
            contacts_per_account_max: 10_000,
            blocks_per_account_max: 10_000,
            login_failures_max: 10,
            login_failure_window_secs: 300,
            registrations_per_ip_max: 20,
            registration_window_secs: 3600,
            password_hashes_concurrent_max: 2,
            sends_per_sec_per_device: 20,
            send_burst_per_device: 200,
            sends_per_sec_per_account: 50,
            send_burst_per_account: 500,
            uploads_per_sec_per_account: 2,
            upload_burst_per_account: 60,
            group_creates_per_sec_per_account: 1,
            group_create_burst_per_account: 20,
            // The slowest rate the per-second keys express: a burst of 30
            // covers setting a group up by hand (adding people one at a
            // time, promoting, naming, a timer), and one a second after it
            // is beyond anyone's pace of changing settings, while bounding
            // what one account makes every member receive to an hour's
            // 3,600 system events, against the 50 a second of sends.
            settings_changes_per_sec_per_account: 1,
            settings_change_burst_per_account: 30,
            key_claims_per_sec_per_account: 5,
            key_claim_burst_per_account: 50,
            trusted_proxies: Vec::new(),
        }
    }
}

/// Environment variables with the `MISSIVE_` prefix that belong to the CLI
/// client, not the server configuration.
const CLIENT_ENV_KEYS: &[&str] = &[
    "password",
    "server",
    "profile",
    "invite",
    "output",
    "config",
    "config_dir",
    "test_log",
];

impl Config {
    /// Defaults, then the file (if given), then the environment.
    pub fn figment(file: Option<&Path>) -> Figment {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        if let Some(file) = file {
            figment = figment.merge(Toml::file_exact(file));
        }
        figment.merge(
            Env::prefixed("MISSIVE_")
                .split("__")
                .ignore(CLIENT_ENV_KEYS),
        )
    }

    /// Extracts and checks the configuration; errors name the offending key.
    pub fn from_figment(figment: &Figment) -> Result<Self, ConfigError> {
        let config: Config = figment
            .extract()
            .map_err(|err| ConfigError(err.to_string()))?;
        config.validate()?;
        Ok(config)
    }

    pub fn media_dir(&self) -> PathBuf {
        self.data_dir.join("media")
    }

    pub fn database_path(&self) -> PathBuf {
        self.data_dir.join("missive.sqlite")
    }
}

#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {0}")]
pub struct ConfigError(pub String);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn example_config_parses_to_the_defaults() {
        // Goal: the shipped example documents exactly the defaults.
        let example = include_str!("../../../missive.example.toml");
        let figment =
            Figment::from(Serialized::defaults(Config::default())).merge(Toml::string(example));
        assert_eq!(Config::from_figment(&figment).unwrap(), Config::default());
    }

    #[test]
    fn retention_is_forever_unless_set_and_reads_as_written() {
        // Goal: history is kept forever by default; an operator writes a
        // duration with a unit, seconds, or 0, and a mistake is refused
        // with the key named.
        assert_eq!(
            Config::default().delivery.history_retention,
            Retention::Forever
        );
        let read = |value: &str| {
            let figment = Figment::from(Serialized::defaults(Config::default())).merge(
                Toml::string(&format!("[delivery]\nhistory_retention = {value}\n")),
            );
            Config::from_figment(&figment).map(|config| config.delivery.history_retention)
        };
        assert_eq!(read("\"forever\"").unwrap(), Retention::Forever);
        assert_eq!(read("0").unwrap(), Retention::UntilDelivered);
        assert_eq!(read("\"0\"").unwrap(), Retention::UntilDelivered);
        assert_eq!(read("3600").unwrap(), Retention::Secs(3600));
        assert_eq!(read("\"90d\"").unwrap(), Retention::Secs(90 * DAY_SECS));
        assert_eq!(read("\"12h\"").unwrap(), Retention::Secs(12 * 3600));
        assert_eq!(read("\"30m\"").unwrap(), Retention::Secs(1800));
        for bad in ["\"soon\"", "\"-1d\"", "-5", "\"d\""] {
            let err = read(bad).unwrap_err().to_string();
            assert!(err.contains("history_retention"), "{bad}: {err}");
        }
        assert_eq!(Retention::Forever.keep_ms(), i64::MAX);
        assert_eq!(Retention::Secs(2).keep_ms(), 2000);
    }

    #[test]
    fn errors_name_the_bad_key() {
        // Goal: a typo or a wrong type is reported with the key's path.
        let figment = Figment::from(Serialized::defaults(Config::default()))
            .merge(Toml::string("[store]\nfsink = \"off\"\n"));
        let err = Config::from_figment(&figment).unwrap_err().to_string();
        assert!(err.contains("fsink"), "{err}");
        let figment = Figment::from(Serialized::defaults(Config::default()))
            .merge(Toml::string("[limits]\nwrite_timeout_ms = \"soon\"\n"));
        let err = Config::from_figment(&figment).unwrap_err().to_string();
        assert!(err.contains("write_timeout_ms"), "{err}");
        let figment = Figment::from(Serialized::defaults(Config::default()))
            .merge(Toml::string("[store]\nreaders = 0\n"));
        let err = Config::from_figment(&figment).unwrap_err().to_string();
        assert!(err.contains("store.readers"), "{err}");
        let figment = Figment::from(Serialized::defaults(Config::default())).merge(Toml::string(
            "[limits]\ndevices_per_account_max = 30\nconnections_per_account_max = 20\n",
        ));
        let err = Config::from_figment(&figment).unwrap_err().to_string();
        assert!(err.contains("limits.connections_per_account_max"), "{err}");
        let figment = Figment::from(Serialized::defaults(Config::default()))
            .merge(Toml::string("[limits]\ncontacts_per_account_max = 0\n"));
        let err = Config::from_figment(&figment).unwrap_err().to_string();
        assert!(err.contains("limits.contacts_per_account_max"), "{err}");
        let figment = Figment::from(Serialized::defaults(Config::default())).merge(Toml::string(
            "[limits]\nsettings_changes_per_sec_per_account = 1\nsettings_change_burst_per_account = 0\n",
        ));
        let err = Config::from_figment(&figment).unwrap_err().to_string();
        assert!(
            err.contains("limits.settings_change_burst_per_account"),
            "{err}"
        );
        let figment = Figment::from(Serialized::defaults(Config::default()))
            .merge(Toml::string("[push]\nwebhook_url = \"http://x/\"\n"));
        let err = Config::from_figment(&figment).unwrap_err().to_string();
        assert!(err.contains("push.secret"), "{err}");
        // An origin with a path or a trailing slash would never equal a
        // browser's Origin header: refused rather than silently useless.
        for bad in ["https://chat.example.com/", "chat.example.com", "https://"] {
            let figment = Figment::from(Serialized::defaults(Config::default())).merge(
                Toml::string(&format!("[web]\nallowed_origins = [{bad:?}]\n")),
            );
            let err = Config::from_figment(&figment).unwrap_err().to_string();
            assert!(err.contains("web.allowed_origins"), "{bad}: {err}");
        }
        let figment = Figment::from(Serialized::defaults(Config::default())).merge(Toml::string(
            "[web]\nallowed_origins = [\"https://chat.example.com\", \"http://[::1]:8080\"]\n",
        ));
        assert!(Config::from_figment(&figment).is_ok());
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment::Jail fixes the closure type.
    fn env_overrides_file() {
        // Goal: precedence default < file < env, nested keys via `__`.
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "m.toml",
                "listen = \"127.0.0.1:9000\"\n[store]\nfsync = \"always\"\n",
            )?;
            jail.set_env("MISSIVE_STORE__FSYNC", "off");
            jail.set_env("MISSIVE_PASSWORD", "not-a-server-key");
            let config = Config::from_figment(&Config::figment(Some(Path::new("m.toml")))).unwrap();
            assert_eq!(config.listen.port(), 9000);
            assert_eq!(config.store.fsync, FsyncMode::Off);
            Ok(())
        });
    }
}
