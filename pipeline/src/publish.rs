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
//!
//! A model registry on a store is worked on through a local copy
//! ([`ModelStore`]); what a command changed goes up in an order that
//! commits it last.

use std::collections::BTreeMap;
use std::hash::Hasher;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use engage_models::registry::{META_FILE, MODEL_FILE, PROMOTIONS_FILE, Registry};
use engage_models::snapshot::{self, MANIFEST_FILE, POINTER_FILE, SNAPSHOTS_DIR};
use object_store::UpdateVersion;

use crate::claim::SpillDir;
use crate::error::{PipelineError, Result, io};
use crate::report::RUN_REPORT_FILE;
use crate::store::{DataRoot, local_files};

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
/// never removing the new snapshot, the one it replaced (servers may be
/// downloading it) or one `CURRENT` names by then.
///
/// `CURRENT` is replaced only if it is still what this push read before
/// uploading: if another job moved it meanwhile, the error is
/// [`PipelineError::Changed`], and this snapshot's objects stay on the
/// store unnamed until a later retention removes them.
pub async fn push(local: &Path, remote: &DataRoot, keep: usize) -> Result<Pushed> {
    let id = snapshot::current_id(local)?;
    let rel = format!("{SNAPSHOTS_DIR}/{id}");
    let text = |b: &Bytes| String::from_utf8_lossy(b).trim().to_string();
    let read = remote.read_versioned(POINTER_FILE).await?;
    let mut objects = Vec::new();
    if remote.read(&format!("{rel}/{MANIFEST_FILE}")).await?.is_none() {
        objects = remote.upload_dir(&rel, &local.join(SNAPSHOTS_DIR).join(&id), &[MANIFEST_FILE]).await?;
    }
    let previous = read.as_ref().map(|(b, _)| text(b));
    remote.write_if(POINTER_FILE, Bytes::from(format!("{id}\n")), read.map(|(_, v)| v)).await?;
    objects.push(remote.display(POINTER_FILE));
    let (_, on_store) = remote.list(SNAPSHOTS_DIR).await?;
    let now = remote.read(POINTER_FILE).await?.map(|b| text(&b));
    let protected =
        [id.as_str(), previous.as_deref().unwrap_or_default(), now.as_deref().unwrap_or_default()];
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

/// A model registry at a path or URL ([`engage_models::registry`] works on
/// a local directory). For a URL, [`ModelStore::open`] copies the
/// registry's index (every `promotions.json` and `meta.json`) to a
/// temporary directory, which is all that listing, showing, promoting and
/// registering read; [`ModelStore::fetch`] brings the rest of a version
/// before it is loaded; [`ModelStore::push`] uploads what a command
/// changed: a version's files, then its `meta.json` (the registry lists a
/// version only once that exists), then `promotions.json`, one put each
/// (a reader sees the old promotion stack or the new one). That last put
/// happens only if `promotions.json` is still what this command read, so
/// two commands promoting at once cannot drop each other's change: the
/// later one fails with [`PipelineError::Changed`] and is run again.
pub struct ModelStore {
    root: DataRoot,
    /// Where the registry is on disk: the root itself, or the copy.
    dir: PathBuf,
    /// For a URL: the copy.
    copy: Option<StoreCopy>,
}

/// A registry's copy from a store.
struct StoreCopy {
    /// Removed on drop.
    _dir: SpillDir,
    /// A digest of each file as it came from the store, to tell what changed.
    pulled: BTreeMap<String, u64>,
    /// The version of each `promotions.json` read, to write it back only
    /// if unchanged.
    versions: BTreeMap<String, UpdateVersion>,
}

fn digest(bytes: &[u8]) -> u64 {
    let mut h = std::hash::DefaultHasher::new();
    h.write(bytes);
    h.finish()
}

fn file_name(rel: &str) -> &str {
    rel.rsplit('/').next().unwrap_or(rel)
}

impl ModelStore {
    /// The registry at `root`; for a store, its index copied locally.
    pub async fn open(root: &DataRoot) -> Result<ModelStore> {
        if let Some(dir) = root.local_path() {
            return Ok(ModelStore { root: root.clone(), dir, copy: None });
        }
        let copy = SpillDir::create(None, "models")?;
        let index = |name: &str| matches!(file_name(name), META_FILE | PROMOTIONS_FILE);
        let got = root.download_versioned("", copy.path(), index).await?;
        let mut store = ModelStore { root: root.clone(), dir: copy.path().to_path_buf(), copy: None };
        let digests = got
            .iter()
            .map(|(name, _)| store.digest_of(name).map(|d| (name.clone(), d)))
            .collect::<Result<_>>()?;
        let versions = got.into_iter().filter(|(name, _)| file_name(name) == PROMOTIONS_FILE).collect();
        store.copy = Some(StoreCopy { _dir: copy, pulled: digests, versions });
        Ok(store)
    }

    fn digest_of(&self, rel: &str) -> Result<u64> {
        let path = self.dir.join(rel);
        Ok(digest(&std::fs::read(&path).map_err(io(&path))?))
    }

    /// The registry to read and change (the local copy for a store).
    pub fn registry(&self) -> Registry {
        Registry::copy_of(&self.dir, &self.root.to_string())
    }

    /// A path inside the registry as the user knows it: under the path or
    /// URL as given.
    pub fn display(&self, path: &Path) -> String {
        match path.strip_prefix(&self.dir) {
            Ok(rel) => {
                let parts: Vec<_> = rel.components().map(|c| c.as_os_str().to_string_lossy()).collect();
                if parts.is_empty() { self.root.to_string() } else { self.root.display(&parts.join("/")) }
            }
            Err(_) => path.display().to_string(),
        }
    }

    /// Makes every file of `name`/`version` local (a store's copy holds
    /// only the index until then).
    pub async fn fetch(&mut self, name: &str, version: &str) -> Result<()> {
        let Some(StoreCopy { pulled, .. }) = &self.copy else { return Ok(()) };
        let rel = format!("{name}/{version}");
        let missing = |n: &str| !pulled.contains_key(&format!("{rel}/{n}"));
        let dir = self.dir.join(name).join(version);
        let got = self.root.download(&rel, &dir, missing).await?;
        if !dir.join(MODEL_FILE).is_file() {
            return Err(PipelineError::Config {
                field: self.root.display(&format!("{rel}/{MODEL_FILE}")),
                reason: format!("the version's {META_FILE} is there but not its artifact"),
            });
        }
        for name in got {
            let full = format!("{rel}/{name}");
            let d = self.digest_of(&full)?;
            self.copy.as_mut().expect("a copy").pulled.insert(full, d);
        }
        Ok(())
    }

    /// Uploads what changed in a store's copy since [`ModelStore::open`]
    /// (nothing for a local registry), in the order described above; then
    /// removes the objects a re-registered version no longer has. Returns
    /// the objects written. A `promotions.json` another command changed
    /// since `open` is left as that command wrote it, and the error is
    /// [`PipelineError::Changed`] (what went up before it, a new version,
    /// stays registered).
    pub async fn push(self) -> Result<Vec<String>> {
        let Some(StoreCopy { pulled, versions, .. }) = &self.copy else { return Ok(Vec::new()) };
        let mut files = Vec::new();
        local_files(&self.dir, &self.dir, &mut files)?;
        let mut changed = Vec::new();
        for rel in files {
            if pulled.get(&rel) != Some(&self.digest_of(&rel)?) {
                changed.push(rel);
            }
        }
        let rank = |rel: &String| match file_name(rel) {
            META_FILE => 1,
            PROMOTIONS_FILE => 2,
            _ => 0,
        };
        changed.sort_by_key(|rel| (rank(rel), rel.clone()));
        let mut written = Vec::new();
        for rel in &changed {
            let local = self.dir.join(rel);
            if file_name(rel) == PROMOTIONS_FILE {
                let bytes = Bytes::from(std::fs::read(&local).map_err(io(&local))?);
                self.root.write_if(rel, bytes, versions.get(rel).cloned()).await?;
            } else {
                self.root.upload(rel, &local).await?;
            }
            written.push(self.root.display(rel));
        }
        for meta in changed.iter().filter(|rel| file_name(rel) == META_FILE && pulled.contains_key(*rel)) {
            let version = meta.trim_end_matches(META_FILE).trim_end_matches('/');
            for name in self.root.list_all(version).await? {
                if !self.dir.join(version).join(&name).exists() {
                    self.root.delete(&format!("{version}/{name}")).await?;
                }
            }
        }
        Ok(written)
    }
}
