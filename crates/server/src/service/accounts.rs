//! Registration, login, devices and revocation.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use missive_bus::{Bus, DeviceEvent, Invalidation};
use missive_core::model::{
    AccountRecord, AccountSummary, DELETED_PREFIX, DeviceAuth, DeviceRecord, NewAccount, NewDevice,
    NewInvites, RevokedDevice,
};
use missive_core::{
    AccountId, Clock, DeviceId, DeviceToken, InviteCode, Password, TokenHash, Username,
};
use missive_proto::ErrorCode;
use missive_proto::rest::{
    DeviceInfo, DeviceList, LoginRequest, LoginResponse, RegisterRequest, RegisterResponse,
};
use missive_store::{Store, StoreError};
use tokio::sync::Semaphore;

use super::device_list::DeviceListNotices;
use super::login_limit::AttemptLimiter;
use super::password::PasswordHasher;
use crate::cache::{Caches, Generation};
use crate::config::{LimitsConfig, RegistrationMode};
use crate::service::ServiceError;

const DEVICE_NAME_BYTES_MAX: usize = 64;
const PHONE_BYTES_MAX: usize = 20;
/// Requests allowed to wait for an Argon2 slot.
const HASH_WAITERS_MAX: usize = 64;
/// How often a device's use over plain HTTP is written down, at most (a
/// connection records it when it opens). Far below any sensible expiry.
const TOUCH_INTERVAL: Duration = Duration::from_secs(60 * 60);
const TOUCHED_MAX: u64 = 1_000_000;
/// Accounts read per page when an operator lists them.
const ADMIN_PAGE: usize = 1000;
/// Devices revoked per expiry transaction.
const EXPIRE_BATCH: usize = 1000;

pub struct Accounts {
    store: Arc<dyn Store>,
    bus: Arc<dyn Bus>,
    clock: Arc<dyn Clock>,
    caches: Arc<Caches>,
    hashing: Semaphore,
    /// Hash requests waiting for `hashing`; beyond the bound they are refused.
    hashing_waiters: AtomicUsize,
    logins: AttemptLimiter,
    registrations: AttemptLimiter,
    registration: RegistrationMode,
    devices_max: usize,
    replace_least_recent: bool,
    device_idle_expiry_ms: i64,
    /// Devices whose use this node recorded within the last
    /// `TOUCH_INTERVAL`: a device is written at most that often.
    touched: moka::sync::Cache<DeviceId, ()>,
    /// Verified against when the username does not exist, so a failed login
    /// takes as long whether or not the account exists.
    dummy_hash: String,
    hasher: Arc<PasswordHasher>,
    /// Revoking a device that had published keys changes its account's key
    /// listing, which those who encrypt to it are told.
    device_list: DeviceListNotices,
}

impl Accounts {
    pub fn new(
        store: Arc<dyn Store>,
        bus: Arc<dyn Bus>,
        clock: Arc<dyn Clock>,
        caches: Arc<Caches>,
        limits: &LimitsConfig,
        registration: RegistrationMode,
    ) -> Self {
        let hasher = Arc::new(PasswordHasher::default());
        let dummy_hash = hasher.hash(b"missive-dummy-password").unwrap_or_default();
        let shared = bus.has_peers();
        let device_list = DeviceListNotices::new(store.clone(), bus.clone(), clock.clone());
        Self {
            store,
            bus,
            clock,
            caches,
            hashing: Semaphore::new(limits.password_hashes_concurrent_max),
            hashing_waiters: AtomicUsize::new(0),
            logins: AttemptLimiter::new(
                limits.login_failures_max,
                Duration::from_secs(limits.login_failure_window_secs),
            )
            .shared(shared),
            registrations: AttemptLimiter::new(
                limits.registrations_per_ip_max,
                Duration::from_secs(limits.registration_window_secs),
            )
            .shared(shared),
            registration,
            devices_max: limits.devices_per_account_max,
            replace_least_recent: limits.login_replaces_least_recent_device,
            device_idle_expiry_ms: i64::try_from(
                limits.device_idle_expiry_secs.saturating_mul(1000),
            )
            .unwrap_or(i64::MAX),
            touched: moka::sync::Cache::builder()
                .max_capacity(TOUCHED_MAX)
                .time_to_live(TOUCH_INTERVAL)
                .build(),
            dummy_hash,
            hasher,
            device_list,
        }
    }

    /// The login and registration attempt limits, which other nodes
    /// count too.
    pub fn attempt_limits(&self) -> [&AttemptLimiter; 2] {
        [&self.logins, &self.registrations]
    }

    pub async fn register(
        &self,
        request: RegisterRequest,
        ip: IpAddr,
    ) -> Result<RegisterResponse, ServiceError> {
        let invite = match self.registration {
            RegistrationMode::Open => None,
            RegistrationMode::Closed => {
                return Err(ServiceError::new(
                    ErrorCode::RegistrationClosed,
                    "this server does not take registrations; ask its operator for an account",
                ));
            }
            RegistrationMode::Invite => match request.invite.as_deref().map(str::trim) {
                Some(code) if !code.is_empty() => Some(TokenHash::of(code)),
                _ => {
                    return Err(ServiceError::new(
                        ErrorCode::InviteRequired,
                        "this server takes registrations by invite only",
                    ));
                }
            },
        };
        let username = new_username(&request.username)?;
        let password = Password::parse(&request.password)?;
        let phone = request.phone.map(|phone| parse_phone(&phone)).transpose()?;
        self.registrations
            .begin(&[format!("ip:{ip}")])
            .map_err(|retry_after_secs| {
                rate_limited(retry_after_secs, "too many registrations from this address")
            })?;
        if self.store.account_by_username(&username).await?.is_some() {
            return Err(ServiceError::new(
                ErrorCode::UsernameTaken,
                "username is taken",
            ));
        }
        let password_hash = self.hash(password).await?;
        let account = self
            .store
            .create_account(NewAccount {
                username: username.clone(),
                password_hash,
                phone,
                now_ms: self.clock.now_ms(),
                invite,
            })
            .await?;
        tracing::info!(account = %account, %username, mode = self.registration.as_str(), "account registered");
        Ok(RegisterResponse {
            account_id: account.0,
            username: username.to_string(),
        })
    }

    pub async fn login(
        &self,
        request: LoginRequest,
        ip: IpAddr,
    ) -> Result<LoginResponse, ServiceError> {
        let wrong = || ServiceError::new(ErrorCode::WrongCredentials, "wrong username or password");
        let device_name = device_name(request.device_name.unwrap_or_else(|| "unnamed".into()))?;
        // Invalid usernames share one key, so the key space stays bounded.
        let username = Username::parse(&request.username).ok();
        let user_key = username
            .as_ref()
            .map_or_else(|| "u:<invalid>".to_owned(), |name| format!("u:{name}"));
        let ip_key = format!("ip:{ip}");
        self.logins
            .begin(&[user_key.clone(), ip_key.clone()])
            .map_err(|retry_after_secs| {
                rate_limited(retry_after_secs, "too many failed logins; try again later")
            })?;
        let account = match &username {
            Some(username) => self.store.account_by_username(username).await?,
            None => None,
        };
        let stored_hash = account
            .as_ref()
            .map_or(self.dummy_hash.clone(), |a| a.password_hash.clone());
        let verified = request.password.len() <= Password::LEN_MAX
            && self.verify(request.password, stored_hash).await?;
        let Some(account) = account.filter(|_| verified) else {
            return Err(wrong());
        };
        self.logins.forget(&user_key);
        self.logins.refund(&ip_key);
        // Told only to whoever knows the password; the store checks again
        // when it adds the device, against a suspension racing this login.
        if account.suspended {
            return Err(StoreError::AccountSuspended.into());
        }
        let token = DeviceToken::generate();
        let created = self
            .store
            .create_device(NewDevice {
                account: account.id,
                name: device_name,
                token_hash: token.hash(),
                devices_max: self.devices_max,
                replace_least_recent: self.replace_least_recent,
                now_ms: self.clock.now_ms(),
            })
            .await?;
        if let Some(replaced) = created.replaced {
            self.retire_all(account.username.as_str(), &[replaced])
                .await;
            tracing::info!(account = %account.id, device = %replaced.device, "device replaced by a login at the device limit");
        }
        tracing::info!(account = %account.id, device = %created.id, "device logged in");
        Ok(LoginResponse {
            device_id: created.id.0,
            token: token.as_str().to_owned(),
            username: account.username.to_string(),
            replaced_device_id: created.replaced.map(|replaced| replaced.device.0),
        })
    }

    /// The device a presented token belongs to.
    /// The device holding this token, from the cache when it can be
    /// trusted: while the Bus is disconnected another node's revocation
    /// could go unheard, so the store is asked every time.
    pub async fn authenticate(&self, presented: &str) -> Result<DeviceAuth, ServiceError> {
        let hash = TokenHash::of(presented);
        let trusted = self.bus.is_connected();
        if trusted {
            if let Some(auth) = self.caches.token(&hash) {
                return Ok(auth);
            }
        }
        let since = self.caches.generation();
        let auth = self
            .store
            .authenticate(&hash)
            .await?
            .ok_or_else(token_invalid)?;
        if trusted {
            self.caches.fill_token(since, hash, auth.clone());
        }
        Ok(auth)
    }

    /// Where this node's caches stand. Taken before a token check, it lets
    /// [`Self::confirm`] tell whether a revocation was applied since.
    pub fn checkpoint(&self) -> Generation {
        self.caches.generation()
    }

    /// Confirms, for a connection that registered after its token was
    /// checked at `since`, that no revocation slipped in between (applied
    /// before the registration, it found no connection to close). Every
    /// node applies every revocation (`revocations.rs`; this node's own at
    /// once), and applying one moves the caches' generation before it
    /// looks for connections to close: if the generation has not moved,
    /// any revocation still to come finds this connection. Otherwise, or
    /// while the bus is away, the store is asked.
    pub async fn confirm(&self, presented: &str, since: Generation) -> Result<(), ServiceError> {
        if self.bus.is_connected() && self.caches.generation() == since {
            return Ok(());
        }
        self.store
            .authenticate(&TokenHash::of(presented))
            .await?
            .map(|_| ())
            .ok_or_else(token_invalid)
    }

    pub async fn devices(&self, auth: &DeviceAuth) -> Result<DeviceList, ServiceError> {
        let devices = self.store.list_devices(auth.account).await?;
        Ok(DeviceList {
            devices: devices
                .into_iter()
                .map(|device| DeviceInfo {
                    device_id: device.id.0,
                    name: device.name,
                    created_ms: device.created_ms,
                    last_seen_ms: device.last_seen_ms,
                    current: device.id == auth.device,
                })
                .collect(),
        })
    }

    /// Renames one of the caller's devices (possibly itself).
    pub async fn rename_device(
        &self,
        auth: &DeviceAuth,
        device: DeviceId,
        name: String,
    ) -> Result<DeviceInfo, ServiceError> {
        let name = device_name(name)?;
        if !self
            .store
            .rename_device(auth.account, device, name.clone())
            .await?
        {
            return Err(ServiceError::new(
                ErrorCode::UnknownDevice,
                "you have no such device",
            ));
        }
        self.devices(auth)
            .await?
            .devices
            .into_iter()
            .find(|listed| listed.device_id == device.0)
            .ok_or_else(|| ServiceError::new(ErrorCode::UnknownDevice, "you have no such device"))
    }

    /// Revokes one of the caller's devices (possibly itself); its live
    /// connections close at once.
    pub async fn revoke(&self, auth: &DeviceAuth, device: DeviceId) -> Result<(), ServiceError> {
        let Some(revoked) = self.store.revoke_device(auth.account, device).await? else {
            return Err(ServiceError::new(
                ErrorCode::UnknownDevice,
                "you have no such device",
            ));
        };
        self.retire_all(auth.username.as_str(), &[revoked]).await;
        tracing::info!(account = %auth.account, device = %device, "device revoked");
        Ok(())
    }

    /// The account called `username`, as it is spelled, if there is one:
    /// what a client checks before opening a chat with someone. Tells no
    /// more than registering the name would (`username_taken`).
    pub async fn lookup(&self, username: &str) -> Result<String, ServiceError> {
        let username = Username::parse(username)?;
        self.store
            .account_by_username(&username)
            .await?
            .map(|account| account.username.to_string())
            .ok_or_else(unknown_user)
    }

    /// Every account, for an operator (`missive admin users`).
    pub async fn admin_users(&self) -> Result<Vec<AccountSummary>, ServiceError> {
        let mut all = Vec::new();
        let mut after = None;
        loop {
            let page = self.store.list_accounts(after, ADMIN_PAGE).await?;
            let full = page.len() == ADMIN_PAGE;
            after = match page.last() {
                Some(last) => Some(Username::parse(&last.username)?),
                None => None,
            };
            all.extend(page);
            if !full {
                return Ok(all);
            }
        }
    }

    /// How this server takes registrations.
    pub fn registration_mode(&self) -> RegistrationMode {
        self.registration
    }

    /// Creates an account as an operator, whatever the registration mode.
    pub async fn admin_create(
        &self,
        username: &str,
        password: &str,
    ) -> Result<AccountId, ServiceError> {
        let username = new_username(username)?;
        let password_hash = self.hash(Password::parse(password)?).await?;
        let account = self
            .store
            .create_account(NewAccount {
                username: username.clone(),
                password_hash,
                phone: None,
                now_ms: self.clock.now_ms(),
                invite: None,
            })
            .await?;
        tracing::info!(account = %account, %username, "account created by an operator");
        Ok(account)
    }

    /// Deletes an account for good: it leaves every group (each member
    /// sees it leave), then loses its name (`deleted.<id>`, freeing the
    /// name), its password, devices (connections closed), contacts and
    /// blocks (`AccountStore::delete_account`). Its messages stay in the others'
    /// histories. Returns the revoked devices and how many groups it left.
    pub async fn admin_delete(
        &self,
        username: &str,
        groups: &super::groups::Groups,
    ) -> Result<(Vec<DeviceId>, usize), ServiceError> {
        let account = self.existing(username).await?;
        let left = groups.leave_all(account.id, &account.username).await?;
        let revoked = self
            .store
            .delete_account(account.id)
            .await?
            .ok_or_else(unknown_user)?;
        // Told under the name its contacts knew, not the `deleted.<id>` it
        // now has.
        let revoked = self.retire_all(account.username.as_str(), &revoked).await;
        tracing::info!(account = %account.id, %username, devices = revoked.len(), groups_left = left, "account deleted by an operator");
        Ok((revoked, left))
    }

    /// Suspends an account (every device revoked, its connections closed,
    /// logins refused) or resumes it; returns the revoked devices.
    pub async fn admin_suspend(
        &self,
        username: &str,
        suspended: bool,
    ) -> Result<Vec<DeviceId>, ServiceError> {
        let account = self.existing(username).await?;
        let revoked = self
            .store
            .set_suspended(account.id, suspended)
            .await?
            .ok_or_else(unknown_user)?;
        let revoked = self.retire_all(account.username.as_str(), &revoked).await;
        if suspended {
            tracing::info!(account = %account.id, %username, devices = revoked.len(), "account suspended by an operator");
        } else {
            tracing::info!(account = %account.id, %username, "account resumed by an operator");
        }
        Ok(revoked)
    }

    /// `count` single-use invites valid for `valid_secs`; returns the codes,
    /// which are shown only here.
    pub async fn admin_invite(
        &self,
        count: usize,
        valid_secs: u64,
    ) -> Result<(Vec<String>, i64), ServiceError> {
        let codes: Vec<InviteCode> = (0..count).map(|_| InviteCode::generate()).collect();
        let now_ms = self.clock.now_ms();
        let expires_ms = now_ms
            .saturating_add(i64::try_from(valid_secs.saturating_mul(1000)).unwrap_or(i64::MAX));
        self.store
            .create_invites(NewInvites {
                code_hashes: codes.iter().map(InviteCode::hash).collect(),
                now_ms,
                expires_ms,
            })
            .await?;
        tracing::info!(count, expires_ms, "invites created by an operator");
        Ok((
            codes.iter().map(|code| code.as_str().to_owned()).collect(),
            expires_ms,
        ))
    }

    /// An account's devices, for an operator.
    pub async fn admin_devices(&self, username: &str) -> Result<Vec<DeviceRecord>, ServiceError> {
        let account = self.existing(username).await?;
        Ok(self.store.list_devices(account.id).await?)
    }

    /// Sets a new password, as an operator does for a user locked out of
    /// every device; with `revoke_devices`, their devices are revoked too.
    /// Returns the revoked devices.
    pub async fn admin_reset_password(
        &self,
        username: &str,
        password: &str,
        revoke_devices: bool,
    ) -> Result<Vec<DeviceId>, ServiceError> {
        let account = self.existing(username).await?;
        let password_hash = self.hash(Password::parse(password)?).await?;
        if !self
            .store
            .set_password_hash(account.id, password_hash)
            .await?
        {
            return Err(unknown_user());
        }
        tracing::info!(account = %account.id, %username, "password reset by an operator");
        if revoke_devices {
            self.admin_revoke(username, None).await
        } else {
            Ok(Vec::new())
        }
    }

    /// Revokes one device of the account, or all of them (`None`), as an
    /// operator; returns those revoked.
    pub async fn admin_revoke(
        &self,
        username: &str,
        device: Option<DeviceId>,
    ) -> Result<Vec<DeviceId>, ServiceError> {
        let account = self.existing(username).await?;
        let devices = match device {
            Some(device) => vec![device],
            None => self
                .store
                .list_devices(account.id)
                .await?
                .into_iter()
                .map(|device| device.id)
                .collect(),
        };
        let mut revoked = Vec::with_capacity(devices.len());
        let mut failed = None;
        for device in devices {
            match self.store.revoke_device(account.id, device).await {
                Ok(Some(gone)) => {
                    // Retired at once: a later failure must not leave it
                    // connected.
                    self.retire(gone.device).await;
                    tracing::info!(account = %account.id, %device, "device revoked by an operator");
                    revoked.push(gone);
                }
                Ok(None) => {}
                Err(err) => {
                    failed = Some(err);
                    break;
                }
            }
        }
        self.device_list
            .revoked(account.username.as_str(), &revoked)
            .await;
        if let Some(err) = failed {
            return Err(err.into());
        }
        if device.is_some() && revoked.is_empty() {
            return Err(ServiceError::new(
                ErrorCode::UnknownDevice,
                "the account has no such device",
            ));
        }
        Ok(revoked.iter().map(|gone| gone.device).collect())
    }

    async fn existing(&self, username: &str) -> Result<AccountRecord, ServiceError> {
        let username = Username::parse(username).map_err(|_| unknown_user())?;
        self.store
            .account_by_username(&username)
            .await?
            .ok_or_else(unknown_user)
    }

    /// Records that `auth`'s device is in use (a request over plain HTTP),
    /// so it does not expire; written at most once per `TOUCH_INTERVAL`
    /// per node. A failed write only delays that.
    pub async fn note_use(&self, auth: &DeviceAuth) {
        if self.device_idle_expiry_ms == 0 || self.touched.contains_key(&auth.device) {
            return;
        }
        self.touched.insert(auth.device, ());
        if let Err(err) = self
            .store
            .touch_device(auth.device, self.clock.now_ms())
            .await
        {
            tracing::debug!(%err, device = %auth.device, "could not record a device's use");
        }
    }

    /// Revokes the devices unused for `limits.device_idle_expiry_secs`
    /// (none while connected); returns how many.
    pub async fn expire_idle_devices(&self) -> Result<usize, ServiceError> {
        if self.device_idle_expiry_ms == 0 {
            return Ok(0);
        }
        let before_ms = self
            .clock
            .now_ms()
            .saturating_sub(self.device_idle_expiry_ms);
        let mut total = 0;
        loop {
            let expired = self.store.expire_devices(before_ms, EXPIRE_BATCH).await?;
            for revoked in &expired {
                self.retire(revoked.device).await;
                tracing::info!(device = %revoked.device, "idle device expired");
            }
            self.device_list.expired(&expired).await;
            total += expired.len();
            if expired.len() < EXPIRE_BATCH {
                return Ok(total);
            }
        }
    }

    /// After the store revoked `revoked`, devices of the account named
    /// `user`: retires each, then tells those who encrypt to the account if
    /// its key listing changed. Returns the devices.
    async fn retire_all(&self, user: &str, revoked: &[RevokedDevice]) -> Vec<DeviceId> {
        for gone in revoked {
            self.retire(gone.device).await;
        }
        self.device_list.revoked(user, revoked).await;
        revoked.iter().map(|gone| gone.device).collect()
    }

    /// After the store revoked `device`: drop its token from the caches,
    /// on every node, then close its live connections (4003).
    async fn retire(&self, device: DeviceId) {
        self.caches.invalidate(Invalidation::Device(device));
        self.bus
            .publish_invalidation(Invalidation::Device(device))
            .await;
        self.bus.publish(device, DeviceEvent::Revoked).await;
    }

    /// A slot for one Argon2 computation; refused when too many requests
    /// already wait, so a flood cannot queue without bound.
    async fn hashing_slot(&self) -> Result<tokio::sync::SemaphorePermit<'_>, ServiceError> {
        let waiting = self.hashing_waiters.fetch_add(1, Ordering::SeqCst);
        let slot = if waiting >= HASH_WAITERS_MAX {
            Err(rate_limited(1, "the server is busy; try again"))
        } else {
            self.hashing
                .acquire()
                .await
                .map_err(|_| ServiceError::internal())
        };
        self.hashing_waiters.fetch_sub(1, Ordering::SeqCst);
        slot
    }

    async fn hash(&self, password: Password) -> Result<String, ServiceError> {
        let _permit = self.hashing_slot().await?;
        let hasher = Arc::clone(&self.hasher);
        tokio::task::spawn_blocking(move || hasher.hash(password.as_str().as_bytes()))
            .await
            .map_err(|_| ServiceError::internal())?
            .map_err(|err| {
                tracing::error!(%err, "password hashing failed");
                ServiceError::internal()
            })
    }

    async fn verify(&self, password: String, stored_hash: String) -> Result<bool, ServiceError> {
        let _permit = self.hashing_slot().await?;
        let hasher = Arc::clone(&self.hasher);
        tokio::task::spawn_blocking(move || hasher.verify(password.as_bytes(), &stored_hash))
            .await
            .map_err(|_| ServiceError::internal())
    }
}

fn rate_limited(retry_after_secs: u64, message: &str) -> ServiceError {
    ServiceError::rate_limited(Duration::from_secs(retry_after_secs), message)
}

fn parse_phone(raw: &str) -> Result<String, ServiceError> {
    let digits = raw.strip_prefix('+').unwrap_or(raw);
    if raw.len() > PHONE_BYTES_MAX
        || digits.len() < 4
        || !digits.chars().all(|c| c.is_ascii_digit())
    {
        return Err(ServiceError::new(
            ErrorCode::InvalidField,
            "phone must be + and 4-19 digits",
        ));
    }
    Ok(raw.to_owned())
}

/// A device's name as given at login or in a rename: 1-64 bytes, no NUL.
fn device_name(name: String) -> Result<String, ServiceError> {
    if name.is_empty() || name.len() > DEVICE_NAME_BYTES_MAX || name.contains('\0') {
        return Err(ServiceError::new(
            ErrorCode::InvalidField,
            "device_name must be 1-64 bytes, without NUL",
        ));
    }
    Ok(name)
}

/// A name for a new account: a valid username, not of the form deleted
/// accounts are renamed to.
fn new_username(name: &str) -> Result<Username, ServiceError> {
    let username = Username::parse(name)?;
    if username.as_str().starts_with(DELETED_PREFIX) {
        return Err(ServiceError::new(
            ErrorCode::InvalidUsername,
            format!("usernames starting with {DELETED_PREFIX:?} are reserved"),
        ));
    }
    Ok(username)
}

fn unknown_user() -> ServiceError {
    ServiceError::new(ErrorCode::UnknownUser, "no such user")
}

fn token_invalid() -> ServiceError {
    ServiceError::new(ErrorCode::TokenInvalid, "token is invalid or revoked")
}

#[cfg(test)]
mod tests {
    use missive_bus::InProcessBus;
    use missive_core::model::{NewAccount, NewDevice};
    use missive_core::{SystemClock, Username};
    use missive_store::{SqliteConfig, SqliteStore};

    use super::*;

    #[tokio::test]
    async fn a_revocation_applied_between_the_check_and_the_registration_is_caught() {
        // Goal: `confirm` refuses a token whose revocation was applied on
        // this node after the token was checked (the connection was not
        // registered yet, so the revocation closed nothing), and asks the
        // store nothing when no revocation was applied since the check: a
        // revocation still to come finds the registered connection.
        let dir = tempfile::tempdir().expect("temp dir");
        let store: Arc<dyn Store> = Arc::new(
            SqliteStore::open(&SqliteConfig::new(dir.path().join("db.sqlite"))).expect("store"),
        );
        let caches = Arc::new(Caches::default());
        let accounts = Accounts::new(
            store.clone(),
            Arc::new(InProcessBus::new()),
            Arc::new(SystemClock),
            caches.clone(),
            &LimitsConfig::default(),
            RegistrationMode::Open,
        );
        let account = store
            .create_account(NewAccount {
                username: Username::parse("alice").expect("name"),
                password_hash: "x".into(),
                phone: None,
                now_ms: 0,
                invite: None,
            })
            .await
            .expect("account");
        let device = store
            .create_device(NewDevice {
                account,
                name: "phone".into(),
                token_hash: TokenHash::of("alice-token"),
                devices_max: 5,
                replace_least_recent: false,
                now_ms: 0,
            })
            .await
            .expect("device")
            .id;

        let since = accounts.checkpoint();
        accounts.authenticate("alice-token").await.expect("valid");
        accounts
            .confirm("alice-token", since)
            .await
            .expect("nothing applied since the check");

        // Revoked in the store, not yet applied here: left to its
        // application (no store read).
        let since = accounts.checkpoint();
        assert!(
            store
                .revoke_device(account, device)
                .await
                .expect("revoke")
                .is_some()
        );
        accounts
            .confirm("alice-token", since)
            .await
            .expect("no revocation applied here since the check");

        // Applied here after the check: the store is asked, and refuses.
        caches.invalidate(Invalidation::Device(device));
        let refused = accounts
            .confirm("alice-token", since)
            .await
            .expect_err("revoked between the check and the registration");
        assert_eq!(refused.code, ErrorCode::TokenInvalid);
    }
}
