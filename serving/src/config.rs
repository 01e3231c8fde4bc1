//! The server's config (`engage serve --config serve.toml`): where the
//! snapshots are, where to listen, limits, API keys and CORS. Every key is
//! documented in docs/serving.md; unknown keys are errors.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::ServeError;
use crate::auth::{ApiKey, Scope};

/// How to run the server.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServeConfig {
    /// Root of published snapshots (the scorer's `--out`); relative to the
    /// config file's directory.
    pub scores: PathBuf,
    /// Address to bind (loopback by default).
    pub bind: String,
    /// HTTP worker threads (0: one per CPU core).
    pub workers: usize,
    /// Most identifiers in one `POST /v1/scores:batch`.
    pub max_batch: usize,
    /// Largest request body accepted, bytes (larger: 413).
    pub max_body_bytes: usize,
    /// Most entries per audience page.
    pub max_page: usize,
    /// Time allowed for a client to send the request head, ms.
    pub request_timeout_ms: u64,
    /// Idle keep-alive connections are closed after this, s.
    pub keep_alive_s: u64,
    /// On SIGTERM/Ctrl-C, in-flight requests get this long to finish, s.
    pub shutdown_timeout_s: u64,
    /// How often the snapshot pointer is checked for a new snapshot, ms
    /// (0: never; `POST /v1/admin/reload` still works).
    pub watch_interval_ms: u64,
    /// Origins allowed to call the API from a browser (CORS); empty: off.
    pub cors_origins: Vec<String>,
    /// Who may call the API; see [`ApiKeyConfig`].
    pub api_keys: Vec<ApiKeyConfig>,
    /// Serve without API keys (a local trial only; logged loudly).
    pub insecure_no_auth: bool,
    /// An object-store URL (`s3://bucket/scores`) of a snapshot root that
    /// `engage serve` mirrors into `scores`, which is then a local cache:
    /// checked every `watch_interval_ms`, a new snapshot is downloaded in
    /// full before the cache's pointer moves to it.
    pub follow: Option<String>,
    /// How long a dashboard sign-in lasts, s.
    pub session_ttl_s: u64,
}

/// One API key, stored as the SHA-256 of the key (never the key).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyConfig {
    /// Who holds it (logged with each request, never the key).
    pub name: String,
    /// Hex SHA-256 of the key (`engage serve keygen` prints both).
    pub sha256: String,
    /// Any of `scores:read`, `audiences:read`, `admin`.
    pub scopes: Vec<String>,
}

impl Default for ServeConfig {
    fn default() -> Self {
        ServeConfig {
            scores: PathBuf::from("scores"),
            bind: "127.0.0.1:8080".into(),
            workers: 0,
            max_batch: 1000,
            max_body_bytes: 256 * 1024,
            max_page: 1000,
            request_timeout_ms: 5_000,
            keep_alive_s: 30,
            shutdown_timeout_s: 30,
            watch_interval_ms: 1_000,
            cors_origins: Vec::new(),
            api_keys: Vec::new(),
            insecure_no_auth: false,
            follow: None,
            session_ttl_s: 8 * 3600,
        }
    }
}

impl ServeConfig {
    /// Reads and checks a config file; `scores` is taken relative to it.
    pub fn load(path: &Path) -> Result<ServeConfig, ServeError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ServeError::Config {
            path: shown.clone(),
            field: "(file)".into(),
            reason: e.to_string(),
        })?;
        let mut config: ServeConfig = toml::from_str(&text).map_err(|e| ServeError::Config {
            path: shown.clone(),
            field: e.span().map(|s| text[s].chars().take(60).collect()).unwrap_or_default(),
            reason: e.message().to_string(),
        })?;
        if config.scores.is_relative() {
            config.scores = path.parent().unwrap_or(Path::new(".")).join(&config.scores);
        }
        config.check(&shown)?;
        Ok(config)
    }

    /// Checks values and keys; `source` names the config in errors.
    pub fn check(&self, source: &str) -> Result<(), ServeError> {
        let err = |field: &str, reason: String| ServeError::Config {
            path: source.to_string(),
            field: field.to_string(),
            reason,
        };
        for (field, value) in [
            ("max_batch", self.max_batch),
            ("max_body_bytes", self.max_body_bytes),
            ("max_page", self.max_page),
        ] {
            if value == 0 {
                return Err(err(field, "must be at least 1".into()));
            }
        }
        if self.api_keys.is_empty() && !self.insecure_no_auth {
            return Err(err(
                "api_keys",
                "no API keys: add an [[api_keys]] entry (`engage serve keygen` prints one) or set \
                 insecure_no_auth = true (--insecure-no-auth) for a local trial"
                    .into(),
            ));
        }
        self.keys(source).map(|_| ())
    }

    /// The configured keys, parsed.
    pub fn keys(&self, source: &str) -> Result<Vec<ApiKey>, ServeError> {
        let mut keys = Vec::new();
        for (i, k) in self.api_keys.iter().enumerate() {
            let err = |field: &str, reason: String| ServeError::Config {
                path: source.to_string(),
                field: format!("api_keys[{i}].{field}"),
                reason,
            };
            let hash = decode_sha256(&k.sha256)
                .ok_or_else(|| err("sha256", format!("`{}` is not 64 hex digits", k.sha256)))?;
            if k.scopes.is_empty() {
                return Err(err("scopes", "at least one scope".into()));
            }
            let scopes = k
                .scopes
                .iter()
                .map(|s| {
                    Scope::parse(s).ok_or_else(|| {
                        err("scopes", format!("unknown scope `{s}` (expected {})", Scope::NAMES.join(", ")))
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            if k.name.trim().is_empty() {
                return Err(err("name", "must not be empty".into()));
            }
            keys.push(ApiKey { name: k.name.clone(), sha256: hash, scopes });
        }
        Ok(keys)
    }
}

fn decode_sha256(hex: &str) -> Option<[u8; 32]> {
    let hex = hex.trim();
    if hex.len() != 64 || !hex.is_ascii() {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}
