//! The score service: loads the current snapshot into memory and answers
//! lookups by customer id.

use std::collections::HashMap;
use std::path::Path;

use arrow::array::{Array, AsArray};
use arrow::datatypes::{DataType, Float64Type};
use engage_models::snapshot::{self, SCORES_FILE, SnapshotManifest};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use serde::Serialize;

use crate::{ApiError, ServeError};

/// Every score the API returns for one customer.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CustomerScores {
    pub customer_id: String,
    /// Probability of no purchase in the model's horizon, in [0, 1].
    pub churn_probability: f64,
    pub model_version: String,
    /// Feature cutoff of the snapshot (ISO date).
    pub as_of: String,
    /// When the snapshot was scored (RFC 3339, UTC).
    pub scored_at: String,
    pub snapshot_id: String,
    /// The features raising this customer's churn score most, largest
    /// first (empty for snapshots written before reasons existed).
    pub reasons: Vec<Reason>,
}

/// One reason for a score: a feature and its contribution to the log-odds.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Reason {
    pub feature: String,
    /// Contribution to the log-odds of churn (> 0 raises the probability).
    pub impact: f64,
}

/// Reason columns a snapshot may carry (`reason_<k>`, `reason_<k>_impact`).
const REASONS: usize = 3;

/// One customer's row in memory.
#[derive(Debug)]
struct Row {
    churn_probability: f64,
    /// Index into `models`.
    model: usize,
    /// (index into `features`, impact), largest first.
    reasons: [Option<(u32, f64)>; REASONS],
}

/// An in-memory score snapshot.
#[derive(Debug)]
pub struct ScoreService {
    manifest: SnapshotManifest,
    rows: HashMap<String, Row>,
    models: Vec<String>,
    /// Feature names the reasons refer to.
    features: Vec<String>,
}

impl ScoreService {
    /// Loads the snapshot that `<root>/CURRENT` points to, checking the
    /// scores file's columns and row count against the manifest.
    pub fn load(root: &Path) -> Result<ScoreService, ServeError> {
        let (dir, manifest) = snapshot::current(root)?;
        let path = dir.join(SCORES_FILE);
        let shown = path.display().to_string();
        let parquet_err = |source| ServeError::Parquet { path: shown.clone(), source };
        let file = std::fs::File::open(&path)
            .map_err(|source| engage_models::ModelError::Io { path: shown.clone(), source })?;
        let reader = ParquetRecordBatchReaderBuilder::try_new(file)
            .map_err(parquet_err)?
            .build()
            .map_err(parquet_err)?;
        let mut rows = HashMap::with_capacity(manifest.rows as usize);
        let mut models: Vec<String> = Vec::new();
        let mut features: Vec<String> = Vec::new();
        for batch in reader {
            let batch = batch.map_err(|e| parquet_err(e.into()))?;
            let column = |name: &str, ty: DataType| {
                let col = batch.column_by_name(name).ok_or_else(|| ServeError::Schema {
                    path: shown.clone(),
                    reason: format!("column `{name}` missing"),
                })?;
                if col.data_type() != &ty {
                    return Err(ServeError::Schema {
                        path: shown.clone(),
                        reason: format!("column `{name}`: expected {ty}, found {}", col.data_type()),
                    });
                }
                Ok(col.clone())
            };
            let ids = column("customer_id", DataType::Utf8)?;
            let probs = column("churn_probability", DataType::Float64)?;
            let versions = column("model_version", DataType::Utf8)?;
            let (ids, probs, versions) =
                (ids.as_string::<i32>(), probs.as_primitive::<Float64Type>(), versions.as_string::<i32>());
            // Reason columns are optional: older snapshots have none.
            let mut reason_columns = Vec::new();
            for k in 1..=REASONS {
                if batch.column_by_name(&format!("reason_{k}")).is_some() {
                    let feature = column(&format!("reason_{k}"), DataType::Utf8)?;
                    let impact = column(&format!("reason_{k}_impact"), DataType::Float64)?;
                    reason_columns.push((feature, impact));
                }
            }
            for i in 0..batch.num_rows() {
                if ids.is_null(i) || probs.is_null(i) || versions.is_null(i) {
                    return Err(ServeError::Schema {
                        path: shown.clone(),
                        reason: format!("null value in row {i}"),
                    });
                }
                let version = versions.value(i);
                let m = match models.iter().position(|v| v == version) {
                    Some(m) => m,
                    None => {
                        models.push(version.to_string());
                        models.len() - 1
                    }
                };
                let mut reasons = [None; REASONS];
                for (k, (feature, impact)) in reason_columns.iter().enumerate() {
                    let (feature, impact) =
                        (feature.as_string::<i32>(), impact.as_primitive::<Float64Type>());
                    if feature.is_valid(i) && impact.is_valid(i) {
                        let name = feature.value(i);
                        let f = features.iter().position(|v| v == name).unwrap_or_else(|| {
                            features.push(name.to_string());
                            features.len() - 1
                        });
                        reasons[k] = Some((f as u32, impact.value(i)));
                    }
                }
                let row = Row { churn_probability: probs.value(i), model: m, reasons };
                rows.insert(ids.value(i).to_string(), row);
            }
        }
        if rows.len() as u64 != manifest.rows {
            return Err(ServeError::Schema {
                path: shown,
                reason: format!("{} distinct customers, the manifest says {}", rows.len(), manifest.rows),
            });
        }
        Ok(ScoreService { manifest, rows, models, features })
    }

    /// Scores of one customer, or `UnknownCustomer`.
    pub fn scores_for(&self, customer_id: &str) -> Result<CustomerScores, ApiError> {
        let row =
            self.rows.get(customer_id).ok_or_else(|| ApiError::UnknownCustomer(customer_id.to_string()))?;
        Ok(CustomerScores {
            customer_id: customer_id.to_string(),
            churn_probability: row.churn_probability,
            model_version: self.models[row.model].clone(),
            reasons: row
                .reasons
                .iter()
                .flatten()
                .map(|&(f, impact)| Reason { feature: self.features[f as usize].clone(), impact })
                .collect(),
            as_of: self.manifest.as_of.clone(),
            scored_at: self.manifest.scored_at.clone(),
            snapshot_id: self.manifest.snapshot_id.clone(),
        })
    }

    /// The manifest of the loaded snapshot.
    pub fn manifest(&self) -> &SnapshotManifest {
        &self.manifest
    }

    /// Customers in the snapshot.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// True when the snapshot has no rows.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }
}
