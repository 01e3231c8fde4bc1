//! Run reports: every job writes `run_report.json` next to its outputs
//! (inputs, per-rule rejects, identity, per-stage time and memory), and
//! `engage report show DIR` prints one.

use std::path::Path;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use chrono::{NaiveDate, Utc};

use crate::engine::{Engine, ResolvedCounts, ResolvedIdentity};
use crate::error::{PipelineError, Result, io};
use crate::identity::{IdentityQuality, IdentityStats};
use crate::ingest::TableCounts;

/// File name of the report inside a job's output directory.
pub const RUN_REPORT_FILE: &str = "run_report.json";

/// One stage of a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Stage {
    pub name: String,
    /// Wall-clock seconds.
    pub seconds: f64,
    /// Peak resident memory of the process so far, MiB (Linux; else absent).
    pub peak_rss_mib: Option<f64>,
}

/// Times consecutive stages.
#[derive(Debug)]
pub struct Stopwatch {
    stages: Vec<Stage>,
    last: Instant,
}

impl Stopwatch {
    pub fn start() -> Stopwatch {
        Stopwatch { stages: Vec::new(), last: Instant::now() }
    }

    /// Ends the current stage under `name` and starts the next.
    pub fn lap(&mut self, name: &str) {
        let now = Instant::now();
        let seconds = (now - self.last).as_secs_f64();
        self.stages.push(Stage { name: name.into(), seconds, peak_rss_mib: peak_rss_mib() });
        self.last = now;
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

/// What one run read, found, wrote and spent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunReport {
    /// The command (`features`, `identity`).
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
    /// Identity statistics of the identity the run used.
    pub identity: Option<IdentityStats>,
    /// How events were attributed.
    pub resolved: Option<ResolvedCounts>,
    /// Matching quality against ground truth, when the data has one.
    pub identity_quality: Option<IdentityQuality>,
    pub stages: Vec<Stage>,
    /// Files written.
    pub outputs: Vec<String>,
}

impl RunReport {
    /// The report of a finished run of `command` over `engine`'s inputs.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        command: &str,
        data: &Path,
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
            data: data.display().to_string(),
            inputs: engine.inputs.clone(),
            identity: Some(identity.stats.clone()),
            resolved: Some(identity.resolved.clone()),
            identity_quality,
            stages: clock.stages(),
            outputs,
        }
    }

    /// Writes `dir/run_report.json` atomically.
    pub fn write(&self, dir: &Path) -> Result<()> {
        let bytes = serde_json::to_vec_pretty(self).expect("report serialises");
        engage_models::snapshot::write_atomic(&dir.join(RUN_REPORT_FILE), &bytes)?;
        Ok(())
    }

    /// Reads `dir/run_report.json`.
    pub fn read(dir: &Path) -> Result<RunReport> {
        let path = dir.join(RUN_REPORT_FILE);
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
        line(format!(
            "{:<13} {:>5} {:>10} {:>12} {:>12} {:>9} {:>10}",
            "input", "files", "MiB", "rows", "accepted", "rejected", "duplicates"
        ));
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
        if let Some(q) = &self.identity_quality {
            line(format!(
                "against ground truth ({} identifiers): precision {:.4}, recall {:.4}",
                q.identifiers, q.precision, q.recall
            ));
        }
        line(String::new());
        line(format!("{:<12} {:>9} {:>14}", "stage", "seconds", "peak RSS MiB"));
        for s in &self.stages {
            let mem = s.peak_rss_mib.map(|m| format!("{m:.0}")).unwrap_or_else(|| "-".into());
            line(format!("{:<12} {:>9.2} {:>14}", s.name, s.seconds, mem));
        }
        line(String::new());
        for o in &self.outputs {
            line(format!("wrote {o}"));
        }
        out
    }
}
