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

use crate::engine::Engine;
use crate::error::{PipelineError, Result, io};
use crate::frame::{feature_matrix, labels};
use crate::identity::IdentityOptions;
use crate::ingest::TableCounts;
use crate::output::write_parquet;
use crate::report::{RunReport, Stopwatch};
use crate::schema::{AS_OF, CHURN_PROBABILITY, CHURNED, CUSTOMER_ID, MODEL_VERSION, SCORED_AT};

/// File name of the feature table inside `--out`.
pub const FEATURES_FILE: &str = "customer_features.parquet";

/// What a feature run wrote; its report is also in `out/run_report.json`.
#[derive(Debug, Clone)]
pub struct FeatureRun {
    pub report: RunReport,
    pub rows: usize,
    pub columns: Vec<String>,
    pub output: PathBuf,
}

/// Computes the feature table of `data` as of `as_of` and writes
/// `out/customer_features.parquet`, the rejected input rows under
/// `out/rejects/`, and `out/run_report.json`.
pub async fn build_features(data: &Path, as_of: NaiveDate, out: &Path) -> Result<FeatureRun> {
    let mut clock = Stopwatch::start();
    let mut engine = Engine::open(data).await?;
    clock.lap("ingest");
    let identity = engine.resolve_identities(Some(as_of)).await?.clone();
    clock.lap("identity");
    let batches = engine.features(as_of).await?;
    clock.lap("features");
    let schema = feature_schema(&batches)?;
    std::fs::create_dir_all(out).map_err(io(out))?;
    let output = out.join(FEATURES_FILE);
    write_parquet(&output, schema.clone(), &batches)?;
    let mut outputs = vec![output.display().to_string()];
    outputs.extend(engine.write_rejects(out).await?.iter().map(|p| p.display().to_string()));
    clock.lap("write");
    let report = RunReport::new("features", data, Some(as_of), &engine, &identity, None, &clock, outputs);
    report.write(out)?;
    Ok(FeatureRun {
        report,
        rows: batches.iter().map(|b| b.num_rows()).sum(),
        columns: schema.fields().iter().map(|f| f.name().clone()).collect(),
        output,
    })
}

fn feature_schema(batches: &[RecordBatch]) -> Result<Arc<Schema>> {
    batches.first().map(|b| b.schema()).ok_or_else(|| PipelineError::InvalidArgument {
        name: "--as-of",
        value: String::new(),
        reason: "no customer signed up before this date: the feature table would be empty".into(),
    })
}

/// File name of the identity map inside `--out`.
pub const IDENTITY_MAP_FILE: &str = "identity_map.parquet";

/// Resolves identities from all rows of `data` and writes
/// `out/identity_map.parquet` (identifier_type, identifier_value,
/// customer_key, shared, linked), rejected rows under `out/rejects/`, and
/// `out/run_report.json` (with precision and recall when the data has
/// ground truth). Returns the report.
pub async fn build_identity(data: &Path, out: &Path, options: &IdentityOptions) -> Result<RunReport> {
    let mut clock = Stopwatch::start();
    let mut engine = Engine::open_with(data, options).await?;
    clock.lap("ingest");
    let identity = engine.resolve_identities(None).await?.clone();
    clock.lap("identity");
    let quality = engine.identity_quality(data).await?;
    clock.lap("quality");
    std::fs::create_dir_all(out).map_err(io(out))?;
    let output = out.join(IDENTITY_MAP_FILE);
    write_parquet(&output, identity.map.schema(), std::slice::from_ref(&identity.map))?;
    let mut outputs = vec![output.display().to_string()];
    outputs.extend(engine.write_rejects(out).await?.iter().map(|p| p.display().to_string()));
    clock.lap("write");
    let report = RunReport::new("identity", data, None, &engine, &identity, quality, &clock, outputs);
    report.write(out)?;
    Ok(report)
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
