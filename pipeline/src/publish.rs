//! Snapshots on an object store. The nightly job scores into a local
//! working copy of the snapshot root and [`push`]es each new snapshot up;
//! a server [`pull`]s a remote root into a local cache and serves that.
//!
//! On the store, a snapshot's objects go up first (its manifest last), and
//! then one put replaces the `CURRENT` object: single-object puts are
//! atomic on S3, GCS and Azure, so a reader that follows `CURRENT` sees the
//! old snapshot or the new one, complete. Snapshot ids are never reused, so
//! a published prefix never changes. Retention deletes the prefixes the
//! working copy no longer keeps, never the current one.

use std::path::Path;

use bytes::Bytes;
use engage_models::snapshot::{self, MANIFEST_FILE, POINTER_FILE, SNAPSHOTS_DIR};

use crate::error::{PipelineError, Result, io};
use crate::report::RUN_REPORT_FILE;
use crate::store::DataRoot;

/// What [`push`] did.
#[derive(Debug, Clone, PartialEq)]
pub struct Pushed {
    /// The snapshot now current on the store.
    pub id: String,
    /// Objects written (none when the store already had the snapshot).
    pub objects: Vec<String>,
    /// Snapshots removed from the store by retention.
    pub removed: Vec<String>,
}

/// Makes the current snapshot of the local root `local` current on
/// `remote`: uploads it unless there already, replaces `CURRENT`, then
/// applies retention on the store ([`snapshot::superseded`] with `keep`),
/// never removing the new snapshot or the one it replaced (servers may be
/// downloading it).
pub async fn push(local: &Path, remote: &DataRoot, keep: usize) -> Result<Pushed> {
    let id = snapshot::current_id(local)?;
    let rel = format!("{SNAPSHOTS_DIR}/{id}");
    let mut objects = Vec::new();
    if remote.read(&format!("{rel}/{MANIFEST_FILE}")).await?.is_none() {
        objects = remote.upload_dir(&rel, &local.join(SNAPSHOTS_DIR).join(&id), &[MANIFEST_FILE]).await?;
    }
    let previous = remote.read(POINTER_FILE).await?.map(|b| String::from_utf8_lossy(&b).trim().to_string());
    remote.write(POINTER_FILE, Bytes::from(format!("{id}\n"))).await?;
    objects.push(remote.display(POINTER_FILE));
    let (_, on_store) = remote.list(SNAPSHOTS_DIR).await?;
    let protected = [id.as_str(), previous.as_deref().unwrap_or_default()];
    let removed = snapshot::superseded(&on_store, &protected, keep);
    for old in &removed {
        // The manifest first: a half-deleted snapshot is never complete.
        let dir = format!("{SNAPSHOTS_DIR}/{old}");
        remote.delete(&format!("{dir}/{MANIFEST_FILE}")).await?;
        remote.delete_dir(&dir).await?;
    }
    Ok(Pushed { id, objects, removed })
}

/// Brings the local cache `cache` up to the snapshot current on `remote`:
/// downloads it (to staging, then one rename) unless the cache has it,
/// then points the cache's `CURRENT` at it, keeping the previous one.
/// Returns the id when the cache's current snapshot changed.
pub async fn pull(remote: &DataRoot, cache: &Path) -> Result<Option<String>> {
    let Some(pointer) = remote.read(POINTER_FILE).await? else {
        return Ok(None);
    };
    let id = snapshot::parse_pointer(&String::from_utf8_lossy(&pointer), &remote.display(POINTER_FILE))?;
    if snapshot::current_id(cache).ok().as_deref() == Some(id.as_str()) {
        return Ok(None);
    }
    let target = cache.join(SNAPSHOTS_DIR).join(&id);
    if !target.join(MANIFEST_FILE).exists() {
        let staging = snapshot::create_staging(cache, &id)?;
        if let Err(e) = remote.download_dir(&format!("{SNAPSHOTS_DIR}/{id}"), &staging).await {
            let _ = std::fs::remove_dir_all(&staging);
            return Err(e);
        }
        if !staging.join(MANIFEST_FILE).exists() {
            let _ = std::fs::remove_dir_all(&staging);
            return Err(PipelineError::Config {
                field: remote.display(&format!("{SNAPSHOTS_DIR}/{id}")),
                reason: format!("`{POINTER_FILE}` names a snapshot without {MANIFEST_FILE}"),
            });
        }
        std::fs::create_dir_all(cache.join(SNAPSHOTS_DIR)).map_err(io(cache))?;
        if target.exists() {
            std::fs::remove_dir_all(&target).map_err(io(&target))?;
        }
        std::fs::rename(&staging, &target).map_err(io(&target))?;
    }
    snapshot::write_atomic(&cache.join(POINTER_FILE), format!("{id}\n").as_bytes())?;
    snapshot::prune(cache, 2)?;
    Ok(Some(id))
}

/// Uploads a job's local output directory to `remote`: first removes an
/// old run report there (a reader waits for the report), then uploads the
/// outputs and last the run report, its output list naming them at
/// `remote`.
pub async fn upload_outputs(local: &Path, remote: &DataRoot) -> Result<Vec<String>> {
    remote.delete(RUN_REPORT_FILE).await?;
    let report = local.join(RUN_REPORT_FILE);
    if let Ok(text) = std::fs::read_to_string(&report) {
        let shown = local.display().to_string();
        let moved =
            text.replace(&format!("\"{shown}/"), &format!("\"{}/", remote.display("").trim_end_matches('/')));
        std::fs::write(&report, moved).map_err(io(&report))?;
    }
    remote.upload_dir("", local, &[RUN_REPORT_FILE]).await
}
