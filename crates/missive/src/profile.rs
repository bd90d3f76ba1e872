//! Saved logins (`--profile`): one JSON file per profile holding the server
//! URL and the device token, readable only by the user.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
pub struct Profile {
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

pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.')
        && !name.starts_with('.')
}

pub fn load(name: &str) -> std::io::Result<Profile> {
    let text = std::fs::read_to_string(path(name))?;
    serde_json::from_str(&text).map_err(std::io::Error::other)
}

pub fn save(name: &str, profile: &Profile) -> std::io::Result<PathBuf> {
    let path = path(name);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let text = serde_json::to_string_pretty(profile).map_err(std::io::Error::other)?;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    use std::io::Write;
    options.open(&path)?.write_all(text.as_bytes())?;
    Ok(path)
}

pub fn remove(name: &str) -> std::io::Result<()> {
    std::fs::remove_file(path(name))
}
