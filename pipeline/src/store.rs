//! Where data lives: a root addressed by a path or URL through
//! object_store: local paths, `file://`, `s3://`, `gs://` and `az://` (or
//! `abfss://`). Input tables are read through it; outputs for an object
//! store are written locally first and then uploaded with the object that
//! commits them last ([`DataRoot::upload_dir`], [`crate::publish`]).
//!
//! A cloud store takes its credentials, region and endpoint from the usual
//! environment variables (`AWS_*`, `GOOGLE_*`, `AZURE_*`, as the vendors'
//! own tools read them) and then from options given in a config file's
//! `[storage]` table, which win (docs/scale-out.md).

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use datafusion::prelude::SessionContext;
use futures::{StreamExt, TryStreamExt};
use object_store::local::LocalFileSystem;
use object_store::path::Path as StorePath;
use object_store::{
    ObjectMeta, ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload, UpdateVersion, WriteMultipart,
};
use url::Url;

use crate::error::{PipelineError, Result, io};

/// Options for cloud stores (`[storage]` in a config file): keys as
/// object_store names them (`aws_endpoint`, `aws_region`,
/// `google_service_account`, `azure_storage_account_name`, ...).
pub type StorageOptions = BTreeMap<String, String>;

/// Environment variables a cloud store reads.
const ENV_PREFIXES: [&str; 3] = ["AWS_", "GOOGLE_", "AZURE_"];

/// Files at least this large go up in parts.
const MULTIPART_BYTES: u64 = 16 << 20;

/// Objects up to this size are downloaded [`PARALLEL_GETS`] at a time.
const SMALL_OBJECT: u64 = 1 << 20;
/// Concurrent GETs of small objects.
const PARALLEL_GETS: usize = 16;

/// A data root: the directory (or prefix) holding the contract tables.
#[derive(Clone)]
pub struct DataRoot {
    /// As given (a path or URL), for messages.
    given: String,
    /// The root as a URL ending in `/`.
    url: Url,
    store: Arc<dyn ObjectStore>,
    /// The root inside the store.
    prefix: StorePath,
}

impl std::fmt::Debug for DataRoot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DataRoot({})", self.url)
    }
}

impl std::fmt::Display for DataRoot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.given)
    }
}

impl DataRoot {
    /// A local directory; `..` and `.` are resolved (object-store paths
    /// have no such segments).
    pub fn local(path: &Path) -> DataRoot {
        let abs = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
        let mut clean = PathBuf::new();
        for part in abs.components() {
            match part {
                std::path::Component::ParentDir => {
                    clean.pop();
                }
                std::path::Component::CurDir => {}
                other => clean.push(other),
            }
        }
        let abs = clean;
        let url = Url::from_directory_path(&abs).expect("an absolute path is a file URL");
        let prefix = StorePath::from_url_path(url.path()).expect("a file URL path is a store path");
        DataRoot {
            given: path.display().to_string().trim_end_matches('/').to_string(),
            url,
            store: Arc::new(LocalFileSystem::new()),
            prefix,
        }
    }

    /// `--data`: a path or a URL, cloud stores configured from the
    /// environment.
    pub fn parse(given: &str) -> Result<DataRoot> {
        DataRoot::parse_with("--data", given, &StorageOptions::new())
    }

    /// Whether `given` is a URL of a store other than the local disk.
    pub fn is_remote(given: &str) -> bool {
        given.split_once("://").is_some_and(|(scheme, _)| scheme != "file")
    }

    /// A path or a URL given as `flag`, cloud stores configured from the
    /// environment and then `options`.
    pub fn parse_with(flag: &'static str, given: &str, options: &StorageOptions) -> Result<DataRoot> {
        let Some((scheme, _)) = given.split_once("://") else {
            return Ok(DataRoot::local(Path::new(given)));
        };
        let bad =
            |reason: String| PipelineError::InvalidArgument { name: flag, value: given.to_string(), reason };
        let url = Url::parse(given).map_err(|e| bad(format!("not a URL: {e}")))?;
        match scheme {
            "file" => {
                let path = url.to_file_path().map_err(|_| bad("not a local file URL".into()))?;
                let mut root = DataRoot::local(&path);
                root.given = given.trim_end_matches('/').to_string();
                Ok(root)
            }
            "s3" | "s3a" | "gs" | "az" | "azure" | "abfs" | "abfss" => {
                let url = Url::parse(&format!("{}/", given.trim_end_matches('/')))
                    .map_err(|e| bad(format!("not a URL: {e}")))?;
                let env = std::env::vars()
                    .filter(|(k, _)| ENV_PREFIXES.iter().any(|p| k.starts_with(p)))
                    .map(|(k, v)| (k.to_ascii_lowercase(), v));
                let settings = env.chain(options.iter().map(|(k, v)| (k.to_ascii_lowercase(), v.clone())));
                let (store, prefix) = object_store::parse_url_opts(&url, settings)
                    .map_err(|e| bad(format!("cannot configure the `{scheme}` store: {e}")))?;
                Ok(DataRoot {
                    given: given.trim_end_matches('/').to_string(),
                    url,
                    store: Arc::from(store),
                    prefix,
                })
            }
            _ => Err(bad(format!(
                "unknown scheme `{scheme}`: use a path, or a file://, s3://, gs:// or az:// URL"
            ))),
        }
    }

    /// Whether the root is on the local disk.
    pub fn is_local(&self) -> bool {
        self.url.scheme() == "file"
    }

    /// The local directory, for a local root.
    pub fn local_path(&self) -> Option<PathBuf> {
        (self.url.scheme() == "file").then(|| self.url.to_file_path().ok()).flatten()
    }

    /// `rel` (a `/`-separated path under the root) for messages.
    pub fn display(&self, rel: &str) -> String {
        format!("{}/{rel}", self.given)
    }

    /// `rel` as a URL DataFusion can scan (a directory when it ends in `/`).
    pub fn url(&self, rel: &str) -> String {
        self.url.join(rel).expect("a relative path joins").to_string()
    }

    fn path(&self, rel: &str) -> StorePath {
        rel.split('/').filter(|p| !p.is_empty()).fold(self.prefix.clone(), |p, part| p.join(part))
    }

    /// The objects directly under `rel` (`""` for the root) and the names of
    /// its sub-directories.
    pub async fn list(&self, rel: &str) -> Result<(Vec<ObjectMeta>, Vec<String>)> {
        let listing =
            self.store.list_with_delimiter(Some(&self.path(rel))).await.map_err(|e| self.error(rel, e))?;
        let dirs = listing.common_prefixes.iter().filter_map(|p| p.filename().map(str::to_string)).collect();
        Ok((listing.objects, dirs))
    }

    /// An object's bytes.
    pub async fn get(&self, object: &ObjectMeta) -> Result<Bytes> {
        self.get_versioned(object).await.map(|(bytes, _)| bytes)
    }

    /// An object's bytes and the version they are (the GET's own e-tag and
    /// version, not the listing's: the object may change in between).
    async fn get_versioned(&self, object: &ObjectMeta) -> Result<(Bytes, UpdateVersion)> {
        let rel = self.relative(object);
        let result = self.store.get(&object.location).await.map_err(|e| self.error(&rel, e))?;
        let version = version_of(&result.meta);
        Ok((result.bytes().await.map_err(|e| self.error(&rel, e))?, version))
    }

    /// A byte range of an object.
    pub async fn get_range(&self, object: &ObjectMeta, range: std::ops::Range<u64>) -> Result<Bytes> {
        let rel = self.relative(object);
        self.store.get_range(&object.location, range).await.map_err(|e| self.error(&rel, e))
    }

    /// Makes the root's store known to `ctx` (file:// always is).
    pub fn register(&self, ctx: &SessionContext) {
        if self.url.scheme() != "file" {
            ctx.register_object_store(&self.url, self.store.clone());
        }
    }

    /// An object's name relative to the root, for messages.
    pub fn relative(&self, object: &ObjectMeta) -> String {
        let full = object.location.as_ref();
        let prefix = self.prefix.as_ref();
        full.strip_prefix(prefix).unwrap_or(full).trim_start_matches('/').to_string()
    }

    /// The bytes of `rel`, or None when there is no such object.
    pub async fn read(&self, rel: &str) -> Result<Option<Bytes>> {
        Ok(self.read_versioned(rel).await?.map(|(bytes, _)| bytes))
    }

    /// [`DataRoot::read`], with the version read (for [`DataRoot::write_if`]).
    pub async fn read_versioned(&self, rel: &str) -> Result<Option<(Bytes, UpdateVersion)>> {
        match self.store.get(&self.path(rel)).await {
            Ok(got) => {
                let version = version_of(&got.meta);
                Ok(Some((got.bytes().await.map_err(|e| self.error(rel, e))?, version)))
            }
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.error(rel, e)),
        }
    }

    /// Writes `rel` in one put: readers see the old object or the new one.
    pub async fn write(&self, rel: &str, bytes: Bytes) -> Result<()> {
        self.store.put(&self.path(rel), PutPayload::from(bytes)).await.map_err(|e| self.error(rel, e))?;
        Ok(())
    }

    /// Writes `rel` in one put if it is still what this process read:
    /// `read` is the version it read ([`DataRoot::download_versioned`]),
    /// None if there was no such object then. If another writer got there
    /// first, nothing is written and the error is
    /// [`PipelineError::Changed`]. A store that cannot write conditionally
    /// (S3 configured with `aws_conditional_put = "disabled"`, or one that
    /// gave no e-tag) gets a plain put, and stderr says so.
    pub async fn write_if(&self, rel: &str, bytes: Bytes, read: Option<UpdateVersion>) -> Result<()> {
        let mode = match read {
            None => PutMode::Create,
            Some(v) if v.e_tag.is_none() && v.version.is_none() => {
                return self.write_unguarded(rel, bytes).await;
            }
            Some(v) => PutMode::Update(v),
        };
        let opts = PutOptions { mode, ..Default::default() };
        match self.store.put_opts(&self.path(rel), PutPayload::from(bytes.clone()), opts).await {
            Ok(_) => Ok(()),
            Err(object_store::Error::Precondition { .. } | object_store::Error::AlreadyExists { .. }) => {
                Err(PipelineError::Changed { path: self.display(rel) })
            }
            Err(object_store::Error::NotImplemented { .. }) => self.write_unguarded(rel, bytes).await,
            Err(e) => Err(self.error(rel, e)),
        }
    }

    async fn write_unguarded(&self, rel: &str, bytes: Bytes) -> Result<()> {
        eprintln!(
            "warning: {} cannot be written only if unchanged on this store; \
             written unconditionally (a concurrent change to it may be lost)",
            self.display(rel)
        );
        self.write(rel, bytes).await
    }

    /// Uploads the local file `from` as `rel` (large files in parts; an
    /// object appears only once complete).
    pub async fn upload(&self, rel: &str, from: &Path) -> Result<()> {
        let len = std::fs::metadata(from).map_err(io(from))?.len();
        if len < MULTIPART_BYTES {
            let bytes = std::fs::read(from).map_err(io(from))?;
            return self.write(rel, Bytes::from(bytes)).await;
        }
        let upload = self.store.put_multipart(&self.path(rel)).await.map_err(|e| self.error(rel, e))?;
        let mut writer = WriteMultipart::new(upload);
        let parts = async {
            let mut file = std::fs::File::open(from).map_err(io(from))?;
            let mut buf = vec![0u8; 8 << 20];
            loop {
                let n = file.read(&mut buf).map_err(io(from))?;
                if n == 0 {
                    return Ok(());
                }
                writer.wait_for_capacity(4).await.map_err(|e| self.error(rel, e))?;
                writer.write(&buf[..n]);
            }
        }
        .await;
        if let Err(e) = parts {
            // Uploaded parts are stored (and billed) until aborted.
            let _ = writer.abort().await;
            return Err(e);
        }
        writer.finish().await.map_err(|e| self.error(rel, e))?;
        Ok(())
    }

    /// Uploads every file under the local directory `from` to `rel/`,
    /// the ones named in `last` after all others (the objects that commit
    /// the rest). Hidden files (`.name`) stay behind.
    pub async fn upload_dir(&self, rel: &str, from: &Path, last: &[&str]) -> Result<Vec<String>> {
        let mut files = Vec::new();
        local_files(from, from, &mut files)?;
        files.sort_by_key(|f| (last.iter().position(|l| *l == f.as_str()), f.clone()));
        let mut written = Vec::new();
        for file in files {
            let target = join(rel, &file);
            self.upload(&target, &from.join(&file)).await?;
            written.push(self.display(&target));
        }
        Ok(written)
    }

    /// Every object under `rel/`, with its name relative to `rel`.
    async fn objects(&self, rel: &str) -> Result<Vec<(String, ObjectMeta)>> {
        let base = self.path(rel);
        let objects: Vec<ObjectMeta> =
            self.store.list(Some(&base)).try_collect().await.map_err(|e| self.error(rel, e))?;
        let mut named: Vec<(String, ObjectMeta)> = objects
            .into_iter()
            .map(|o| {
                let parts: Vec<_> =
                    o.location.prefix_match(&base).expect("listed under the prefix").collect();
                (parts.iter().map(|p| p.as_ref()).collect::<Vec<_>>().join("/"), o)
            })
            .collect();
        named.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(named)
    }

    /// The names of every object under `rel/`, relative to `rel`.
    pub async fn list_all(&self, rel: &str) -> Result<Vec<String>> {
        Ok(self.objects(rel).await?.into_iter().map(|(name, _)| name).collect())
    }

    /// Downloads every object under `rel/` into the local directory `to`.
    pub async fn download_dir(&self, rel: &str, to: &Path) -> Result<Vec<String>> {
        self.download(rel, to, |_| true).await
    }

    /// Downloads the objects under `rel/` whose relative name `keep`
    /// accepts into the local directory `to`; returns their names. An
    /// object that goes between the listing and its download is an error
    /// (a reader must not take a partial copy for a whole one). Small
    /// objects (a registry's index, manifests) are fetched
    /// [`PARALLEL_GETS`] at a time, since each GET is a round trip; larger
    /// ones one at a time, so memory holds one of them.
    pub async fn download(&self, rel: &str, to: &Path, keep: impl Fn(&str) -> bool) -> Result<Vec<String>> {
        Ok(self.download_versioned(rel, to, keep).await?.into_iter().map(|(name, _)| name).collect())
    }

    /// [`DataRoot::download`], with the version of each object as it was
    /// downloaded (for [`DataRoot::write_if`]).
    pub async fn download_versioned(
        &self,
        rel: &str,
        to: &Path,
        keep: impl Fn(&str) -> bool,
    ) -> Result<Vec<(String, UpdateVersion)>> {
        let wanted: Vec<(String, ObjectMeta)> =
            self.objects(rel).await?.into_iter().filter(|(n, _)| keep(n)).collect();
        for (name, _) in &wanted {
            // Each part of the name a plain file name: nothing lands outside `to`.
            let plain = name.split('/').all(|part| {
                let mut c = Path::new(part).components();
                matches!((c.next(), c.next()), (Some(std::path::Component::Normal(_)), None))
            });
            if !plain {
                return Err(PipelineError::Config {
                    field: self.display(&join(rel, name)),
                    reason: "not a plain relative file name; not downloaded".into(),
                });
            }
        }
        let write = |name: &str, bytes: &[u8]| -> Result<()> {
            let local = name.split('/').fold(to.to_path_buf(), |p, part| p.join(part));
            if let Some(dir) = local.parent() {
                std::fs::create_dir_all(dir).map_err(io(dir))?;
            }
            std::fs::write(&local, bytes).map_err(io(&local))
        };
        let (small, large): (Vec<_>, Vec<_>) = wanted.iter().partition(|(_, o)| o.size <= SMALL_OBJECT);
        let mut versions = BTreeMap::new();
        let mut fetched = futures::stream::iter(small)
            .map(|(name, object)| async move { self.get_versioned(object).await.map(|got| (name, got)) })
            .buffer_unordered(PARALLEL_GETS);
        while let Some(got) = fetched.next().await {
            let (name, (bytes, version)) = got?;
            write(name, &bytes)?;
            versions.insert(name.as_str(), version);
        }
        drop(fetched);
        for (name, object) in large {
            let (bytes, version) = self.get_versioned(object).await?;
            write(name, &bytes)?;
            versions.insert(name.as_str(), version);
        }
        let mut take =
            |name: &String| versions.remove(name.as_str()).expect("every wanted object was fetched");
        Ok(wanted.iter().map(|(name, _)| (name.clone(), take(name))).collect())
    }

    /// Deletes the object `rel`, if there is one.
    pub async fn delete(&self, rel: &str) -> Result<()> {
        match self.store.delete(&self.path(rel)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.error(rel, e)),
        }
    }

    /// Deletes every object under `rel/`.
    pub async fn delete_dir(&self, rel: &str) -> Result<()> {
        for (_, object) in self.objects(rel).await? {
            self.store.delete(&object.location).await.map_err(|e| self.error(rel, e))?;
        }
        Ok(())
    }

    fn error(&self, rel: &str, source: object_store::Error) -> PipelineError {
        PipelineError::Store { path: self.display(rel), source }
    }
}

/// The version of the object `meta` describes, as a conditional write names it.
fn version_of(meta: &ObjectMeta) -> UpdateVersion {
    UpdateVersion { e_tag: meta.e_tag.clone(), version: meta.version.clone() }
}

fn join(rel: &str, name: &str) -> String {
    if rel.is_empty() { name.to_string() } else { format!("{}/{name}", rel.trim_end_matches('/')) }
}

/// Files under `dir`, relative to `root`, `/`-separated, hidden ones left out.
pub(crate) fn local_files(root: &Path, dir: &Path, out: &mut Vec<String>) -> Result<()> {
    for entry in std::fs::read_dir(dir).map_err(io(dir))? {
        let path = entry.map_err(io(dir))?.path();
        if path.file_name().is_some_and(|n| n.to_string_lossy().starts_with('.')) {
            continue;
        }
        if path.is_dir() {
            local_files(root, &path, out)?;
        } else {
            let rel = path.strip_prefix(root).expect("under the root");
            out.push(rel.components().map(|c| c.as_os_str().to_string_lossy()).collect::<Vec<_>>().join("/"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parent_segments_resolve_instead_of_panicking() {
        let root = DataRoot::local(Path::new("/data/models/../sample/./x/.."));
        assert_eq!(root.url.as_str(), "file:///data/sample/");
        assert_eq!(root.to_string(), "/data/models/../sample/./x/..", "messages show the path as given");
    }

    #[tokio::test]
    async fn download_fetches_small_objects_together_and_large_ones_alone() {
        let from = tempfile::tempdir().unwrap();
        let mut expected = Vec::new();
        for i in 0..40 {
            let rel = format!("m/v{i:02}/meta.json");
            std::fs::create_dir_all(from.path().join(format!("m/v{i:02}"))).unwrap();
            std::fs::write(from.path().join(&rel), format!("{{\"version\": {i}}}")).unwrap();
            expected.push(format!("v{i:02}/meta.json"));
        }
        let big = vec![7u8; SMALL_OBJECT as usize + 1];
        std::fs::write(from.path().join("m/v00/model.json"), &big).unwrap();
        expected.push("v00/model.json".into());
        expected.sort();
        let root = DataRoot::local(from.path());
        let to = tempfile::tempdir().unwrap();
        let got = root.download("m", to.path(), |_| true).await.unwrap();
        assert_eq!(got, expected, "every name, in order");
        assert_eq!(std::fs::read(to.path().join("v00/model.json")).unwrap(), big);
        assert_eq!(std::fs::read_to_string(to.path().join("v39/meta.json")).unwrap(), "{\"version\": 39}");
        let only = root.download("m", &to.path().join("only"), |n| n.ends_with("model.json")).await.unwrap();
        assert_eq!(only, ["v00/model.json"]);
        assert!(!to.path().join("only/v01").exists());
    }
}
