//! `engage nightly`: the scheduled job, configured by one TOML file
//! (docs/nightly.md; `engage.example.toml` in the repository): ingest and
//! validate -> identity -> features -> score with every promoted model ->
//! segments -> publish, then retention.

use std::path::{Path, PathBuf};

use chrono::NaiveDate;
use serde::{Deserialize, Serialize};

use crate::audience::{self, AudienceSettings, AudienceSummary, CampaignConfig};
use crate::engine::Engine;
use crate::engine::{DataSource, LifecycleRules, default_response_funnel};
use crate::erasure::ErasureList;
use crate::error::{PipelineError, Result, io};
use crate::identity::{IdentityOptions, check_country_code};
use crate::publish::{self, Pushed};
use crate::runtime::EngineSettings;
use crate::scoring::{ClvScoring, FEATURES_FILE, ModelPick, ScoreOptions, ScoreRun, ScoreTask, score};
use crate::segments::SegmentConfig;
use crate::sql::CAMPAIGN_RESULTS;
use crate::store::{DataRoot, StorageOptions};
use engage_models::lift::{CampaignResult, GroupOutcome, HoldoutResult};
use engage_models::snapshot;

/// The nightly job's configuration. Relative paths are relative to the
/// config file's directory.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NightlyConfig {
    /// The cutoff to score as of; default: today (UTC). `--as-of` overrides.
    #[serde(default)]
    pub as_of: Option<NaiveDate>,
    pub data: DataConfig,
    pub models: ModelsConfig,
    pub output: OutputConfig,
    #[serde(default)]
    pub clv: ClvScoring,
    #[serde(default)]
    pub segments: SegmentConfig,
    #[serde(default)]
    pub audiences: AudienceSettings,
    /// `[[campaigns]]`: audiences selected on the runs they are due.
    #[serde(default)]
    pub campaigns: Vec<CampaignConfig>,
    /// `[engine]`: memory limit and spill directory.
    #[serde(default)]
    pub engine: EngineSettings,
    /// `[storage]`: options for object stores (endpoint, region,
    /// credentials), over the environment's (docs/scale-out.md).
    #[serde(default)]
    pub storage: StorageOptions,
}

/// `[data]`: the inputs and how they are read (the flags of `engage
/// features`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataConfig {
    /// A directory or URL holding the contract tables.
    pub root: String,
    #[serde(default = "default_country_code")]
    pub default_country_code: String,
    #[serde(default = "one")]
    pub max_customers_per_identifier: usize,
    /// Default: as for every command ($ENGAGE_ERASURE_LIST, ...).
    #[serde(default)]
    pub erasure_list: Option<PathBuf>,
    #[serde(default = "default_response_funnel")]
    pub response_funnel: Vec<String>,
    #[serde(default)]
    pub lifecycle: LifecycleRules,
}

fn default_country_code() -> String {
    IdentityOptions::default().default_country_code
}

fn one() -> usize {
    1
}

/// `[models]`: the registry and, per task, the model name to use. A task
/// left out uses the promoted version of the model named after it
/// (`churn`, `response`, `uplift`, `clv`) when there is one; a named model
/// must exist.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelsConfig {
    /// A directory or URL (`s3://bucket/models`).
    pub registry: String,
    pub churn: Option<String>,
    pub response: Option<String>,
    pub uplift: Option<String>,
    pub clv: Option<String>,
}

/// `[output]`: where snapshots go and how many stay.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutputConfig {
    /// The local snapshot root (`engage serve --scores` reads it); with
    /// `publish_to`, the working copy pushed from.
    pub scores: PathBuf,
    /// An object-store URL (`s3://bucket/scores`) each new snapshot is
    /// pushed to and made current at (servers follow it with `engage serve
    /// --scores URL`).
    #[serde(default)]
    pub publish_to: Option<String>,
    /// Snapshots kept (the newest per as-of date; the current one always).
    #[serde(default = "default_keep")]
    pub keep: usize,
}

fn default_keep() -> usize {
    7
}

impl NightlyConfig {
    /// Reads and checks `path`; relative paths become relative to its
    /// directory. Errors name the file and the field.
    pub fn load(path: &Path) -> Result<NightlyConfig> {
        let text = std::fs::read_to_string(path).map_err(io(path))?;
        let mut config: NightlyConfig = toml::from_str(&text).map_err(|e| PipelineError::Config {
            field: path.display().to_string(),
            reason: e.to_string().trim_end().to_string(),
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        let relative = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        relative(&mut config.output.scores);
        if let Some(list) = config.data.erasure_list.as_mut() {
            relative(list);
        }
        if let Some(list) = config.audiences.do_not_contact.as_mut() {
            relative(list);
        }
        if let Some(dir) = config.engine.spill_dir.as_mut() {
            relative(dir);
        }
        let stage = config.engine.stage_dir.iter_mut();
        for root in [&mut config.data.root, &mut config.models.registry].into_iter().chain(stage) {
            if !root.contains("://") && Path::new(root.as_str()).is_relative() {
                *root = base.join(&*root).display().to_string();
            }
        }
        config.check().map_err(|e| match e {
            PipelineError::Config { field, reason } => {
                PipelineError::Config { field: format!("{} {field}", path.display()), reason }
            }
            other => other,
        })?;
        Ok(config)
    }

    /// Checks what TOML types cannot.
    pub fn check(&self) -> Result<()> {
        let bad = |field: &str, reason: String| PipelineError::Config { field: field.into(), reason };
        check_country_code(&self.data.default_country_code)
            .map_err(|r| bad("data.default_country_code", r))?;
        if self.data.max_customers_per_identifier == 0 {
            return Err(bad("data.max_customers_per_identifier", "must be at least 1".into()));
        }
        if self.data.response_funnel.is_empty() {
            return Err(bad("data.response_funnel", "needs at least one stage".into()));
        }
        self.data.lifecycle.check().map_err(|_| {
            bad(
                "data.lifecycle",
                format!("{:?}: need active_days <= at_risk_days <= dormant_days", self.data.lifecycle),
            )
        })?;
        if self.output.keep == 0 {
            return Err(bad("output.keep", "must be at least 1 (the current snapshot)".into()));
        }
        if self.clv.horizon_months == 0 || !(0.0..1.0).contains(&self.clv.discount_rate) {
            return Err(bad(
                "clv",
                format!(
                    "horizon_months = {}, discount_rate = {}: need at least one month and a monthly rate in [0, 1)",
                    self.clv.horizon_months, self.clv.discount_rate
                ),
            ));
        }
        self.picks()?;
        let stages = crate::registry::feature("lifecycle_stage").map(|f| f.categories).unwrap_or_default();
        self.segments.check(&stages)?;
        if !(0.0..1.0).contains(&self.audiences.universal_holdout) {
            return Err(bad(
                "audiences.universal_holdout",
                format!("{}: need a share in [0, 1)", self.audiences.universal_holdout),
            ));
        }
        for (i, c) in self.campaigns.iter().enumerate() {
            c.check(&format!("campaigns[{i}]"), &stages)?;
            if self.campaigns[..i].iter().any(|other| other.id == c.id) {
                return Err(bad(
                    &format!("campaigns[{i}].id"),
                    format!("`{}` is used by an earlier campaign", c.id),
                ));
            }
        }
        Ok(())
    }

    /// The models to score with: the named ones, else each task's promoted one.
    pub fn picks(&self) -> Result<Vec<ModelPick>> {
        let m = &self.models;
        let named = [&m.churn, &m.response, &m.uplift, &m.clv];
        ScoreTask::ALL
            .into_iter()
            .zip(named)
            .map(|(task, name)| match name {
                Some(name) => name.parse().map(ModelPick::Use).map_err(|reason| PipelineError::Config {
                    field: format!("models.{}", task.name()),
                    reason,
                }),
                None => Ok(ModelPick::IfPromoted(task)),
            })
            .collect()
    }

    /// The data source: `[data]` with the erasure list at `erasure_list`
    /// (the configured one, else the caller's default).
    pub fn source(&self, erasure_list: &Path) -> Result<DataSource> {
        Ok(DataSource {
            root: DataRoot::parse_with("[data] root", &self.data.root, &self.storage)?,
            identity: IdentityOptions {
                default_country_code: self.data.default_country_code.clone(),
                max_customers_per_identifier: self.data.max_customers_per_identifier,
            },
            erasure: ErasureList::load(erasure_list)?,
            lifecycle: self.data.lifecycle,
            response_funnel: self.data.response_funnel.clone(),
            engine: self.engine.clone(),
        })
    }
}

/// What a nightly run published.
#[derive(Debug, Clone)]
pub struct NightlyRun {
    pub scored: ScoreRun,
    /// The push to `[output] publish_to`, when configured.
    pub pushed: Option<Pushed>,
}

/// Runs the nightly job as of `as_of` (the caller resolves `--as-of`, the
/// config's `as_of` and today), then pushes the snapshot to `publish_to`.
pub async fn run(config: &NightlyConfig, source: DataSource, as_of: NaiveDate) -> Result<NightlyRun> {
    // A bad URL or store setting fails before hours of scoring.
    let remote = match &config.output.publish_to {
        Some(url) => Some(DataRoot::parse_with("[output] publish_to", url, &config.storage)?),
        None => None,
    };
    let scored = score(&ScoreOptions {
        command: "nightly",
        source,
        as_of,
        models: DataRoot::parse_with("[models] registry", &config.models.registry, &config.storage)?,
        picks: config.picks()?,
        clv: config.clv,
        segments: config.segments.clone(),
        out: config.output.scores.clone(),
        keep: Some(config.output.keep),
        campaigns: config.campaigns.clone(),
        audiences: config.audiences.clone(),
        measure: Some(MeasureWindow::default()),
        slice_rows: crate::scoring::SLICE_ROWS,
    })
    .await?;
    let pushed = match remote {
        Some(remote) => Some(publish::push(&config.output.scores, &remote, config.output.keep).await?),
        None => None,
    };
    Ok(NightlyRun { scored, pushed })
}

/// What `engage audience` selected and wrote.
#[derive(Debug, Clone)]
pub struct AudienceRun {
    pub summary: AudienceSummary,
    /// The snapshot selected from.
    pub snapshot_id: String,
    /// The contact list (`.parquet`, `.csv`) and, unless a dry run, the
    /// contact history files written.
    pub written: Vec<PathBuf>,
}

/// Selects the audience of `campaign_id` from the current snapshot (as of
/// its cutoff, due or not) into `out`, and records the contacts in the
/// data's contact history unless `dry_run`.
pub async fn audience(
    config: &NightlyConfig,
    source: DataSource,
    campaign_id: &str,
    out: &Path,
    dry_run: bool,
) -> Result<AudienceRun> {
    let Some((i, campaign)) = config.campaigns.iter().enumerate().find(|(_, c)| c.id == campaign_id) else {
        let known: Vec<&str> = config.campaigns.iter().map(|c| c.id.as_str()).collect();
        return Err(PipelineError::InvalidArgument {
            name: "--campaign",
            value: campaign_id.into(),
            reason: format!("not in the config; its campaigns: {}", known.join(", ")),
        });
    };
    let history = if dry_run { None } else { Some(audience::history_dirs(&source.root)?) };
    let do_not_contact = match &config.audiences.do_not_contact {
        Some(path) => audience::read_do_not_contact(path).await?,
        None => Default::default(),
    };
    let (dir, manifest) = snapshot::current(&config.output.scores)?;
    let as_of = NaiveDate::parse_from_str(&manifest.as_of, "%Y-%m-%d").map_err(|e| {
        PipelineError::InvalidArgument {
            name: "snapshot",
            value: manifest.snapshot_id.clone(),
            reason: format!("as_of `{}`: {e}", manifest.as_of),
        }
    })?;
    let features_file = dir.join(FEATURES_FILE);
    if !features_file.exists() {
        return Err(PipelineError::InvalidArgument {
            name: "snapshot",
            value: dir.display().to_string(),
            reason: format!("no {FEATURES_FILE}: written by an older engage; run `engage nightly` again"),
        });
    }
    let engine = Engine::open_source(&source).await?;
    audience::register_snapshot(&engine, &dir.join(snapshot::SCORES_FILE), &features_file).await?;
    let field = format!("campaigns[{i}]");
    let (summary, written) = audience::run(
        &engine,
        campaign,
        &field,
        &config.audiences,
        &do_not_contact,
        as_of,
        out,
        history.as_ref(),
    )
    .await?;
    Ok(AudienceRun { summary, snapshot_id: manifest.snapshot_id, written })
}

/// Measures every campaign in the contacts table as of `as_of` (responses
/// within `response_days` of each contact), per funnel stage, with costs
/// from the config's campaigns; writes `campaigns.json` and
/// `campaigns.html` into `out`.
pub async fn campaigns_report(
    config: &NightlyConfig,
    source: DataSource,
    as_of: NaiveDate,
    response_days: u32,
    holdout_days: u32,
    out: &Path,
) -> Result<CampaignsReport> {
    let funnel = source.response_funnel.clone();
    let mut engine = Engine::open_source(&source).await?;
    let window = MeasureWindow { response_days, holdout_days };
    let (results, holdout) =
        measure_campaigns(&mut engine, &funnel, &config.campaigns, &config.audiences, as_of, window).await?;
    let written =
        engage_models::report::write_campaigns(out, &results, holdout.as_ref(), &as_of.to_string())?;
    Ok(CampaignsReport { campaigns: results, universal_holdout: holdout, written })
}

/// How campaigns are measured: a response counts within `response_days`
/// of the contact; the universal holdout is compared over the
/// `holdout_days` before the cutoff.
#[derive(Debug, Clone, Copy)]
pub struct MeasureWindow {
    pub response_days: u32,
    pub holdout_days: u32,
}

impl Default for MeasureWindow {
    /// `engage campaigns report`'s defaults, which `engage nightly` uses.
    fn default() -> Self {
        MeasureWindow { response_days: 30, holdout_days: 90 }
    }
}

/// Every campaign in `engine`'s contacts table as of `as_of`, per stage of
/// the response `funnel`, with costs from `campaigns`; and the universal holdout when
/// `audiences` has one.
pub async fn measure_campaigns(
    engine: &mut Engine,
    funnel: &[String],
    campaigns: &[CampaignConfig],
    audiences: &AudienceSettings,
    as_of: NaiveDate,
    window: MeasureWindow,
) -> Result<(Vec<CampaignResult>, Option<HoldoutResult>)> {
    use datafusion::arrow::array::AsArray;
    use datafusion::arrow::compute::cast;
    use datafusion::arrow::datatypes::{DataType, Float64Type, Int64Type};
    let MeasureWindow { response_days, holdout_days } = window;
    let batches = engine.campaign_results(as_of, response_days).await?;
    // campaign -> (kind, offer, per group: [(responded, depth, customers, revenue)])
    type Rows = Vec<(bool, i64, u64, f64)>;
    let mut by_campaign: std::collections::BTreeMap<String, (Option<String>, Option<String>, Rows, Rows)> =
        Default::default();
    let text = |b: &datafusion::arrow::record_batch::RecordBatch, column: &str| {
        crate::frame::table_text(std::slice::from_ref(b), column, CAMPAIGN_RESULTS.path, "--features")
    };
    let int = |b: &datafusion::arrow::record_batch::RecordBatch, j: usize| {
        cast(b.column(j), &DataType::Int64).map_err(|e| crate::error::query(CAMPAIGN_RESULTS.path)(e.into()))
    };
    for b in &batches {
        let (ids, kinds, offers, groups) =
            (text(b, "campaign_id")?, text(b, "kind")?, text(b, "offer")?, text(b, "group")?);
        let responded = b.column(4).as_boolean();
        let (depth, customers) = (int(b, 5)?, int(b, 6)?);
        let (depth, customers) = (depth.as_primitive::<Int64Type>(), customers.as_primitive::<Int64Type>());
        let revenue = b.column(7).as_primitive::<Float64Type>();
        for i in 0..b.num_rows() {
            let entry = by_campaign
                .entry(ids[i].clone().unwrap_or_default())
                .or_insert_with(|| (kinds[i].clone(), offers[i].clone(), Vec::new(), Vec::new()));
            let row = (responded.value(i), depth.value(i), customers.value(i) as u64, revenue.value(i));
            match groups[i].as_deref() {
                Some("control") => entry.3.push(row),
                _ => entry.2.push(row),
            }
        }
    }
    let outcome = |rows: &Rows, reached: &dyn Fn(bool, i64) -> bool| GroupOutcome {
        customers: rows.iter().map(|r| r.2).sum(),
        responders: rows.iter().filter(|r| reached(r.0, r.1)).map(|r| r.2).sum(),
        revenue: rows.iter().map(|r| r.3).sum(),
    };
    let results: Vec<CampaignResult> = by_campaign
        .into_iter()
        .map(|(id, (kind, offer, treated, control))| {
            let mut stages = vec![(
                "any response".to_string(),
                outcome(&treated, &|r, _| r),
                outcome(&control, &|r, _| r),
            )];
            for (k, stage) in funnel.iter().enumerate() {
                let reached = move |_: bool, d: i64| d > k as i64;
                stages.push((stage.clone(), outcome(&treated, &reached), outcome(&control, &reached)));
            }
            let cost = campaigns.iter().find(|c| c.id == id).and_then(|c| c.cost_per_contact);
            CampaignResult::new(&id, kind, offer, stages, cost)
        })
        .collect();
    let share = audiences.universal_holdout;
    let holdout = if share > 0.0 {
        let since = as_of - chrono::Days::new(holdout_days as u64);
        let mut groups = [GroupOutcome { customers: 0, responders: 0, revenue: 0.0 }; 2];
        for b in &engine.purchases_between(since, as_of).await? {
            let ids =
                cast(b.column(0), &DataType::Utf8).map_err(|e| crate::error::query("holdout")(e.into()))?;
            let ids = ids.as_string::<i32>();
            let (bought, revenue) = (b.column(1).as_boolean(), b.column(2).as_primitive::<Float64Type>());
            for i in 0..b.num_rows() {
                let g = &mut groups[audiences.in_holdout(ids.value(i)) as usize];
                g.customers += 1;
                g.responders += bought.value(i) as u64;
                g.revenue += revenue.value(i);
            }
        }
        Some(HoldoutResult::new(share, &since.to_string(), groups[0], groups[1]))
    } else {
        None
    };
    Ok((results, holdout))
}

/// What `engage campaigns report` measured and wrote.
#[derive(Debug, Clone)]
pub struct CampaignsReport {
    pub campaigns: Vec<CampaignResult>,
    /// With `audiences.universal_holdout` configured.
    pub universal_holdout: Option<HoldoutResult>,
    pub written: Vec<PathBuf>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(text: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("engage.toml");
        std::fs::write(&path, text).unwrap();
        (dir, path)
    }

    #[test]
    fn the_example_config_loads_with_paths_beside_it() {
        let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../engage.example.toml");
        let (dir, path) = write(&std::fs::read_to_string(example).unwrap());
        let config = NightlyConfig::load(&path).unwrap();
        assert_eq!(config.output.scores, dir.path().join("target/engage-demo/scores"));
        assert_eq!(
            config.models.registry,
            dir.path().join("target/engage-demo/models").display().to_string()
        );
        assert_eq!(config.as_of, NaiveDate::from_ymd_opt(2026, 7, 1));
        assert!(config.data.root.starts_with(&dir.path().display().to_string()));
        assert_eq!(config.segments, SegmentConfig::default(), "the example spells out the defaults");
        assert_eq!(config.clv, ClvScoring::default());
        assert_eq!(config.output.keep, 7);
    }

    #[test]
    fn mistakes_name_the_file_and_field() {
        let base = "[data]\nroot = \"d\"\n[models]\nregistry = \"m\"\n[output]\nscores = \"s\"\n";
        let err = |extra: &str| {
            let (_dir, path) = write(&format!("{base}{extra}"));
            NightlyConfig::load(&path).unwrap_err().to_string()
        };
        let e = err("keep = 0\n");
        assert!(e.contains("engage.toml") && e.contains("output.keep"), "{e}");
        let e = err("[segments.risk]\nhigh = 2.0\n");
        assert!(e.contains("segments.risk"), "{e}");
        let e = err("[clv]\nhorizon_months = 0\n");
        assert!(e.contains("clv") && e.contains("horizon_months = 0"), "{e}");
        let e = err("colour = \"blue\"\n");
        assert!(e.contains("colour"), "{e}");
        let (_dir, path) = write("[data]\nroot = \"d\"\n[output]\nscores = \"s\"\n");
        let e = NightlyConfig::load(&path).unwrap_err().to_string();
        assert!(e.contains("models"), "{e}");
        let (_dir, path) = write(&base.replace("registry = \"m\"", "registry = \"m\"\nchurn = \"churn@\""));
        let e = NightlyConfig::load(&path).unwrap_err().to_string();
        assert!(e.contains("models.churn"), "{e}");
    }
}
