//! `missive migrate`: an embedded server's data moved to PostgreSQL (and
//! its media to the cluster's blob store), for the step from one binary to
//! a cluster. The server must be stopped; the source is sealed so that it
//! is not served again by mistake (`--reopen` lifts the seal), and an
//! interrupted migration resumes where it stopped. How the tables map and
//! how each side keeps its place: `missive_store::transfer`,
//! `missive_store::sqlite::export` and `missive_store::postgres::import`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use futures_util::StreamExt;
use missive_blobs::{BlobError, Blobs};
use missive_server::Config;
use missive_server::config::BlobsBackend;
use missive_server::service::media::{blob_key, thumbnail_key};
use missive_store::StoreError;
use missive_store::postgres::import::{MEDIA_STEP, Step, Target, TargetState};
use missive_store::sqlite::export::{Seal, Source, SourceError};
use missive_store::transfer::{Batch, TABLES, Table};
use serde::Serialize;

use crate::cli;
use crate::serve::layered_config;

#[derive(clap::Args)]
pub(crate) struct MigrateArgs {
    /// The embedded server's data directory (or its database file,
    /// `missive.sqlite`, also as `sqlite://PATH`). Its server must be
    /// stopped.
    #[arg(long, value_name = "DATA_DIR")]
    from: String,
    /// The PostgreSQL URL the cluster will use [default: `store.url` of
    /// the configuration, which keeps a password off the command line].
    /// Its database must be empty (or hold this migration, interrupted).
    #[arg(long, value_name = "URL")]
    to: Option<String>,
    /// The cluster's configuration file: where media go (`[blobs]`; the
    /// `MISSIVE_BLOBS__*` variables work too) [default: the media folder
    /// of --data-dir].
    #[arg(long)]
    config: Option<PathBuf>,
    /// With a local blob store: the data directory whose media folder
    /// receives the media.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Empty the target database first, whatever it holds.
    #[arg(long)]
    replace_target: bool,
    /// Leave the media bytes where they are (the embedded server kept them
    /// in the bucket the cluster will use); only their records move.
    #[arg(long)]
    skip_media: bool,
    /// Rows per transaction.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    batch_rows: u32,
    /// Lift the seal a migration left on the embedded store, so a server
    /// serves it again (nothing the cluster received since comes back).
    #[arg(long, conflicts_with_all = ["to", "replace_target", "skip_media"])]
    reopen: bool,
}

/// Why a migration did nothing, or stopped; the code is stable.
struct MigrateError {
    /// `source_missing`, `source_in_use`, `already_migrated`,
    /// `target_missing`, `target_not_empty`, `target_in_use`,
    /// `other_migration`, `migration_failed`.
    code: &'static str,
    message: String,
}

impl MigrateError {
    fn new(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

impl From<StoreError> for MigrateError {
    fn from(err: StoreError) -> Self {
        Self::new("migration_failed", err.to_string())
    }
}

impl From<BlobError> for MigrateError {
    fn from(err: BlobError) -> Self {
        Self::new("migration_failed", format!("media: {err}"))
    }
}

/// Rows of one table on either side once the migration is done.
#[derive(Serialize)]
struct Counted {
    source: u64,
    target: u64,
}

#[derive(Serialize, Default)]
struct MediaMoved {
    /// Blobs (uploads and thumbnails) copied, over every run.
    files: u64,
    bytes: u64,
    /// Blobs a media record names that the source does not have.
    missing: u64,
    /// Why nothing was copied, when nothing was.
    #[serde(skip_serializing_if = "Option::is_none")]
    skipped: Option<&'static str>,
}

#[derive(Serialize)]
struct Summary {
    from: String,
    to: String,
    /// Whether this run went on from an interrupted one.
    resumed: bool,
    tables: BTreeMap<&'static str, Counted>,
    media: MediaMoved,
    seconds: f64,
}

pub(crate) async fn run(args: MigrateArgs) -> ExitCode {
    let database = database_path(&args.from);
    let done = if args.reopen {
        reopen(&database).map(|reopened| {
            serde_json::json!({"reopened": reopened, "database": database.display().to_string()})
        })
    } else {
        migrate(&args, &database).await.and_then(|summary| {
            serde_json::to_value(summary)
                .map_err(|err| MigrateError::new("migration_failed", err.to_string()))
        })
    };
    match done {
        Ok(value) => cli::print_json(&value),
        Err(err) => {
            eprintln!("error: {}: {}", err.code, err.message);
            ExitCode::from(3)
        }
    }
}

/// `--from` as the database file it names.
fn database_path(from: &str) -> PathBuf {
    let path = PathBuf::from(from.strip_prefix("sqlite://").unwrap_or(from));
    if path.is_dir() {
        path.join("missive.sqlite")
    } else {
        path
    }
}

fn open_source(database: &Path) -> Result<Source, MigrateError> {
    Source::open(database).map_err(|err| match err {
        SourceError::Missing(_) => MigrateError::new("source_missing", err.to_string()),
        SourceError::InUse => MigrateError::new(
            "source_in_use",
            format!(
                "{} is open in another process: stop the server on it first",
                database.display()
            ),
        ),
        SourceError::Store(err) => err.into(),
    })
}

fn reopen(database: &Path) -> Result<bool, MigrateError> {
    Ok(open_source(database)?.reopen()?)
}

async fn migrate(args: &MigrateArgs, database: &Path) -> Result<Summary, MigrateError> {
    let started = Instant::now();
    let config = target_config(args)?;
    let url = config.store.url.clone();
    let source = open_source(database)?;
    let mut target = Target::connect(&url).await?;
    let live = target.live_nodes(now_ms()).await?;
    if live > 0 {
        return Err(MigrateError::new(
            "target_in_use",
            format!("{live} missive node(s) run on the target database: stop them first"),
        ));
    }
    let (migration_id, steps) = begin_or_resume(args, &source, &mut target, &url).await?;
    let resumed = steps.is_some();
    let steps = steps.unwrap_or_default();
    tracing::info!(%migration_id, resumed, "migrating");
    let mut source = source;
    for table in TABLES {
        let step = steps.get(table.name).cloned().unwrap_or_default();
        if !step.done {
            source = copy_table(source, &mut target, table, step, args.batch_rows as usize).await?;
        }
    }
    let started_indexes = Instant::now();
    target.build_deferred().await?;
    eprintln!(
        "indexes and foreign keys: built in {:.1} s",
        started_indexes.elapsed().as_secs_f64()
    );
    let media = if args.skip_media {
        MediaMoved {
            skipped: Some("--skip-media"),
            ..MediaMoved::default()
        }
    } else {
        let step = steps.get(MEDIA_STEP).cloned().unwrap_or_default();
        copy_media(&source, &target, &config, database, step).await?
    };
    let tables = compare_counts(&source, &mut target).await?;
    // The source says "moved" before the target forgets the migration: a
    // run cut short between the two finds both and completes it.
    source.mark_moved(now_ms())?;
    target.finish().await?;
    Ok(Summary {
        from: database.display().to_string(),
        to: without_password(&url),
        resumed,
        tables,
        media,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// The configuration layers with `--to` and `--data-dir` on top; refused
/// without a PostgreSQL database to move to.
fn target_config(args: &MigrateArgs) -> Result<Config, MigrateError> {
    let mut overrides = serde_json::json!({});
    if let Some(url) = &args.to {
        overrides["store"] = serde_json::json!({"url": url});
    }
    if let Some(data_dir) = &args.data_dir {
        overrides["data_dir"] = serde_json::json!(data_dir);
    }
    let config = layered_config(args.config.as_deref(), &overrides)
        .map_err(|_| MigrateError::new("migration_failed", "the configuration is invalid"))?;
    if config.store.url.is_empty() {
        return Err(MigrateError::new(
            "target_missing",
            "no PostgreSQL database to move to: give --to, or store.url in the configuration",
        ));
    }
    Ok(config)
}

/// Resumes the migration source and target both remember (with the steps
/// done), or seals the source and begins a new one on an empty (or, with
/// --replace-target, emptied) target. Refuses a moved source and a target
/// holding anything else.
async fn begin_or_resume(
    args: &MigrateArgs,
    source: &Source,
    target: &mut Target,
    url: &str,
) -> Result<(String, Option<BTreeMap<String, Step>>), MigrateError> {
    let seal = source.seal()?;
    let state = target.state().await?;
    Ok(match (&seal, state) {
        (
            Seal::Moving { migration_id, .. } | Seal::Moved { migration_id, .. },
            TargetState::Migrating {
                migration_id: there,
                steps,
            },
        ) if *migration_id == there => (there, Some(steps)),
        (Seal::Moved { target, .. }, _) => {
            return Err(MigrateError::new(
                "already_migrated",
                format!(
                    "this store was moved to {target} already (`--reopen` serves it here again)"
                ),
            ));
        }
        (_, TargetState::Migrating { .. }) if !args.replace_target => {
            return Err(MigrateError::new(
                "other_migration",
                "the target holds an unfinished migration from another source \
                 (--replace-target empties it)",
            ));
        }
        (_, TargetState::Holds(tables)) if !args.replace_target => {
            return Err(MigrateError::new(
                "target_not_empty",
                format!(
                    "the target database holds data ({}); --replace-target empties it first",
                    tables
                        .iter()
                        .map(|(table, rows)| format!("{table}: {rows}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ));
        }
        (_, state) => {
            if !matches!(state, TargetState::Empty) {
                target.empty_out().await?;
            }
            let migration_id = match &seal {
                Seal::Moving { migration_id, .. } => migration_id.clone(),
                _ => {
                    let id = format!("{:x}-{:x}", now_ms(), std::process::id());
                    source.seal_for(&id, &without_password(url), now_ms())?;
                    id
                }
            };
            target.begin(&migration_id).await?;
            (migration_id, None)
        }
    })
}

/// Counts each table's rows on both sides (and sets the target's id
/// sequences past the source's highest ids); the counts, or a refusal if
/// any differ, which leaves the source sealed to try again.
async fn compare_counts(
    source: &Source,
    target: &mut Target,
) -> Result<BTreeMap<&'static str, Counted>, MigrateError> {
    let mut tables = BTreeMap::new();
    let mut differ = Vec::new();
    for table in TABLES {
        let counted = Counted {
            source: source.count(table)?,
            target: target.count(table.name).await?,
        };
        if counted.source != counted.target {
            differ.push(format!(
                "{}: {} in the source, {} in the target",
                table.name, counted.source, counted.target
            ));
        }
        tables.insert(table.name, counted);
        target
            .continue_ids(table, source.highest_id(table)?)
            .await?;
    }
    if !differ.is_empty() {
        return Err(MigrateError::new(
            "migration_failed",
            format!(
                "the row counts differ ({}); the source stays sealed and the target \
                 keeps its progress",
                differ.join("; ")
            ),
        ));
    }
    Ok(tables)
}

/// Copies what is left of `table` (after `step`), a batch per
/// transaction. The source reads the next batch on a thread of its own
/// while the target writes the one before.
async fn copy_table(
    source: Source,
    target: &mut Target,
    table: &'static Table,
    step: Step,
    batch_rows: usize,
) -> Result<Source, MigrateError> {
    let total = source.count(table)?;
    let bar = progress(total, table.name);
    bar.set_position(step.copied);
    let started = Instant::now();
    let (batches, mut arriving) = tokio::sync::mpsc::channel::<Result<Batch, StoreError>>(1);
    let reader = tokio::task::spawn_blocking(move || {
        let mut after = step.after;
        loop {
            let batch = source.read(table, after.as_deref(), batch_rows);
            let next = match &batch {
                Ok(batch) if !batch.rows.is_empty() => batch.last_key.clone(),
                _ => None,
            };
            if batches.blocking_send(batch).is_err() || next.is_none() {
                break;
            }
            after = next;
        }
        source
    });
    let mut copied = 0;
    while let Some(batch) = arriving.recv().await {
        let batch = batch?;
        // An empty batch commits the step as done.
        target.copy(table, &batch).await?;
        bar.inc(batch.rows.len() as u64);
        copied += batch.rows.len();
    }
    let source = reader
        .await
        .map_err(|err| MigrateError::new("migration_failed", err.to_string()))?;
    bar.finish_and_clear();
    if total > 0 {
        eprintln!(
            "{}: {copied} of {total} rows copied in {:.1} s",
            table.name,
            started.elapsed().as_secs_f64()
        );
    }
    Ok(source)
}

/// Copies the bytes of every media record (and its thumbnail) from the
/// source's media folder to the configured blob store.
async fn copy_media(
    source: &Source,
    target: &Target,
    config: &Config,
    database: &Path,
    step: Step,
) -> Result<MediaMoved, MigrateError> {
    let data_dir = database.parent().unwrap_or(Path::new("."));
    let from_dir = data_dir.join("media");
    let mut moved = MediaMoved {
        files: step.copied,
        bytes: step.bytes,
        ..MediaMoved::default()
    };
    if step.done {
        return Ok(moved);
    }
    let same_folder =
        config.blobs.backend == BlobsBackend::Local && same_path(&from_dir, &config.media_dir());
    if same_folder {
        target.media_copied("", 0, 0, true).await?;
        moved.skipped = Some("the cluster's media folder is the source's");
        return Ok(moved);
    }
    let from = Blobs::local(&from_dir)?;
    let to = missive_server::configured_blobs(config)?;
    let mut after = match step.after.as_deref() {
        Some([missive_store::transfer::Cell::Text(id)]) => id.clone(),
        _ => String::new(),
    };
    let records = TABLES
        .iter()
        .find(|table| table.name == "media")
        .map_or(Ok(0), |media| source.count(media))?;
    let bar = progress(records, "media files");
    loop {
        let page = source.media(&after, 100)?;
        let Some((last, _)) = page.last() else {
            target.media_copied(&after, 0, 0, true).await?;
            break;
        };
        let last = last.clone();
        let (mut files, mut bytes) = (0, 0);
        for (id, thumbnail) in &page {
            let mut keys = vec![blob_key(id)];
            if *thumbnail {
                keys.push(thumbnail_key(id));
            }
            for key in keys {
                match copy_blob(&from, &to, &key).await {
                    Ok(size) => {
                        files += 1;
                        bytes += size;
                    }
                    Err(BlobError::NotFound) => {
                        moved.missing += 1;
                        tracing::warn!(%key, "a media record's bytes are missing from the source");
                    }
                    Err(err) => return Err(err.into()),
                }
            }
            bar.inc(1);
        }
        target.media_copied(&last, files, bytes, false).await?;
        moved.files += files;
        moved.bytes += bytes;
        after = last;
    }
    bar.finish_and_clear();
    Ok(moved)
}

/// Streams one blob across; its size.
async fn copy_blob(from: &Blobs, to: &Blobs, key: &str) -> Result<u64, BlobError> {
    let mut stream = from.open(key).await?;
    let mut upload = to.upload(key).await?;
    let mut size = 0;
    while let Some(chunk) = stream.next().await {
        let chunk = match chunk {
            Ok(chunk) => chunk,
            Err(err) => {
                let _ = upload.abort().await;
                return Err(err);
            }
        };
        size += chunk.len() as u64;
        upload.write(&chunk).await?;
    }
    upload.finish().await?;
    Ok(size)
}

fn same_path(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    }
}

fn progress(len: u64, label: &str) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::with_draw_target(
        Some(len),
        indicatif::ProgressDrawTarget::stderr(),
    );
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "{msg:>14} [{bar:40}] {pos}/{len} {per_sec} eta {eta}",
    ) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message(label.to_owned());
    bar
}

/// A PostgreSQL URL (or `key=value` connection string) with its password
/// left out, for output and for the source's seal.
fn without_password(url: &str) -> String {
    if let Some((scheme, rest)) = url.split_once("://") {
        let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, path) = rest.split_at(authority_end);
        let authority = match authority.rsplit_once('@') {
            Some((user_info, host)) => {
                let user = user_info.split(':').next().unwrap_or_default();
                format!("{user}@{host}")
            }
            None => authority.to_owned(),
        };
        // A password may also come as a query parameter.
        let path = match path.split_once('?') {
            Some((path, query)) => {
                let kept: Vec<&str> = query
                    .split('&')
                    .filter(|pair| !pair.starts_with("password="))
                    .collect();
                if kept.is_empty() {
                    path.to_owned()
                } else {
                    format!("{path}?{}", kept.join("&"))
                }
            }
            None => path.to_owned(),
        };
        format!("{scheme}://{authority}{path}")
    } else {
        url.split_whitespace()
            .filter(|pair| !pair.starts_with("password="))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| {
            i64::try_from(since.as_millis()).unwrap_or(i64::MAX)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_target_is_shown_without_its_password() {
        for (url, shown) in [
            (
                "postgres://missive:s3cret@db:5432/chat",
                "postgres://missive@db:5432/chat",
            ),
            (
                "postgres://db/chat?sslmode=disable",
                "postgres://db/chat?sslmode=disable",
            ),
            (
                "postgresql://u@db/chat?password=x&sslmode=require",
                "postgresql://u@db/chat?sslmode=require",
            ),
            ("postgres://u:p@db", "postgres://u@db"),
            (
                "host=db user=u password=x dbname=chat",
                "host=db user=u dbname=chat",
            ),
        ] {
            assert_eq!(without_password(url), shown);
        }
    }

    #[test]
    fn from_names_a_data_directory_or_its_database() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().to_str().unwrap();
        assert_eq!(database_path(data), dir.path().join("missive.sqlite"));
        let file = dir.path().join("old.sqlite");
        let named = format!("sqlite://{}", file.display());
        assert_eq!(database_path(&named), file);
    }
}
