//! The keys of attachments in encrypted messages this device has read
//! (`profiles/<name>.files.json`, mode 0600, removed at logout), so that
//! `missive download ID` and the terminal app open a file by its id alone,
//! as a plain download works. Only the newest [`KEPT`] are kept.

use missive_e2ee::SharedFile;

use crate::profile;

/// How many files' keys a profile keeps (about 250 bytes each).
const KEPT: usize = 5_000;

pub(crate) struct FileKeys {
    profile: String,
    /// Oldest first.
    files: Vec<SharedFile>,
    changed: bool,
}

impl FileKeys {
    /// The profile's saved keys; none when it has none or they cannot be
    /// read (a download then says the file's key is unknown).
    pub(crate) fn load(profile_name: &str) -> Self {
        let files = profile::load_file_keys(profile_name)
            .ok()
            .flatten()
            .and_then(|text| serde_json::from_str(&text).ok())
            .unwrap_or_default();
        Self {
            profile: profile_name.to_owned(),
            files,
            changed: false,
        }
    }

    /// Keeps the keys of `files` (a later copy of one id wins).
    pub(crate) fn remember(&mut self, files: &[SharedFile]) {
        for file in files {
            if self.get(&file.media_id) == Some(file) {
                continue;
            }
            self.files.retain(|known| known.media_id != file.media_id);
            self.files.push(file.clone());
            self.changed = true;
        }
        let over = self.files.len().saturating_sub(KEPT);
        self.files.drain(..over);
    }

    pub(crate) fn get(&self, media_id: &str) -> Option<&SharedFile> {
        self.files
            .iter()
            .rev()
            .find(|file| file.media_id == media_id)
    }

    /// Writes them if anything was remembered since the last save.
    pub(crate) fn save(&mut self) -> Result<(), String> {
        if !self.changed {
            return Ok(());
        }
        let text = serde_json::to_string(&self.files)
            .map_err(|err| format!("cannot save the attachments' keys: {err}"))?;
        profile::save_file_keys(&self.profile, &text)
            .map_err(|err| format!("cannot save the attachments' keys: {err}"))?;
        self.changed = false;
        Ok(())
    }
}
