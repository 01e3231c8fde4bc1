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
}

/// An in-memory score snapshot.
#[derive(Debug)]
pub struct ScoreService {
    manifest: SnapshotManifest,
    /// customer id -> (churn probability, index into `models`).
    rows: HashMap<String, (f64, usize)>,
    models: Vec<String>,
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
                rows.insert(ids.value(i).to_string(), (probs.value(i), m));
            }
        }
        if rows.len() as u64 != manifest.rows {
            return Err(ServeError::Schema {
                path: shown,
                reason: format!("{} distinct customers, the manifest says {}", rows.len(), manifest.rows),
            });
        }
        Ok(ScoreService { manifest, rows, models })
    }

    /// Scores of one customer, or `UnknownCustomer`.
    pub fn scores_for(&self, customer_id: &str) -> Result<CustomerScores, ApiError> {
        let (p, m) =
            self.rows.get(customer_id).ok_or_else(|| ApiError::UnknownCustomer(customer_id.to_string()))?;
        Ok(CustomerScores {
            customer_id: customer_id.to_string(),
            churn_probability: *p,
            model_version: self.models[*m].clone(),
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
