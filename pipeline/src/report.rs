//! Run reports: every job writes `run_report.json` next to its outputs
//! (inputs, per-rule rejects, identity, per-stage time and memory), and
//! `engage report show DIR` prints one.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use chrono::{NaiveDate, Utc};

use crate::engine::{Engine, ResolvedCounts, ResolvedIdentity};
use crate::error::{PipelineError, Result, io};
use crate::identity::{IdentityQuality, IdentityStats};
use crate::ingest::TableCounts;
use crate::runtime::PoolUsage;

/// File name of the report inside a job's output directory.
pub use engage_models::snapshot::RUN_REPORT_FILE;

/// One stage of a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Stage {
    pub name: String,
    /// Wall-clock seconds.
    pub seconds: f64,
    /// Peak resident memory of the process so far, MiB (Linux; else absent).
    pub peak_rss_mib: Option<f64>,
    /// The most the engine's memory pool held during this stage, MiB: its
    /// operators' reservations (what `--memory-limit` bounds) and the
    /// driver's counted sets (the identity graph, scoring's per-customer
    /// numbers). The rest of the RSS is what the pool does not see.
    /// Absent for stages before the engine was opened.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool_peak_mib: Option<f64>,
}

/// Times consecutive stages.
#[derive(Debug)]
pub struct Stopwatch {
    stages: Vec<Stage>,
    last: Instant,
    pool: Option<Arc<PoolUsage>>,
}

impl Stopwatch {
    pub fn start() -> Stopwatch {
        Stopwatch { stages: Vec::new(), last: Instant::now(), pool: None }
    }

    /// From the next lap on, each stage also records the most `engine`'s
    /// memory pool held during it.
    pub fn watch(&mut self, engine: &Engine) {
        self.pool = engine.pool_usage();
    }

    /// Ends the current stage under `name` and starts the next.
    pub fn lap(&mut self, name: &str) {
        let now = Instant::now();
        let seconds = (now - self.last).as_secs_f64();
        let pool_peak_mib = self.pool.as_ref().map(|p| p.take_peak() as f64 / MIB);
        self.stages.push(Stage { name: name.into(), seconds, peak_rss_mib: peak_rss_mib(), pool_peak_mib });
        self.last = now;
    }

    /// The stage lapped last.
    pub fn last(&self) -> Option<&Stage> {
        self.stages.last()
    }

    /// The stages so far.
    pub fn stages(&self) -> Vec<Stage> {
        self.stages.clone()
    }
}

/// Peak resident set size of this process in MiB (`VmHWM`), on Linux.
pub fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

const MIB: f64 = (1u64 << 20) as f64;

/// What one run read, found, wrote and spent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunReport {
    /// The command (`features`, `identity`, `train churn`, `score`).
    pub command: String,
    pub engage_version: String,
    /// UTC time the run finished (RFC 3339).
    pub finished_at: String,
    /// Feature cutoff, where the command has one.
    pub as_of: Option<String>,
    /// The data root.
    pub data: String,
    /// Per input table: location, files, bytes, rows read, accepted, rejected per rule.
    pub inputs: Vec<TableCounts>,
    /// The checked-inputs cache entry the run made or used (`--checked-inputs`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checked_inputs: Option<CacheUse>,
    /// Identity statistics of the identity the run used.
    pub identity: Option<IdentityStats>,
    /// How events were attributed.
    pub resolved: Option<ResolvedCounts>,
    /// Matching quality against ground truth, when the data has one.
    pub identity_quality: Option<IdentityQuality>,
    pub stages: Vec<Stage>,
    /// Files written.
    pub outputs: Vec<String>,
    /// The erasure list the run applied (counts only).
    #[serde(default)]
    pub erasure: Option<ErasureSummary>,
    /// The model a training run wrote.
    #[serde(default)]
    pub model: Option<ModelSummary>,
    /// What a scoring run published.
    #[serde(default)]
    pub snapshot: Option<ScoreSummary>,
    /// The audiences a scoring run selected.
    #[serde(default)]
    pub audiences: Vec<crate::audience::AudienceSummary>,
    /// What the user should know although the run succeeded (a model fit
    /// that stopped at its iteration limit); `engage` prints each on stderr.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

/// How a run used the checked-inputs cache (`--checked-inputs`, docs/data-contract.md).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CacheUse {
    /// The entry's directory.
    pub entry: String,
    /// Whether the run made it (a pass over every row), or used one an
    /// earlier run made.
    pub made: bool,
    /// Tables whose files changed since the entry was made: checked again
    /// by this run (never the identity graph's: those make a new entry).
    pub checked_again: Vec<String>,
}

/// The erasure list a run applied.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErasureSummary {
    pub list: Option<String>,
    /// Identifiers on the list.
    pub identifiers: u64,
}

/// The model a training run wrote, with its validation metrics.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelSummary {
    pub model_version: String,
    pub train_rows: u64,
    pub valid_rows: u64,
    pub metrics: engage_models::Metrics,
}

impl ModelSummary {
    /// The summary of a trained classifier.
    pub fn of(artifact: &engage_models::ModelArtifact) -> ModelSummary {
        ModelSummary {
            model_version: artifact.model_version.clone(),
            train_rows: artifact.train_rows as u64,
            valid_rows: artifact.valid_rows as u64,
            metrics: artifact.metrics.clone(),
        }
    }
}

/// A published score snapshot: its models, the distribution of each
/// score and the count of each segment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScoreSummary {
    pub snapshot_id: String,
    pub customers: u64,
    /// Task -> model version.
    pub models: BTreeMap<String, String>,
    pub scores: Vec<ScoreStats>,
    /// The CLV at or above which a customer is in the high and the medium
    /// value tier (absent without a CLV model).
    pub value_tier_limits: Option<[f64; 2]>,
    /// Segment column -> value (`none` when missing) -> customers.
    pub segments: BTreeMap<String, BTreeMap<String, u64>>,
}

/// The distribution of one score column over the customers that have it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScoreStats {
    pub score: String,
    /// Customers with a value.
    pub customers: u64,
    pub mean: f64,
    /// 10th, 50th and 90th percentiles.
    pub p10: f64,
    pub p50: f64,
    pub p90: f64,
}

impl ScoreStats {
    pub fn of(score: &str, values: &[f64]) -> ScoreStats {
        let mut sorted = values.to_vec();
        sorted.sort_by(f64::total_cmp);
        let q = |f: f64| {
            if sorted.is_empty() {
                f64::NAN
            } else {
                sorted[((sorted.len() - 1) as f64 * f).round() as usize]
            }
        };
        ScoreStats {
            score: score.into(),
            customers: values.len() as u64,
            mean: values.iter().sum::<f64>() / values.len().max(1) as f64,
            p10: q(0.1),
            p50: q(0.5),
            p90: q(0.9),
        }
    }
}

impl RunReport {
    /// The report of a finished run of `command` over `engine`'s inputs.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        command: &str,
        as_of: Option<NaiveDate>,
        engine: &Engine,
        identity: &ResolvedIdentity,
        identity_quality: Option<IdentityQuality>,
        clock: &Stopwatch,
        outputs: Vec<String>,
    ) -> RunReport {
        RunReport {
            command: command.into(),
            engage_version: env!("CARGO_PKG_VERSION").into(),
            finished_at: Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            as_of: as_of.map(|d| d.to_string()),
            data: engine.source().root.to_string(),
            inputs: engine.inputs.clone(),
            checked_inputs: engine.cache_use(),
            identity: Some(identity.stats.clone()),
            resolved: Some(identity.resolved.clone()),
            identity_quality,
            stages: clock.stages(),
            outputs,
            erasure: (!engine.source().erasure.is_empty()).then(|| ErasureSummary {
                list: engine.source().erasure.path.as_ref().map(|p| p.display().to_string()),
                identifiers: engine.source().erasure.len() as u64,
            }),
            model: None,
            snapshot: None,
            audiences: Vec::new(),
            warnings: Vec::new(),
        }
    }

    /// The report of a run that read one file instead of the contract
    /// tables (training on a feature table): no input counts or identity.
    pub fn for_file(command: &str, file: &Path, clock: &Stopwatch, outputs: Vec<String>) -> RunReport {
        RunReport {
            command: command.into(),
            engage_version: env!("CARGO_PKG_VERSION").into(),
            finished_at: Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            as_of: None,
            data: file.display().to_string(),
            inputs: Vec::new(),
            checked_inputs: None,
            identity: None,
            resolved: None,
            identity_quality: None,
            stages: clock.stages(),
            outputs,
            erasure: None,
            model: None,
            snapshot: None,
            audiences: Vec::new(),
            warnings: Vec::new(),
        }
    }

    /// Writes `dir/run_report.json` atomically.
    pub fn write(&self, dir: &Path) -> Result<()> {
        self.write_as(&dir.join(RUN_REPORT_FILE))
    }

    /// Writes the report to `path` atomically.
    pub fn write_as(&self, path: &Path) -> Result<()> {
        let bytes = serde_json::to_vec_pretty(self).expect("report serialises");
        engage_models::snapshot::write_atomic(path, &bytes)?;
        Ok(())
    }

    /// Reads `run_report.json` in the directory `at`, or the report file `at`.
    pub fn read(at: &Path) -> Result<RunReport> {
        let path = if at.is_dir() { at.join(RUN_REPORT_FILE) } else { at.to_path_buf() };
        let bytes = std::fs::read(&path).map_err(io(&path))?;
        serde_json::from_slice(&bytes).map_err(|e| PipelineError::InvalidArgument {
            name: "report",
            value: path.display().to_string(),
            reason: format!("not an engage run report: {e}"),
        })
    }

    /// The report as readable text.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let mut line = |s: String| {
            out.push_str(&s);
            out.push('\n');
        };
        line(format!(
            "engage {} {} (engage {}), finished {}",
            self.command,
            self.as_of.as_deref().map(|d| format!("as of {d}")).unwrap_or_default(),
            self.engage_version,
            self.finished_at
        ));
        line(format!("data: {}", self.data));
        line(String::new());
        if !self.inputs.is_empty() {
            line(format!(
                "{:<13} {:>5} {:>10} {:>12} {:>12} {:>9} {:>10}",
                "input", "files", "MiB", "rows", "accepted", "rejected", "duplicates"
            ));
        }
        for t in &self.inputs {
            line(format!(
                "{:<13} {:>5} {:>10.1} {:>12} {:>12} {:>9} {:>10}",
                t.table,
                t.files,
                t.bytes as f64 / 1_048_576.0,
                t.rows,
                t.accepted,
                t.rejected,
                t.duplicates
            ));
            for (rule, n) in &t.rejected_by_rule {
                line(format!("{:<13}   rejected {n} x {rule}", ""));
            }
        }
        if let Some(c) = &self.checked_inputs {
            let how = match (c.made, c.checked_again.is_empty()) {
                (true, _) => "made by this run".to_string(),
                (false, true) => "read: no row checked again".to_string(),
                (false, false) => format!("read; checked again: {}", c.checked_again.join(", ")),
            };
            line(format!("checked inputs: {} ({how})", c.entry));
        }
        if let Some(id) = &self.identity {
            line(String::new());
            line(format!(
                "identity: {} identifiers -> {} customers ({} CRM, {} anonymous); {} shared flagged, {} unlinked, {} CRM merges",
                id.identifiers,
                id.components,
                id.crm_customers,
                id.anonymous,
                id.shared_identifiers,
                id.unlinked_identifiers,
                id.crm_merges
            ));
        }
        if let Some(r) = &self.resolved {
            line(format!(
                "events attributed to CRM customers: {} transactions, {} interactions",
                r.transactions, r.interactions
            ));
            if r.unattributed_transactions + r.unattributed_interactions > 0 {
                line(format!(
                    "events without a usable identifier (in no customer's features): {} transactions, {} interactions",
                    r.unattributed_transactions, r.unattributed_interactions
                ));
            }
        }
        if let Some(r) = &self.resolved
            && r.erased_transactions + r.erased_interactions > 0
        {
            line(format!(
                "left out for the erasure list: {} transactions, {} interactions",
                r.erased_transactions, r.erased_interactions
            ));
        }
        if let Some(e) = &self.erasure {
            let erased = self.identity.as_ref().map_or(0, |i| i.erased_customers);
            line(format!(
                "erasure list: {} identifiers; {} customers in this data left out",
                e.identifiers, erased
            ));
        }
        if let Some(q) = &self.identity_quality {
            line(format!(
                "against ground truth ({} identifiers): precision {:.4}, recall {:.4}",
                q.identifiers, q.precision, q.recall
            ));
        }
        if let Some(m) = &self.model {
            line(String::new());
            line(format!(
                "model {}: {} train / {} validation rows, churn rate {:.3}",
                m.model_version, m.train_rows, m.valid_rows, m.metrics.positive_rate
            ));
            line(format!(
                "validation: ROC AUC {:.3}  log loss {:.3}  Brier {:.3}  top-decile lift {:.2}",
                m.metrics.roc_auc, m.metrics.log_loss, m.metrics.brier, m.metrics.top_decile_lift
            ));
        }
        if let Some(s) = &self.snapshot {
            line(String::new());
            let models: Vec<String> = s.models.iter().map(|(t, v)| format!("{t} {v}")).collect();
            line(format!(
                "snapshot {} of {} customers scored with {}",
                s.snapshot_id,
                s.customers,
                models.join(", ")
            ));
            for st in &s.scores {
                line(format!(
                    "{} mean {:.3}, p10 {:.3}, median {:.3}, p90 {:.3} ({} customers)",
                    st.score.replace('_', " "),
                    st.mean,
                    st.p10,
                    st.p50,
                    st.p90,
                    st.customers
                ));
            }
            if let Some([high, medium]) = s.value_tier_limits {
                line(format!("value tiers: high from CLV {high:.2}, medium from {medium:.2}"));
            }
            for (column, counts) in &s.segments {
                let counts: Vec<String> = counts.iter().map(|(v, n)| format!("{v} {n}")).collect();
                line(format!("{}: {}", column.replace('_', " "), counts.join(", ")));
            }
        }
        for a in &self.audiences {
            line(String::new());
            a.lines().into_iter().for_each(&mut line);
        }
        line(String::new());
        let w = self.stages.iter().map(|s| s.name.len()).max().unwrap_or(0).max(14);
        line(format!("{:<w$} {:>9} {:>14} {:>15}", "stage", "seconds", "peak RSS MiB", "engine pool MiB"));
        let mib = |m: Option<f64>| m.map(|m| format!("{m:.0}")).unwrap_or_else(|| "-".into());
        for s in &self.stages {
            let (rss, pool) = (mib(s.peak_rss_mib), mib(s.pool_peak_mib));
            line(format!("{:<w$} {:>9.2} {:>14} {:>15}", s.name, s.seconds, rss, pool));
        }
        line(String::new());
        for o in &self.outputs {
            line(format!("wrote {o}"));
        }
        out
    }
}
