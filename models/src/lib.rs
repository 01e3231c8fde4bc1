//! engage-models: model training, evaluation and artifacts.
//!
//! The pipeline hands this crate plain matrices ([`TrainingSet`]); nothing
//! here knows about DataFusion or Parquet. A fitted model is plain serde data
//! wrapped in a versioned [`ModelArtifact`], which batch scoring loads again.

mod artifact;
pub mod chart;
mod churn;
mod classifier;
pub mod clv;
pub mod clv_diagnostics;
mod error;
pub mod gbm;
pub mod identifier;
pub mod lift;
pub mod metrics;
mod optimize;
pub mod registry;
pub mod report;
pub mod retention;
pub mod snapshot;
pub mod spend;
mod split;
mod train;
pub mod uplift;

pub use artifact::{ARTIFACT_FORMAT_VERSION, ModelArtifact, TrainingWindow};
pub use churn::{ChurnModel, ChurnParams, ChurnValidParams, Convergence, FittedChurn, Scaling};
pub use classifier::{Classifier, ClassifierConfig};
pub use error::ModelError;
pub use metrics::Metrics;
pub use split::{stratified_folds, stratified_split, stratified_split_by};
pub use train::{SplitConfig, TrainConfig, TrainOptions, model_version, train, train_on_split};

use ndarray::Array2;

/// A numeric design matrix with named columns and, for training, a binary
/// label per row. Missing values are `NaN`; the model imputes them.
#[derive(Debug, Clone)]
pub struct TrainingSet {
    /// Row identifiers (customer ids), in row order.
    pub ids: Vec<String>,
    /// Column names, in column order.
    pub feature_names: Vec<String>,
    /// `ids.len()` x `feature_names.len()` values; `NaN` = missing.
    pub x: Array2<f64>,
    /// One label per row (`true` = positive class, e.g. churned).
    pub y: Vec<bool>,
}

impl TrainingSet {
    /// Checks that the parts have matching shapes.
    pub fn check(&self) -> Result<(), ModelError> {
        let (rows, cols) = self.x.dim();
        if rows != self.ids.len() || rows != self.y.len() || cols != self.feature_names.len() {
            return Err(ModelError::Shape {
                rows,
                cols,
                ids: self.ids.len(),
                labels: self.y.len(),
                names: self.feature_names.len(),
            });
        }
        Ok(())
    }

    /// The rows at `idx`, in that order.
    pub fn select(&self, idx: &[usize]) -> TrainingSet {
        TrainingSet {
            ids: idx.iter().map(|&i| self.ids[i].clone()).collect(),
            feature_names: self.feature_names.clone(),
            x: self.x.select(ndarray::Axis(0), idx),
            y: idx.iter().map(|&i| self.y[i]).collect(),
        }
    }

    /// A SHA-256 fingerprint of ids, column names, values and labels, so an
    /// artifact says exactly which data it was trained on.
    pub fn fingerprint(&self) -> String {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        for name in &self.feature_names {
            h.update(name.as_bytes());
            h.update([0u8]);
        }
        for (i, id) in self.ids.iter().enumerate() {
            h.update(id.as_bytes());
            h.update([0u8, self.y[i] as u8]);
            for v in self.x.row(i) {
                h.update(v.to_bits().to_le_bytes());
            }
        }
        format!("{:x}", h.finalize())
    }
}
