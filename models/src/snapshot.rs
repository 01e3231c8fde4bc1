//! The layout of published score snapshots, shared by the batch scorer that
//! writes them and the server that reads them.
//!
//! ```text
//! <root>/CURRENT                      one line: the id of the current snapshot
//! <root>/snapshots/<id>/scores.parquet
//! <root>/snapshots/<id>/manifest.json written last inside the snapshot
//! <root>/.staging/<id>-<pid>/         work in progress, never read
//! <root>/.lock                        held by the run writing a snapshot
//! ```
//!
//! A snapshot is built in `.staging`, moved into `snapshots/` with one
//! rename, and made current by atomically replacing `CURRENT` (write a
//! temporary file, then rename). A reader that follows `CURRENT` therefore
//! only ever sees complete snapshots; a run that dies at any point leaves
//! the previous snapshot current. Ids are never reused, so a published
//! directory is never replaced, only removed by [`prune`] once it is
//! neither current nor among the newest.

use std::collections::{BTreeMap, BTreeSet};
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
/// The identity lookup inside a snapshot: (identifier_type,
/// identifier_value, customer_id) for the emails, phones and loyalty ids of
/// the scored customers, values normalised by [`crate::identifier`].
pub const IDENTITIES_FILE: &str = "identities.parquet";
/// The nightly job's campaign results inside a snapshot (the directory of
/// [`crate::report::write_campaigns`]).
pub const CAMPAIGNS_DIR: &str = "campaigns";
/// The nightly job's contact history inside a snapshot: per customer and
/// campaign contacted in the last [`CONTACT_HISTORY_DAYS`], the responses.
pub const CONTACTS_FILE: &str = "contacts.parquet";
pub const CONTACT_HISTORY_DAYS: u32 = 365;
/// The scoring models' registry files inside a snapshot:
/// `models/<task>/meta.json` and `models/<task>/metrics.json`.
pub const MODELS_DIR: &str = "models";
/// The run report of the job that wrote a snapshot (and of every other
/// job, next to its outputs).
pub const RUN_REPORT_FILE: &str = "run_report.json";
/// Identifier types a snapshot's identity lookup holds.
pub const LOOKUP_ID_TYPES: [&str; 3] = ["email", "phone", "loyalty_id"];
/// Bumped when the snapshot layout or scores schema changes incompatibly
/// (3: identities.parquet and the phone country code in the manifest).
pub const SNAPSHOT_FORMAT_VERSION: u32 = 3;

/// What a snapshot holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SnapshotManifest {
    pub format_version: u32,
    /// `<as_of>_<scored_at as YYYYMMDDTHHMMSS>`, with `_<n>` appended if a
    /// snapshot of that id exists (two runs in one second).
    pub snapshot_id: String,
    /// Feature cutoff date (ISO).
    pub as_of: String,
    /// UTC time of scoring (RFC 3339).
    pub scored_at: String,
    /// Rows in `scores.parquet`.
    pub rows: u64,
    /// Versions of the models whose scores the snapshot holds.
    pub model_versions: Vec<String>,
    /// The same by task: `churn`, `response`, `uplift`, `clv`.
    #[serde(default)]
    pub models: BTreeMap<String, String>,
    /// The country calling code phones without one were normalised with
    /// (look-ups normalise a phone the same way).
    #[serde(default)]
    pub default_country_code: String,
    /// engage version that wrote it.
    pub engage_version: String,
}

/// A snapshot id for `as_of` scored at `scored_at` not yet used under `root`.
pub fn new_id(root: &Path, as_of: &str, scored_at: &chrono::DateTime<chrono::Utc>) -> String {
    let base = format!("{as_of}_{}", scored_at.format("%Y%m%dT%H%M%S"));
    let taken = |id: &str| root.join(SNAPSHOTS_DIR).join(id).exists();
    if !taken(&base) {
        return base;
    }
    (2..).map(|n| format!("{base}_{n}")).find(|id| !taken(id)).expect("an unused id")
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
        return Err(ModelError::Snapshot {
            path: target.display().to_string(),
            reason: "a published snapshot of this id exists; ids are never reused".into(),
        });
    }
    std::fs::rename(staging, &target).map_err(io(&target))?;
    write_atomic(&root.join(POINTER_FILE), format!("{}\n", manifest.snapshot_id).as_bytes())?;
    Ok(target)
}

/// Retention: removes every snapshot superseded by a newer one of the same
/// as-of date (a re-run), then all but the `keep` newest (by id: as-of
/// date, then scoring time). The current snapshot is never removed.
/// Returns the removed ids, oldest first.
pub fn prune(root: &Path, keep: usize) -> Result<Vec<String>, ModelError> {
    let dir = root.join(SNAPSHOTS_DIR);
    let ids: Vec<String> = std::fs::read_dir(&dir)
        .map_err(io(&dir))?
        .flatten()
        .filter(|e| e.path().is_dir())
        .map(|e| e.file_name().to_string_lossy().to_string())
        .filter(|id| !id.starts_with('.'))
        .collect();
    let current = std::fs::read_to_string(root.join(POINTER_FILE)).unwrap_or_default().trim().to_string();
    let removed = superseded(&ids, &[current.as_str()], keep);
    for id in &removed {
        let path = dir.join(id);
        std::fs::remove_dir_all(&path).map_err(io(&path))?;
    }
    Ok(removed)
}

/// The retention rule of [`prune`] over a list of ids: the ones to remove,
/// oldest first. The ids in `protected` always stay.
pub fn superseded(ids: &[String], protected: &[&str], keep: usize) -> Vec<String> {
    let mut ids: Vec<&String> = ids.iter().collect();
    ids.sort();
    // The newest id of each as-of date (ids sort by as-of, then time).
    let mut newest: BTreeMap<&str, &str> = BTreeMap::new();
    for id in &ids {
        newest.insert(id.split('_').next().unwrap_or(id), id);
    }
    let kept: BTreeSet<&str> =
        newest.values().rev().take(keep).copied().chain(protected.iter().copied()).collect();
    ids.into_iter().filter(|id| !kept.contains(id.as_str())).cloned().collect()
}

/// The current snapshot under `root`: its directory and manifest.
pub fn current(root: &Path) -> Result<(PathBuf, SnapshotManifest), ModelError> {
    open(root, &current_id(root)?)
}

/// The id `<root>/CURRENT` names.
pub fn current_id(root: &Path) -> Result<String, ModelError> {
    let pointer = root.join(POINTER_FILE);
    let id = std::fs::read_to_string(&pointer).map_err(|source| {
        if source.kind() == std::io::ErrorKind::NotFound {
            ModelError::NoSnapshot { root: root.display().to_string() }
        } else {
            ModelError::Io { path: pointer.display().to_string(), source }
        }
    })?;
    parse_pointer(&id, &pointer.display().to_string())
}

/// The snapshot id a pointer's text names (`shown` is the pointer, for the
/// error).
pub fn parse_pointer(text: &str, shown: &str) -> Result<String, ModelError> {
    let id = text.trim();
    if id.is_empty() || id.contains(['/', '\\']) || id.starts_with('.') {
        return Err(ModelError::Snapshot {
            path: shown.to_string(),
            reason: format!("`{id}` is not a snapshot id"),
        });
    }
    Ok(id.to_string())
}

/// Snapshot `id` under `root`: its directory and manifest, whose format
/// version must be this engage's.
pub fn open(root: &Path, id: &str) -> Result<(PathBuf, SnapshotManifest), ModelError> {
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

/// The file in a directory that whoever changes the directory holds
/// locked (`flock`, released by the OS however the process ends): the
/// registry's per-name promotions, scoring's snapshot root.
pub const LOCK_FILE: &str = ".lock";

/// `path` (a [`LOCK_FILE`]) opened to be locked, made if missing, its
/// content left alone.
pub fn open_lock_file(path: &Path) -> std::io::Result<std::fs::File> {
    std::fs::File::options().create(true).truncate(false).write(true).open(path)
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
