//! Where input data lives: a data root addressed by URL through
//! object_store. Local paths and `file://` URLs are built in; another scheme
//! (`s3://`, `gs://`, `az://`) is one more arm in [`DataRoot::parse`] that
//! builds its store from configuration: nothing else in engage reads files
//! directly.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use datafusion::prelude::SessionContext;
use object_store::local::LocalFileSystem;
use object_store::path::Path as StorePath;
use object_store::{ObjectMeta, ObjectStore, ObjectStoreExt};
use url::Url;

use crate::error::{PipelineError, Result};

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

    /// A path, or a URL with a scheme engage has a store for (`file://`).
    pub fn parse(given: &str) -> Result<DataRoot> {
        let Some((scheme, _)) = given.split_once("://") else {
            return Ok(DataRoot::local(Path::new(given)));
        };
        let bad = |reason: String| PipelineError::InvalidArgument {
            name: "--data",
            value: given.to_string(),
            reason,
        };
        let url = Url::parse(given).map_err(|e| bad(format!("not a URL: {e}")))?;
        match scheme {
            "file" => {
                let path = url.to_file_path().map_err(|_| bad("not a local file URL".into()))?;
                let mut root = DataRoot::local(&path);
                root.given = given.trim_end_matches('/').to_string();
                Ok(root)
            }
            "s3" | "gs" | "az" | "abfs" | "http" | "https" => Err(bad(format!(
                "`{scheme}://` data roots need an object store configured for it, which this build \
                 does not have yet; copy the data locally or use a file:// URL"
            ))),
            _ => Err(bad(format!("unknown scheme `{scheme}`: use a path or a file:// URL"))),
        }
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
        let rel = object.location.to_string();
        let result = self.store.get(&object.location).await.map_err(|e| self.error(&rel, e))?;
        result.bytes().await.map_err(|e| self.error(&rel, e))
    }

    /// A byte range of an object.
    pub async fn get_range(&self, object: &ObjectMeta, range: std::ops::Range<u64>) -> Result<Bytes> {
        let rel = object.location.to_string();
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

    fn error(&self, rel: &str, source: object_store::Error) -> PipelineError {
        PipelineError::Store { path: self.display(rel), source }
    }
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
}
