//! What the server serves: the current snapshot, swapped atomically when a
//! new one has loaded and passed every check, and the reload bookkeeping
//! that `/readyz` and `/metrics` report.

use std::fmt::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use engage_models::snapshot;
use serde::Serialize;
use utoipa::ToSchema;

use crate::auth::{Keys, Sessions};
use crate::metrics::{Metrics, escape};
use crate::{ApiError, ScoreService, ServeError};

/// Request limits from the config.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_batch: usize,
    pub max_page: usize,
    pub max_body_bytes: usize,
}

/// A snapshot that was refused.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Refused {
    /// The id the pointer named when the load failed.
    pub snapshot_id: String,
    pub error: String,
    /// RFC 3339, UTC.
    pub at: String,
}

/// The result of a reload.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ReloadOutcome {
    /// False when the pointer names the snapshot already served.
    pub reloaded: bool,
    pub snapshot_id: String,
    pub rows: usize,
}

/// The snapshot being served, held for one request. Taken without touching
/// the snapshot's reference count (which every worker would write on every
/// request); a reload meanwhile waits for nothing: the old snapshot lives
/// until the last request holding it ends.
pub struct Current(arc_swap::Guard<Option<Arc<ScoreService>>>);

impl std::ops::Deref for Current {
    type Target = ScoreService;

    fn deref(&self) -> &ScoreService {
        self.0.as_deref().expect("checked in Served::snapshot")
    }
}

/// Shared by every worker.
pub struct Served {
    root: PathBuf,
    current: ArcSwapOption<ScoreService>,
    /// One load at a time.
    loading: Mutex<()>,
    /// The newest snapshot's refusal, until a snapshot loads.
    refused: Mutex<Option<Refused>>,
    pub metrics: Metrics,
    pub keys: Keys,
    pub limits: Limits,
    /// Dashboard sign-ins.
    pub sessions: Sessions,
}

impl Served {
    pub fn new(root: &Path, keys: Keys, limits: Limits, sessions: Sessions) -> Served {
        Served {
            root: root.to_path_buf(),
            current: ArcSwapOption::empty(),
            loading: Mutex::new(()),
            refused: Mutex::default(),
            metrics: Metrics::default(),
            keys,
            limits,
            sessions,
        }
    }

    /// The snapshot being served, or `NotReady`.
    pub fn snapshot(&self) -> Result<Current, ApiError> {
        let current = self.current.load();
        if current.is_none() {
            return Err(ApiError::NotReady);
        }
        Ok(Current(current))
    }

    /// The id `CURRENT` names now (`None` when it cannot be read).
    fn pointer(&self) -> Option<String> {
        snapshot::current_id(&self.root).ok()
    }

    /// Loads the snapshot the pointer names, checks it in full and swaps it
    /// in; on any error the served snapshot stays and the refusal is
    /// recorded. A no-op when that snapshot is already served.
    pub fn reload(&self) -> Result<ReloadOutcome, ServeError> {
        let _one = self.loading.lock().expect("reload lock");
        let id = match snapshot::current_id(&self.root) {
            Ok(id) => id,
            Err(e @ engage_models::ModelError::NoSnapshot { .. }) => {
                tracing::info!("no snapshot published yet; waiting for one");
                return Err(e.into());
            }
            Err(e) => return Err(self.refuse(String::new(), e.into())),
        };
        let served = self.current.load_full();
        if let Some(s) = &served
            && s.manifest().snapshot_id == id
        {
            return Ok(ReloadOutcome { reloaded: false, snapshot_id: id, rows: s.len() });
        }
        let loaded = snapshot::open(&self.root, &id)
            .map_err(ServeError::from)
            .and_then(|(dir, manifest)| ScoreService::load_dir(&dir, manifest));
        let svc = loaded.map_err(|e| self.refuse(id.clone(), e))?;
        let outcome = ReloadOutcome { reloaded: true, snapshot_id: id, rows: svc.len() };
        // Swapped under the refusal's lock, so that no reader sees the new
        // snapshot beside the refusal it supersedes.
        let mut refused = self.refused.lock().expect("status lock");
        self.current.store(Some(Arc::new(svc)));
        *refused = None;
        drop(refused);
        drop(served);
        self.metrics.reload_successes.fetch_add(1, Ordering::Relaxed);
        tracing::info!(snapshot_id = %outcome.snapshot_id, rows = outcome.rows, "snapshot loaded");
        Ok(outcome)
    }

    /// Records that snapshot `id` was refused for `e`; returns `e`.
    fn refuse(&self, id: String, e: ServeError) -> ServeError {
        let error = error_chain(&e);
        tracing::error!(snapshot_id = %id, %error, "snapshot refused; the previous one keeps serving");
        self.metrics.reload_failures.fetch_add(1, Ordering::Relaxed);
        let at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        *self.refused.lock().expect("status lock") = Some(Refused { snapshot_id: id, error, at });
        e
    }

    /// Reloads when the pointer names a snapshot that is neither served
    /// nor already refused (the watcher's check).
    pub fn reload_if_changed(&self) {
        let Some(id) = self.pointer() else { return };
        let served = self.current.load().as_ref().map(|s| s.manifest().snapshot_id.clone());
        let refused = self.last_refused().map(|r| r.snapshot_id);
        if served.as_deref() != Some(id.as_str()) && refused.as_deref() != Some(id.as_str()) {
            let _ = self.reload();
        }
    }

    /// Checks the pointer every `interval` on a thread of its own.
    pub fn watch(self: &Arc<Self>, interval: Duration) {
        let served = Arc::downgrade(self);
        std::thread::Builder::new()
            .name("snapshot-watch".into())
            .spawn(move || {
                while let Some(s) = served.upgrade() {
                    s.reload_if_changed();
                    drop(s);
                    std::thread::sleep(interval);
                }
            })
            .expect("a watcher thread");
    }

    /// The last refused snapshot, if the newest attempt failed.
    pub fn last_refused(&self) -> Option<Refused> {
        self.refused.lock().expect("status lock").clone()
    }

    /// `/metrics`: requests, then the snapshot gauges and reload counters.
    pub fn metrics_text(&self) -> String {
        let mut out = String::new();
        self.metrics.render_requests(&mut out);
        let snapshot = self.current.load_full();
        let gauge = |out: &mut String, name: &str, help: &str, value: f64| {
            let _ = write!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}\n");
        };
        gauge(
            &mut out,
            "engage_snapshot_loaded",
            "1 when a snapshot is served.",
            snapshot.is_some() as u8 as f64,
        );
        if let Some(s) = &snapshot {
            let m = s.manifest();
            gauge(&mut out, "engage_snapshot_rows", "Customers in the served snapshot.", s.len() as f64);
            if let Ok(at) = chrono::DateTime::parse_from_rfc3339(&m.scored_at) {
                let age = (chrono::Utc::now() - at.to_utc()).num_milliseconds() as f64 / 1000.0;
                gauge(
                    &mut out,
                    "engage_snapshot_age_seconds",
                    "Seconds since the served snapshot was scored.",
                    age,
                );
            }
            let _ = write!(
                out,
                "# HELP engage_snapshot_info The served snapshot.\n# TYPE engage_snapshot_info gauge\n\
                 engage_snapshot_info{{snapshot_id=\"{}\",as_of=\"{}\"}} 1\n",
                escape(&m.snapshot_id),
                escape(&m.as_of)
            );
        }
        let _ = write!(
            out,
            "# HELP engage_snapshot_reloads_total Snapshot loads, by result.\n# TYPE engage_snapshot_reloads_total counter\n\
             engage_snapshot_reloads_total{{result=\"success\"}} {}\nengage_snapshot_reloads_total{{result=\"failure\"}} {}\n",
            self.metrics.reload_successes.load(Ordering::Relaxed),
            self.metrics.reload_failures.load(Ordering::Relaxed)
        );
        let refused = self.last_refused().is_some();
        gauge(
            &mut out,
            "engage_snapshot_refused",
            "1 when the newest snapshot was refused.",
            refused as u8 as f64,
        );
        out
    }
}

/// An error with its causes, `: `-separated.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}
