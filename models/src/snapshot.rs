//! The layout of published score snapshots, shared by the batch scorer that
//! writes them and the server that reads them.
//!
//! ```text
//! <root>/CURRENT                      one line: the id of the current snapshot
//! <root>/snapshots/<id>/scores.parquet
//! <root>/snapshots/<id>/manifest.json written last inside the snapshot
//! <root>/.staging/<id>-<pid>/         work in progress, never read
//! ```
//!
//! A snapshot is built in `.staging`, moved into `snapshots/` with one
//! rename, and made current by atomically replacing `CURRENT` (write a
//! temporary file, then rename). A reader that follows `CURRENT` therefore
//! only ever sees complete snapshots; a run that dies at any point leaves
//! the previous snapshot current.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::ModelError;

/// Name of the pointer file.
pub const POINTER_FILE: &str = "CURRENT";
/// Directory of published snapshots.
pub const SNAPSHOTS_DIR: &str = "snapshots";
/// Directory of snapshots being written.
pub const STAGING_DIR: &str = ".staging";
/// The scores inside a snapshot.
pub const SCORES_FILE: &str = "scores.parquet";
/// The manifest inside a snapshot.
pub const MANIFEST_FILE: &str = "manifest.json";
/// Bumped when the snapshot layout or scores schema changes incompatibly.
pub const SNAPSHOT_FORMAT_VERSION: u32 = 1;

/// What a snapshot holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SnapshotManifest {
    pub format_version: u32,
    /// `<as_of>_<scored_at as YYYYMMDDTHHMMSS>`.
    pub snapshot_id: String,
    /// Feature cutoff date (ISO).
    pub as_of: String,
    /// UTC time of scoring (RFC 3339).
    pub scored_at: String,
    /// Rows in `scores.parquet`.
    pub rows: u64,
    /// Versions of the models whose scores the snapshot holds.
    pub model_versions: Vec<String>,
    /// engage version that wrote it.
    pub engage_version: String,
}

/// A fresh staging directory for snapshot `id` under `root`.
pub fn create_staging(root: &Path, id: &str) -> Result<PathBuf, ModelError> {
    let dir = root.join(STAGING_DIR).join(format!("{id}-{}", std::process::id()));
    if dir.exists() {
        std::fs::remove_dir_all(&dir).map_err(io(&dir))?;
    }
    std::fs::create_dir_all(&dir).map_err(io(&dir))?;
    Ok(dir)
}

/// Writes the manifest into `staging`, moves it to `snapshots/<id>` and makes
/// it current. Returns the published directory.
pub fn publish(root: &Path, staging: &Path, manifest: &SnapshotManifest) -> Result<PathBuf, ModelError> {
    let manifest_path = staging.join(MANIFEST_FILE);
    write_atomic(&manifest_path, &serde_json::to_vec_pretty(manifest).expect("manifest serialises"))?;
    let snapshots = root.join(SNAPSHOTS_DIR);
    std::fs::create_dir_all(&snapshots).map_err(io(&snapshots))?;
    let target = snapshots.join(&manifest.snapshot_id);
    if target.exists() {
        // Same id means same as-of and same second: replace, it is a re-run.
        std::fs::remove_dir_all(&target).map_err(io(&target))?;
    }
    std::fs::rename(staging, &target).map_err(io(&target))?;
    write_atomic(&root.join(POINTER_FILE), format!("{}\n", manifest.snapshot_id).as_bytes())?;
    Ok(target)
}

/// The current snapshot under `root`: its directory and manifest.
pub fn current(root: &Path) -> Result<(PathBuf, SnapshotManifest), ModelError> {
    let pointer = root.join(POINTER_FILE);
    let id = std::fs::read_to_string(&pointer).map_err(|source| {
        if source.kind() == std::io::ErrorKind::NotFound {
            ModelError::NoSnapshot { root: root.display().to_string() }
        } else {
            ModelError::Io { path: pointer.display().to_string(), source }
        }
    })?;
    let id = id.trim();
    if id.is_empty() || id.contains(['/', '\\']) || id.starts_with('.') {
        return Err(ModelError::Snapshot {
            path: pointer.display().to_string(),
            reason: format!("`{id}` is not a snapshot id"),
        });
    }
    let dir = root.join(SNAPSHOTS_DIR).join(id);
    let manifest_path = dir.join(MANIFEST_FILE);
    let bytes = std::fs::read(&manifest_path).map_err(io(&manifest_path))?;
    let manifest: SnapshotManifest = serde_json::from_slice(&bytes)
        .map_err(|source| ModelError::Parse { path: manifest_path.display().to_string(), source })?;
    if manifest.format_version != SNAPSHOT_FORMAT_VERSION {
        return Err(ModelError::FormatVersion {
            path: manifest_path.display().to_string(),
            found: manifest.format_version,
            expected: SNAPSHOT_FORMAT_VERSION,
        });
    }
    Ok((dir, manifest))
}

/// Writes `bytes` to `path` through a temporary sibling, fsync and rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), ModelError> {
    use std::io::Write;
    let file_name = path.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
    let tmp = path.with_file_name(format!(".{file_name}.tmp-{}", std::process::id()));
    let mut f = std::fs::File::create(&tmp).map_err(io(&tmp))?;
    f.write_all(bytes).and_then(|_| f.sync_all()).map_err(io(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io(path))
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ModelError + '_ {
    move |source| ModelError::Io { path: path.display().to_string(), source }
}
