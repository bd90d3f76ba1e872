//! `missive admin backup` and `missive admin restore`: an embedded
//! server's data (its database and its local media) copied while it
//! serves, and put back into an empty data directory.
//!
//! A backup directory holds `missive.sqlite` (a snapshot: see
//! `missive_store::sqlite::backup`), `media/` (the media files, copied
//! after the snapshot, so every file the snapshot names is there; files
//! uploaded meanwhile come along unnamed and are collected as unshared
//! media later) and `backup.json`, written last: a directory without it is
//! not a complete backup.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use missive_server::Config;
use missive_server::config::BlobsBackend;
use missive_store::sqlite::backup::{TableCounts, check, snapshot};
use serde::{Deserialize, Serialize};

const MANIFEST: &str = "backup.json";
const DATABASE: &str = "missive.sqlite";
const MEDIA: &str = "media";
/// The layout above; a restore refuses any other.
const FORMAT: u32 = 1;

/// Why a backup or a restore did nothing (or stopped), with the stable
/// code the CLI prints.
#[derive(Debug)]
pub struct BackupError {
    /// `target_not_empty`: the backup directory has files in it, or the
    /// data directory to restore into already holds a database or media.
    /// `not_a_backup`: no complete backup this version can read.
    /// `unsupported_store`: a cluster's PostgreSQL store is backed up with
    /// PostgreSQL's own tools. `backup_failed`: an I/O or database error.
    pub code: &'static str,
    pub message: String,
}

impl BackupError {
    fn new(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

#[derive(Serialize, Deserialize)]
struct Manifest {
    format: u32,
    created_ms: u64,
    tables: TableCounts,
    /// `None` when media live in S3 (not copied).
    media_files: Option<u64>,
    media_bytes: Option<u64>,
}

/// What a backup or a restore reports.
#[derive(Serialize)]
pub struct Summary {
    pub directory: PathBuf,
    pub tables: TableCounts,
    pub media_files: Option<u64>,
    pub media_bytes: Option<u64>,
}

/// Copies the configured embedded store and its local media into `dir`
/// (created if missing; it must be empty).
pub fn backup(config: &Config, dir: &Path) -> Result<Summary, BackupError> {
    embedded_only(config)?;
    if dir.exists() && !is_empty_dir(dir)? {
        return Err(BackupError::new(
            "target_not_empty",
            format!(
                "{} is not empty: a backup goes into a new directory",
                dir.display()
            ),
        ));
    }
    let database = config.database_path();
    if !database.is_file() {
        return Err(BackupError::new(
            "backup_failed",
            format!("no database at {}", database.display()),
        ));
    }
    std::fs::create_dir_all(dir).map_err(|err| failed("creating", dir, err))?;
    let tables = snapshot(&database, &dir.join(DATABASE))
        .map_err(|err| BackupError::new("backup_failed", err.to_string()))?;
    let media = match config.blobs.backend {
        BlobsBackend::Local => Some(copy_tree(&config.media_dir(), &dir.join(MEDIA))?),
        BlobsBackend::S3 => None,
    };
    let manifest = Manifest {
        format: FORMAT,
        created_ms: now_ms(),
        tables,
        media_files: media.map(|(files, _)| files),
        media_bytes: media.map(|(_, bytes)| bytes),
    };
    let text = serde_json::to_string_pretty(&manifest)
        .map_err(|err| BackupError::new("backup_failed", err.to_string()))?;
    let manifest_path = dir.join(MANIFEST);
    std::fs::write(&manifest_path, text).map_err(|err| failed("writing", &manifest_path, err))?;
    Ok(Summary {
        directory: dir.to_path_buf(),
        tables: manifest.tables,
        media_files: manifest.media_files,
        media_bytes: manifest.media_bytes,
    })
}

/// Puts the backup in `dir` into the configured data directory, which
/// must hold no database and no media yet (a server must not be running
/// on it).
pub fn restore(config: &Config, dir: &Path) -> Result<Summary, BackupError> {
    embedded_only(config)?;
    let manifest_path = dir.join(MANIFEST);
    let manifest: Manifest = std::fs::read(&manifest_path)
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .ok_or_else(|| {
            BackupError::new(
                "not_a_backup",
                format!(
                    "{} has no readable {MANIFEST}: not a complete backup",
                    dir.display()
                ),
            )
        })?;
    if manifest.format != FORMAT {
        return Err(BackupError::new(
            "not_a_backup",
            format!(
                "{} is a backup of format {}; this version reads format {FORMAT}",
                dir.display(),
                manifest.format
            ),
        ));
    }
    let database = config.database_path();
    let media_dir = config.media_dir();
    if database.exists() || (media_dir.exists() && !is_empty_dir(&media_dir)?) {
        return Err(BackupError::new(
            "target_not_empty",
            format!(
                "{} already holds a database or media: restore into an empty data directory",
                config.data_dir.display()
            ),
        ));
    }
    let tables = check(&dir.join(DATABASE))
        .map_err(|err| BackupError::new("not_a_backup", err.to_string()))?;
    if tables != manifest.tables {
        return Err(BackupError::new(
            "not_a_backup",
            format!(
                "{} does not hold the rows {MANIFEST} lists",
                dir.join(DATABASE).display()
            ),
        ));
    }
    std::fs::create_dir_all(&config.data_dir)
        .map_err(|err| failed("creating", &config.data_dir, err))?;
    // Copied under another name and renamed: a restore cut short leaves no
    // half database where the server would open it.
    let partial = config.data_dir.join(format!("{DATABASE}.restoring"));
    std::fs::copy(dir.join(DATABASE), &partial).map_err(|err| failed("copying", &partial, err))?;
    let media = match (config.blobs.backend, manifest.media_files) {
        (BlobsBackend::Local, Some(_)) => Some(copy_tree(&dir.join(MEDIA), &media_dir)?),
        _ => None,
    };
    std::fs::rename(&partial, &database).map_err(|err| failed("renaming", &partial, err))?;
    Ok(Summary {
        directory: config.data_dir.clone(),
        tables,
        media_files: media.map(|(files, _)| files),
        media_bytes: media.map(|(_, bytes)| bytes),
    })
}

fn embedded_only(config: &Config) -> Result<(), BackupError> {
    if config.store.url.is_empty() {
        Ok(())
    } else {
        Err(BackupError::new(
            "unsupported_store",
            "the store is PostgreSQL: back it up with pg_dump and restore it with pg_restore \
             (docs/CLUSTER.md, \"Backups\")",
        ))
    }
}

/// Copies every file under `from` to the same place under `to`; returns
/// (files, bytes). A missing `from` is an empty tree.
fn copy_tree(from: &Path, to: &Path) -> Result<(u64, u64), BackupError> {
    let mut totals = (0, 0);
    if !from.exists() {
        return Ok(totals);
    }
    std::fs::create_dir_all(to).map_err(|err| failed("creating", to, err))?;
    let entries = std::fs::read_dir(from).map_err(|err| failed("reading", from, err))?;
    for entry in entries {
        let entry = entry.map_err(|err| failed("reading", from, err))?;
        let source = entry.path();
        let target = to.join(entry.file_name());
        let kind = entry
            .file_type()
            .map_err(|err| failed("reading", &source, err))?;
        if kind.is_dir() {
            let (files, bytes) = copy_tree(&source, &target)?;
            totals = (totals.0 + files, totals.1 + bytes);
        } else if kind.is_file() {
            let bytes =
                std::fs::copy(&source, &target).map_err(|err| failed("copying", &source, err))?;
            totals = (totals.0 + 1, totals.1 + bytes);
        }
    }
    Ok(totals)
}

fn is_empty_dir(dir: &Path) -> Result<bool, BackupError> {
    let mut entries = std::fs::read_dir(dir).map_err(|err| failed("reading", dir, err))?;
    Ok(entries.next().is_none())
}

fn failed(doing: &str, path: &Path, err: std::io::Error) -> BackupError {
    BackupError::new(
        "backup_failed",
        format!("{doing} {}: {err}", path.display()),
    )
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| {
            u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
        })
}
