//! `missive admin backup` and `missive admin restore`: a server's data
//! (its store and its local media) copied while it serves, and put back
//! into an empty data directory or database.
//!
//! A backup directory holds the store's copy, `media/` (the media files,
//! copied after the store's snapshot, so every file the snapshot names is
//! there; files uploaded meanwhile come along unnamed and are collected as
//! unshared media later) and `backup.json`, written last: a directory
//! without it is not a complete backup. The store's copy is
//! `missive.sqlite` for the embedded store (a snapshot: see
//! `missive_store::sqlite::backup`) and `missive.pgdump` for PostgreSQL
//! (`pg_dump`'s custom format, taken in a snapshot held open while the
//! rows are counted: `missive_store::postgres::backup`).

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use missive_server::Config;
use missive_server::config::BlobsBackend;
use missive_store::TableCounts;
use missive_store::postgres::backup as pg;
use missive_store::sqlite::backup::{check, snapshot};
use serde::{Deserialize, Serialize};

const MANIFEST: &str = "backup.json";
const DATABASE: &str = "missive.sqlite";
const DUMP: &str = "missive.pgdump";
const MEDIA: &str = "media";
/// The layout above; a restore refuses any other.
const FORMAT: u32 = 1;
const SQLITE: &str = "sqlite";
const POSTGRES: &str = "postgres";

/// Why a backup or a restore did nothing (or stopped), with the stable
/// code the CLI prints.
#[derive(Debug)]
pub(crate) struct BackupError {
    /// `target_not_empty`: the backup directory has files in it, or the
    /// data directory to restore into already holds a database or media.
    /// `not_a_backup`: no complete backup this version can read.
    /// `backup_failed`: an I/O or database error, or `pg_dump` /
    /// `pg_restore` failed (their message follows).
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
    /// `sqlite` or `postgres`: a backup restores into the same kind.
    store: String,
    created_ms: u64,
    tables: TableCounts,
    /// `None` when media live in S3 (not copied).
    media_files: Option<u64>,
    media_bytes: Option<u64>,
}

/// What a backup or a restore reports.
#[derive(Serialize)]
pub(crate) struct Summary {
    pub directory: PathBuf,
    pub tables: TableCounts,
    pub media_files: Option<u64>,
    pub media_bytes: Option<u64>,
}

/// Copies the configured store and its local media into `dir` (created
/// if missing; it must be empty).
pub(crate) async fn backup(config: &Config, dir: &Path) -> Result<Summary, BackupError> {
    if dir.exists() && !is_empty_dir(dir)? {
        return Err(BackupError::new(
            "target_not_empty",
            format!(
                "{} is not empty: a backup goes into a new directory",
                dir.display()
            ),
        ));
    }
    let (store, tables) = if config.store.url.is_empty() {
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
        (SQLITE, tables)
    } else {
        std::fs::create_dir_all(dir).map_err(|err| failed("creating", dir, err))?;
        (POSTGRES, dump(&config.store.url, &dir.join(DUMP)).await?)
    };
    let media = match config.blobs.backend {
        BlobsBackend::Local => Some(copy_tree(&config.media_dir(), &dir.join(MEDIA))?),
        BlobsBackend::S3 => None,
    };
    let manifest = Manifest {
        format: FORMAT,
        store: store.into(),
        created_ms: now_ms(),
        tables,
        media_files: media.map(|(files, _)| files),
        media_bytes: media.map(|(_, bytes)| bytes),
    };
    let text = serde_json::to_string_pretty(&manifest)
        .map_err(|err| BackupError::new("backup_failed", err.to_string()))?;
    let manifest_path = dir.join(MANIFEST);
    // Last, and only once everything it describes is on disk: its
    // presence is what says the backup is complete.
    std::fs::write(&manifest_path, text).map_err(|err| failed("writing", &manifest_path, err))?;
    synced(&manifest_path)?;
    synced(dir)?;
    Ok(Summary {
        directory: dir.to_path_buf(),
        tables: manifest.tables,
        media_files: manifest.media_files,
        media_bytes: manifest.media_bytes,
    })
}

/// `pg_dump` of the database at `url` into `file`, inside a snapshot held
/// open meanwhile; returns the row counts of that snapshot.
async fn dump(url: &str, file: &Path) -> Result<TableCounts, BackupError> {
    let held = pg::hold_snapshot(url).await.map_err(store_failed)?;
    let file_arg = file.as_os_str().to_owned();
    let snapshot_id = held.id.clone();
    let url_arg = url.to_owned();
    let dumped = run_tool("pg_dump", move |command| {
        command
            .arg("--format=custom")
            .arg("--snapshot")
            .arg(snapshot_id)
            .arg("--file")
            .arg(file_arg)
            .arg("--dbname")
            .arg(url_arg);
    })
    .await;
    let counts = held.counts.clone();
    held.release().await.map_err(store_failed)?;
    dumped?;
    synced(file)?;
    Ok(counts)
}

/// Runs a PostgreSQL client tool off the runtime's threads; its stderr
/// becomes the error when it fails.
async fn run_tool(
    tool: &'static str,
    args: impl FnOnce(&mut std::process::Command) + Send + 'static,
) -> Result<(), BackupError> {
    let output = tokio::task::spawn_blocking(move || {
        let mut command = std::process::Command::new(tool);
        args(&mut command);
        command.output()
    })
    .await
    .map_err(|err| BackupError::new("backup_failed", err.to_string()))?
    .map_err(|err| {
        BackupError::new(
            "backup_failed",
            format!("cannot run {tool} (PostgreSQL's client tools): {err}"),
        )
    })?;
    if output.status.success() {
        Ok(())
    } else {
        Err(BackupError::new(
            "backup_failed",
            format!(
                "{tool} failed: {}",
                String::from_utf8_lossy(&output.stderr).trim()
            ),
        ))
    }
}

fn store_failed(err: missive_store::StoreError) -> BackupError {
    BackupError::new("backup_failed", err.to_string())
}

/// Puts the backup in `dir` into the configured store, which must be
/// empty (no database in the data directory, or no tables in the
/// PostgreSQL database; no server running on it), and its media into the
/// data directory's media folder, which must be empty too.
pub(crate) async fn restore(config: &Config, dir: &Path) -> Result<Summary, BackupError> {
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
    let configured = if config.store.url.is_empty() {
        SQLITE
    } else {
        POSTGRES
    };
    if manifest.store != configured {
        return Err(BackupError::new(
            "not_a_backup",
            format!(
                "{} is a backup of a {} store and the configured store is {configured}",
                dir.display(),
                manifest.store
            ),
        ));
    }
    let media_dir = config.media_dir();
    if media_dir.exists() && !is_empty_dir(&media_dir)? {
        return Err(not_empty(format!("{} holds files", media_dir.display())));
    }
    // Between the store's checks and putting the store in place: a restore
    // cut short leaves media but no store, and a server started there
    // would not mistake it for a whole one.
    let copy_media = || match (config.blobs.backend, manifest.media_files) {
        (BlobsBackend::Local, Some(_)) => copy_tree(&dir.join(MEDIA), &media_dir).map(Some),
        _ => Ok(None),
    };
    let (tables, media) = if configured == SQLITE {
        restore_database(config, dir, &manifest, copy_media)?
    } else {
        restore_dump(&config.store.url, &dir.join(DUMP), &manifest, copy_media).await?
    };
    Ok(Summary {
        directory: dir.to_path_buf(),
        tables,
        media_files: media.map(|(files, _)| files),
        media_bytes: media.map(|(_, bytes)| bytes),
    })
}

fn not_empty(what: String) -> BackupError {
    BackupError::new(
        "target_not_empty",
        format!("{what}: a backup restores only into an empty store"),
    )
}

/// The embedded store: the copy, checked, renamed into the data directory.
fn restore_database(
    config: &Config,
    dir: &Path,
    manifest: &Manifest,
    copy_media: impl FnOnce() -> Result<Option<(u64, u64)>, BackupError>,
) -> Result<(TableCounts, Option<(u64, u64)>), BackupError> {
    let database = config.database_path();
    if database.exists() {
        return Err(not_empty(format!(
            "{} holds a database",
            config.data_dir.display()
        )));
    }
    let copy = dir.join(DATABASE);
    let tables = check(&copy).map_err(|err| BackupError::new("not_a_backup", err.to_string()))?;
    if tables != manifest.tables {
        return Err(BackupError::new(
            "not_a_backup",
            format!("{} does not hold the rows {MANIFEST} lists", copy.display()),
        ));
    }
    std::fs::create_dir_all(&config.data_dir)
        .map_err(|err| failed("creating", &config.data_dir, err))?;
    let media = copy_media()?;
    // Copied under another name and renamed: a restore cut short leaves no
    // half database where the server would open it.
    let partial = config.data_dir.join(format!("{DATABASE}.restoring"));
    std::fs::copy(&copy, &partial).map_err(|err| failed("copying", &partial, err))?;
    synced(&partial)?;
    std::fs::rename(&partial, &database).map_err(|err| failed("renaming", &partial, err))?;
    synced(&config.data_dir)?;
    Ok((tables, media))
}

/// PostgreSQL: `pg_restore` in one transaction (all or nothing), then the
/// rows counted against the manifest.
async fn restore_dump(
    url: &str,
    dump: &Path,
    manifest: &Manifest,
    copy_media: impl FnOnce() -> Result<Option<(u64, u64)>, BackupError>,
) -> Result<(TableCounts, Option<(u64, u64)>), BackupError> {
    if pg::counts(url).await.map_err(store_failed)?.is_some() {
        return Err(not_empty("the PostgreSQL database has tables".into()));
    }
    if !dump.is_file() {
        return Err(BackupError::new(
            "not_a_backup",
            format!("{} is missing", dump.display()),
        ));
    }
    let media = copy_media()?;
    let dump_arg = dump.as_os_str().to_owned();
    let url_arg = url.to_owned();
    run_tool("pg_restore", move |command| {
        command
            .arg("--single-transaction")
            .arg("--exit-on-error")
            .arg("--no-owner")
            .arg("--no-privileges")
            .arg("--dbname")
            .arg(url_arg)
            .arg(dump_arg);
    })
    .await?;
    let tables = pg::counts(url)
        .await
        .map_err(store_failed)?
        .unwrap_or_default();
    if tables != manifest.tables {
        return Err(BackupError::new(
            "backup_failed",
            "the restored database does not hold the rows the backup lists",
        ));
    }
    Ok((tables, media))
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
            synced(&target)?;
            totals = (totals.0 + 1, totals.1 + bytes);
        }
    }
    synced(to)?;
    Ok(totals)
}

/// Flushes a file, or a directory's entries, to disk.
fn synced(path: &Path) -> Result<(), BackupError> {
    std::fs::File::open(path)
        .and_then(|file| file.sync_all())
        .map_err(|err| failed("syncing", path, err))
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
