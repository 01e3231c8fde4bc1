//! The score service: loads the current snapshot into memory and answers
//! lookups by customer id.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use arrow::array::{Array, AsArray};
use arrow::datatypes::{DataType, Float64Type};
use engage_models::snapshot::{self, SCORES_FILE, SnapshotManifest};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use serde::Serialize;

use crate::{ApiError, ServeError};

/// Every score the API returns for one customer. A score is `null` when
/// the snapshot was made without its model (or, for the CLV scores, when
/// the customer had not bought before the cutoff).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CustomerScores {
    pub customer_id: String,
    /// Probability of no purchase in the churn model's horizon, in [0, 1].
    pub churn_probability: Option<f64>,
    /// Version of the churn model (the other models' are in `model_versions`).
    pub model_version: Option<String>,
    /// Probability of responding to a contact.
    pub response_probability: Option<f64>,
    /// The best offer's uplift: response probability treated minus control.
    pub uplift: Option<f64>,
    pub best_offer: Option<String>,
    /// BG/NBD probability of being alive.
    pub p_alive: Option<f64>,
    /// Expected purchases and discounted value over the CLV horizon.
    pub expected_purchases: Option<f64>,
    pub clv: Option<f64>,
    pub lifecycle_stage: Option<String>,
    pub value_tier: Option<String>,
    pub risk_band: Option<String>,
    pub contact_strategy: String,
    pub recommended_treatment: String,
    /// Task -> model version of every model in the snapshot.
    pub model_versions: BTreeMap<String, String>,
    /// Feature cutoff of the snapshot (ISO date).
    pub as_of: String,
    /// When the snapshot was scored (RFC 3339, UTC).
    pub scored_at: String,
    pub snapshot_id: String,
    /// The features raising this customer's churn score most, largest
    /// first (empty without a churn model).
    pub reasons: Vec<Reason>,
}

/// One reason for a score: a feature and its contribution to the log-odds.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Reason {
    pub feature: String,
    /// Contribution to the log-odds of churn (> 0 raises the probability).
    pub impact: f64,
}

/// Reason columns of a snapshot (`reason_<k>`, `reason_<k>_impact`).
const REASONS: usize = 3;

/// The float scores, in [`Row::scores`] order.
const SCORES: [&str; 6] =
    ["churn_probability", "response_probability", "uplift", "p_alive", "expected_purchases", "clv"];

/// The text columns kept per row, in [`Row::labels`] order (interned).
const LABELS: [&str; 6] =
    ["lifecycle_stage", "value_tier", "risk_band", "contact_strategy", "recommended_treatment", "best_offer"];

/// One customer's row in memory: floats as they are, text as indices into
/// [`ScoreService::strings`] (a few distinct values each).
#[derive(Debug)]
struct Row {
    /// [`SCORES`]; NaN for null.
    scores: [f64; SCORES.len()],
    /// [`LABELS`]; `u32::MAX` for null.
    labels: [u32; LABELS.len()],
    /// (index into `strings`, impact), largest first.
    reasons: [Option<(u32, f64)>; REASONS],
}

/// An in-memory score snapshot.
#[derive(Debug)]
pub struct ScoreService {
    manifest: SnapshotManifest,
    rows: HashMap<String, Row>,
    /// Interned labels and reason feature names.
    strings: Vec<String>,
}

/// Interns `value` in `strings`.
fn intern(strings: &mut Vec<String>, index: &mut HashMap<String, u32>, value: &str) -> u32 {
    if let Some(&i) = index.get(value) {
        return i;
    }
    strings.push(value.to_string());
    index.insert(value.to_string(), strings.len() as u32 - 1);
    strings.len() as u32 - 1
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
        let (mut strings, mut index) = (Vec::new(), HashMap::new());
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
            let ids = ids.as_string::<i32>();
            let scores =
                SCORES.iter().map(|c| column(c, DataType::Float64)).collect::<Result<Vec<_>, _>>()?;
            let labels = LABELS.iter().map(|c| column(c, DataType::Utf8)).collect::<Result<Vec<_>, _>>()?;
            let mut reason_columns = Vec::new();
            for k in 1..=REASONS {
                let feature = column(&format!("reason_{k}"), DataType::Utf8)?;
                let impact = column(&format!("reason_{k}_impact"), DataType::Float64)?;
                reason_columns.push((feature, impact));
            }
            for i in 0..batch.num_rows() {
                if ids.is_null(i) {
                    return Err(ServeError::Schema {
                        path: shown.clone(),
                        reason: format!("null customer_id in row {i}"),
                    });
                }
                let mut row = Row {
                    scores: [f64::NAN; SCORES.len()],
                    labels: [u32::MAX; LABELS.len()],
                    reasons: [None; REASONS],
                };
                for (j, col) in scores.iter().enumerate() {
                    let col = col.as_primitive::<Float64Type>();
                    if col.is_valid(i) {
                        row.scores[j] = col.value(i);
                    }
                }
                for (j, col) in labels.iter().enumerate() {
                    let col = col.as_string::<i32>();
                    if col.is_valid(i) {
                        row.labels[j] = intern(&mut strings, &mut index, col.value(i));
                    }
                }
                for (k, (feature, impact)) in reason_columns.iter().enumerate() {
                    let (feature, impact) =
                        (feature.as_string::<i32>(), impact.as_primitive::<Float64Type>());
                    if feature.is_valid(i) && impact.is_valid(i) {
                        row.reasons[k] =
                            Some((intern(&mut strings, &mut index, feature.value(i)), impact.value(i)));
                    }
                }
                if row.labels[3] == u32::MAX || row.labels[4] == u32::MAX {
                    return Err(ServeError::Schema {
                        path: shown.clone(),
                        reason: format!("row {i}: no contact strategy or recommended treatment"),
                    });
                }
                rows.insert(ids.value(i).to_string(), row);
            }
        }
        if rows.len() as u64 != manifest.rows {
            return Err(ServeError::Schema {
                path: shown,
                reason: format!("{} distinct customers, the manifest says {}", rows.len(), manifest.rows),
            });
        }
        Ok(ScoreService { manifest, rows, strings })
    }

    /// Scores of one customer, or `UnknownCustomer`.
    pub fn scores_for(&self, customer_id: &str) -> Result<CustomerScores, ApiError> {
        let row =
            self.rows.get(customer_id).ok_or_else(|| ApiError::UnknownCustomer(customer_id.to_string()))?;
        let score = |j: usize| Some(row.scores[j]).filter(|v| !v.is_nan());
        let label =
            |j: usize| (row.labels[j] != u32::MAX).then(|| self.strings[row.labels[j] as usize].clone());
        Ok(CustomerScores {
            customer_id: customer_id.to_string(),
            churn_probability: score(0),
            model_version: self.manifest.models.get("churn").cloned(),
            response_probability: score(1),
            uplift: score(2),
            best_offer: label(5),
            p_alive: score(3),
            expected_purchases: score(4),
            clv: score(5),
            lifecycle_stage: label(0),
            value_tier: label(1),
            risk_band: label(2),
            contact_strategy: label(3).expect("checked at load"),
            recommended_treatment: label(4).expect("checked at load"),
            model_versions: self.manifest.models.clone(),
            reasons: row
                .reasons
                .iter()
                .flatten()
                .map(|&(f, impact)| Reason { feature: self.strings[f as usize].clone(), impact })
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
