//! The one error type of engage-models.

/// What can go wrong while training, evaluating or loading a model.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// A hyperparameter is out of range (a user mistake in flags or config).
    #[error("invalid model parameter `{name}` = {value}: {reason}")]
    InvalidParam { name: &'static str, value: String, reason: &'static str },
    /// The training data cannot train a model.
    #[error("training data unusable: {0}")]
    Data(String),
    /// Matrix parts disagree in size (an internal bug in the caller).
    #[error(
        "internal: training set shape mismatch: x is {rows}x{cols}, {ids} ids, {labels} labels, {names} names"
    )]
    Shape { rows: usize, cols: usize, ids: usize, labels: usize, names: usize },
    /// linfa refused the dataset (needed by linfa's `Fit` interface).
    #[error("linfa: {0}")]
    Linfa(#[from] linfa::Error),
    /// Scoring data does not have the columns the model was trained on.
    #[error("model {model} expects features {expected:?}, the data has {found:?}")]
    FeatureMismatch { model: String, expected: Vec<String>, found: Vec<String> },
    /// The artifact was written by an incompatible engage version.
    #[error("model artifact {path}: format version {found}, this engage reads {expected}")]
    FormatVersion { path: String, found: u32, expected: u32 },
    /// No snapshot has been published under this root.
    #[error("no score snapshot under {root}: {root}/CURRENT does not exist (run `engage score` first)")]
    NoSnapshot { root: String },
    /// A registry lookup or change is not possible.
    #[error("model registry {root}: {reason}")]
    Registry { root: String, reason: String },
    /// A snapshot or its pointer is malformed.
    #[error("snapshot {path}: {reason}")]
    Snapshot { path: String, reason: String },
    /// Reading or writing a file failed.
    #[error("{path}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// The artifact file is not valid JSON of the expected shape.
    #[error("{path} is not valid: wrong JSON shape or not written by engage")]
    Parse {
        path: String,
        #[source]
        source: serde_json::Error,
    },
}
