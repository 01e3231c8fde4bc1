//! The model registry: every trained model in its own directory,
//! `<root>/<name>/<version>/`, and per name a promotion stack saying which
//! version scoring and serving use.
//!
//! ```text
//! <root>/churn/churn-2026-03-31-1a2b3c4d5e6f/model.json      the artifact
//!                                            meta.json       what list/show print
//!                                            metrics.json, report.html, run_report.json
//! <root>/churn/promotions.json                               promoted versions, newest last
//! ```
//!
//! A version directory appears whole: it is written under `<name>/.staging-*`
//! and renamed into place. The promotion file is replaced atomically.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::ModelError;
use crate::snapshot::{LOCK_FILE, open_lock_file, write_atomic};

/// The artifact inside a version directory.
pub const MODEL_FILE: &str = "model.json";
/// The metadata inside a version directory.
pub const META_FILE: &str = "meta.json";
/// The promotion stack of a name.
pub const PROMOTIONS_FILE: &str = "promotions.json";
/// Bumped when `meta.json` or `promotions.json` change incompatibly.
pub const REGISTRY_FORMAT_VERSION: u32 = 1;

/// What the registry knows about a model without loading it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelMeta {
    pub format_version: u32,
    /// Registry name (the task unless `--name` said otherwise).
    pub name: String,
    /// The version directory, also the `model_version` in score snapshots.
    pub version: String,
    /// What it predicts: `churn`, `response`, `clv`.
    pub task: String,
    /// The model family: `logistic`, `gbm`, `random_forest`, `bg_nbd+gamma_gamma`.
    pub kind: String,
    pub engage_version: String,
    /// UTC time of training (RFC 3339).
    pub trained_at: String,
    /// Feature cutoff of the training data (ISO date, or `table`).
    pub as_of: String,
    /// Label horizon in days (0 when the labels came with the table).
    pub horizon_days: u32,
    /// How the validation rows were chosen, in words.
    pub split: String,
    /// Input features in order (empty for CLV, which reads purchases).
    pub features: Vec<String>,
    /// Hyperparameters as trained.
    pub config: serde_json::Value,
    /// SHA-256 of the training data.
    pub data_fingerprint: String,
    /// Validation metrics (classifiers) or fit summaries (CLV).
    pub metrics: serde_json::Value,
}

/// One promotion or rollback, for the audit trail.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PromotionEvent {
    /// `promote` or `rollback`.
    pub action: String,
    /// The version current after the event.
    pub version: String,
    /// UTC time (RFC 3339).
    pub at: String,
}

/// `<name>/promotions.json`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Promotions {
    pub format_version: u32,
    /// Promoted versions, the current one last; rollback pops.
    pub stack: Vec<String>,
    /// Every promotion and rollback, oldest first.
    pub events: Vec<PromotionEvent>,
}

impl Promotions {
    /// `version` on top of the stack (once), and the event.
    fn promote(&mut self, version: &str) {
        if self.stack.last().map(String::as_str) != Some(version) {
            self.stack.push(version.to_string());
        }
        self.events.push(PromotionEvent { action: "promote".into(), version: version.into(), at: now() });
    }
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// A row of `engage models list`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Entry {
    pub meta: ModelMeta,
    /// Whether this is the version scoring uses.
    pub promoted: bool,
}

/// Which model to use: `name` (its promoted version) or `name@version`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelRef {
    pub name: String,
    pub version: Option<String>,
}

impl std::str::FromStr for ModelRef {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (name, version) = match s.split_once('@') {
            Some((n, v)) => (n, Some(v.to_string())),
            None => (s, None),
        };
        if name.is_empty() || version.as_deref() == Some("") {
            return Err(format!("{s:?}: expected NAME or NAME@VERSION"));
        }
        Ok(ModelRef { name: name.into(), version })
    }
}

impl std::fmt::Display for ModelRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.version {
            Some(v) => write!(f, "{}@{v}", self.name),
            None => write!(f, "{}", self.name),
        }
    }
}

/// A model registry rooted at a directory (created on first registration).
#[derive(Debug, Clone)]
pub struct Registry {
    root: PathBuf,
    /// The registry as messages name it: the directory, or the URL of the
    /// store it was copied from.
    shown: String,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ModelError + '_ {
    move |source| ModelError::Io { path: path.display().to_string(), source }
}

fn registry_error(shown: &str, reason: String) -> ModelError {
    ModelError::Registry { root: shown.to_string(), reason }
}

/// Names and versions become directory names: keep them to a safe alphabet.
fn check_component(what: &str, value: &str, shown: &str) -> Result<(), ModelError> {
    let ok = !value.is_empty()
        && !value.starts_with('.')
        && value.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(registry_error(
            shown,
            format!("{what} {value:?}: use letters, digits, '-', '_' or '.', not starting with '.'"),
        ))
    }
}

impl Registry {
    pub fn new(root: impl Into<PathBuf>) -> Registry {
        let root = root.into();
        Registry { shown: root.display().to_string(), root }
    }

    /// A registry in `root` that messages call `shown` (a local copy of a
    /// registry on an object store).
    pub fn copy_of(root: impl Into<PathBuf>, shown: &str) -> Registry {
        Registry { root: root.into(), shown: shown.to_string() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// A file of the registry as messages name it (under the URL for a copy).
    fn show(&self, path: &Path) -> String {
        match path.strip_prefix(&self.root) {
            Ok(rel) => format!("{}/{}", self.shown.trim_end_matches('/'), rel.display()),
            Err(_) => path.display().to_string(),
        }
    }

    fn read_json<T: serde::de::DeserializeOwned>(&self, path: &Path) -> Result<T, ModelError> {
        let bytes = std::fs::read(path).map_err(|source| ModelError::Io { path: self.show(path), source })?;
        serde_json::from_slice(&bytes).map_err(|source| ModelError::Parse { path: self.show(path), source })
    }

    /// The directory of one version.
    pub fn version_dir(&self, name: &str, version: &str) -> PathBuf {
        self.root.join(name).join(version)
    }

    /// Registers a model: `write` fills a fresh staging directory (it must
    /// write [`MODEL_FILE`]; `meta.json` is written here), which then
    /// becomes `<name>/<version>/`. Registering a version that exists
    /// replaces it (same name and version means same data and
    /// configuration). The first version of a name is promoted
    /// automatically; later ones wait for `promote`. Returns the version
    /// directory and whether it was promoted.
    pub fn register(
        &self,
        meta: &ModelMeta,
        write: impl FnOnce(&Path) -> Result<(), ModelError>,
    ) -> Result<(PathBuf, bool), ModelError> {
        check_component("model name", &meta.name, &self.shown)?;
        check_component("model version", &meta.version, &self.shown)?;
        let dir = self.root.join(&meta.name);
        let staging = dir.join(format!(".staging-{}-{}", meta.version, std::process::id()));
        let _ = std::fs::remove_dir_all(&staging);
        std::fs::create_dir_all(&staging).map_err(io(&staging))?;
        let filled = write(&staging).and_then(|()| {
            if !staging.join(MODEL_FILE).is_file() {
                return Err(registry_error(&self.shown, format!("internal: no {MODEL_FILE} was written")));
            }
            crate::artifact::save_json(meta, &staging.join(META_FILE))
        });
        if let Err(e) = filled {
            let _ = std::fs::remove_dir_all(&staging);
            return Err(e);
        }
        let target = dir.join(&meta.version);
        if target.exists() {
            let old = dir.join(format!(".replaced-{}-{}", meta.version, std::process::id()));
            std::fs::rename(&target, &old).map_err(io(&target))?;
            std::fs::rename(&staging, &target).map_err(io(&target))?;
            let _ = std::fs::remove_dir_all(&old);
        } else {
            std::fs::rename(&staging, &target).map_err(io(&target))?;
        }
        let promoted = self.change_promotions(&meta.name, |p| {
            let first = p.stack.is_empty();
            if first {
                p.promote(&meta.version);
            }
            Ok(first)
        })?;
        Ok((target, promoted))
    }

    /// The metadata of `name`/`version`.
    pub fn meta(&self, name: &str, version: &str) -> Result<ModelMeta, ModelError> {
        check_component("model name", name, &self.shown)?;
        check_component("model version", version, &self.shown)?;
        let path = self.version_dir(name, version).join(META_FILE);
        if !path.is_file() {
            let known = self.versions(name)?;
            if known.is_empty() {
                return Err(self.unknown_name(name));
            }
            return Err(registry_error(
                &self.shown,
                format!("{name} has no version {version:?}; it has {}", known.join(", ")),
            ));
        }
        self.read_json(&path)
    }

    fn unknown_name(&self, name: &str) -> ModelError {
        registry_error(
            &self.shown,
            format!("no model named {name:?} (train one, or see `engage models list`)"),
        )
    }

    /// The registered versions of `name`, sorted.
    pub fn versions(&self, name: &str) -> Result<Vec<String>, ModelError> {
        let dir = self.root.join(name);
        if !dir.is_dir() {
            return Ok(Vec::new());
        }
        let mut out = Vec::new();
        for entry in std::fs::read_dir(&dir).map_err(io(&dir))? {
            let entry = entry.map_err(io(&dir))?;
            let file = entry.file_name().to_string_lossy().into_owned();
            if !file.starts_with('.') && entry.path().join(META_FILE).is_file() {
                out.push(file);
            }
        }
        out.sort();
        Ok(out)
    }

    /// Every registered model, by name, newest training first.
    pub fn list(&self) -> Result<Vec<Entry>, ModelError> {
        let mut names = Vec::new();
        if self.root.is_dir() {
            for entry in std::fs::read_dir(&self.root).map_err(io(&self.root))? {
                let entry = entry.map_err(io(&self.root))?;
                let file = entry.file_name().to_string_lossy().into_owned();
                if !file.starts_with('.') && entry.path().is_dir() {
                    names.push(file);
                }
            }
        }
        names.sort();
        let mut out = Vec::new();
        for name in names {
            let current = self.promotions(&name)?.stack.last().cloned();
            let mut metas: Vec<ModelMeta> =
                self.versions(&name)?.iter().map(|v| self.meta(&name, v)).collect::<Result<_, _>>()?;
            metas.sort_by(|a, b| b.trained_at.cmp(&a.trained_at).then(b.version.cmp(&a.version)));
            out.extend(
                metas
                    .into_iter()
                    .map(|meta| Entry { promoted: current.as_deref() == Some(meta.version.as_str()), meta }),
            );
        }
        Ok(out)
    }

    /// The promotion stack of `name` (empty if nothing was promoted).
    pub fn promotions(&self, name: &str) -> Result<Promotions, ModelError> {
        let path = self.root.join(name).join(PROMOTIONS_FILE);
        if !path.exists() {
            return Ok(Promotions { format_version: REGISTRY_FORMAT_VERSION, ..Promotions::default() });
        }
        let p: Promotions = self.read_json(&path)?;
        if p.format_version != REGISTRY_FORMAT_VERSION {
            return Err(ModelError::FormatVersion {
                path: self.show(&path),
                found: p.format_version,
                expected: REGISTRY_FORMAT_VERSION,
            });
        }
        Ok(p)
    }

    /// Reads `name`'s promotions, lets `change` change them, and replaces
    /// the file if it did, all under an exclusive lock on `<name>/.lock`:
    /// two commands promoting, rolling back or registering a first version
    /// at once (a nightly `train --promote` and a person at the CLI) each
    /// see the other's change instead of the later write dropping the
    /// earlier one's. The lock is the operating system's (`flock`), so a
    /// killed command holds it no longer; the file stays, empty.
    fn change_promotions<T>(
        &self,
        name: &str,
        change: impl FnOnce(&mut Promotions) -> Result<T, ModelError>,
    ) -> Result<T, ModelError> {
        check_component("model name", name, &self.shown)?;
        let dir = self.root.join(name);
        if !dir.is_dir() {
            return Err(self.unknown_name(name));
        }
        let path = dir.join(LOCK_FILE);
        let lock = open_lock_file(&path).map_err(io(&path))?;
        lock.lock().map_err(io(&path))?;
        let before = self.promotions(name)?;
        let mut p = before.clone();
        let out = change(&mut p)?;
        if p != before {
            let path = dir.join(PROMOTIONS_FILE);
            write_atomic(&path, &serde_json::to_vec_pretty(&p).expect("promotions serialise"))?;
        }
        Ok(out)
    }

    /// Makes `version` the one scoring uses (it must be registered).
    pub fn promote(&self, name: &str, version: &str) -> Result<(), ModelError> {
        self.meta(name, version)?;
        self.change_promotions(name, |p| {
            p.promote(version);
            Ok(())
        })
    }

    /// Returns to the version promoted before the current one; returns it.
    pub fn rollback(&self, name: &str) -> Result<String, ModelError> {
        self.change_promotions(name, |p| self.roll_back(name, p))
    }

    fn roll_back(&self, name: &str, p: &mut Promotions) -> Result<String, ModelError> {
        if p.stack.len() < 2 {
            return Err(registry_error(
                &self.shown,
                format!(
                    "{name}: nothing to roll back to ({})",
                    match p.stack.last() {
                        Some(v) => format!("{v} is the only version ever promoted"),
                        None => "no version was promoted".into(),
                    }
                ),
            ));
        }
        p.stack.pop();
        let back = p.stack.last().expect("two or more before the pop").clone();
        p.events.push(PromotionEvent { action: "rollback".into(), version: back.clone(), at: now() });
        Ok(back)
    }

    /// The version to use: the given one (it must exist), else the
    /// promoted one. Returns its metadata and artifact path.
    pub fn resolve(&self, model: &ModelRef) -> Result<(ModelMeta, PathBuf), ModelError> {
        let name = model.name.as_str();
        check_component("model name", name, &self.shown)?;
        let version = match &model.version {
            Some(v) => v.to_string(),
            None => self.promotions(name)?.stack.last().cloned().ok_or_else(|| {
                let known = self.versions(name).unwrap_or_default();
                if known.is_empty() {
                    return self.unknown_name(name);
                }
                registry_error(
                    &self.shown,
                    format!("{name} has no promoted version; promote one of {}", known.join(", ")),
                )
            })?,
        };
        let meta = self.meta(name, &version)?;
        Ok((meta, self.version_dir(name, &version).join(MODEL_FILE)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(name: &str, version: &str, trained_at: &str) -> ModelMeta {
        ModelMeta {
            format_version: REGISTRY_FORMAT_VERSION,
            name: name.into(),
            version: version.into(),
            task: "churn".into(),
            kind: "logistic".into(),
            engage_version: "test".into(),
            trained_at: trained_at.into(),
            as_of: "2026-01-01".into(),
            horizon_days: 90,
            split: "test".into(),
            features: vec!["a".into()],
            config: serde_json::json!({}),
            data_fingerprint: "00".into(),
            metrics: serde_json::json!({}),
        }
    }

    fn add(reg: &Registry, name: &str, version: &str, at: &str) -> bool {
        reg.register(&meta(name, version, at), |dir| write_atomic(&dir.join(MODEL_FILE), version.as_bytes()))
            .unwrap()
            .1
    }

    #[test]
    fn first_version_is_promoted_then_promote_and_rollback_move_the_pointer() {
        let tmp = std::env::temp_dir().join(format!("engage-registry-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&tmp);
        let reg = Registry::new(&tmp);
        assert!(matches!(reg.resolve(&"churn".parse().unwrap()), Err(ModelError::Registry { .. })));
        assert!(add(&reg, "churn", "v1", "2026-01-01T00:00:00Z"));
        assert!(!add(&reg, "churn", "v2", "2026-01-02T00:00:00Z"));
        assert_eq!(reg.resolve(&"churn".parse().unwrap()).unwrap().0.version, "v1");
        reg.promote("churn", "v2").unwrap();
        let (m, path) = reg.resolve(&"churn".parse().unwrap()).unwrap();
        assert_eq!((m.version.as_str(), std::fs::read(&path).unwrap()), ("v2", b"v2".to_vec()));
        let listed = reg.list().unwrap();
        assert_eq!(
            listed.iter().map(|e| (e.meta.version.as_str(), e.promoted)).collect::<Vec<_>>(),
            [("v2", true), ("v1", false)]
        );
        assert_eq!(reg.rollback("churn").unwrap(), "v1");
        assert_eq!(reg.resolve(&"churn".parse().unwrap()).unwrap().0.version, "v1");
        let err = reg.rollback("churn").unwrap_err().to_string();
        assert!(err.contains("only version ever promoted"), "{err}");
        // A name never registered is an error that says so, and leaves
        // nothing behind; so is a name that is not one.
        let err = reg.rollback("chrun").unwrap_err().to_string();
        assert!(err.contains("no model named \"chrun\""), "{err}");
        assert!(!tmp.join("chrun").exists());
        assert!(reg.rollback("../churn").is_err());
        assert_eq!(reg.promotions("churn").unwrap().events.len(), 3);
        // Unknown versions and unsafe names are errors that say what exists.
        let err = reg.promote("churn", "v9").unwrap_err().to_string();
        assert!(err.contains("no version \"v9\"") && err.contains("v1, v2"), "{err}");
        assert!(reg.resolve(&"../etc".parse().unwrap()).is_err());
        assert_eq!(reg.resolve(&"churn@v2".parse().unwrap()).unwrap().0.version, "v2");
        assert!("churn@".parse::<ModelRef>().is_err());
        // Re-registering a version replaces it; no staging is left behind.
        add(&reg, "churn", "v2", "2026-01-03T00:00:00Z");
        assert_eq!(reg.meta("churn", "v2").unwrap().trained_at, "2026-01-03T00:00:00Z");
        let leftovers: Vec<_> = std::fs::read_dir(tmp.join("churn"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|f| f.starts_with('.') && f != LOCK_FILE)
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
        // A failed write leaves nothing.
        let failed = reg.register(&meta("churn", "v3", "x"), |_| Err(ModelError::Data("boom".into())));
        assert!(failed.is_err() && reg.versions("churn").unwrap() == ["v1", "v2"]);
        let _ = std::fs::remove_dir_all(&tmp);
    }

    #[test]
    fn concurrent_promotions_and_rollbacks_lose_no_event() {
        let tmp = std::env::temp_dir().join(format!("engage-registry-race-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&tmp);
        let reg = Registry::new(&tmp);
        add(&reg, "churn", "v1", "2026-01-01T00:00:00Z");
        add(&reg, "churn", "v2", "2026-01-02T00:00:00Z");
        // Each thread promotes v2 then rolls back, over and over: every
        // call is a read, a change and a replacement of promotions.json.
        let (threads, rounds) = (8, 25);
        let rolled_back = std::sync::atomic::AtomicUsize::new(0);
        std::thread::scope(|s| {
            for _ in 0..threads {
                s.spawn(|| {
                    for _ in 0..rounds {
                        reg.promote("churn", "v2").unwrap();
                        // Another thread's rollback may have come first and
                        // left v1 alone on the stack: nothing to roll back.
                        if reg.rollback("churn").is_ok() {
                            rolled_back.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        }
                    }
                });
            }
        });
        let p = reg.promotions("churn").unwrap();
        let count = |action: &str| p.events.iter().filter(|e| e.action == action).count();
        // The first registration's promotion, then every call's: none lost.
        assert_eq!(count("promote"), 1 + threads * rounds);
        assert_eq!(count("rollback"), rolled_back.into_inner());
        let _ = std::fs::remove_dir_all(&tmp);
    }
}
