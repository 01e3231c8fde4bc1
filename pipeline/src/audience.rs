//! Campaign audiences: select customers of a score snapshot by a predicate,
//! suppress those who must not be contacted (each reason counted), rank,
//! cut to a size or budget, split off a stable random control group, and
//! record the contacts so their results can be measured (docs/nightly.md,
//! "Audiences").

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::NaiveDate;
use datafusion::arrow::array::{
    Array, AsArray, Date32Array, Float64Array, RecordBatch, StringArray, TimestampMicrosecondArray,
    UInt64Array,
};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::engine::Engine;
use crate::error::{PipelineError, Result, io};
use crate::output::write_parquet;
use crate::schema::{CAMPAIGNS, CONTACTS, CUSTOMER_ID};
use crate::store::DataRoot;

/// Contact channels an audience can use, each with its consent column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Channel {
    Email,
    Sms,
    Call,
}

impl Channel {
    pub fn name(self) -> &'static str {
        match self {
            Channel::Email => "email",
            Channel::Sms => "sms",
            Channel::Call => "call",
        }
    }

    fn consent_column(self) -> &'static str {
        match self {
            Channel::Email => "consent_email",
            Channel::Sms => "consent_sms",
            Channel::Call => "consent_call",
        }
    }
}

/// Scheduled selection or a rule evaluated every run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CampaignKind {
    /// Selects on the cutoffs listed in `dates`.
    Wave,
    /// Selects on every run: `where` is the trigger rule.
    Trigger,
}

impl CampaignKind {
    pub fn name(self) -> &'static str {
        match self {
            CampaignKind::Wave => "wave",
            CampaignKind::Trigger => "trigger",
        }
    }
}

/// At most `contacts` treatment contacts in the last `days` days.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FrequencyCap {
    pub contacts: u32,
    pub days: u32,
}

impl Default for FrequencyCap {
    fn default() -> Self {
        FrequencyCap { contacts: 3, days: 30 }
    }
}

/// One `[[campaigns]]` entry of the nightly config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CampaignConfig {
    /// The campaign id recorded in the contacts table.
    pub id: String,
    #[serde(default)]
    pub name: Option<String>,
    pub kind: CampaignKind,
    /// Wave: the cutoffs it selects on (`"YYYY-MM-DD"`). Trigger: none.
    #[serde(default)]
    pub dates: Vec<NaiveDate>,
    pub channel: Channel,
    /// The offer (treatment) recorded for the campaign; uplift models learn
    /// per offer.
    #[serde(default)]
    pub offer: Option<String>,
    /// SQL predicate over the snapshot's scores and features, e.g.
    /// `risk_band = 'high' AND value_tier IN ('high', 'medium')`.
    #[serde(default, rename = "where")]
    pub filter: Option<String>,
    /// SQL expression to rank by, largest first, e.g. `uplift`,
    /// `response_probability`, `uplift * clv`. Nulls rank last.
    pub rank_by: String,
    /// Customers to select (treatment and control together).
    #[serde(default)]
    pub limit: Option<u64>,
    /// With `cost_per_contact`: select as many as the budget pays for
    /// (treatment contacts cost, control members do not).
    #[serde(default)]
    pub budget: Option<f64>,
    #[serde(default)]
    pub cost_per_contact: Option<f64>,
    /// Share of the selection held out as the control group.
    #[serde(default = "default_control_share")]
    pub control_share: f64,
    #[serde(default)]
    pub frequency_cap: FrequencyCap,
    /// Suppress customers who responded to any campaign in this many days
    /// (0: off).
    #[serde(default = "thirty")]
    pub exclude_responded_days: u32,
    /// Lifecycle stages never selected.
    #[serde(default = "default_excluded_stages")]
    pub exclude_stages: Vec<String>,
    /// Suppress customers in another campaign running at the cutoff.
    #[serde(default = "yes")]
    pub exclude_running_campaigns: bool,
    /// A customer selected (either group) by this campaign is not selected
    /// again for this many days: a trigger fires once, not every night.
    #[serde(default = "ninety")]
    pub cooldown_days: u32,
    /// Days a selection runs: the campaign's end date is the cutoff plus this.
    #[serde(default = "thirty")]
    pub response_days: u32,
}

fn default_control_share() -> f64 {
    0.1
}
fn thirty() -> u32 {
    30
}
fn ninety() -> u32 {
    90
}
fn yes() -> bool {
    true
}
fn default_excluded_stages() -> Vec<String> {
    vec!["churned".into()]
}

/// `[audiences]`: settings shared by every campaign.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AudienceSettings {
    /// Share of all customers never contacted by any campaign (by a stable
    /// hash of the customer id), to measure the total effect of marketing.
    pub universal_holdout: f64,
    /// A CSV or Parquet file with a `customer_id` column: never contacted.
    pub do_not_contact: Option<PathBuf>,
}

impl AudienceSettings {
    /// Whether `customer` is in the universal holdout.
    pub fn in_holdout(&self, customer: &str) -> bool {
        self.universal_holdout > 0.0
            && unit_hash("engage universal holdout", customer) < self.universal_holdout
    }
}

/// A number in [0, 1) from a stable hash of (`salt`, `customer`): the same
/// on every run, machine and engage version.
pub fn unit_hash(salt: &str, customer: &str) -> f64 {
    let digest = Sha256::new().chain_update(salt).chain_update([0u8]).chain_update(customer).finalize();
    let x = u64::from_be_bytes(digest[..8].try_into().expect("8 bytes"));
    (x >> 11) as f64 / (1u64 << 53) as f64
}

impl CampaignConfig {
    /// Checks what TOML types cannot; `field` is where it sits
    /// (`campaigns[2]`), `stages` the lifecycle stages.
    pub fn check(&self, field: &str, stages: &[String]) -> Result<()> {
        let bad =
            |key: &str, reason: String| PipelineError::Config { field: format!("{field}.{key}"), reason };
        let id_ok = !self.id.is_empty()
            && self.id.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
            && !self.id.starts_with('.');
        if !id_ok {
            return Err(bad("id", format!("{:?}: use letters, digits, '-', '_' or '.'", self.id)));
        }
        match (self.kind, self.dates.is_empty()) {
            (CampaignKind::Wave, true) => {
                return Err(bad("dates", "a wave needs the dates it selects on".into()));
            }
            (CampaignKind::Trigger, false) => {
                return Err(bad("dates", "a trigger selects on every run; leave dates out".into()));
            }
            _ => {}
        }
        if !(0.0..1.0).contains(&self.control_share) {
            return Err(bad("control_share", format!("{}: need a share in [0, 1)", self.control_share)));
        }
        match (self.budget, self.cost_per_contact) {
            (Some(b), Some(c)) if !(b >= 0.0 && c > 0.0) => {
                return Err(bad(
                    "budget",
                    format!("budget {b}, cost_per_contact {c}: need budget >= 0, cost > 0"),
                ));
            }
            (Some(_), None) | (None, Some(_)) => {
                return Err(bad("budget", "budget and cost_per_contact go together".into()));
            }
            _ => {}
        }
        if self.limit.is_none() && self.budget.is_none() {
            return Err(bad("limit", "give a limit, a budget with cost_per_contact, or both".into()));
        }
        if let Some(s) = self.exclude_stages.iter().find(|s| !stages.contains(s)) {
            return Err(bad("exclude_stages", format!("`{s}` is not one of {}", stages.join(", "))));
        }
        if self.frequency_cap.contacts == 0 {
            return Err(bad("frequency_cap.contacts", "0 would suppress everyone; raise it".into()));
        }
        Ok(())
    }

    /// Whether the campaign selects on the cutoff `as_of`.
    pub fn due(&self, as_of: NaiveDate) -> bool {
        match self.kind {
            CampaignKind::Wave => self.dates.contains(&as_of),
            CampaignKind::Trigger => true,
        }
    }

    /// The most customers to select: the limit, and what the budget pays
    /// for (control members cost nothing).
    fn size(&self) -> u64 {
        let by_budget = match (self.budget, self.cost_per_contact) {
            (Some(b), Some(c)) => ((b / c).floor() / (1.0 - self.control_share)).floor() as u64,
            _ => u64::MAX,
        };
        self.limit.unwrap_or(u64::MAX).min(by_budget)
    }
}

/// The suppressions, in the order they are applied: a customer is counted
/// under the first that applies.
pub const SUPPRESSIONS: &[&str] = &[
    "universal_holdout",
    "do_not_contact",
    "no_consent",
    "excluded_stage",
    "cooldown",
    "responded_recently",
    "frequency_cap",
    "running_campaign",
];

/// What one audience selection did, by count.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AudienceSummary {
    pub campaign_id: String,
    pub kind: String,
    pub as_of: String,
    pub channel: String,
    pub offer: Option<String>,
    pub rank_by: String,
    /// Customers of the snapshot matching `where`.
    pub candidates: u64,
    /// Per suppression (see [`SUPPRESSIONS`]), in order.
    pub suppressed: BTreeMap<String, u64>,
    /// Candidates left after the suppressions.
    pub eligible: u64,
    /// Eligible but beyond the limit or budget.
    pub over_limit: u64,
    pub selected: u64,
    pub treatment: u64,
    pub control: u64,
    /// Treatment contacts times `cost_per_contact`, when configured.
    pub cost: Option<f64>,
}

impl AudienceSummary {
    /// The summary as text: the selection, then the suppressions in order.
    pub fn lines(&self) -> Vec<String> {
        let suppressed: Vec<String> = SUPPRESSIONS
            .iter()
            .map(|s| format!("{s} {}", self.suppressed.get(*s).copied().unwrap_or(0)))
            .collect();
        vec![
            format!(
                "audience {} ({} by {}, {}{}) as of {}: {} candidates, {} eligible, {} selected = {} treatment + {} control{}",
                self.campaign_id,
                self.kind,
                self.rank_by,
                self.channel,
                self.offer.as_deref().map(|o| format!(", offer {o}")).unwrap_or_default(),
                self.as_of,
                self.candidates,
                self.eligible,
                self.selected,
                self.treatment,
                self.control,
                self.cost.map(|c| format!(", cost {c:.2}")).unwrap_or_default()
            ),
            format!("  suppressed: {}; over the limit: {}", suppressed.join(", "), self.over_limit),
        ]
    }
}

/// One selected customer.
#[derive(Debug, Clone, PartialEq)]
pub struct AudienceRow {
    pub customer_id: String,
    /// `treatment` or `control`.
    pub group: &'static str,
    /// 1 = first by `rank_by`.
    pub rank: u64,
    pub rank_value: Option<f64>,
}

/// The view audiences query: the snapshot's scores with every feature
/// column the scores lack (`scores` and `features` must be registered).
const AUDIENCE_BASE: &str = "audience_base";

/// Registers a snapshot's scores and features (its Parquet files, read as
/// the queries need them) and the view over both that `where` and
/// `rank_by` are evaluated on.
pub async fn register_snapshot(engine: &Engine, scores: &Path, features: &Path) -> Result<()> {
    let scores_schema = engine.register_parquet("scores", scores).await?;
    let features_schema = engine.register_parquet("features", features).await?;
    let score_names: Vec<&String> = scores_schema.fields().iter().map(|f| f.name()).collect();
    let extra = features_schema
        .fields()
        .iter()
        .map(|f| f.name())
        .filter(|n| !score_names.contains(n))
        .map(|n| format!("f.\"{n}\""));
    let columns = std::iter::once("s.*".to_string()).chain(extra).collect::<Vec<_>>().join(", ");
    let sql = format!("SELECT {columns} FROM scores s JOIN features f ON f.{CUSTOMER_ID} = s.{CUSTOMER_ID}");
    engine.create_view(AUDIENCE_BASE, &sql).await
}

/// Selects the audience of `campaign` (at `field` in the config) as of
/// `as_of` from the registered snapshot (see [`register_snapshot`]).
pub async fn select(
    engine: &Engine,
    campaign: &CampaignConfig,
    field: &str,
    settings: &AudienceSettings,
    do_not_contact: &HashSet<String>,
    as_of: NaiveDate,
) -> Result<(Vec<AudienceRow>, AudienceSummary)> {
    let user_sql = |key: &'static str| {
        move |e: PipelineError| PipelineError::Config {
            field: format!("{field}.{key}"),
            reason: match e {
                PipelineError::Query { source, .. } => source.to_string(),
                other => other.to_string(),
            },
        }
    };
    let filter = campaign.filter.as_deref().unwrap_or("TRUE");
    // Check each expression alone first, so an error names the right key.
    let probe = |expr: String| format!("SELECT {expr} FROM {AUDIENCE_BASE} LIMIT 0");
    engine
        .query(&probe(format!("CAST(({}) AS DOUBLE)", campaign.rank_by)))
        .await
        .map_err(user_sql("rank_by"))?;
    engine.query(&probe(format!("CAST(({filter}) AS BOOLEAN)"))).await.map_err(user_sql("where"))?;
    let candidates = engine
        .query(&format!(
            "SELECT {CUSTOMER_ID}, lifecycle_stage, CAST(({}) AS DOUBLE) AS rank_value FROM {AUDIENCE_BASE} WHERE ({filter})",
            campaign.rank_by
        ))
        .await
        .map_err(user_sql("where"))?;
    let facts = Facts::read(
        &engine
            .audience_eligibility(
                as_of,
                &campaign.id,
                campaign.frequency_cap.days,
                campaign.exclude_responded_days,
                campaign.cooldown_days,
            )
            .await?,
        campaign.channel,
    )?;
    let mut suppressed: BTreeMap<String, u64> = SUPPRESSIONS.iter().map(|s| (s.to_string(), 0)).collect();
    let mut eligible: Vec<(String, Option<f64>)> = Vec::new();
    let mut total = 0u64;
    for b in &candidates {
        // Text may come as Utf8View (snapshot files read by DataFusion).
        let ids = cast(b.column(0), &DataType::Utf8).map_err(|e| internal(&e.to_string()))?;
        let ids = ids.as_string::<i32>();
        let stage = cast(b.column(1), &DataType::Utf8).map_err(|e| internal(&e.to_string()))?;
        let stage = stage.as_string::<i32>();
        let value = b.column(2).as_primitive::<datafusion::arrow::datatypes::Float64Type>();
        for i in 0..b.num_rows() {
            total += 1;
            let id = ids.value(i);
            let fact = facts.get(id);
            let reason = if settings.in_holdout(id) {
                Some("universal_holdout")
            } else if do_not_contact.contains(id) {
                Some("do_not_contact")
            } else if !fact.is_some_and(|f| f.consent) {
                Some("no_consent")
            } else if stage.is_valid(i) && campaign.exclude_stages.iter().any(|s| s == stage.value(i)) {
                Some("excluded_stage")
            } else {
                let f = fact.expect("checked");
                if f.in_cooldown {
                    Some("cooldown")
                } else if campaign.exclude_responded_days > 0 && f.responded_recently {
                    Some("responded_recently")
                } else if f.recent_contacts >= campaign.frequency_cap.contacts as i64 {
                    Some("frequency_cap")
                } else if campaign.exclude_running_campaigns && f.in_running_campaign {
                    Some("running_campaign")
                } else {
                    None
                }
            };
            match reason {
                Some(r) => *suppressed.get_mut(r).expect("listed") += 1,
                None => eligible.push((id.to_string(), value.is_valid(i).then(|| value.value(i)))),
            }
        }
    }
    // Largest first, nulls and NaN last, ties by id: the same order every run.
    eligible.sort_by(|a, b| {
        let key = |v: Option<f64>| v.filter(|v| !v.is_nan());
        match (key(a.1), key(b.1)) {
            (Some(x), Some(y)) => y.total_cmp(&x),
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            (None, None) => std::cmp::Ordering::Equal,
        }
        .then_with(|| a.0.cmp(&b.0))
    });
    let n_eligible = eligible.len() as u64;
    eligible.truncate(campaign.size().min(n_eligible) as usize);
    let rows: Vec<AudienceRow> = eligible
        .into_iter()
        .enumerate()
        .map(|(k, (customer_id, rank_value))| {
            let control = unit_hash(&campaign.id, &customer_id) < campaign.control_share;
            AudienceRow {
                group: if control { "control" } else { "treatment" },
                customer_id,
                rank: k as u64 + 1,
                rank_value,
            }
        })
        .collect();
    let control = rows.iter().filter(|r| r.group == "control").count() as u64;
    let treatment = rows.len() as u64 - control;
    let summary = AudienceSummary {
        campaign_id: campaign.id.clone(),
        kind: campaign.kind.name().into(),
        as_of: as_of.to_string(),
        channel: campaign.channel.name().into(),
        offer: campaign.offer.clone(),
        rank_by: campaign.rank_by.clone(),
        candidates: total,
        suppressed,
        eligible: n_eligible,
        over_limit: n_eligible - rows.len() as u64,
        selected: rows.len() as u64,
        treatment,
        control,
        cost: campaign.cost_per_contact.map(|c| c * treatment as f64),
    };
    Ok((rows, summary))
}

/// One customer's eligibility facts.
struct Fact {
    consent: bool,
    recent_contacts: i64,
    responded_recently: bool,
    in_running_campaign: bool,
    in_cooldown: bool,
}

struct Facts(HashMap<String, Fact>);

impl Facts {
    fn read(batches: &[RecordBatch], channel: Channel) -> Result<Facts> {
        let mut out = HashMap::new();
        for b in batches {
            let column =
                |name: &str| b.column_by_name(name).ok_or_else(|| internal(&format!("{name} missing")));
            let ids = cast(column(CUSTOMER_ID)?, &DataType::Utf8).map_err(|e| internal(&e.to_string()))?;
            let ids = ids.as_string::<i32>();
            let consent = column(channel.consent_column())?.as_boolean().clone();
            let contacts =
                column("recent_contacts")?.as_primitive::<datafusion::arrow::datatypes::Int64Type>().clone();
            let flag = |name: &str| column(name).map(|c| c.as_boolean().clone());
            let (responded, running, cooldown) =
                (flag("responded_recently")?, flag("in_running_campaign")?, flag("in_cooldown")?);
            for i in 0..b.num_rows() {
                out.insert(
                    ids.value(i).to_string(),
                    Fact {
                        consent: consent.is_valid(i) && consent.value(i),
                        recent_contacts: contacts.value(i),
                        responded_recently: responded.value(i),
                        in_running_campaign: running.value(i),
                        in_cooldown: cooldown.value(i),
                    },
                );
            }
        }
        Ok(Facts(out))
    }

    fn get(&self, id: &str) -> Option<&Fact> {
        self.0.get(id)
    }
}

fn internal(what: &str) -> PipelineError {
    PipelineError::Query {
        name: "internal: audience".into(),
        source: datafusion::error::DataFusionError::Internal(what.to_string()),
    }
}

/// Reads a do-not-contact list: a CSV or Parquet file with a `customer_id`
/// column.
pub async fn read_do_not_contact(path: &Path) -> Result<HashSet<String>> {
    let batches = crate::jobs::read_table(path, "audiences.do_not_contact").await?;
    let mut out = HashSet::new();
    for b in &batches {
        let col = b.column_by_name(CUSTOMER_ID).ok_or_else(|| PipelineError::Config {
            field: "audiences.do_not_contact".into(),
            reason: format!("{}: no customer_id column", path.display()),
        })?;
        let col = cast(col, &DataType::Utf8).map_err(|e| internal(&e.to_string()))?;
        out.extend(col.as_string::<i32>().iter().flatten().map(str::to_string));
    }
    Ok(out)
}

fn epoch() -> NaiveDate {
    NaiveDate::from_ymd_opt(1970, 1, 1).expect("valid date")
}

/// Selects `campaign`'s audience (see [`select`]), writes its contact list
/// into `dir` and, given the `history` directories of [`history_dirs`],
/// records the contacts there. Returns the summary and the files written.
#[allow(clippy::too_many_arguments)]
pub async fn run(
    engine: &Engine,
    campaign: &CampaignConfig,
    field: &str,
    settings: &AudienceSettings,
    do_not_contact: &HashSet<String>,
    as_of: NaiveDate,
    dir: &Path,
    history: Option<&(PathBuf, PathBuf)>,
) -> Result<(AudienceSummary, Vec<PathBuf>)> {
    let (rows, summary) = select(engine, campaign, field, settings, do_not_contact, as_of).await?;
    let mut written = write_contact_list(dir, campaign, as_of, &rows)?;
    if let Some(history) = history {
        let defined = defined_in_input(engine, campaign).await?;
        written.extend(record_contacts(history, campaign, as_of, &rows, defined)?);
    }
    Ok((summary, written))
}

/// Writes the contact list as `<dir>/<campaign>.parquet` and `.csv`:
/// campaign_id, customer_id, group, channel, offer, rank, rank_value, as_of.
/// Returns both paths.
fn write_contact_list(
    dir: &Path,
    campaign: &CampaignConfig,
    as_of: NaiveDate,
    rows: &[AudienceRow],
) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let n = rows.len();
    let schema = Arc::new(Schema::new(vec![
        Field::new("campaign_id", DataType::Utf8, false),
        Field::new(CUSTOMER_ID, DataType::Utf8, false),
        Field::new("group", DataType::Utf8, false),
        Field::new("channel", DataType::Utf8, false),
        Field::new("offer", DataType::Utf8, true),
        Field::new("rank", DataType::UInt64, false),
        Field::new("rank_value", DataType::Float64, true),
        Field::new("as_of", DataType::Date32, false),
    ]));
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![
            Arc::new(StringArray::from(vec![campaign.id.as_str(); n])),
            Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.customer_id.as_str()))),
            Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.group))),
            Arc::new(StringArray::from(vec![campaign.channel.name(); n])),
            Arc::new(StringArray::from(vec![campaign.offer.as_deref(); n])),
            Arc::new(UInt64Array::from_iter_values(rows.iter().map(|r| r.rank))),
            Arc::new(Float64Array::from_iter(rows.iter().map(|r| r.rank_value))),
            Arc::new(Date32Array::from(vec![(as_of - epoch()).num_days() as i32; n])),
        ],
    )
    .map_err(|e| internal(&e.to_string()))?;
    let parquet = dir.join(format!("{}.parquet", campaign.id));
    write_parquet(&parquet, schema, &[batch])?;
    let path = dir.join(format!("{}.csv", campaign.id));
    let tmp = dir.join(format!(".{}.csv.tmp-{}", campaign.id, std::process::id()));
    let write = || -> std::result::Result<(), csv::Error> {
        let mut w = csv::Writer::from_path(&tmp)?;
        w.write_record([
            "campaign_id",
            CUSTOMER_ID,
            "group",
            "channel",
            "offer",
            "rank",
            "rank_value",
            "as_of",
        ])?;
        for r in rows {
            w.write_record([
                campaign.id.as_str(),
                &r.customer_id,
                r.group,
                campaign.channel.name(),
                campaign.offer.as_deref().unwrap_or(""),
                &r.rank.to_string(),
                &r.rank_value.map(|v| v.to_string()).unwrap_or_default(),
                &as_of.to_string(),
            ])?;
        }
        w.flush()?;
        Ok(())
    };
    write().map_err(|e| PipelineError::Io { path: tmp.display().to_string(), source: e.into() })?;
    std::fs::rename(&tmp, &path).map_err(io(&path))?;
    Ok(vec![parquet, path])
}

/// Where engage records its contacts and campaigns: the data root's
/// `contacts/` and `campaigns/` directories. Errors unless the root is a
/// local directory holding those tables (if at all) as directories.
pub fn history_dirs(root: &DataRoot) -> Result<(PathBuf, PathBuf)> {
    let local = root.local_path().ok_or_else(|| PipelineError::Config {
        field: "data.root".into(),
        reason: format!("{root}: campaigns record their contacts in the data root, which must be local"),
    })?;
    for table in [CONTACTS, CAMPAIGNS] {
        for ext in ["parquet", "csv"] {
            let single = local.join(format!("{table}.{ext}"));
            if single.exists() {
                return Err(PipelineError::Config {
                    field: "campaigns".into(),
                    reason: format!(
                        "{} is a single file; engage appends contacts and campaigns as files of a directory: move it to {}/",
                        single.display(),
                        local.join(table).display()
                    ),
                });
            }
        }
    }
    Ok((local.join(CONTACTS), local.join(CAMPAIGNS)))
}

/// Whether the input campaigns table defines `campaign` (engage then
/// records no campaign row of its own for it).
async fn defined_in_input(engine: &Engine, campaign: &CampaignConfig) -> Result<bool> {
    // Ids are checked to letters, digits, '-', '_' and '.': safe to quote.
    let sql = format!("SELECT campaign_id FROM campaigns WHERE campaign_id = '{}'", campaign.id);
    Ok(engine.query(&sql).await?.iter().any(|b| b.num_rows() > 0))
}

/// Records a selection in the contact history: every selected customer
/// (treatment and control) as a contact at the cutoff, in
/// `contacts/engage-<campaign>-<as_of>.parquet` (a re-run replaces it), and
/// the campaign in `campaigns/engage-<campaign>.parquet` unless the
/// campaigns table already defines it (`defined`), so responses can be
/// matched to it and its offer.
fn record_contacts(
    dirs: &(PathBuf, PathBuf),
    campaign: &CampaignConfig,
    as_of: NaiveDate,
    rows: &[AudienceRow],
    defined: bool,
) -> Result<Vec<PathBuf>> {
    let (contacts, campaigns) = dirs;
    std::fs::create_dir_all(contacts).map_err(io(contacts))?;
    let n = rows.len();
    let micros = (as_of - epoch()).num_days() * 86_400_000_000;
    let schema = Arc::new(Schema::new(vec![
        Field::new("campaign_id", DataType::Utf8, false),
        Field::new(CUSTOMER_ID, DataType::Utf8, false),
        Field::new("ts", DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())), false),
        Field::new("channel", DataType::Utf8, true),
        Field::new("group", DataType::Utf8, false),
    ]));
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![
            Arc::new(StringArray::from(vec![campaign.id.as_str(); n])),
            Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.customer_id.as_str()))),
            Arc::new(TimestampMicrosecondArray::from(vec![micros; n]).with_timezone("UTC")),
            Arc::new(StringArray::from(vec![campaign.channel.name(); n])),
            Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.group))),
        ],
    )
    .map_err(|e| internal(&e.to_string()))?;
    let contacts_file = contacts.join(format!("engage-{}-{as_of}.parquet", campaign.id));
    write_parquet(&contacts_file, schema, &[batch])?;
    let mut written = vec![contacts_file];
    let campaign_file = campaigns.join(format!("engage-{}.parquet", campaign.id));
    if !defined || campaign_file.exists() {
        std::fs::create_dir_all(campaigns).map_err(io(campaigns))?;
        let days = |d: NaiveDate| (d - epoch()).num_days() as i32;
        let end = as_of + chrono::Days::new(campaign.response_days as u64);
        let start = match campaign.kind {
            CampaignKind::Wave => campaign.dates.iter().min().copied().unwrap_or(as_of),
            CampaignKind::Trigger => as_of.min(campaign.dates.first().copied().unwrap_or(as_of)),
        };
        let schema = Arc::new(Schema::new(vec![
            Field::new("campaign_id", DataType::Utf8, false),
            Field::new("name", DataType::Utf8, true),
            Field::new("kind", DataType::Utf8, false),
            Field::new("channel", DataType::Utf8, true),
            Field::new("offer", DataType::Utf8, true),
            Field::new("start_date", DataType::Date32, true),
            Field::new("end_date", DataType::Date32, true),
        ]));
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(StringArray::from(vec![campaign.id.as_str()])),
                Arc::new(StringArray::from(vec![campaign.name.as_deref()])),
                Arc::new(StringArray::from(vec![campaign.kind.name()])),
                Arc::new(StringArray::from(vec![campaign.channel.name()])),
                Arc::new(StringArray::from(vec![campaign.offer.as_deref()])),
                Arc::new(Date32Array::from(vec![days(start)])),
                Arc::new(Date32Array::from(vec![days(end)])),
            ],
        )
        .map_err(|e| internal(&e.to_string()))?;
        write_parquet(&campaign_file, schema, &[batch])?;
        written.push(campaign_file);
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_groups_are_stable_and_the_right_size() {
        let ids: Vec<String> = (0..20_000).map(|i| format!("C{i:07}")).collect();
        let share = ids.iter().filter(|c| unit_hash("W1", c) < 0.1).count() as f64 / ids.len() as f64;
        assert!((share - 0.1).abs() < 0.01, "{share}");
        // Stable: the same value for the same pair; another campaign draws anew.
        assert_eq!(unit_hash("W1", "C0000001"), unit_hash("W1", "C0000001"));
        let both = ids.iter().filter(|c| unit_hash("W1", c) < 0.1 && unit_hash("W2", c) < 0.1).count();
        assert!((both as f64 / ids.len() as f64 - 0.01).abs() < 0.005, "{both}");
        // Known values pin the hash across versions and platforms (Python:
        // int.from_bytes(sha256(b"W1\0C0000001").digest()[:8], "big") >> 11, / 2**53).
        assert_eq!(format!("{:.12}", unit_hash("W1", "C0000001")), "0.548126402150");
        let settings = AudienceSettings { universal_holdout: 0.82, do_not_contact: None };
        assert_eq!(format!("{:.12}", unit_hash("engage universal holdout", "C0000001")), "0.815511198071");
        assert!(settings.in_holdout("C0000001"));
        assert!(!AudienceSettings { universal_holdout: 0.81, ..settings }.in_holdout("C0000001"));
    }

    fn campaign(toml: &str) -> std::result::Result<CampaignConfig, String> {
        toml::from_str(toml).map_err(|e| e.to_string())
    }

    #[test]
    fn campaign_configs_are_checked() {
        let stages: Vec<String> = ["prospect", "active", "churned"].iter().map(|s| s.to_string()).collect();
        let base = "id = \"W1\"\nkind = \"wave\"\ndates = [\"2026-07-01\"]\nchannel = \"email\"\nrank_by = \"uplift\"\n";
        let ok = campaign(&format!("{base}limit = 100\n")).unwrap();
        ok.check("campaigns[0]", &stages).unwrap();
        assert!(ok.due(NaiveDate::from_ymd_opt(2026, 7, 1).unwrap()));
        assert!(!ok.due(NaiveDate::from_ymd_opt(2026, 7, 2).unwrap()));
        assert_eq!((ok.control_share, ok.exclude_stages.clone()), (0.1, vec!["churned".to_string()]));
        let err = |extra: &str| {
            campaign(&format!("{base}{extra}"))
                .unwrap()
                .check("campaigns[0]", &stages)
                .unwrap_err()
                .to_string()
        };
        assert!(err("").contains("campaigns[0].limit"));
        assert!(err("budget = 10.0\n").contains("go together"));
        assert!(err("limit = 5\ncontrol_share = 1.0\n").contains("campaigns[0].control_share"));
        assert!(err("limit = 5\nexclude_stages = [\"gone\"]\n").contains("`gone`"));
        assert!(campaign(&format!("{base}limit = 5\nchannel2 = 1\n")).unwrap_err().contains("channel2"));
        assert!(campaign(&base.replace("email", "pigeon")).unwrap_err().contains("pigeon"));
        // Budget: 1000 at 2.0 pays 500 treatment contacts; with 10 % control, 555 selected.
        let b = campaign(&format!("{base}budget = 1000.0\ncost_per_contact = 2.0\n")).unwrap();
        assert_eq!(b.size(), 555);
        let t = campaign(&base.replace("wave", "trigger").replace("dates = [\"2026-07-01\"]\n", "")).unwrap();
        assert!(t.due(NaiveDate::from_ymd_opt(2030, 1, 1).unwrap()));
    }
}
