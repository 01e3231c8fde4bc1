//! The pipeline's jobs: build features, resolve identities, train a churn
//! model, forget a person (scoring is in [`crate::scoring`]). Each takes a plain options struct, validates its inputs before
//! writing anything, and writes its outputs atomically.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use chrono::NaiveDate;
use datafusion::arrow::array::AsArray;
use datafusion::arrow::record_batch::RecordBatch;
use engage_models::clv::{self, ClvArtifact, summarize};
use engage_models::clv::{ParetoNbd, Rfm};
use engage_models::clv_diagnostics::{ClvDiagnostics, compare_spend, diagnose};
use engage_models::metrics::Curves;
use engage_models::registry::{MODEL_FILE, ModelMeta};
use engage_models::report;
use engage_models::retention::Tenure;
use engage_models::snapshot;
use engage_models::spend::SpendParams;
use engage_models::uplift::{UpliftArtifact, UpliftSet, train_uplift};
use engage_models::{ModelArtifact, TrainConfig, TrainOptions, TrainingSet, TrainingWindow};

use crate::engine::{DataSource, Engine, Task};
use crate::erasure::{Scrubbed, scrub_dir};
use crate::error::query;
use crate::error::{PipelineError, Result, io};
use crate::frame::{TableColumns, feature_matrix, labels, parse_flag, table_text, table_training_set};
use crate::identity::{ID_TYPES, map_columns, normalize};
use crate::output::write_parquet;
use crate::publish::ModelStore;
use crate::report::{ModelSummary, RUN_REPORT_FILE, RunReport, Stopwatch};
use crate::schema::{AS_OF, CHURNED, CUSTOMER_ID};
use crate::store::DataRoot;
use datafusion::common::JoinType;
use datafusion::prelude::{col, lit};

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
pub async fn build_features(source: &DataSource, as_of: NaiveDate, out: &Path) -> Result<FeatureRun> {
    let mut clock = Stopwatch::start();
    let mut engine = Engine::open_at(source, Some(as_of)).await?;
    clock.watch(&engine);
    clock.lap("ingest");
    let identity = engine.resolve_identities(Some(as_of)).await?.clone();
    clock.lap("identity");
    std::fs::create_dir_all(out).map_err(io(out))?;
    let output = out.join(FEATURES_FILE);
    let (rows, schema) = engine.write_features(as_of, &output, &mut clock).await?;
    let mut outputs = vec![output.display().to_string()];
    outputs.extend(engine.write_rejects(out).await?.iter().map(|p| p.display().to_string()));
    clock.lap("write");
    let report = RunReport::new("features", Some(as_of), &engine, &identity, None, &clock, outputs);
    report.write(out)?;
    Ok(FeatureRun {
        report,
        rows: rows as usize,
        columns: schema.fields().iter().map(|f| f.name().clone()).collect(),
        output,
    })
}

/// File name of the identity map inside `--out`.
pub const IDENTITY_MAP_FILE: &str = "identity_map.parquet";

/// Resolves identities from all rows of `source` and writes
/// `out/identity_map.parquet` (identifier_type, identifier_value,
/// customer_key, shared, linked), rejected rows under `out/rejects/`, and
/// `out/run_report.json` (with precision and recall when the data has
/// ground truth). Returns the report.
pub async fn build_identity(source: &DataSource, out: &Path) -> Result<RunReport> {
    let mut clock = Stopwatch::start();
    let mut engine = Engine::open_at(source, None).await?;
    clock.watch(&engine);
    clock.lap("ingest");
    let identity = engine.resolve_identities(None).await?.clone();
    clock.lap("identity");
    let quality = engine.identity_quality().await?;
    clock.lap("quality");
    std::fs::create_dir_all(out).map_err(io(out))?;
    let output = out.join(IDENTITY_MAP_FILE);
    identity.map.write(&output)?;
    let mut outputs = vec![output.display().to_string()];
    outputs.extend(engine.write_rejects(out).await?.iter().map(|p| p.display().to_string()));
    clock.lap("write");
    let report = RunReport::new("identity", None, &engine, &identity, quality, &clock, outputs);
    report.write(out)?;
    Ok(report)
}

/// How to train a churn model from the contract tables.
#[derive(Debug, Clone)]
pub struct TrainChurnOptions {
    pub source: DataSource,
    pub as_of: NaiveDate,
    pub horizon_days: u32,
    /// The model registry, a directory or URL (see [`ModelStore`]).
    pub models: DataRoot,
    /// Registry name; default the task (`churn`).
    pub name: Option<String>,
    pub config: TrainConfig,
}

/// What a training run registered.
#[derive(Debug, Clone)]
pub struct TrainRun {
    pub artifact: ModelArtifact,
    /// `<models>/<name>/<version>/`: model.json, meta.json, metrics.json,
    /// report.html and (when trained from the contract tables)
    /// run_report.json; a URL for a registry on a store.
    pub dir: String,
    /// Whether this version became the promoted one (the first of its name).
    pub promoted: bool,
    /// The run report (training from the contract tables only).
    pub report: Option<RunReport>,
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

/// Registers a trained classifier: model.json, metrics.json, report.html
/// and the run report, if any, in one new registry version.
async fn register_classifier(
    models: &DataRoot,
    artifact: &ModelArtifact,
    curves: &Curves,
    report: Option<&RunReport>,
) -> Result<(String, bool)> {
    register(models, &artifact.meta(), |dir| {
        artifact.save(&dir.join(MODEL_FILE))?;
        report::write(dir, artifact, curves)?;
        match report {
            Some(r) => save_run_report(dir, r),
            None => Ok(()),
        }
    })
    .await
}

/// Registers a model in the registry at `models` (`write` fills the
/// version's directory, see [`engage_models::registry::Registry::register`])
/// and pushes it to a store. Returns the version's directory or URL and
/// whether it was promoted.
async fn register(
    models: &DataRoot,
    meta: &ModelMeta,
    write: impl FnOnce(&Path) -> std::result::Result<(), engage_models::ModelError>,
) -> Result<(String, bool)> {
    let store = ModelStore::open(models).await?;
    let (dir, promoted) = store.registry().register(meta, write)?;
    let shown = store.display(&dir);
    store.push().await?;
    Ok((shown, promoted))
}

/// Where a version goes in the registry at `models`, for run reports.
fn version_dir(models: &DataRoot, name: &str, version: &str) -> String {
    models.display(&format!("{name}/{version}"))
}

/// `dir/run_report.json` inside a registry version being written.
fn save_run_report(dir: &Path, report: &RunReport) -> std::result::Result<(), engage_models::ModelError> {
    snapshot::write_atomic(
        &dir.join(RUN_REPORT_FILE),
        &serde_json::to_vec_pretty(report).expect("report serialises"),
    )
}

/// Builds the training set, trains and validates per `opts.config`, and
/// registers the model under `<models>/<name>/<version>/`.
pub async fn train_churn_model(opts: &TrainChurnOptions) -> Result<TrainRun> {
    let mut clock = Stopwatch::start();
    opts.config.check()?;
    // Features as of the cutoff, labels from all rows: one graph serves both.
    let mut engine = Engine::open_for_cutoffs(&opts.source, None).await?;
    clock.watch(&engine);
    clock.lap("ingest");
    let set = churn_training_set(&mut engine, opts.as_of, opts.horizon_days).await?;
    clock.lap("training set");
    let train_opts = TrainOptions {
        name: opts.name.clone().unwrap_or_else(|| "churn".into()),
        task: "churn".into(),
        window: TrainingWindow { as_of: opts.as_of.to_string(), horizon_days: opts.horizon_days },
    };
    let (artifact, curves) = engage_models::train(&set, None, &opts.config, &train_opts)?;
    clock.lap("train");
    let identity = engine.identity().expect("resolved for the labels").clone();
    let dir = version_dir(&opts.models, &artifact.name, &artifact.model_version);
    let mut report =
        RunReport::new("train churn", Some(opts.as_of), &engine, &identity, None, &clock, vec![dir]);
    report.model = Some(ModelSummary::of(&artifact));
    report.warnings = artifact.warnings();
    let (dir, promoted) = register_classifier(&opts.models, &artifact, &curves, Some(&report)).await?;
    Ok(TrainRun { artifact, dir, promoted, report: Some(report) })
}

/// How to train a classifier on a feature table file.
#[derive(Debug, Clone)]
pub struct TrainTableOptions {
    /// A Parquet or CSV file: one row per example.
    pub path: PathBuf,
    /// The target column.
    pub label: String,
    /// The row id column: `None` = `customer_id` if present, else row numbers.
    pub id: Option<String>,
    /// Columns that are not features besides the label, id, `as_of` and
    /// [`crate::frame::LABEL_COLUMNS`].
    pub ignore: Vec<String>,
    /// What the model predicts: `churn` or `response`.
    pub task: String,
    /// The model registry, a directory or URL.
    pub models: DataRoot,
    /// Registry name; default the task.
    pub name: Option<String>,
    pub config: TrainConfig,
}

impl TrainTableOptions {
    fn columns(&self) -> TableColumns<'_> {
        TableColumns { label: &self.label, id: self.id.as_deref(), ignore: &self.ignore }
    }

    fn train_options(&self, task: &str) -> TrainOptions {
        TrainOptions {
            name: self.name.clone().unwrap_or_else(|| task.to_string()),
            task: task.to_string(),
            window: TrainingWindow { as_of: "table".into(), horizon_days: 0 },
        }
    }
}

/// Every row of a Parquet or CSV file given as `flag` (named in errors).
pub(crate) async fn read_table(path: &Path, flag: &'static str) -> Result<Vec<RecordBatch>> {
    use datafusion::prelude::{CsvReadOptions, ParquetReadOptions, SessionContext};
    let shown = path.display().to_string();
    let ctx = SessionContext::new();
    let df = match path.extension().and_then(|e| e.to_str()) {
        Some("parquet") => ctx.read_parquet(shown.as_str(), ParquetReadOptions::default()).await,
        Some("csv") => ctx.read_csv(shown.as_str(), CsvReadOptions::new()).await,
        _ => {
            return Err(PipelineError::InvalidArgument {
                name: flag,
                value: shown,
                reason: "expected a .parquet or .csv file".into(),
            });
        }
    };
    df.map_err(query(&shown))?.collect().await.map_err(query(&shown))
}

/// Subscription tenures for the shifted-beta-geometric model from a
/// Parquet or CSV file: `periods` holds whole periods observed (>= 1) and
/// `churned` whether the customer left at the end of them (true/false or
/// 1/0) or is still active. Errors name the file, column and row.
pub async fn read_tenures(path: &Path, periods: &str, churned: &str) -> Result<Vec<Tenure>> {
    let batches = read_table(path, "--tenures").await?;
    let shown = path.display().to_string();
    if batches.iter().all(|b| b.num_rows() == 0) {
        return Err(PipelineError::NoTrainingRows(format!("{shown} has no rows")));
    }
    let bad = |column: &str, reason: String| PipelineError::InvalidArgument {
        name: "--tenures",
        value: shown.clone(),
        reason: format!("column `{column}`: {reason}"),
    };
    let periods_text = table_text(&batches, periods, &shown, "--tenures")?;
    let churned_text = table_text(&batches, churned, &shown, "--tenures")?;
    let shown_value = |v: &Option<String>| v.as_ref().map_or("nothing".to_string(), |v| format!("{v:?}"));
    let mut out = Vec::with_capacity(periods_text.len());
    for (row, (p, c)) in periods_text.iter().zip(&churned_text).enumerate() {
        // Whole numbers, also as floats (`3.0`, as pandas writes them).
        let whole = p.as_deref().and_then(|v| v.parse::<f64>().ok()).filter(|v| v.fract() == 0.0);
        let periods = match whole {
            Some(n) if (1.0..=MAX_TENURE as f64).contains(&n) => n as u32,
            _ => {
                return Err(bad(
                    periods,
                    format!(
                        "row {row} (from 0) holds {}; expected a whole number of periods from 1 to {MAX_TENURE}",
                        shown_value(p)
                    ),
                ));
            }
        };
        let Some(churned) = c.as_deref().and_then(parse_flag) else {
            return Err(bad(
                churned,
                format!("row {row} (from 0) holds {}; expected true/false or 1/0", shown_value(c)),
            ));
        };
        out.push(Tenure { periods, churned });
    }
    Ok(out)
}

/// Longest tenure `read_tenures` takes, in periods (27 years of days).
pub const MAX_TENURE: u32 = 10_000;

/// Trains a classifier on any feature table (see
/// [`crate::frame::table_training_set`] for the encoding) and registers
/// it. With an `as_of` column holding several cutoffs (as `engage dataset`
/// writes), the default split is a time-based backtest on the last cutoff
/// (see [`engage_models::SplitConfig`]).
pub async fn train_on_table(opts: &TrainTableOptions) -> Result<TrainRun> {
    let mut clock = Stopwatch::start();
    opts.config.check()?;
    let batches = read_table(&opts.path, "--features").await?;
    let shown = opts.path.display().to_string();
    let (set, cutoffs) = table_training_set(&batches, &opts.columns(), &shown)?;
    drop(batches);
    clock.lap("read");
    let train_opts = opts.train_options(&opts.task);
    let (artifact, curves) = engage_models::train(&set, cutoffs.as_deref(), &opts.config, &train_opts)?;
    clock.lap("train");
    let dir = version_dir(&opts.models, &artifact.name, &artifact.model_version);
    let command = format!("train {} --features", opts.task);
    let mut report = RunReport::for_file(&command, &opts.path, &clock, vec![dir]);
    report.model = Some(ModelSummary::of(&artifact));
    report.warnings = artifact.warnings();
    let (dir, promoted) = register_classifier(&opts.models, &artifact, &curves, Some(&report)).await?;
    Ok(TrainRun { artifact, dir, promoted, report: Some(report) })
}

/// How to train an uplift model on a feature table file.
#[derive(Debug, Clone)]
pub struct TrainUpliftOptions {
    /// The table, label (the response, e.g. `converted`), id and ignored
    /// columns, registry and config; `task` is not used.
    pub table: TrainTableOptions,
    /// The column naming each row's arm.
    pub treatment: String,
    /// The arm value of control rows.
    pub control: String,
    /// The column naming, for each control row, the treatment it was held
    /// out from (a campaign's control group is the control of that
    /// campaign's offer only); `None` = `offer` when the file has it (as
    /// `engage dataset` writes), else one control shared by every arm.
    pub control_arm: Option<String>,
}

/// What uplift training registered.
#[derive(Debug, Clone)]
pub struct TrainUpliftRun {
    pub artifact: UpliftArtifact,
    /// Also `run_report.json` in `dir`.
    pub report: RunReport,
    /// `<models>/<name>/<version>/`: model.json, meta.json, metrics.json, report.html.
    pub dir: String,
    pub promoted: bool,
}

/// Trains a two-model uplift model ([`engage_models::uplift`]) on a
/// feature table whose `treatment` column names each row's arm (`engage
/// dataset --task response` writes one: `control` or the campaign's
/// offer), and registers it. Splits like [`train_on_table`].
pub async fn train_uplift_on_table(opts: &TrainUpliftOptions) -> Result<TrainUpliftRun> {
    let mut clock = Stopwatch::start();
    let t = &opts.table;
    t.config.check()?;
    let batches = read_table(&t.path, "--features").await?;
    let shown = t.path.display().to_string();
    let mut arms = Vec::new();
    for (row, v) in table_text(&batches, &opts.treatment, &shown, "--features")?.into_iter().enumerate() {
        arms.push(v.ok_or_else(|| PipelineError::InvalidArgument {
            name: "--treatment",
            value: shown.clone(),
            reason: format!("column `{}`: row {row} is empty; every row needs its arm", opts.treatment),
        })?);
    }
    let has = |c: &str| batches.first().is_some_and(|b| b.schema().column_with_name(c).is_some());
    let control_arm = opts.control_arm.clone().or_else(|| has("offer").then(|| "offer".to_string()));
    let held_out_from = match &control_arm {
        Some(column) => Some(table_text(&batches, column, &shown, "--features")?),
        None => None,
    };
    let mut ignore = t.ignore.clone();
    for column in std::iter::once(&opts.treatment).chain(&control_arm) {
        if !ignore.contains(column) {
            ignore.push(column.clone());
        }
    }
    let columns = TableColumns { ignore: &ignore, ..t.columns() };
    let (set, cutoffs) = table_training_set(&batches, &columns, &shown)?;
    let mut data = UpliftSet::new(set, &arms, &opts.control)?;
    if let Some(held_out_from) = held_out_from {
        data = data.with_control_arms(&held_out_from)?;
    }
    drop(batches);
    clock.lap("read");
    let train_opts = t.train_options("uplift");
    let (artifact, curves) = train_uplift(&data, cutoffs.as_deref(), &t.config, &train_opts)?;
    clock.lap("train");
    let outputs = vec![version_dir(&t.models, &artifact.name, &artifact.model_version)];
    let mut run_report = RunReport::for_file("train uplift", &t.path, &clock, outputs);
    run_report.warnings = artifact.model.convergence_warnings();
    let (dir, promoted) = register(&t.models, &artifact.meta(), |dir| {
        artifact.save(&dir.join(MODEL_FILE))?;
        report::write_uplift(dir, &artifact, &curves)?;
        save_run_report(dir, &run_report)
    })
    .await?;
    Ok(TrainUpliftRun { artifact, dir, promoted, report: run_report })
}

/// How to fit the CLV models.
#[derive(Debug, Clone)]
pub struct TrainClvOptions {
    pub source: DataSource,
    /// Purchases strictly before this date; the observation ends the day before.
    pub as_of: NaiveDate,
    pub time_unit: clv::TimeUnit,
    /// The model registry, a directory or URL.
    pub models: DataRoot,
    /// Registry name; default `clv`.
    pub name: Option<String>,
    /// Also fit Pareto/NBD (slower: hypergeometric series per customer).
    pub pareto_nbd: bool,
}

/// What CLV training registered.
#[derive(Debug, Clone)]
pub struct TrainClvRun {
    pub artifact: ClvArtifact,
    /// Tracking, holdout and probability-alive checks (also in
    /// `metrics.json` and `report.html`).
    pub diagnostics: ClvDiagnostics,
    /// `<models>/<name>/<version>/`.
    pub dir: String,
    pub promoted: bool,
    pub report: RunReport,
}

/// Fits BG/NBD and Gamma-Gamma on every customer's purchases before
/// `as_of` (summarised per [`engage_models::clv::summarize`]: same-day
/// purchases merged, observation through the day before the cutoff) and
/// registers them (parameters, log-likelihoods, convergence) with the run
/// report.
pub async fn train_clv_model(opts: &TrainClvOptions) -> Result<TrainClvRun> {
    let mut clock = Stopwatch::start();
    // Purchases before the cutoff, then the holdout's from all rows: one
    // graph serves both.
    let mut engine = Engine::open_for_cutoffs(&opts.source, None).await?;
    clock.watch(&engine);
    clock.lap("ingest");
    let purchases = engine.purchase_days(opts.as_of).await?;
    let end_day = crate::engine::day_number(opts.as_of) as i64 - 1;
    let customers = summarize(purchases.iter().map(|(c, d, v)| (c, *d, *v)), end_day, opts.time_unit.days());
    clock.lap("summaries");
    let name = opts.name.as_deref().unwrap_or("clv");
    let mut artifact = ClvArtifact::train(name, &customers, &opts.as_of.to_string(), opts.time_unit)?;
    if opts.pareto_nbd {
        let summaries: Vec<Rfm> = customers.iter().map(|(_, c)| *c).collect();
        artifact.pareto_nbd = Some(ParetoNbd::fit(&summaries)?);
    }
    clock.lap("train");
    let identity = engine.identity().expect("resolved for the purchases").clone();
    // Features for the supervised spend model, only when there is a
    // holdout to learn it from (before identities are resolved again below).
    let features = if engine.has_transactions_from(opts.as_of).await? {
        engine.features(opts.as_of).await?
    } else {
        Vec::new()
    };
    clock.lap("features");
    // The holdout: every later purchase (identities resolved with all the
    // data; the fit above saw only what was known at the cutoff).
    let later = engine.purchase_days(NaiveDate::from_ymd_opt(9999, 12, 31).expect("valid date")).await?;
    let mut diagnostics = diagnose(
        &artifact.bg_nbd.params,
        purchases.iter().map(|(c, d, _)| (c, *d)),
        later.iter().map(|(c, d, _)| (c, *d)),
        end_day,
        opts.time_unit.days(),
    );
    if let Some(pareto) = &artifact.pareto_nbd {
        diagnostics.pareto_nbd = Some(Box::new(diagnose(
            &pareto.params,
            purchases.iter().map(|(c, d, _)| (c, *d)),
            later.iter().map(|(c, d, _)| (c, *d)),
            end_day,
            opts.time_unit.days(),
        )));
    }
    drop(purchases);
    if let (Some(holdout), false) = (&diagnostics.holdout, features.is_empty()) {
        // The supervised second opinion: features at the cutoff -> spend in the holdout.
        let mut spend: HashMap<&str, f64> = HashMap::new();
        for (c, _, v) in later.iter().filter(|(_, d, _)| *d > end_day) {
            *spend.entry(c.as_str()).or_default() += v;
        }
        let summaries: HashMap<&str, Rfm> = customers.iter().map(|(c, r)| (c.as_str(), *r)).collect();
        let (ids, names, x) = feature_matrix(&features)?;
        let rows: Vec<usize> = (0..ids.len()).filter(|&i| summaries.contains_key(ids[i].as_str())).collect();
        let rfm: Vec<Rfm> = rows.iter().map(|&i| summaries[ids[i].as_str()]).collect();
        let y: Vec<f64> = rows.iter().map(|&i| spend.get(ids[i].as_str()).copied().unwrap_or(0.0)).collect();
        let (model, comparison) = compare_spend(
            &artifact.bg_nbd.params,
            &artifact.gamma_gamma.params,
            &rfm,
            &names,
            &x.select(ndarray::Axis(0), &rows),
            &y,
            holdout.length,
            &SpendParams::default(),
        )?;
        artifact.spend_model = Some(model);
        diagnostics.spend = Some(comparison);
    }
    drop((customers, later, features));
    clock.lap("diagnostics");
    let outputs = vec![version_dir(&opts.models, name, &artifact.model_version)];
    let report = RunReport::new("train clv", Some(opts.as_of), &engine, &identity, None, &clock, outputs);
    let (dir, promoted) = register(&opts.models, &artifact.meta(), |dir| {
        artifact.save(&dir.join(MODEL_FILE))?;
        report::write_clv(dir, &artifact, &diagnostics)?;
        save_run_report(dir, &report)
    })
    .await?;
    Ok(TrainClvRun { artifact, diagnostics, dir, promoted, report })
}

/// What `engage forget` did, by count only (never by value).
#[derive(Debug, Clone, serde::Serialize)]
pub struct ForgetRun {
    /// Whether the identifier was found in the data (else only it is listed).
    pub found_in_data: bool,
    /// Identifiers added to the erasure list: every identifier the data links
    /// to the person, and their customer key.
    pub identifiers_added: u64,
    /// Identifiers on the list now.
    pub list_size: u64,
    /// Per scrubbed directory: files checked and rewritten, rows removed.
    pub scrubbed: Vec<(String, Scrubbed)>,
}

/// Forgets the person holding the identifier `id` of type `id_type`: adds
/// every identifier linked to them in `source` (resolved from all rows) to
/// the erasure list, saves it, and removes their rows from every Parquet
/// file under each `scrub` directory. Later runs that read the list leave
/// the person out. The source data is not touched.
pub async fn forget(source: &DataSource, id_type: &str, id: &str, scrub: &[PathBuf]) -> Result<ForgetRun> {
    let invalid =
        |reason: String| PipelineError::InvalidArgument { name: "--id", value: "(not shown)".into(), reason };
    if !ID_TYPES.contains(&id_type) {
        return Err(PipelineError::InvalidArgument {
            name: "--id-type",
            value: id_type.into(),
            reason: format!("expected one of {}", ID_TYPES.join(", ")),
        });
    }
    let value = normalize(id_type, id, &source.identity)
        .ok_or_else(|| invalid(format!("not a valid {id_type} (see docs/identity.md for the rules)")))?;
    for dir in scrub {
        if !dir.is_dir() {
            return Err(PipelineError::InvalidArgument {
                name: "--scrub",
                value: dir.display().to_string(),
                reason: "not a directory".into(),
            });
        }
    }
    let mut engine = Engine::open_at(source, None).await?;
    let map = engine.resolve_identities(None).await?.map.clone();
    // Two passes over the map: the identifier's own row, then every
    // identifier resolved to the same customer.
    let mut key = None;
    let mut found = false;
    for chunk in map.chunks()? {
        let chunk = chunk?;
        let (types, values, keys, shared) = map_columns(&chunk);
        if let Some(row) =
            (0..chunk.num_rows()).find(|&i| types.value(i) == id_type && values.value(i) == value)
        {
            found = true;
            key = (!shared.value(row)).then(|| keys.value(row).to_string());
            break;
        }
    }
    let mut list = source.erasure.clone();
    let mut identifiers: Vec<(String, String)> = vec![(id_type.into(), value.clone())];
    if let Some(key) = key {
        identifiers.push(("customer_id".into(), key.clone()));
        for chunk in map.chunks()? {
            let chunk = chunk?;
            let (types, values, keys, shared) = map_columns(&chunk);
            for i in 0..chunk.num_rows() {
                if keys.value(i) == key && !shared.value(i) {
                    identifiers.push((types.value(i).into(), values.value(i).into()));
                }
            }
        }
    }
    let added = identifiers.iter().filter(|(t, v)| list.add(t, v)).count() as u64;
    list.record(added);
    list.save()?;
    let mut scrubbed = Vec::new();
    for dir in scrub {
        scrubbed.push((dir.display().to_string(), scrub_dir(&list, &source.identity, dir)?));
    }
    Ok(ForgetRun { found_in_data: found, identifiers_added: added, list_size: list.len() as u64, scrubbed })
}

/// File name of a training set inside `--out`.
pub const DATASET_FILE: &str = "dataset.parquet";

/// How to build a point-in-time training set.
#[derive(Debug, Clone)]
pub struct DatasetOptions {
    pub source: DataSource,
    pub task: Task,
    /// Feature cutoffs, ascending; one block of rows per cutoff.
    pub cutoffs: Vec<NaiveDate>,
    /// Label horizon after each cutoff.
    pub horizon_days: u32,
    /// Response task: days after a contact a response counts.
    pub response_days: u32,
    pub out: PathBuf,
}

/// What a dataset run wrote; its report is also in `out/run_report.json`.
#[derive(Debug, Clone)]
pub struct DatasetRun {
    pub report: RunReport,
    pub rows: usize,
    pub columns: Vec<String>,
    pub output: PathBuf,
}

/// Stacks the feature table at every cutoff with the task's labels from
/// the horizon after it, and writes `out/dataset.parquet` (customer_id,
/// as_of, the features, the label columns) and `out/run_report.json`.
/// Features at a cutoff see only events before it; labels only events in
/// `[cutoff, cutoff + horizon)`.
pub async fn build_dataset(opts: &DatasetOptions) -> Result<DatasetRun> {
    let mut clock = Stopwatch::start();
    if opts.cutoffs.is_empty() {
        return Err(PipelineError::InvalidArgument {
            name: "--as-of",
            value: String::new(),
            reason: "no cutoff: give --as-of D1,D2,... or --every with --from and --to".into(),
        });
    }
    let mut engine = Engine::open_for_cutoffs(&opts.source, None).await?;
    clock.watch(&engine);
    clock.lap("ingest");
    // Labels first: they all use the identity resolved from all rows.
    let mut labels = Vec::new();
    for &cutoff in &opts.cutoffs {
        labels.push(engine.labels(opts.task, cutoff, opts.horizon_days, opts.response_days).await?);
    }
    clock.lap("labels");
    let ctx = datafusion::prelude::SessionContext::new();
    let mut blocks = Vec::new();
    for (&cutoff, label) in opts.cutoffs.iter().zip(labels) {
        let features = engine.features(cutoff).await?;
        if features.is_empty() || label.is_empty() {
            continue;
        }
        let label = ctx.read_batches(label).map_err(query("dataset"))?;
        let label_columns: Vec<String> =
            label.schema().fields().iter().map(|f| f.name().clone()).filter(|n| n != CUSTOMER_ID).collect();
        let label =
            label.with_column_renamed(CUSTOMER_ID, "__label_customer_id").map_err(query("dataset"))?;
        let features = ctx.read_batches(features).map_err(query("dataset"))?;
        let feature_columns: Vec<String> = features
            .schema()
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .filter(|n| n != CUSTOMER_ID)
            .collect();
        let mut columns = vec![col(CUSTOMER_ID), lit(crate::engine::date_value(cutoff)).alias(AS_OF)];
        columns.extend(feature_columns.iter().chain(&label_columns).map(|c| col(c.as_str())));
        let joined = features
            .join(label, JoinType::Inner, &[CUSTOMER_ID], &["__label_customer_id"], None)
            .and_then(|df| df.select(columns))
            .and_then(|df| df.sort(vec![col(CUSTOMER_ID).sort(true, false)]))
            .map_err(query("dataset"))?;
        blocks.extend(joined.collect().await.map_err(query("dataset"))?);
    }
    clock.lap("features");
    let schema = blocks.first().map(|b| b.schema()).ok_or_else(|| PipelineError::InvalidArgument {
        name: "--as-of",
        value: opts.cutoffs.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(","),
        reason: format!("no labelled rows for the {} task at any cutoff", opts.task.name()),
    })?;
    std::fs::create_dir_all(&opts.out).map_err(io(&opts.out))?;
    let output = opts.out.join(DATASET_FILE);
    write_parquet(&output, schema.clone(), &blocks)?;
    clock.lap("write");
    let identity = engine.identity().expect("resolved for the features").clone();
    let report = RunReport::new(
        &format!("dataset {}", opts.task.name()),
        opts.cutoffs.first().copied(),
        &engine,
        &identity,
        None,
        &clock,
        vec![output.display().to_string()],
    );
    report.write(&opts.out)?;
    Ok(DatasetRun {
        report,
        rows: blocks.iter().map(|b| b.num_rows()).sum(),
        columns: schema.fields().iter().map(|f| f.name().clone()).collect(),
        output,
    })
}

/// File of `engage lifecycle`'s stage history inside `--out`.
pub const LIFECYCLE_HISTORY_FILE: &str = "lifecycle_history.parquet";
/// File of `engage lifecycle`'s transition counts inside `--out`.
pub const LIFECYCLE_TRANSITIONS_FILE: &str = "lifecycle_transitions.parquet";

/// What a lifecycle run wrote; its report is also in `out/run_report.json`.
#[derive(Debug, Clone)]
pub struct LifecycleRun {
    pub report: RunReport,
    /// Rows of the history (customers x cutoffs they existed at).
    pub history_rows: usize,
    /// The stages, in the order of the lifecycle rules.
    pub stages: Vec<String>,
    /// Customers per stage (in `stages` order) at each cutoff.
    pub stage_counts: Vec<(NaiveDate, Vec<u64>)>,
    /// The transition counts as written (as_of, from_stage, to_stage, customers).
    pub transitions: Vec<RecordBatch>,
}

/// Each customer's lifecycle stage at every cutoff (point in time: each
/// stage sees only events before its cutoff) and the transitions between
/// consecutive cutoffs. Writes `out/lifecycle_history.parquet`
/// (customer_id, as_of, lifecycle_stage, previous_stage),
/// `out/lifecycle_transitions.parquet` (as_of, from_stage, to_stage,
/// customers) and `out/run_report.json`.
pub async fn build_lifecycle(source: &DataSource, cutoffs: &[NaiveDate], out: &Path) -> Result<LifecycleRun> {
    let mut clock = Stopwatch::start();
    if cutoffs.len() < 2 {
        return Err(PipelineError::InvalidArgument {
            name: "--as-of",
            value: cutoffs.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(","),
            reason: "a history needs two or more cutoffs: --as-of D1,D2,... or --every with --from and --to"
                .into(),
        });
    }
    let mut engine = Engine::open_for_cutoffs(source, cutoffs.iter().max().copied()).await?;
    clock.watch(&engine);
    clock.lap("ingest");
    let (history, transitions) = engine.lifecycle_history(cutoffs).await?;
    clock.lap("lifecycle");
    let stages = crate::registry::feature("lifecycle_stage").expect("a registered feature").categories;
    let mut stage_counts: Vec<(NaiveDate, Vec<u64>)> =
        cutoffs.iter().map(|&c| (c, vec![0; stages.len()])).collect();
    for batch in &history {
        let as_of = batch.column(1).as_primitive::<datafusion::arrow::datatypes::Date32Type>();
        let stage = batch.column(2).as_string::<i32>();
        for i in 0..batch.num_rows() {
            let date = crate::engine::date_from_value(as_of.value(i));
            // Cutoffs come from `cutoffs`, stages from the rules the registry lists.
            let row = stage_counts.iter_mut().find(|(c, _)| *c == date).expect("a cutoff of this run");
            let s = stages.iter().position(|s| s == stage.value(i)).expect("a registered stage");
            row.1[s] += 1;
        }
    }
    std::fs::create_dir_all(out).map_err(io(out))?;
    let mut outputs = Vec::new();
    for (file, batches) in [(LIFECYCLE_HISTORY_FILE, &history), (LIFECYCLE_TRANSITIONS_FILE, &transitions)] {
        let path = out.join(file);
        // Populations only grow, so a history with rows has transitions at its last cutoff.
        let Some(first) = batches.first() else {
            return Err(PipelineError::InvalidArgument {
                name: "--as-of",
                value: cutoffs.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(","),
                reason: "no customer signed up before any of these dates".into(),
            });
        };
        write_parquet(&path, first.schema(), batches)?;
        outputs.push(path.display().to_string());
    }
    clock.lap("write");
    let identity = engine.identity().expect("resolved for the stages").clone();
    let report =
        RunReport::new("lifecycle", cutoffs.last().copied(), &engine, &identity, None, &clock, outputs);
    report.write(out)?;
    Ok(LifecycleRun {
        report,
        history_rows: history.iter().map(|b| b.num_rows()).sum(),
        stages,
        stage_counts,
        transitions,
    })
}
