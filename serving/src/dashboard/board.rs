//! What the dashboard shows, computed once when a snapshot loads (never per
//! request): stage counts over the retained snapshots and the flows into
//! the current one, risk and value, score drift, campaign results, the
//! scoring models, data quality, and per customer the stage history and
//! contact history.
//!
//! The current snapshot's own dashboard files (`campaigns/campaigns.json`,
//! `contacts.parquet`, `models/<task>/*.json`, `run_report.json`) are
//! checked like its scores: a malformed one refuses the snapshot. Older
//! snapshots only add history; one that cannot be read (pruned while
//! loading, written by an older engage) becomes a note on the page.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use arrow::array::{Array, AsArray};
use arrow::datatypes::{DataType, Date32Type, Float64Type, Int64Type};
use engage_models::lift::{CampaignResult, HoldoutResult};
use engage_models::registry::{META_FILE, ModelMeta};
use engage_models::report::{CAMPAIGNS_JSON, METRICS_FILE};
use engage_models::snapshot::{
    CAMPAIGNS_DIR, CONTACTS_FILE, MODELS_DIR, RUN_REPORT_FILE, SCORES_FILE, SNAPSHOTS_DIR, open, superseded,
};
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use serde::Deserialize;

use crate::snapshot::{column, read_parquet, text};
use crate::{ScoreService, ServeError};

/// Lifecycle stages in the order of a customer's life (docs/features.md);
/// `none` last.
pub const STAGES: [&str; 8] =
    ["prospect", "new", "active", "reactivated", "at_risk", "dormant", "churned", "none"];
/// Value tiers and risk bands, best first; `none` without the model.
pub const TIERS: [&str; 4] = ["high", "medium", "low", "none"];
/// 1970-01-01 in days from 0001-01-01 (chrono's count).
const UNIX_EPOCH_DAY: i32 = 719_163;
/// Equal-width bins of a probability, for the distribution and drift charts.
pub const BINS: usize = 10;

/// Customers per lifecycle stage in one snapshot.
#[derive(Debug, Clone)]
pub struct StageCounts {
    pub snapshot_id: String,
    pub as_of: String,
    /// [`STAGES`] order.
    pub counts: [u64; STAGES.len()],
}

/// Customers by stage in the previous snapshot (rows) and in the current
/// one (columns); row and column [`STAGES`]`.len()` are "not scored" then
/// or now.
#[derive(Debug, Clone)]
pub struct Flows {
    pub from_as_of: String,
    pub cells: [[u64; STAGES.len() + 1]; STAGES.len() + 1],
}

/// One cell of the risk × value matrix.
#[derive(Debug, Clone, Copy, Default)]
pub struct Cell {
    pub customers: u64,
    /// Sum of predicted CLV.
    pub clv: f64,
    /// Sum of churn probability × CLV: the value expected to leave.
    pub at_risk: f64,
}

/// Risk and value of the current snapshot's customers.
#[derive(Debug, Clone)]
pub struct RiskValue {
    /// Customers with a churn probability, per [`BINS`] bin.
    pub churn: Option<[u64; BINS]>,
    /// Customers per value tier ([`TIERS`] order).
    pub tiers: [u64; TIERS.len()],
    /// `[risk band][value tier]`, [`TIERS`] order both.
    pub matrix: [[Cell; TIERS.len()]; TIERS.len()],
}

/// A score's distribution in the previous and the current snapshot.
#[derive(Debug, Clone)]
pub struct Drift {
    pub score: &'static str,
    pub from_as_of: String,
    /// Share of customers per bin: (previous, current).
    pub shares: Vec<(f64, f64)>,
    /// Population stability index (0.1 to 0.25: moderate shift; above
    /// 0.25: large).
    pub psi: f64,
}

/// `campaigns/campaigns.json`, as `engage campaigns report` writes it.
#[derive(Debug, Clone, Deserialize)]
pub struct Campaigns {
    pub as_of: String,
    pub campaigns: Vec<CampaignResult>,
    pub universal_holdout: Option<HoldoutResult>,
}

/// A model the snapshot was scored with.
#[derive(Debug, Clone)]
pub struct ModelCard {
    pub task: String,
    pub meta: ModelMeta,
    /// `metrics.json` from its registry directory (classifiers: metrics and
    /// curves).
    pub metrics: Option<serde_json::Value>,
}

/// One input table's contract counts in the run report.
#[derive(Debug, Clone, Deserialize)]
pub struct InputCounts {
    pub table: String,
    #[serde(default)]
    pub location: Option<String>,
    pub rows: u64,
    pub accepted: u64,
    pub rejected: u64,
    #[serde(default)]
    pub duplicates: u64,
    pub rejected_by_rule: BTreeMap<String, u64>,
}

/// What the dashboard reads of the run report.
#[derive(Debug, Clone, Deserialize)]
pub struct Quality {
    pub finished_at: String,
    pub inputs: Vec<InputCounts>,
    /// Identity statistics, by name.
    pub identity: Option<BTreeMap<String, serde_json::Value>>,
    /// Events attributed to customers, by name.
    pub resolved: Option<BTreeMap<String, serde_json::Value>>,
}

/// One campaign contact on the customer page.
#[derive(Debug, Clone, PartialEq)]
pub struct Contact<'a> {
    pub campaign_id: &'a str,
    pub group: &'a str,
    pub channel: Option<&'a str>,
    pub contacted_on: chrono::NaiveDate,
    pub responses: u32,
    pub deepest_stage: Option<&'a str>,
    pub revenue: f64,
}

/// A year of contacts of every customer, held compactly (40 bytes a
/// contact): rows sorted by customer row, text interned.
#[derive(Debug, Default)]
struct Contacts {
    rows: Vec<ContactRow>,
    strings: Vec<Box<str>>,
}

const _: () = assert!(std::mem::size_of::<ContactRow>() == 40);

#[derive(Debug, Clone, Copy)]
struct ContactRow {
    customer: u32,
    /// Days since 1970-01-01.
    day: i32,
    responses: u32,
    /// Indices into `strings`; `u32::MAX` for none.
    campaign: u32,
    group: u32,
    channel: u32,
    stage: u32,
    revenue: f64,
}

/// Everything the dashboard pages show of one snapshot.
#[derive(Debug, Default)]
pub struct Board {
    /// Retained snapshots, oldest first, the current one last.
    pub history: Vec<StageCounts>,
    pub flows: Option<Flows>,
    pub risk: Option<RiskValue>,
    pub drift: Vec<Drift>,
    pub campaigns: Option<Campaigns>,
    pub models: Vec<ModelCard>,
    pub quality: Option<Quality>,
    /// What could not be shown, and why.
    pub notes: Vec<String>,
    /// Per earlier snapshot (oldest first): its as-of date and each
    /// current customer's stage then ([`STAGES`] index; `u8::MAX`: not
    /// scored), by current row.
    trail: Vec<(String, Vec<u8>)>,
    /// Contacts by customer row, newest first.
    contacts: Contacts,
}

fn stage_index(stage: Option<&str>) -> u8 {
    let stage = stage.unwrap_or("none");
    STAGES.iter().position(|s| *s == stage).unwrap_or(STAGES.len() - 1) as u8
}

fn tier_index(tier: Option<&str>) -> usize {
    let tier = tier.unwrap_or("none");
    TIERS.iter().position(|s| *s == tier).unwrap_or(TIERS.len() - 1)
}

fn bin(p: f64) -> usize {
    ((p * BINS as f64) as usize).min(BINS - 1)
}

/// Shares per bin of the finite values in [0, 1].
fn shares(values: &[f64]) -> Option<Vec<f64>> {
    let mut counts = [0u64; BINS];
    for v in values.iter().filter(|v| v.is_finite()) {
        counts[bin(*v)] += 1;
    }
    let total: u64 = counts.iter().sum();
    (total > 0).then(|| counts.iter().map(|c| *c as f64 / total as f64).collect())
}

/// The population stability index of `current` against `previous` shares
/// (empty bins count as 0.0001, the usual floor).
pub fn psi(previous: &[f64], current: &[f64]) -> f64 {
    previous
        .iter()
        .zip(current)
        .map(|(p, c)| {
            let (p, c) = (p.max(1e-4), c.max(1e-4));
            (c - p) * (c / p).ln()
        })
        .sum()
}

/// An earlier snapshot's columns the board needs.
struct Earlier {
    id: String,
    as_of: String,
    ids: Vec<String>,
    stages: Vec<Option<String>>,
    scores: BTreeMap<&'static str, Vec<f64>>,
}

/// The scores whose drift the board measures.
const DRIFTING: [&str; 2] = ["churn_probability", "response_probability"];

fn read_earlier(root: &Path, id: &str) -> Result<Earlier, ServeError> {
    let (dir, manifest) = open(root, id)?;
    let path = dir.join(SCORES_FILE);
    let shown = path.display().to_string();
    let parquet_err = |source| ServeError::Parquet { path: shown.clone(), source };
    let file = std::fs::File::open(&path)
        .map_err(|source| engage_models::ModelError::Io { path: shown.clone(), source })?;
    let builder = ParquetRecordBatchReaderBuilder::try_new(file).map_err(parquet_err)?;
    let wanted = ["customer_id", "lifecycle_stage"].into_iter().chain(DRIFTING);
    let mask = ProjectionMask::columns(builder.parquet_schema(), wanted);
    let reader = builder.with_projection(mask).build().map_err(parquet_err)?;
    let mut earlier = Earlier {
        id: id.to_string(),
        as_of: manifest.as_of,
        ids: Vec::new(),
        stages: Vec::new(),
        scores: BTreeMap::new(),
    };
    for batch in reader {
        let batch = batch.map_err(|e| parquet_err(e.into()))?;
        let ids = text(&batch, &path, "customer_id", true)?;
        earlier.ids.extend(ids.as_string::<i32>().iter().map(|v| v.unwrap_or_default().to_string()));
        let stages = text(&batch, &path, "lifecycle_stage", false)?;
        earlier.stages.extend(stages.as_string::<i32>().iter().map(|v| v.map(str::to_string)));
        for score in DRIFTING {
            if batch.column_by_name(score).is_some() {
                let col = column(&batch, &path, score, &DataType::Float64)?;
                let col = col.as_primitive::<Float64Type>();
                let values = earlier.scores.entry(score).or_default();
                values.extend((0..col.len()).map(|i| if col.is_valid(i) { col.value(i) } else { f64::NAN }));
            }
        }
    }
    Ok(earlier)
}

/// The earlier snapshots under `root` (ids before `current`), without
/// those a later run of the same as-of date superseded (the retention
/// rule), oldest first.
fn earlier_ids(root: &Path, current: &str) -> Vec<String> {
    let ids: Vec<String> = std::fs::read_dir(root.join(SNAPSHOTS_DIR))
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.file_name().to_string_lossy().to_string())
                .filter(|id| !id.starts_with('.'))
                .collect()
        })
        .unwrap_or_default();
    let superseded = superseded(&ids, &[], usize::MAX);
    let mut earlier: Vec<String> =
        ids.into_iter().filter(|id| id.as_str() < current && !superseded.contains(id)).collect();
    earlier.sort();
    earlier
}

impl Board {
    /// The board of `svc`, loaded from snapshot directory `dir`.
    pub fn build(svc: &ScoreService, dir: &Path) -> Result<Board, ServeError> {
        let mut board = Board::default();
        let manifest = svc.manifest();
        let stages = svc.label_values("lifecycle_stage");
        let current: Vec<u8> = stages.iter().map(|s| stage_index(*s)).collect();
        let mut counts = [0u64; STAGES.len()];
        for s in &current {
            counts[*s as usize] += 1;
        }

        let mut last: Option<Earlier> = None;
        // A snapshot directory is `<root>/snapshots/<id>`.
        let root = dir.parent().and_then(Path::parent).unwrap_or(dir);
        for id in earlier_ids(root, &manifest.snapshot_id) {
            let earlier = match read_earlier(root, &id) {
                Ok(e) => e,
                Err(e) => {
                    board.notes.push(format!(
                        "snapshot {id} left out of the history: {}",
                        crate::state::error_chain(&e)
                    ));
                    continue;
                }
            };
            let mut then = [0u64; STAGES.len()];
            let mut trail = vec![u8::MAX; svc.len()];
            for (cid, stage) in earlier.ids.iter().zip(&earlier.stages) {
                let s = stage_index(stage.as_deref());
                then[s as usize] += 1;
                if let Some(row) = svc.row_of(cid) {
                    trail[row as usize] = s;
                }
            }
            board.history.push(StageCounts {
                snapshot_id: earlier.id.clone(),
                as_of: earlier.as_of.clone(),
                counts: then,
            });
            board.trail.push((earlier.as_of.clone(), trail));
            last = Some(earlier);
        }
        board.history.push(StageCounts {
            snapshot_id: manifest.snapshot_id.clone(),
            as_of: manifest.as_of.clone(),
            counts,
        });

        if let Some(earlier) = last {
            let n = STAGES.len();
            let mut cells = [[0u64; STAGES.len() + 1]; STAGES.len() + 1];
            let (_, trail) = board.trail.last().expect("the earlier snapshot's trail");
            for (row, now) in current.iter().enumerate() {
                let then = trail[row];
                cells[if then == u8::MAX { n } else { then as usize }][*now as usize] += 1;
            }
            let mut gone = [0u64; STAGES.len()];
            for (cid, stage) in earlier.ids.iter().zip(&earlier.stages) {
                if svc.row_of(cid).is_none() {
                    gone[stage_index(stage.as_deref()) as usize] += 1;
                }
            }
            for (s, g) in gone.iter().enumerate() {
                cells[s][n] = *g;
            }
            board.flows = Some(Flows { from_as_of: earlier.as_of.clone(), cells });
            for score in DRIFTING {
                let now = svc.score_values(score);
                if let (Some(before), Some(after)) =
                    (earlier.scores.get(score).and_then(|v| shares(v)), shares(&now))
                {
                    board.drift.push(Drift {
                        score,
                        from_as_of: earlier.as_of.clone(),
                        psi: psi(&before, &after),
                        shares: before.into_iter().zip(after).collect(),
                    });
                }
            }
        }

        board.risk = Some(risk_value(svc));
        board.campaigns = read_campaigns(dir)?;
        board.models = read_models(dir)?;
        board.quality = read_quality(dir)?;
        board.contacts = read_contacts(svc, dir)?;
        Ok(board)
    }

    /// The customer in `row`: their stage at each earlier snapshot (as-of
    /// date, stage; `None`: not scored then), oldest first.
    pub fn stage_trail(&self, row: u32) -> Vec<(&str, Option<&'static str>)> {
        self.trail
            .iter()
            .map(|(as_of, stages)| {
                let s = stages[row as usize];
                (as_of.as_str(), (s != u8::MAX).then(|| STAGES[s as usize]))
            })
            .collect()
    }

    /// The customer in `row`'s contacts in the last year, newest first.
    pub fn contacts(&self, row: u32) -> Vec<Contact<'_>> {
        let c = &self.contacts;
        let start = c.rows.partition_point(|r| r.customer < row);
        let end = c.rows.partition_point(|r| r.customer <= row);
        let text = |i: u32| (i != u32::MAX).then(|| &*c.strings[i as usize]);
        c.rows[start..end]
            .iter()
            .map(|r| Contact {
                campaign_id: text(r.campaign).unwrap_or_default(),
                group: text(r.group).unwrap_or_default(),
                channel: text(r.channel),
                contacted_on: chrono::NaiveDate::from_num_days_from_ce_opt(r.day + UNIX_EPOCH_DAY)
                    .expect("a date checked at load"),
                responses: r.responses,
                deepest_stage: text(r.stage),
                revenue: r.revenue,
            })
            .collect()
    }
}

/// Churn distribution, value tiers and the risk × value matrix.
fn risk_value(svc: &ScoreService) -> RiskValue {
    let churn = svc.score_values("churn_probability");
    let clv = svc.score_values("clv");
    let (tiers, bands) = (svc.label_values("value_tier"), svc.label_values("risk_band"));
    let mut bins = [0u64; BINS];
    for p in churn.iter().filter(|p| p.is_finite()) {
        bins[bin(*p)] += 1;
    }
    let mut out = RiskValue {
        churn: churn.iter().any(|p| p.is_finite()).then_some(bins),
        tiers: [0; TIERS.len()],
        matrix: [[Cell::default(); TIERS.len()]; TIERS.len()],
    };
    for i in 0..svc.len() {
        let (t, b) = (tier_index(tiers[i]), tier_index(bands[i]));
        out.tiers[t] += 1;
        let cell = &mut out.matrix[b][t];
        cell.customers += 1;
        if clv[i].is_finite() {
            cell.clv += clv[i];
            if churn[i].is_finite() {
                cell.at_risk += churn[i] * clv[i];
            }
        }
    }
    out
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<Option<T>, ServeError> {
    let shown = path.display().to_string();
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|source| engage_models::ModelError::Parse { path: shown, source }.into()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(engage_models::ModelError::Io { path: shown, source }.into()),
    }
}

fn read_campaigns(dir: &Path) -> Result<Option<Campaigns>, ServeError> {
    read_json(&dir.join(CAMPAIGNS_DIR).join(CAMPAIGNS_JSON))
}

fn read_quality(dir: &Path) -> Result<Option<Quality>, ServeError> {
    read_json(&dir.join(RUN_REPORT_FILE))
}

fn read_models(dir: &Path) -> Result<Vec<ModelCard>, ServeError> {
    let dir = dir.join(MODELS_DIR);
    let mut tasks: Vec<String> = match std::fs::read_dir(&dir) {
        Ok(entries) => entries.flatten().map(|e| e.file_name().to_string_lossy().to_string()).collect(),
        Err(_) => return Ok(Vec::new()),
    };
    tasks.sort();
    let mut cards = Vec::new();
    for task in tasks {
        let path = dir.join(&task).join(META_FILE);
        let meta: ModelMeta = read_json(&path)?.ok_or_else(|| ServeError::Schema {
            path: path.display().to_string(),
            reason: "missing: every model directory holds its meta.json".into(),
        })?;
        let metrics = read_json(&dir.join(&task).join(METRICS_FILE))?;
        cards.push(ModelCard { task, meta, metrics });
    }
    Ok(cards)
}

/// `contacts.parquet`, sorted by customer row (contacts of customers the
/// snapshot does not score are left out), each customer's newest first.
fn read_contacts(svc: &ScoreService, dir: &Path) -> Result<Contacts, ServeError> {
    let path = dir.join(CONTACTS_FILE);
    let mut out = Contacts::default();
    if !path.exists() {
        return Ok(out);
    }
    let mut index: HashMap<String, u32> = HashMap::new();
    let mut intern = |v: &str| -> u32 {
        *index.entry(v.to_string()).or_insert_with(|| {
            out.strings.push(v.into());
            out.strings.len() as u32 - 1
        })
    };
    for batch in read_parquet(&path)? {
        let batch = batch?;
        let ids = text(&batch, &path, "customer_id", true)?;
        let campaigns = text(&batch, &path, "campaign_id", true)?;
        let groups = text(&batch, &path, "group", true)?;
        let channels = text(&batch, &path, "channel", false)?;
        let stages = text(&batch, &path, "deepest_stage", false)?;
        let dates = column(&batch, &path, "contacted_on", &DataType::Date32)?;
        let responses = column(&batch, &path, "responses", &DataType::Int64)?;
        let revenue = column(&batch, &path, "revenue", &DataType::Float64)?;
        let (ids, campaigns, groups, channels, stages) = (
            ids.as_string::<i32>(),
            campaigns.as_string::<i32>(),
            groups.as_string::<i32>(),
            channels.as_string::<i32>(),
            stages.as_string::<i32>(),
        );
        let (dates, responses, revenue) = (
            dates.as_primitive::<Date32Type>(),
            responses.as_primitive::<Int64Type>(),
            revenue.as_primitive::<Float64Type>(),
        );
        for i in 0..batch.num_rows() {
            let Some(customer) = svc.row_of(ids.value(i)) else { continue };
            if dates.is_null(i) || dates.value_as_date(i).is_none() {
                return Err(ServeError::Schema {
                    path: path.display().to_string(),
                    reason: format!("row {i}: `contacted_on` is null or out of range"),
                });
            }
            let row = ContactRow {
                customer,
                day: dates.value(i),
                responses: responses.value(i).clamp(0, u32::MAX as i64) as u32,
                campaign: intern(campaigns.value(i)),
                group: intern(groups.value(i)),
                channel: if channels.is_valid(i) { intern(channels.value(i)) } else { u32::MAX },
                stage: if stages.is_valid(i) { intern(stages.value(i)) } else { u32::MAX },
                revenue: revenue.value(i),
            };
            out.rows.push(row);
        }
    }
    let strings = &out.strings;
    out.rows.sort_by(|a, b| {
        let campaign = |r: &ContactRow| &*strings[r.campaign as usize];
        a.customer.cmp(&b.customer).then(b.day.cmp(&a.day)).then_with(|| campaign(a).cmp(campaign(b)))
    });
    out.rows.shrink_to_fit();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn psi_is_zero_for_equal_shares_and_grows_with_the_shift() {
        let even = vec![0.1; BINS];
        assert!(psi(&even, &even).abs() < 1e-12);
        let mut shifted = even.clone();
        shifted[0] = 0.05;
        shifted[9] = 0.15;
        let mut further = even.clone();
        further[0] = 0.0;
        further[9] = 0.2;
        assert!(psi(&even, &shifted) > 0.0);
        assert!(psi(&even, &further) > psi(&even, &shifted));
        // 0.05 ln(0.5) terms by hand: (0.05-0.1) ln(0.5) + (0.15-0.1) ln(1.5).
        let expected = -0.05 * 0.5f64.ln() + 0.05 * 1.5f64.ln();
        assert!((psi(&even, &shifted) - expected).abs() < 1e-12);
    }

    #[test]
    fn probabilities_fall_in_ten_bins_with_one_in_the_last() {
        assert_eq!(bin(0.0), 0);
        assert_eq!(bin(0.0999), 0);
        assert_eq!(bin(0.1), 1);
        assert_eq!(bin(1.0), BINS - 1);
        assert_eq!(shares(&[0.05, 0.95, f64::NAN, 0.96]).unwrap()[9], 2.0 / 3.0);
        assert!(shares(&[f64::NAN]).is_none());
    }
}
