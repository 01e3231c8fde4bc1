//! Batch scoring: every customer as of a cutoff, with every chosen model
//! (churn, response, uplift, CLV), segmented, published as one snapshot
//! (layout in [`engage_models::snapshot`]). `engage score` and `engage
//! nightly` both end here.
//!
//! One run at a time per snapshot root (a lock file); a run that dies
//! leaves the previous snapshot current, and the next run clears what it
//! left in `.staging`.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use chrono::{NaiveDate, Utc};
use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, Date32Array, Float64Array, StringArray, TimestampMicrosecondArray,
};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use datafusion::arrow::record_batch::RecordBatch;
use engage_models::ModelArtifact;
use engage_models::clv::{ClvArtifact, customer_lifetime_value};
use engage_models::registry::ModelRef;
use engage_models::snapshot::{
    self, IDENTITIES_FILE, LOOKUP_ID_TYPES, SCORES_FILE, SNAPSHOT_FORMAT_VERSION, SnapshotManifest,
};
use engage_models::uplift::UpliftArtifact;

use crate::audience::{self, AudienceSettings, CampaignConfig};
use crate::engine::{Counted, DataSource, Engine, IdentityMap, PurchaseSummaries};
use crate::error::{PipelineError, Result, io, query};
use crate::frame::{feature_matrix, table_text};
use crate::identity::map_columns;
use crate::nightly::{MeasureWindow, measure_campaigns};
use crate::output::{ParquetSink, read_parquet};
use crate::publish::ModelStore;
use crate::report::{RunReport, ScoreStats, ScoreSummary, Stopwatch};
use crate::schema::{AS_OF, CHURN_PROBABILITY, CUSTOMER_ID, SCORED_AT};
use crate::segments::{SegmentConfig, SegmentInput};
use crate::store::DataRoot;

/// The feature table inside a snapshot (what audiences select on).
pub const FEATURES_FILE: &str = "features.parquet";
/// Contact lists inside a snapshot: `audiences/<campaign>.parquet|csv`.
pub const AUDIENCES_DIR: &str = "audiences";
/// Every audience's summary inside [`AUDIENCES_DIR`].
pub const AUDIENCE_SUMMARY_FILE: &str = "summary.json";
/// The purchase summaries CLV scores from, in the staging directory while
/// scoring runs (removed before the snapshot is published).
const PURCHASE_SUMMARIES_FILE: &str = ".purchase_summaries.parquet";

/// Reasons per scored customer: the features raising the churn score most
/// (`reason_<k>`, `reason_<k>_impact` in log-odds), see
/// [`engage_models::Classifier::top_reasons`].
pub const REASONS: usize = 3;

/// Writes the snapshot's identity lookup ([`IDENTITIES_FILE`]) to `path`:
/// the emails, phones and loyalty ids of the identity map that resolve to a
/// scored customer, a chunk of the map at a time. Shared identifiers (a
/// shop's phone) link nobody and are left out.
fn write_identity_lookup(
    map: &IdentityMap,
    scored: &[StringArray],
    path: &Path,
    memory: &mut Counted,
) -> Result<u64> {
    use datafusion::arrow::array::BooleanArray;
    let id_bytes: usize = scored.iter().map(|a| a.get_array_memory_size()).sum();
    let scored: std::collections::HashSet<&str> = scored.iter().flat_map(|a| a.iter().flatten()).collect();
    memory.hold(id_bytes + scored.capacity() * (std::mem::size_of::<&str>() + 1))?;
    let schema = Arc::new(Schema::new(vec![
        Field::new("identifier_type", DataType::Utf8, false),
        Field::new("identifier_value", DataType::Utf8, false),
        Field::new(CUSTOMER_ID, DataType::Utf8, false),
    ]));
    let arrow = |e: datafusion::arrow::error::ArrowError| query(IDENTITIES_FILE)(e.into());
    let mut sink = ParquetSink::create(path, schema.clone())?;
    for chunk in map.chunks()? {
        let chunk = chunk?;
        let (ty, _, key, shared) = map_columns(&chunk);
        let keep: BooleanArray = (0..chunk.num_rows())
            .map(|i| {
                Some(
                    !shared.value(i)
                        && LOOKUP_ID_TYPES.contains(&ty.value(i))
                        && scored.contains(key.value(i)),
                )
            })
            .collect();
        let columns = (0..3)
            .map(|c| datafusion::arrow::compute::filter(chunk.column(c), &keep))
            .collect::<Result<Vec<_>, _>>()
            .map_err(arrow)?;
        sink.write(&RecordBatch::try_new(schema.clone(), columns).map_err(arrow)?)?;
    }
    sink.finish()
}

/// What a registry model predicts, as far as scoring is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ScoreTask {
    Churn,
    Response,
    Uplift,
    Clv,
}

impl ScoreTask {
    pub const ALL: [ScoreTask; 4] =
        [ScoreTask::Churn, ScoreTask::Response, ScoreTask::Uplift, ScoreTask::Clv];

    /// The registry's `task` (and default model name).
    pub fn name(self) -> &'static str {
        match self {
            ScoreTask::Churn => "churn",
            ScoreTask::Response => "response",
            ScoreTask::Uplift => "uplift",
            ScoreTask::Clv => "clv",
        }
    }

    fn of(task: &str) -> Option<ScoreTask> {
        ScoreTask::ALL.into_iter().find(|t| t.name() == task)
    }
}

/// Which model to score with.
#[derive(Debug, Clone, PartialEq)]
pub enum ModelPick {
    /// This model; an error if it cannot be used.
    Use(ModelRef),
    /// The promoted version of the model named after `task`, if there is one.
    IfPromoted(ScoreTask),
}

/// How CLV is turned into scores.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClvScoring {
    /// Months of future value in `clv` (and of `expected_purchases`).
    pub horizon_months: u32,
    /// Discount rate per month.
    pub discount_rate: f64,
}

impl Default for ClvScoring {
    fn default() -> Self {
        ClvScoring { horizon_months: 12, discount_rate: 0.01 }
    }
}

/// What to score and where to publish it.
#[derive(Debug, Clone)]
pub struct ScoreOptions {
    /// `score` or `nightly`: names the run report.
    pub command: &'static str,
    pub source: DataSource,
    pub as_of: NaiveDate,
    /// The model registry, a directory or URL.
    pub models: DataRoot,
    pub picks: Vec<ModelPick>,
    pub clv: ClvScoring,
    pub segments: SegmentConfig,
    /// The snapshot root.
    pub out: PathBuf,
    /// Snapshots to keep (the current one is always kept); `None` keeps all.
    pub keep: Option<usize>,
    /// Campaigns; those due at `as_of` select their audiences into the snapshot.
    pub campaigns: Vec<CampaignConfig>,
    /// Measure every campaign and write the contact history into the
    /// snapshot (the nightly job, for the dashboard); `None` skips it.
    pub measure: Option<MeasureWindow>,
    pub audiences: AudienceSettings,
    /// Customers scored at a time ([`SLICE_ROWS`]): what bounds scoring's
    /// memory whatever the number of customers.
    pub slice_rows: usize,
}

impl ScoreOptions {
    /// `engage score`'s options: the models named, the default CLV
    /// horizon and segment rules, every snapshot kept.
    pub fn score(
        source: DataSource,
        as_of: NaiveDate,
        models: &DataRoot,
        refs: &[ModelRef],
        out: &Path,
    ) -> ScoreOptions {
        ScoreOptions {
            command: "score",
            source,
            as_of,
            models: models.clone(),
            picks: refs.iter().cloned().map(ModelPick::Use).collect(),
            clv: ClvScoring::default(),
            segments: SegmentConfig::default(),
            out: out.to_path_buf(),
            keep: None,
            campaigns: Vec::new(),
            audiences: AudienceSettings::default(),
            measure: None,
            slice_rows: SLICE_ROWS,
        }
    }
}

/// What a scoring run published.
#[derive(Debug, Clone)]
pub struct ScoreRun {
    pub manifest: SnapshotManifest,
    pub snapshot_dir: PathBuf,
    /// Also in the snapshot as `run_report.json`.
    pub report: RunReport,
    /// Snapshots removed by retention.
    pub pruned: Vec<String>,
}

/// The models a run scores with, loaded.
#[derive(Default)]
struct Models {
    churn: Option<ModelArtifact>,
    response: Option<ModelArtifact>,
    uplift: Option<UpliftArtifact>,
    clv: Option<ClvArtifact>,
    /// Task -> the model's registry directory.
    dirs: BTreeMap<String, PathBuf>,
}

impl Models {
    /// Resolves each pick in the registry at `store` and loads its artifact.
    async fn load(store: &mut ModelStore, picks: &[ModelPick]) -> Result<Models> {
        let registry = store.registry();
        let mut models = Models::default();
        for pick in picks {
            let reference = match pick {
                ModelPick::Use(r) => r.clone(),
                ModelPick::IfPromoted(task) => {
                    let promoted =
                        registry.promotions(task.name()).map(|p| !p.stack.is_empty()).unwrap_or(false);
                    if !promoted {
                        continue;
                    }
                    ModelRef { name: task.name().into(), version: None }
                }
            };
            let (meta, path) = registry.resolve(&reference)?;
            store.fetch(&meta.name, &meta.version).await?;
            let bad = |reason: String| PipelineError::InvalidArgument {
                name: "model",
                value: format!("{reference} ({})", meta.version),
                reason,
            };
            let task =
                ScoreTask::of(&meta.task).ok_or_else(|| bad(format!("unknown task `{}`", meta.task)))?;
            if matches!(pick, ModelPick::IfPromoted(t) if *t != task) {
                return Err(bad(format!(
                    "the promoted `{}` model predicts {}; name the {} model explicitly",
                    reference.name, meta.task, reference.name
                )));
            }
            let taken = match task {
                ScoreTask::Churn => models.churn.replace(ModelArtifact::load(&path)?).is_some(),
                ScoreTask::Response => models.response.replace(ModelArtifact::load(&path)?).is_some(),
                ScoreTask::Uplift => models.uplift.replace(UpliftArtifact::load(&path)?).is_some(),
                ScoreTask::Clv => models.clv.replace(ClvArtifact::load(&path)?).is_some(),
            };
            if taken {
                return Err(bad(format!("a second {} model: a snapshot holds one per task", meta.task)));
            }
            let dir = path.parent().expect("a model file in its version directory").to_path_buf();
            models.dirs.insert(task.name().into(), dir);
        }
        if models.versions().is_empty() {
            return Err(PipelineError::InvalidArgument {
                name: "models",
                value: store.display(registry.root()),
                reason:
                    "no model to score with: train and promote one (engage train ..., engage models promote)"
                        .into(),
            });
        }
        Ok(models)
    }

    /// Task -> model version.
    fn versions(&self) -> BTreeMap<String, String> {
        [
            ("churn", self.churn.as_ref().map(|a| &a.model_version)),
            ("response", self.response.as_ref().map(|a| &a.model_version)),
            ("uplift", self.uplift.as_ref().map(|a| &a.model_version)),
            ("clv", self.clv.as_ref().map(|a| &a.model_version)),
        ]
        .into_iter()
        .filter_map(|(t, v)| v.map(|v| (t.to_string(), v.clone())))
        .collect()
    }
}

/// Scores every customer of `opts.source` as of `opts.as_of` and publishes
/// a snapshot under `opts.out`; see the module docs and docs/nightly.md.
pub async fn score(opts: &ScoreOptions) -> Result<ScoreRun> {
    let progress = Progress::new(opts.command);
    let mut clock = Stopwatch::start();
    let _lock = lock(&opts.out)?;
    clear_staging(&opts.out)?;
    let models = Models::load(&mut ModelStore::open(&opts.models).await?, &opts.picks).await?;
    let stages = crate::registry::feature("lifecycle_stage").map(|f| f.categories).unwrap_or_default();
    opts.segments.check(&stages)?;
    // Campaigns due today: check where they record contacts, and read the
    // do-not-contact list, before any work.
    let due: Vec<(usize, &CampaignConfig)> =
        opts.campaigns.iter().enumerate().filter(|(_, c)| c.due(opts.as_of)).collect();
    let history = if due.is_empty() { None } else { Some(audience::history_dirs(&opts.source.root)?) };
    let do_not_contact = match (&opts.audiences.do_not_contact, due.is_empty()) {
        (Some(path), false) => audience::read_do_not_contact(path).await?,
        _ => Default::default(),
    };
    let mut engine = Engine::open_at(&opts.source, Some(opts.as_of)).await?;
    clock.watch(&engine);
    progress.lap(&mut clock, "ingest");
    let identity = engine.resolve_identities(Some(opts.as_of)).await?.clone();
    progress.lap(&mut clock, "identity");
    let scored_at = Utc::now();
    let id = snapshot::new_id(&opts.out, &opts.as_of.to_string(), &scored_at);
    let staging = snapshot::create_staging(&opts.out, &id)?;
    let versions = models.versions();
    let result = async {
        // The feature table goes to the snapshot as it is computed; scoring
        // reads it back a slice of customers at a time, so no step holds
        // every customer's features.
        let features_file = staging.join(FEATURES_FILE);
        let (n, _) = engine.write_features(opts.as_of, &features_file, &mut Stopwatch::start()).await?;
        // CLV needs each customer's purchase summary; then the events can
        // go. The summaries wait in the staging directory (not published),
        // in customer order like the feature table, and scoring walks them
        // beside it.
        let summaries = match &models.clv {
            Some(_) => {
                let path = staging.join(PURCHASE_SUMMARIES_FILE);
                engine.write_purchase_summaries(opts.as_of, &path).await?;
                Some(path)
            }
            None => None,
        };
        progress.lap(&mut clock, "features");
        // Campaign results and contact histories, while the events are held
        // (the universal holdout's measure reads purchases); the histories
        // go to the snapshot as they are computed.
        let measured = match opts.measure {
            Some(window) => {
                let funnel = &opts.source.response_funnel;
                let results = measure_campaigns(
                    &mut engine,
                    funnel,
                    &opts.campaigns,
                    &opts.audiences,
                    opts.as_of,
                    window,
                )
                .await?;
                let contacts = staging.join(snapshot::CONTACTS_FILE);
                let days = snapshot::CONTACT_HISTORY_DAYS;
                engine.write_contact_history(opts.as_of, days, window.response_days, &contacts).await?;
                progress.lap(&mut clock, "campaign results");
                Some(results)
            }
            None => None,
        };
        engine.release_events()?;
        let scoring = Scoring { models: &models, opts, summaries: summaries.as_deref(), scored_at };
        let mut memory = engine.counted("scores' summary and identity lookup");
        let scored = scoring.write(&features_file, &staging.join(SCORES_FILE), &mut memory)?;
        if let Some(path) = &summaries {
            std::fs::remove_file(path).map_err(io(path))?;
        }
        progress.lap(&mut clock, "score");

        let summary = ScoreSummary {
            snapshot_id: id.clone(),
            customers: n,
            models: versions.clone(),
            scores: scored.stats,
            value_tier_limits: scored.limits.map(|(h, m)| [h, m]),
            segments: scored.segments,
        };
        write_identity_lookup(&identity.map, &scored.ids, &staging.join(IDENTITIES_FILE), &mut memory)?;
        drop(memory);
        if let Some((results, holdout)) = &measured {
            let as_of = opts.as_of.to_string();
            let dir = staging.join(snapshot::CAMPAIGNS_DIR);
            engage_models::report::write_campaigns(&dir, results, holdout.as_ref(), &as_of)?;
        }
        drop(measured);
        for (task, from) in &models.dirs {
            let to = staging.join(snapshot::MODELS_DIR).join(task);
            std::fs::create_dir_all(&to).map_err(io(&to))?;
            for file in [engage_models::registry::META_FILE, engage_models::report::METRICS_FILE] {
                if from.join(file).exists() {
                    std::fs::copy(from.join(file), to.join(file)).map_err(io(&to.join(file)))?;
                }
            }
        }
        progress.lap(&mut clock, "write scores");
        let mut audiences = Vec::new();
        let mut recorded = Vec::new();
        if let Some(history) = &history {
            audience::register_snapshot(&engine, &staging.join(SCORES_FILE), &features_file).await?;
            let dir = staging.join(AUDIENCES_DIR);
            for (i, campaign) in &due {
                let field = format!("campaigns[{i}]");
                let (summary, written) = audience::run(
                    &engine,
                    campaign,
                    &field,
                    &opts.audiences,
                    &do_not_contact,
                    opts.as_of,
                    &dir,
                    Some(history),
                )
                .await?;
                // The lists are inside the snapshot; the records are not.
                recorded.extend(written.into_iter().filter(|p| !p.starts_with(&dir)));
                audiences.push(summary);
            }
            let summary = serde_json::to_vec_pretty(&audiences).expect("summaries serialise");
            snapshot::write_atomic(&dir.join(AUDIENCE_SUMMARY_FILE), &summary)?;
            progress.lap(&mut clock, "audiences");
        }
        let mut outputs = vec![opts.out.join(snapshot::SNAPSHOTS_DIR).join(&id).display().to_string()];
        outputs.extend(recorded.iter().map(|p| p.display().to_string()));
        outputs.extend(engine.write_rejects(&staging).await?.iter().map(|p| {
            let relative = p.strip_prefix(&staging).unwrap_or(p);
            opts.out.join(snapshot::SNAPSHOTS_DIR).join(&id).join(relative).display().to_string()
        }));
        progress.lap(&mut clock, "write");
        let mut report =
            RunReport::new(opts.command, Some(opts.as_of), &engine, &identity, None, &clock, outputs);
        report.snapshot = Some(summary);
        report.audiences = audiences;
        report.write(&staging)?;
        let manifest = SnapshotManifest {
            format_version: SNAPSHOT_FORMAT_VERSION,
            snapshot_id: id.clone(),
            as_of: opts.as_of.to_string(),
            scored_at: scored_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            rows: n,
            model_versions: versions.values().cloned().collect(),
            models: versions,
            default_country_code: opts.source.identity.default_country_code.clone(),
            engage_version: env!("CARGO_PKG_VERSION").into(),
        };
        let dir = snapshot::publish(&opts.out, &staging, &manifest)?;
        Ok::<_, PipelineError>((manifest, dir, report))
    }
    .await;
    let (manifest, snapshot_dir, report) = match result {
        Ok(done) => done,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&staging);
            return Err(e);
        }
    };
    let pruned = match opts.keep {
        Some(keep) => snapshot::prune(&opts.out, keep)?,
        None => Vec::new(),
    };
    progress.done(&clock);
    Ok(ScoreRun { manifest, snapshot_dir, report, pruned })
}

/// Customers scored at a time by default: the feature matrix, the
/// classifiers' contributions and the score columns exist for one slice of
/// this many (about 40 MiB each for 80 model inputs).
pub const SLICE_ROWS: usize = 65_536;

/// Scoring every customer of a feature table with a run's models.
struct Scoring<'a> {
    models: &'a Models,
    opts: &'a ScoreOptions,
    /// The file of [`Engine::write_purchase_summaries`], with a CLV model.
    summaries: Option<&'a Path>,
    scored_at: chrono::DateTime<Utc>,
}

/// What scoring leaves besides the scores file.
struct Scored {
    /// Every scored customer, in the feature table's order.
    ids: Vec<StringArray>,
    stats: Vec<ScoreStats>,
    /// The CLV at or above which a customer is in the high and the medium value tier.
    limits: Option<(f64, f64)>,
    /// Segment column -> value (`none` when missing) -> customers.
    segments: BTreeMap<String, BTreeMap<String, u64>>,
}

/// Every slice's scores and segments, for the snapshot's summary.
#[derive(Default)]
struct Tally {
    /// Score -> every customer's value, in [`ScoreColumns::values`]' order.
    values: Vec<(&'static str, Vec<f64>)>,
    segments: BTreeMap<String, BTreeMap<String, u64>>,
}

impl Tally {
    fn bytes(&self) -> usize {
        self.values.iter().map(|(_, v)| v.capacity() * std::mem::size_of::<f64>()).sum()
    }
    fn count(&mut self, key: &str, value: Option<&str>) {
        *self.segments.entry(key.into()).or_default().entry(value.unwrap_or("none").into()).or_default() += 1;
    }
}

impl Scoring<'_> {
    /// Scores the customers of the Parquet feature table `features` a
    /// slice at a time into the Parquet file `out`. A first pass over the
    /// ids alone finds the value tiers' CLV limits, which every customer's
    /// segment needs. What it keeps per customer (the ids, each score for
    /// the summary's quantiles) is counted in `memory`.
    fn write(&self, features: &Path, out: &Path, memory: &mut Counted) -> Result<Scored> {
        let arrow = |e: datafusion::arrow::error::ArrowError| query(FEATURES_FILE)(e.into());
        let (_, batches) = read_parquet(features, self.opts.slice_rows, Some(&[CUSTOMER_ID]))?;
        let (mut ids, mut clv_values) = (Vec::new(), Vec::<f64>::new());
        let mut id_bytes = 0;
        let mut summaries = self.summaries()?;
        for batch in batches {
            let column = cast(batch?.column(0), &DataType::Utf8).map_err(arrow)?;
            let column = column.as_string::<i32>().clone();
            for id in column.iter().flatten() {
                if let Some([_, _, clv]) = self.clv(&mut summaries, id)? {
                    clv_values.push(clv);
                }
            }
            id_bytes += column.get_array_memory_size();
            ids.push(column);
            memory.hold(id_bytes + clv_values.capacity() * 8)?;
        }
        // (The limits sort a copy.)
        memory.hold(id_bytes + clv_values.capacity() * 8 + clv_values.len() * 8)?;
        let limits = self.opts.segments.value_limits(&clv_values);
        drop(clv_values);

        let (_, batches) = read_parquet(features, self.opts.slice_rows, None)?;
        let (mut sink, mut tally) = (None, Tally::default());
        let mut summaries = self.summaries()?;
        for batch in batches {
            self.slice(&batch?, limits, &mut summaries, out, &mut sink, &mut tally)?;
            memory.hold(id_bytes + tally.bytes())?;
        }
        sink.expect("customers to score: write_features refuses an empty table").finish()?;
        // (Each score's quantiles sort a copy.)
        let copy = tally.values.iter().map(|(_, v)| v.len() * 8).max().unwrap_or(0);
        memory.hold(id_bytes + tally.bytes() + copy)?;
        let stats = tally.values.iter().map(|(name, values)| ScoreStats::of(name, values)).collect();
        Ok(Scored { ids, stats, limits, segments: tally.segments })
    }

    /// A walk along the purchase summaries, with a CLV model.
    fn summaries(&self) -> Result<Option<PurchaseSummaries>> {
        match (&self.models.clv, self.summaries) {
            (Some(a), Some(path)) => Ok(Some(PurchaseSummaries::open(path, self.opts.as_of, a.unit_days)?)),
            _ => Ok(None),
        }
    }

    /// The customer's probability of being alive, expected purchases in
    /// the horizon and CLV; `None` without a CLV model or a purchase.
    /// Customers come in the feature table's (customer id) order.
    fn clv(&self, summaries: &mut Option<PurchaseSummaries>, id: &str) -> Result<Option<[f64; 3]>> {
        let (Some(a), Some(summaries)) = (&self.models.clv, summaries) else { return Ok(None) };
        let Some(c) = summaries.get(id)? else { return Ok(None) };
        let month = 365.25 / 12.0 / a.unit_days;
        let (bg, gg) = (&a.bg_nbd.params, &a.gamma_gamma.params);
        let (horizon, rate) = (self.opts.clv.horizon_months, self.opts.clv.discount_rate);
        Ok(Some([
            bg.probability_alive(&c),
            bg.expected_purchases(&c, horizon as f64 * month),
            customer_lifetime_value(bg, gg, &c, horizon, month, rate),
        ]))
    }

    /// Scores and segments the customers of `features`, appends them to
    /// the scores file (`sink`, created at `out` by the first slice) and
    /// counts them in `tally`.
    fn slice(
        &self,
        features: &RecordBatch,
        limits: Option<(f64, f64)>,
        summaries: &mut Option<PurchaseSummaries>,
        out: &Path,
        sink: &mut Option<ParquetSink>,
        tally: &mut Tally,
    ) -> Result<()> {
        let features = std::slice::from_ref(features);
        let (ids, names, x) = feature_matrix(features)?;
        let stage = table_text(features, "lifecycle_stage", "the feature table", "--features")?;
        let n = ids.len();
        let mut columns = ScoreColumns::new(n);
        if let Some(a) = &self.models.churn {
            a.model.check_features(&a.model_version, &names)?;
            let p = a.model.predict_proba(&x);
            let reasons = a.model.top_reasons(&x, REASONS);
            for k in 0..REASONS {
                let feature: StringArray =
                    reasons.iter().map(|r| r.get(k).map(|(j, _)| names[*j].as_str())).collect();
                let impact: Float64Array = reasons.iter().map(|r| r.get(k).map(|(_, v)| *v)).collect();
                columns.reasons.push((Arc::new(feature), Arc::new(impact)));
            }
            columns.churn = Some(p);
        }
        if let Some(a) = &self.models.response {
            a.model.check_features(&a.model_version, &names)?;
            columns.response = Some(a.model.predict_proba(&x));
        }
        if let Some(a) = &self.models.uplift {
            a.model.check_features(&a.model_version, &names)?;
            let s = a.model.predict(&x);
            let best: Vec<(usize, f64)> = (0..n).map(|i| s.best(i)).collect();
            columns.uplift = Some(best.iter().map(|b| b.1).collect());
            columns.best_offer = Some(best.iter().map(|b| a.model.treatments[b.0].clone()).collect());
            for (k, arm) in a.model.treatments.iter().enumerate() {
                columns.arms.push((arm_column(arm)?, (0..n).map(|i| s.uplift(i, k)).collect()));
            }
        }
        drop(x);
        if self.models.clv.is_some() {
            let values: Vec<Option<[f64; 3]>> =
                ids.iter().map(|id| self.clv(summaries, id)).collect::<Result<_>>()?;
            let part = |k: usize| values.iter().map(|v| v.map(|v| v[k])).collect();
            columns.clv = Some(ClvScores { p_alive: part(0), expected_purchases: part(1), clv: part(2) });
        }
        let segments: Vec<_> = (0..n)
            .map(|i| {
                self.opts.segments.assign(
                    &SegmentInput {
                        stage: stage[i].as_deref(),
                        clv: columns.clv.as_ref().and_then(|c| c.clv[i]),
                        churn_probability: columns.churn.as_ref().map(|p| p[i]),
                    },
                    limits,
                )
            })
            .collect();
        for (i, s) in segments.iter().enumerate() {
            tally.count("lifecycle_stage", stage[i].as_deref());
            tally.count("value_tier", s.value_tier);
            tally.count("risk_band", s.risk_band);
            tally.count("contact_strategy", Some(s.strategy.name()));
            tally.count("recommended_treatment", Some(s.treatment.name()));
        }
        for (name, values) in columns.values() {
            match tally.values.iter_mut().find(|(known, _)| *known == name) {
                Some((_, all)) => all.extend(values),
                None => tally.values.push((name, values)),
            }
        }
        let batch = columns.batch(ids, self.opts.as_of, self.scored_at, stage, &segments)?;
        if sink.is_none() {
            *sink = Some(ParquetSink::create(out, batch.schema())?);
        }
        sink.as_mut().expect("created above").write(&batch)
    }
}

fn epoch() -> NaiveDate {
    NaiveDate::from_ymd_opt(1970, 1, 1).expect("valid date")
}

/// `uplift_<arm>`: the arm's name in lower case, other characters than
/// letters and digits as `_`.
fn arm_column(arm: &str) -> Result<String> {
    let clean: String =
        arm.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '_' }).collect();
    if clean.is_empty() {
        return Err(PipelineError::InvalidArgument {
            name: "uplift model",
            value: arm.into(),
            reason: "an empty treatment name".into(),
        });
    }
    Ok(format!("uplift_{clean}"))
}

/// The score columns of a snapshot, filled model by model.
struct ScoreColumns {
    n: usize,
    churn: Option<Vec<f64>>,
    reasons: Vec<(ArrayRef, ArrayRef)>,
    response: Option<Vec<f64>>,
    uplift: Option<Vec<f64>>,
    best_offer: Option<Vec<String>>,
    /// (`uplift_<arm>`, uplift of that arm).
    arms: Vec<(String, Vec<f64>)>,
    clv: Option<ClvScores>,
}

/// Per customer; `None` for customers without a purchase before the cutoff.
struct ClvScores {
    p_alive: Vec<Option<f64>>,
    expected_purchases: Vec<Option<f64>>,
    clv: Vec<Option<f64>>,
}

impl ScoreColumns {
    fn new(n: usize) -> ScoreColumns {
        ScoreColumns {
            n,
            churn: None,
            reasons: Vec::new(),
            response: None,
            uplift: None,
            best_offer: None,
            arms: Vec::new(),
            clv: None,
        }
    }

    /// Each score present, by name, in the snapshot summary's order
    /// (CLV scores only for customers with a purchase).
    fn values(&self) -> Vec<(&'static str, Vec<f64>)> {
        let mut out = Vec::new();
        let scores = [
            (CHURN_PROBABILITY, &self.churn),
            ("response_probability", &self.response),
            ("uplift", &self.uplift),
        ];
        for (name, values) in scores {
            if let Some(v) = values {
                out.push((name, v.clone()));
            }
        }
        if let Some(c) = &self.clv {
            let known = |v: &[Option<f64>]| v.iter().flatten().copied().collect();
            out.push(("p_alive", known(&c.p_alive)));
            out.push(("expected_purchases", known(&c.expected_purchases)));
            out.push(("clv", known(&c.clv)));
        }
        out
    }

    /// The snapshot's batch of these customers: ids and dates, then every score column
    /// (null where its model was not used), then the segments.
    fn batch(
        self,
        ids: Vec<String>,
        as_of: NaiveDate,
        scored_at: chrono::DateTime<Utc>,
        stage: Vec<Option<String>>,
        segments: &[crate::segments::Segment],
    ) -> Result<RecordBatch> {
        let n = self.n;
        let nulls = || -> ArrayRef { Arc::new(Float64Array::new_null(n)) };
        let floats =
            |v: Option<Vec<f64>>| -> ArrayRef { v.map_or_else(nulls, |v| Arc::new(Float64Array::from(v))) };
        let maybe = |v: Option<Vec<Option<f64>>>| -> ArrayRef {
            v.map_or_else(nulls, |v| Arc::new(Float64Array::from(v)))
        };
        let mut fields = vec![
            Field::new(CUSTOMER_ID, DataType::Utf8, false),
            Field::new(AS_OF, DataType::Date32, false),
            Field::new(SCORED_AT, DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())), false),
            Field::new("lifecycle_stage", DataType::Utf8, true),
            Field::new(CHURN_PROBABILITY, DataType::Float64, true),
        ];
        let mut columns: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from(ids)),
            Arc::new(Date32Array::from(vec![(as_of - epoch()).num_days() as i32; n])),
            Arc::new(
                TimestampMicrosecondArray::from(vec![scored_at.timestamp_micros(); n]).with_timezone("UTC"),
            ),
            Arc::new(StringArray::from(stage)),
            floats(self.churn),
        ];
        let mut reasons = self.reasons.into_iter();
        for k in 1..=REASONS {
            fields.push(Field::new(format!("reason_{k}"), DataType::Utf8, true));
            fields.push(Field::new(format!("reason_{k}_impact"), DataType::Float64, true));
            let (feature, impact) = reasons
                .next()
                .unwrap_or_else(|| (Arc::new(StringArray::new_null(n)), Arc::new(Float64Array::new_null(n))));
            columns.extend([feature, impact]);
        }
        let (alive, expected, clv) = match self.clv {
            Some(c) => (Some(c.p_alive), Some(c.expected_purchases), Some(c.clv)),
            None => (None, None, None),
        };
        let float_columns =
            [("response_probability", floats(self.response)), ("uplift", floats(self.uplift))];
        for (name, column) in float_columns {
            fields.push(Field::new(name, DataType::Float64, true));
            columns.push(column);
        }
        fields.push(Field::new("best_offer", DataType::Utf8, true));
        columns.push(match self.best_offer {
            Some(v) => Arc::new(StringArray::from(v)),
            None => Arc::new(StringArray::new_null(n)),
        });
        for (name, column) in [("p_alive", alive), ("expected_purchases", expected), ("clv", clv)] {
            fields.push(Field::new(name, DataType::Float64, true));
            columns.push(maybe(column));
        }
        let text = |f: &dyn Fn(&crate::segments::Segment) -> Option<&'static str>| -> ArrayRef {
            Arc::new(segments.iter().map(f).collect::<StringArray>())
        };
        for (name, column, nullable) in [
            ("value_tier", text(&|s| s.value_tier), true),
            ("risk_band", text(&|s| s.risk_band), true),
            ("contact_strategy", text(&|s| Some(s.strategy.name())), false),
            ("recommended_treatment", text(&|s| Some(s.treatment.name())), false),
        ] {
            fields.push(Field::new(name, DataType::Utf8, nullable));
            columns.push(column);
        }
        for (name, values) in self.arms {
            if fields.iter().any(|f| f.name() == &name) {
                return Err(PipelineError::InvalidArgument {
                    name: "uplift model",
                    value: name,
                    reason: "two treatments give the same column name".into(),
                });
            }
            fields.push(Field::new(name, DataType::Float64, true));
            columns.push(Arc::new(Float64Array::from(values)));
        }
        RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)
            .map_err(|e| PipelineError::Query { name: "internal: score batch".into(), source: e.into() })
    }
}

/// Holds `<out>/.lock` for the run: a second run on the same snapshot root
/// fails fast instead of racing. The OS releases the lock when the process
/// ends, however it ends.
fn lock(out: &Path) -> Result<std::fs::File> {
    std::fs::create_dir_all(out).map_err(io(out))?;
    let path = out.join(snapshot::LOCK_FILE);
    let file = snapshot::open_lock_file(&path).map_err(io(&path))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(PipelineError::InvalidArgument {
            name: "--out",
            value: out.display().to_string(),
            reason: "another scoring run holds this snapshot root's lock; wait for it to finish".into(),
        }),
        Err(std::fs::TryLockError::Error(e)) => {
            Err(PipelineError::Io { path: path.display().to_string(), source: e })
        }
    }
}

/// Removes what killed runs left in `.staging` (only called under the lock).
fn clear_staging(out: &Path) -> Result<()> {
    let staging = out.join(snapshot::STAGING_DIR);
    if staging.exists() {
        std::fs::remove_dir_all(&staging).map_err(io(&staging))?;
    }
    Ok(())
}

/// Stage progress on stderr: one line rewritten in place on a terminal,
/// a log line per stage otherwise (what a scheduler's log keeps).
struct Progress {
    command: &'static str,
    started: Instant,
    terminal: bool,
}

impl Progress {
    fn new(command: &'static str) -> Progress {
        Progress { command, started: Instant::now(), terminal: std::io::stderr().is_terminal() }
    }

    fn lap(&self, clock: &mut Stopwatch, stage: &str) {
        clock.lap(stage);
        let last = clock.last().expect("just lapped");
        let total = self.started.elapsed().as_secs_f64();
        let mut rss = last.peak_rss_mib.map(|m| format!(", peak RSS {m:.0} MiB")).unwrap_or_default();
        if let Some(pool) = last.pool_peak_mib {
            rss += &format!(", engine pool {pool:.0} MiB");
        }
        if self.terminal {
            eprint!(
                "\r\x1b[2Kengage {}: {stage} done ({:.1} s of {total:.1} s{rss})",
                self.command, last.seconds
            );
        } else {
            eprintln!(
                "engage {}: {stage} done in {:.2} s ({total:.1} s total{rss})",
                self.command, last.seconds
            );
        }
    }

    fn done(&self, clock: &Stopwatch) {
        if self.terminal {
            eprintln!(
                "\r\x1b[2Kengage {}: {} stages in {:.1} s",
                self.command,
                clock.stages().len(),
                self.started.elapsed().as_secs_f64()
            );
        }
    }
}
