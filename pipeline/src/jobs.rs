//! The pipeline's jobs: build features, train a churn model, score a
//! snapshot. Each takes a plain options struct, validates its inputs before
//! writing anything, and writes its outputs atomically.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use chrono::{NaiveDate, Utc};
use datafusion::arrow::array::{ArrayRef, Date32Array, Float64Array, StringArray, TimestampMicrosecondArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use datafusion::arrow::record_batch::RecordBatch;
use engage_models::snapshot::{self, SCORES_FILE, SNAPSHOT_FORMAT_VERSION, SnapshotManifest};
use engage_models::{ChurnParams, ModelArtifact, TrainOptions, TrainingSet, TrainingWindow, train_churn};
use serde::Serialize;

use crate::engine::{Engine, ResolvedCounts};
use crate::error::{PipelineError, Result, io};
use crate::frame::{feature_matrix, labels};
use crate::identity::{IdentityOptions, IdentityQuality, IdentityStats};
use crate::ingest::TableCounts;
use crate::output::write_parquet;
use crate::schema::{AS_OF, CHURN_PROBABILITY, CHURNED, CUSTOMER_ID, MODEL_VERSION, SCORED_AT};

/// File name of the feature table inside `--out`.
pub const FEATURES_FILE: &str = "customer_features.parquet";
/// File name of the feature run's manifest inside `--out`.
pub const FEATURES_MANIFEST: &str = "customer_features.json";

/// What a feature run read and wrote.
#[derive(Debug, Clone, Serialize)]
pub struct FeatureRun {
    pub as_of: String,
    pub rows: usize,
    pub columns: Vec<String>,
    pub inputs: Vec<TableCounts>,
    /// Identity as known before the cutoff, used by the features.
    pub identity: IdentityStats,
    pub resolved: ResolvedCounts,
    pub output: PathBuf,
    /// `rejects/<table>.parquet` files written (tables with rejected rows).
    pub rejects: Vec<PathBuf>,
    pub seconds: f64,
}

/// Computes the feature table of `data` as of `as_of` and writes
/// `out/customer_features.parquet`, the rejected input rows under
/// `out/rejects/`, and a JSON manifest.
pub async fn build_features(data: &Path, as_of: NaiveDate, out: &Path) -> Result<FeatureRun> {
    let started = Instant::now();
    let mut engine = Engine::open(data).await?;
    let batches = engine.features(as_of).await?;
    let identity = engine.identity().expect("features resolve identities").clone();
    let schema = feature_schema(&batches)?;
    std::fs::create_dir_all(out).map_err(io(out))?;
    let output = out.join(FEATURES_FILE);
    write_parquet(&output, schema.clone(), &batches)?;
    let rejects = engine.write_rejects(out).await?;
    let run = FeatureRun {
        as_of: as_of.to_string(),
        rows: batches.iter().map(|b| b.num_rows()).sum(),
        columns: schema.fields().iter().map(|f| f.name().clone()).collect(),
        inputs: engine.inputs.clone(),
        identity: identity.stats,
        resolved: identity.resolved,
        output,
        rejects,
        seconds: started.elapsed().as_secs_f64(),
    };
    let manifest = serde_json::to_vec_pretty(&run).expect("run serialises");
    snapshot::write_atomic(&out.join(FEATURES_MANIFEST), &manifest)?;
    Ok(run)
}

fn feature_schema(batches: &[RecordBatch]) -> Result<Arc<Schema>> {
    batches.first().map(|b| b.schema()).ok_or_else(|| PipelineError::InvalidArgument {
        name: "--as-of",
        value: String::new(),
        reason: "no customer signed up before this date: the feature table would be empty".into(),
    })
}

/// File names of `engage identity` inside `--out`.
pub const IDENTITY_MAP_FILE: &str = "identity_map.parquet";
pub const IDENTITY_REPORT_FILE: &str = "identity_report.json";

/// What an identity run found and wrote.
#[derive(Debug, Clone, Serialize)]
pub struct IdentityRun {
    pub options: IdentityOptions,
    pub inputs: Vec<TableCounts>,
    pub stats: IdentityStats,
    pub resolved: ResolvedCounts,
    /// Against the generator's truth, when the data has one.
    pub quality: Option<IdentityQuality>,
    pub output: PathBuf,
    pub seconds: f64,
}

/// Resolves identities from all rows of `data` and writes
/// `out/identity_map.parquet` (identifier_type, identifier_value,
/// customer_key, shared) and `out/identity_report.json`.
pub async fn build_identity(data: &Path, out: &Path, options: &IdentityOptions) -> Result<IdentityRun> {
    let started = Instant::now();
    let mut engine = Engine::open_with(data, options).await?;
    let identity = engine.resolve_identities(None).await?.clone();
    let quality = engine.identity_quality(data).await?;
    std::fs::create_dir_all(out).map_err(io(out))?;
    let output = out.join(IDENTITY_MAP_FILE);
    write_parquet(&output, identity.map.schema(), &[identity.map])?;
    engine.write_rejects(out).await?;
    let run = IdentityRun {
        options: options.clone(),
        inputs: engine.inputs.clone(),
        stats: identity.stats,
        resolved: identity.resolved,
        quality,
        output,
        seconds: started.elapsed().as_secs_f64(),
    };
    snapshot::write_atomic(
        &out.join(IDENTITY_REPORT_FILE),
        &serde_json::to_vec_pretty(&run).expect("serialises"),
    )?;
    Ok(run)
}

/// How to train a churn model.
#[derive(Debug, Clone)]
pub struct TrainChurnOptions {
    pub data: PathBuf,
    pub as_of: NaiveDate,
    pub horizon_days: u32,
    /// Directory the artifact is written to.
    pub models: PathBuf,
    pub params: ChurnParams,
    pub valid_share: f64,
    pub seed: u64,
}

/// What a training run produced.
#[derive(Debug, Clone)]
pub struct TrainRun {
    pub artifact: ModelArtifact,
    pub path: PathBuf,
    pub inputs: Vec<TableCounts>,
    pub seconds: f64,
}

/// The labelled churn training set as of `as_of` (features joined to
/// labels, rows in customer order).
pub async fn churn_training_set(
    engine: &mut Engine,
    as_of: NaiveDate,
    horizon_days: u32,
) -> Result<TrainingSet> {
    let features = engine.features(as_of).await?;
    let label_map = labels(&engine.churn_labels(as_of, horizon_days).await?, CHURNED)?;
    let (ids, names, x) = feature_matrix(&features)?;
    let keep: Vec<usize> = (0..ids.len()).filter(|&i| label_map.contains_key(&ids[i])).collect();
    if keep.is_empty() {
        return Err(PipelineError::NoTrainingRows(format!(
            "no customer purchased in the 365 days before {as_of}; pick a later --as-of"
        )));
    }
    Ok(TrainingSet {
        ids: keep.iter().map(|&i| ids[i].clone()).collect(),
        y: keep.iter().map(|&i| label_map[&ids[i]]).collect(),
        x: x.select(ndarray::Axis(0), &keep),
        feature_names: names,
    })
}

/// Builds the training set, trains and validates, and writes
/// `<models>/<model_version>.json`.
pub async fn train_churn_model(opts: &TrainChurnOptions) -> Result<TrainRun> {
    let started = Instant::now();
    let params = opts.params.clone();
    params.clone().check()?;
    let mut engine = Engine::open(&opts.data).await?;
    let set = churn_training_set(&mut engine, opts.as_of, opts.horizon_days).await?;
    let window = TrainingWindow { as_of: opts.as_of.to_string(), horizon_days: opts.horizon_days };
    let train_opts = TrainOptions { valid_share: opts.valid_share, seed: opts.seed, window };
    let artifact = train_churn(&set, params, &train_opts)?;
    let path = opts.models.join(format!("{}.json", artifact.model_version));
    artifact.save(&path)?;
    Ok(TrainRun { artifact, path, inputs: engine.inputs.clone(), seconds: started.elapsed().as_secs_f64() })
}

/// What a scoring run published.
#[derive(Debug, Clone)]
pub struct ScoreRun {
    pub manifest: SnapshotManifest,
    pub snapshot_dir: PathBuf,
    pub seconds: f64,
}

/// Scores every customer of `data` as of `as_of` with the model at `model`
/// and publishes a snapshot under `out` (see [`engage_models::snapshot`]).
pub async fn score(data: &Path, as_of: NaiveDate, model: &Path, out: &Path) -> Result<ScoreRun> {
    let started = Instant::now();
    let artifact = ModelArtifact::load(model)?;
    let mut engine = Engine::open(data).await?;
    let features = engine.features(as_of).await?;
    let (ids, names, x) = feature_matrix(&features)?;
    artifact.model.check_features(&artifact.model_version, &names)?;
    let p = artifact.model.predict_proba(&x);

    let scored_at = Utc::now();
    let id = format!("{as_of}_{}", scored_at.format("%Y%m%dT%H%M%S"));
    let n = ids.len();
    let schema = Arc::new(Schema::new(vec![
        Field::new(CUSTOMER_ID, DataType::Utf8, false),
        Field::new(CHURN_PROBABILITY, DataType::Float64, false),
        Field::new(MODEL_VERSION, DataType::Utf8, false),
        Field::new(AS_OF, DataType::Date32, false),
        Field::new(SCORED_AT, DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())), false),
    ]));
    let epoch = NaiveDate::from_ymd_opt(1970, 1, 1).expect("valid date");
    let columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from(ids)),
        Arc::new(Float64Array::from(p)),
        Arc::new(StringArray::from(vec![artifact.model_version.as_str(); n])),
        Arc::new(Date32Array::from(vec![(as_of - epoch).num_days() as i32; n])),
        Arc::new(TimestampMicrosecondArray::from(vec![scored_at.timestamp_micros(); n]).with_timezone("UTC")),
    ];
    let batch = RecordBatch::try_new(schema.clone(), columns)
        .map_err(|e| PipelineError::Query { name: "internal: score batch".into(), source: e.into() })?;

    let staging = snapshot::create_staging(out, &id)?;
    let result = write_parquet(&staging.join(SCORES_FILE), schema, &[batch]).and_then(|_| {
        let manifest = SnapshotManifest {
            format_version: SNAPSHOT_FORMAT_VERSION,
            snapshot_id: id.clone(),
            as_of: as_of.to_string(),
            scored_at: scored_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            rows: n as u64,
            model_versions: vec![artifact.model_version.clone()],
            engage_version: env!("CARGO_PKG_VERSION").into(),
        };
        let dir = snapshot::publish(out, &staging, &manifest)?;
        Ok((manifest, dir))
    });
    match result {
        Ok((manifest, snapshot_dir)) => {
            Ok(ScoreRun { manifest, snapshot_dir, seconds: started.elapsed().as_secs_f64() })
        }
        Err(e) => {
            let _ = std::fs::remove_dir_all(&staging);
            Err(e)
        }
    }
}
