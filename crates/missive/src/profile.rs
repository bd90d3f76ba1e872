//! Saved logins (`--profile`): one JSON file per profile holding the server
//! URL and the device token, and beside it the device's end-to-end
//! encryption keys (`<name>.keys.json`), both readable only by the user.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

#[derive(Clone, Serialize, Deserialize)]
pub(crate) struct Profile {
    pub server: String,
    pub username: String,
    pub device_id: i64,
    pub token: String,
}

fn path(name: &str) -> PathBuf {
    crate::config_dir()
        .join("profiles")
        .join(format!("{name}.json"))
}

pub(crate) fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.')
        && !name.starts_with('.')
}

pub(crate) fn load(name: &str) -> std::io::Result<Profile> {
    let text = std::fs::read_to_string(path(name))?;
    serde_json::from_str(&text).map_err(std::io::Error::other)
}

pub(crate) fn save(name: &str, profile: &Profile) -> std::io::Result<PathBuf> {
    let path = path(name);
    let text = serde_json::to_string_pretty(profile).map_err(std::io::Error::other)?;
    write_private(&path, &text)?;
    Ok(path)
}

/// A private file beside the profile: `<name>.<kind>.json`.
fn private_path(name: &str, kind: &str) -> PathBuf {
    crate::config_dir()
        .join("profiles")
        .join(format!("{name}.{kind}.json"))
}

/// The device's saved encryption keys, if it has any.
pub(crate) fn load_keys(name: &str) -> std::io::Result<Option<String>> {
    load_private(name, "keys")
}

/// Saves the keys whole or not at all: a crash mid-write must not lose the
/// sessions.
pub(crate) fn save_keys(name: &str, text: &str) -> std::io::Result<()> {
    save_private(name, "keys", text)
}

/// The keys of attachments this device has read (`file_keys.rs`).
pub(crate) fn load_file_keys(name: &str) -> std::io::Result<Option<String>> {
    load_private(name, "files")
}

pub(crate) fn save_file_keys(name: &str, text: &str) -> std::io::Result<()> {
    save_private(name, "files", text)
}

fn load_private(name: &str, kind: &str) -> std::io::Result<Option<String>> {
    match std::fs::read_to_string(private_path(name, kind)) {
        Ok(text) => Ok(Some(text)),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(err) => Err(err),
    }
}

/// Whole or not at all: a new file renamed over the old.
fn save_private(name: &str, kind: &str, text: &str) -> std::io::Result<()> {
    let path = private_path(name, kind);
    let fresh = path.with_extension("json.new");
    write_private(&fresh, text)?;
    std::fs::rename(&fresh, &path)
}

/// Writes `text` to a file only the user may read.
fn write_private(path: &std::path::Path, text: &str) -> std::io::Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    use std::io::Write;
    let mut file = options.open(path)?;
    file.write_all(text.as_bytes())?;
    file.sync_all()
}

/// Forgets the login and its keys (a revoked device's keys are no use).
pub(crate) fn remove(name: &str) -> std::io::Result<()> {
    for kind in ["keys", "files"] {
        match std::fs::remove_file(private_path(name, kind)) {
            Ok(()) => {}
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
            Err(err) => return Err(err),
        }
    }
    std::fs::remove_file(path(name))
}
