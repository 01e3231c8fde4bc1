//! Versioned model artifacts: what was trained, on what, how well, by which
//! engage. Written as JSON; loading checks the format version.

use std::path::Path;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::registry::{ModelMeta, REGISTRY_FORMAT_VERSION};
use crate::{Classifier, ClassifierConfig, Metrics, ModelError};

/// Bumped whenever the artifact layout changes incompatibly.
pub const ARTIFACT_FORMAT_VERSION: u32 = 2;

/// The time window a model was trained on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainingWindow {
    /// Feature cutoff (ISO date): features see events strictly before it.
    pub as_of: String,
    /// Label horizon in days: labels see `[as_of, as_of + horizon_days)`.
    pub horizon_days: u32,
}

/// A trained classifier (churn, response) with everything needed to use and audit it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelArtifact {
    /// [`ARTIFACT_FORMAT_VERSION`] at write time.
    pub format_version: u32,
    /// Stable id and registry version: `<name>-<as_of>-<12 hex digits>`,
    /// hashed from the training data and the configuration.
    pub model_version: String,
    /// Registry name (the task unless told otherwise).
    pub name: String,
    /// What the model predicts (`churn`).
    pub task: String,
    /// engage version that trained it.
    pub engage_version: String,
    /// UTC time of training (RFC 3339).
    pub trained_at: String,
    /// Training window.
    pub window: TrainingWindow,
    /// Model family and hyperparameters.
    pub params: ClassifierConfig,
    /// How the validation rows were chosen, in words.
    pub split: String,
    /// Rows used to fit and to validate.
    pub train_rows: usize,
    pub valid_rows: usize,
    /// SHA-256 over the full training set (ids, features, labels).
    pub data_fingerprint: String,
    /// Validation metrics.
    pub metrics: Metrics,
    /// The fitted model.
    pub model: Classifier,
}

impl ModelArtifact {
    /// What a reviewer of the trained model should know: a fit that stopped
    /// at its iteration limit (shown in the run report, on the model's page
    /// and on stderr).
    pub fn warnings(&self) -> Vec<String> {
        self.model.convergence_warning(&format!("the {} model", self.task)).into_iter().collect()
    }

    /// Writes the artifact as pretty JSON via a temporary sibling and a
    /// rename, so a reader never sees a half-written file.
    pub fn save(&self, path: &Path) -> Result<(), ModelError> {
        save_json(self, path)
    }

    /// Reads an artifact and checks its format version.
    pub fn load(path: &Path) -> Result<ModelArtifact, ModelError> {
        load_json(path)
    }

    /// What the registry lists and shows about this model.
    pub fn meta(&self) -> ModelMeta {
        ModelMeta {
            format_version: REGISTRY_FORMAT_VERSION,
            name: self.name.clone(),
            version: self.model_version.clone(),
            task: self.task.clone(),
            kind: self.params.kind().into(),
            engage_version: self.engage_version.clone(),
            trained_at: self.trained_at.clone(),
            as_of: self.window.as_of.clone(),
            horizon_days: self.window.horizon_days,
            split: self.split.clone(),
            features: self.model.feature_names().to_vec(),
            config: serde_json::to_value(&self.params).expect("config serialises"),
            data_fingerprint: self.data_fingerprint.clone(),
            metrics: serde_json::to_value(&self.metrics).expect("metrics serialise"),
        }
    }
}

/// Writes `value` as pretty JSON atomically (temporary sibling, rename).
pub(crate) fn save_json<T: Serialize>(value: &T, path: &Path) -> Result<(), ModelError> {
    let io = |source| ModelError::Io { path: path.display().to_string(), source };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    crate::snapshot::write_atomic(path, &serde_json::to_vec_pretty(value).expect("artifact serialises"))
}

/// Reads a JSON artifact whose `format_version` must be
/// [`ARTIFACT_FORMAT_VERSION`].
pub(crate) fn load_json<T: DeserializeOwned>(path: &Path) -> Result<T, ModelError> {
    let shown = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|source| ModelError::Io { path: shown.clone(), source })?;
    // Read the version first so an old or future layout gets a version
    // error, not a confusing field error.
    #[derive(Deserialize)]
    struct Header {
        format_version: u32,
    }
    let header: Header =
        serde_json::from_slice(&bytes).map_err(|source| ModelError::Parse { path: shown.clone(), source })?;
    if header.format_version != ARTIFACT_FORMAT_VERSION {
        return Err(ModelError::FormatVersion {
            path: shown,
            found: header.format_version,
            expected: ARTIFACT_FORMAT_VERSION,
        });
    }
    serde_json::from_slice(&bytes).map_err(|source| ModelError::Parse { path: shown, source })
}

/// Reads a number that JSON may hold as `null`: serde_json writes NaN
/// (an undefined metric, e.g. the AUC of one class) as `null`.
pub(crate) fn null_as_nan<'de, D: serde::Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NAN))
}
