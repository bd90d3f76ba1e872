//! Attachments: sealing and uploading encrypted files, and downloading
//! (and opening) a media object into a file.

use std::process::ExitCode;

use missive_client::Api;

use super::{ClientArgs, EXIT_FAILURE, EXIT_USAGE, fail, load_profile, print_json};
use crate::file_keys::FileKeys;
use crate::profile::Profile;

/// An attachment's bytes; a file that cannot be read is bad usage.
pub(super) fn read_attachment(path: &std::path::Path) -> Result<Vec<u8>, ExitCode> {
    std::fs::read(path).map_err(|err| {
        eprintln!("error: cannot read {}: {err}", path.display());
        ExitCode::from(EXIT_USAGE)
    })
}

/// Seals each file under a key of its own and uploads the ciphertext
/// (`?encrypted=true`): what the encrypted message then lists.
pub(super) async fn upload_sealed(
    api: &Api,
    saved: &Profile,
    paths: &[std::path::PathBuf],
) -> Result<Vec<missive_e2ee::SharedFile>, ExitCode> {
    let mut files = Vec::with_capacity(paths.len());
    for path in paths {
        let bytes = read_attachment(path)?;
        // The server cannot see the bytes: the type is the sender's to say.
        let head = &bytes[..bytes.len().min(missive_media::SNIFF_BYTES)];
        let content_type = missive_media::sniff(head).unwrap_or("application/octet-stream");
        let sealed = missive_e2ee::seal_file(&bytes).map_err(|err| {
            eprintln!("error: cannot encrypt {}: {err}", path.display());
            ExitCode::from(EXIT_FAILURE)
        })?;
        let info = api
            .upload_encrypted_media(&saved.token, sealed.ciphertext)
            .await
            .map_err(|err| fail(&err))?;
        files.push(missive_e2ee::SharedFile {
            media_id: info.media_id,
            name: path
                .file_name()
                .and_then(|name| name.to_str())
                .map(str::to_owned),
            content_type: content_type.to_owned(),
            size_bytes: bytes.len() as u64,
            key: sealed.key,
        });
    }
    Ok(files)
}

/// Downloads a media object into `output` (default: a file named by its id).
pub(crate) async fn download(
    args: &ClientArgs,
    media_id: &str,
    output: Option<std::path::PathBuf>,
) -> ExitCode {
    let saved = match load_profile(args) {
        Ok(saved) => saved,
        Err(code) => return code,
    };
    let mut download = match Api::new(&saved.server)
        .download_named_media(&saved.token, media_id)
        .await
    {
        Ok(download) => download,
        Err(err) => return fail(&err),
    };
    // An attachment of an encrypted message this device read: opened, and
    // only if these are the bytes the message names.
    let shared = FileKeys::load(&args.profile).get(media_id).cloned();
    if let Some(file) = &shared {
        match missive_e2ee::open_file(&download.bytes, &file.key) {
            Ok(bytes) => {
                download.bytes = bytes;
                download.filename = file.name.clone();
                download.content_type = file.content_type.clone();
            }
            Err(err) => {
                eprintln!("error: {media_id}: {err}");
                return ExitCode::from(EXIT_FAILURE);
            }
        }
    }
    // Without --output: the name it was uploaded under, in the current
    // directory (only its last component, whatever the server said), and
    // never over an existing file.
    let (path, create_new) = match output {
        Some(path) => (path, false),
        None => (
            std::path::PathBuf::from(safe_file_name(download.filename.as_deref(), media_id)),
            true,
        ),
    };
    let written = if create_new {
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .and_then(|mut file| std::io::Write::write_all(&mut file, &download.bytes))
    } else {
        std::fs::write(&path, &download.bytes)
    };
    if let Err(err) = written {
        eprintln!("error: cannot write {}: {err}", path.display());
        if err.kind() == std::io::ErrorKind::AlreadyExists {
            eprintln!("hint: give --to PATH to choose where it goes");
        }
        return ExitCode::from(EXIT_FAILURE);
    }
    let mut printed = serde_json::json!({
        "media_id": media_id,
        "content_type": download.content_type,
        "filename": download.filename,
        "size_bytes": download.bytes.len(),
        "path": path.display().to_string(),
    });
    if shared.is_some() {
        printed["decrypted"] = true.into();
    }
    print_json(&printed)
}

/// The name to save a download under in the current directory: the last
/// component of the name it was uploaded under (whatever the server said;
/// never a hidden file), else its id.
pub(crate) fn safe_file_name(uploaded: Option<&str>, media_id: &str) -> String {
    uploaded
        .and_then(|name| std::path::Path::new(name).file_name())
        .map(|name| name.to_string_lossy().into_owned())
        .filter(|name| !name.starts_with('.'))
        .unwrap_or_else(|| media_id.to_owned())
}
