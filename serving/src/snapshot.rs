//! A score snapshot in memory: every customer's scores (column-major, text
//! interned), the identity lookup (email, phone, loyalty id -> customer)
//! and the campaign contact lists. Loaded and checked in full before it is
//! served; lookups never touch the disk.

use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasher, RandomState};

use hashbrown::HashTable;
use std::path::Path;

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use arrow::datatypes::{DataType, Float64Type, UInt64Type};
use engage_models::identifier::{normalize_email, normalize_id, normalize_phone};
use engage_models::snapshot::{self, IDENTITIES_FILE, LOOKUP_ID_TYPES, SCORES_FILE, SnapshotManifest};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::dashboard::Board;
use crate::{ApiError, ServeError};

/// Contact lists inside a snapshot (written by `engage nightly`).
const AUDIENCES_DIR: &str = "audiences";
const AUDIENCE_SUMMARY_FILE: &str = "summary.json";

/// How the caller names a customer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum IdType {
    CustomerId,
    Email,
    Phone,
    LoyaltyId,
}

impl IdType {
    pub const NAMES: [&'static str; 4] = ["customer_id", "email", "phone", "loyalty_id"];

    pub fn name(self) -> &'static str {
        match self {
            IdType::CustomerId => Self::NAMES[0],
            IdType::Email => Self::NAMES[1],
            IdType::Phone => Self::NAMES[2],
            IdType::LoyaltyId => Self::NAMES[3],
        }
    }

    /// Parses `field`'s value; the error names the field and the choices.
    pub fn parse(field: &str, value: &str) -> Result<IdType, ApiError> {
        [IdType::CustomerId, IdType::Email, IdType::Phone, IdType::LoyaltyId]
            .into_iter()
            .find(|t| t.name() == value)
            .ok_or_else(|| {
                ApiError::invalid(
                    field,
                    format!("`{value}` is not an id type (expected one of {})", Self::NAMES.join(", ")),
                )
            })
    }
}

/// Every score the API returns for one customer, borrowed from the
/// snapshot (nothing is copied to answer a lookup). A score is `null` when
/// the snapshot was made without its model (or, for the CLV scores, when
/// the customer had not bought before the cutoff).
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct CustomerScores<'a> {
    pub customer_id: &'a str,
    /// Probability of no purchase in the churn model's horizon, in [0, 1].
    pub churn_probability: Option<f64>,
    /// Version of the churn model (every model's is in `model_versions`).
    pub model_version: Option<&'a str>,
    /// Probability of responding to a contact.
    pub response_probability: Option<f64>,
    /// The best offer's uplift: response probability treated minus control.
    pub uplift: Option<f64>,
    pub best_offer: Option<&'a str>,
    /// Uplift of every offer the uplift model knows (empty without one).
    #[schema(value_type = BTreeMap<String, f64>)]
    pub uplift_by_offer: OfferUplift<'a>,
    /// BG/NBD probability of being alive.
    pub p_alive: Option<f64>,
    /// Expected purchases and discounted value over the CLV horizon.
    pub expected_purchases: Option<f64>,
    pub clv: Option<f64>,
    pub lifecycle_stage: Option<&'a str>,
    pub value_tier: Option<&'a str>,
    pub risk_band: Option<&'a str>,
    pub contact_strategy: &'a str,
    pub recommended_treatment: &'a str,
    /// Task (churn, response, uplift, clv) -> version of every model in
    /// the snapshot.
    #[schema(value_type = BTreeMap<String, String>)]
    pub model_versions: &'a BTreeMap<String, String>,
    /// Feature cutoff of the snapshot (ISO date).
    pub as_of: &'a str,
    /// When the snapshot was scored (RFC 3339, UTC).
    pub scored_at: &'a str,
    pub snapshot_id: &'a str,
    /// The features raising this customer's churn score most, largest
    /// first (empty without a churn model).
    pub reasons: Vec<Reason<'a>>,
}

impl CustomerScores<'_> {
    /// The JSON of these scores, byte for byte what `serde_json` writes for
    /// them (a test holds the two equal), without escaping every key again:
    /// the answer of the busiest route, where serialising was the largest
    /// cost of engage's own (batches keep the derived `Serialize`).
    pub fn to_json(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(1024);
        let o = &mut out;
        o.extend_from_slice(b"{\"customer_id\":");
        json_str(o, self.customer_id);
        o.extend_from_slice(b",\"churn_probability\":");
        json_num(o, self.churn_probability);
        o.extend_from_slice(b",\"model_version\":");
        json_opt_str(o, self.model_version);
        o.extend_from_slice(b",\"response_probability\":");
        json_num(o, self.response_probability);
        o.extend_from_slice(b",\"uplift\":");
        json_num(o, self.uplift);
        o.extend_from_slice(b",\"best_offer\":");
        json_opt_str(o, self.best_offer);
        o.extend_from_slice(b",\"uplift_by_offer\":");
        json_object(o, self.uplift_by_offer.iter(), |o, v| json_num(o, Some(v)));
        o.extend_from_slice(b",\"p_alive\":");
        json_num(o, self.p_alive);
        o.extend_from_slice(b",\"expected_purchases\":");
        json_num(o, self.expected_purchases);
        o.extend_from_slice(b",\"clv\":");
        json_num(o, self.clv);
        o.extend_from_slice(b",\"lifecycle_stage\":");
        json_opt_str(o, self.lifecycle_stage);
        o.extend_from_slice(b",\"value_tier\":");
        json_opt_str(o, self.value_tier);
        o.extend_from_slice(b",\"risk_band\":");
        json_opt_str(o, self.risk_band);
        o.extend_from_slice(b",\"contact_strategy\":");
        json_str(o, self.contact_strategy);
        o.extend_from_slice(b",\"recommended_treatment\":");
        json_str(o, self.recommended_treatment);
        o.extend_from_slice(b",\"model_versions\":");
        json_object(o, self.model_versions.iter(), |o, v| json_str(o, v));
        o.extend_from_slice(b",\"as_of\":");
        json_str(o, self.as_of);
        o.extend_from_slice(b",\"scored_at\":");
        json_str(o, self.scored_at);
        o.extend_from_slice(b",\"snapshot_id\":");
        json_str(o, self.snapshot_id);
        o.extend_from_slice(b",\"reasons\":[");
        for (i, r) in self.reasons.iter().enumerate() {
            if i > 0 {
                o.push(b',');
            }
            o.extend_from_slice(b"{\"feature\":");
            json_str(o, r.feature);
            o.extend_from_slice(b",\"impact\":");
            json_num(o, Some(r.impact));
            o.push(b'}');
        }
        o.extend_from_slice(b"]}");
        out
    }
}

/// `s` as a JSON string: copied as it is unless it holds a character JSON
/// escapes (then as `serde_json` writes it).
fn json_str(out: &mut Vec<u8>, s: &str) {
    if s.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
    } else {
        serde_json::to_writer(out, s).expect("writing to memory");
    }
}

fn json_opt_str(out: &mut Vec<u8>, s: Option<&str>) {
    match s {
        Some(s) => json_str(out, s),
        None => out.extend_from_slice(b"null"),
    }
}

/// A number as `serde_json` writes it (`null` when absent or not finite).
fn json_num(out: &mut Vec<u8>, v: Option<f64>) {
    match v {
        Some(v) => serde_json::to_writer(out, &v).expect("writing to memory"),
        None => out.extend_from_slice(b"null"),
    }
}

/// An object of `entries`, each value written by `value`.
fn json_object<K: AsRef<str>, V>(
    out: &mut Vec<u8>,
    entries: impl Iterator<Item = (K, V)>,
    value: impl Fn(&mut Vec<u8>, V),
) {
    out.push(b'{');
    for (i, (k, v)) in entries.enumerate() {
        if i > 0 {
            out.push(b',');
        }
        json_str(out, k.as_ref());
        out.push(b':');
        value(out, v);
    }
    out.push(b'}');
}

/// The uplift of each offer, borrowed from the snapshot: a JSON object
/// of offer -> uplift, offers in name order, offers without a value left
/// out.
#[derive(Debug, Clone, PartialEq)]
pub struct OfferUplift<'a> {
    offers: &'a [String],
    values: &'a [f64],
}

impl<'a> OfferUplift<'a> {
    pub fn iter(&self) -> impl Iterator<Item = (&'a str, f64)> + use<'a> {
        self.offers.iter().zip(self.values).filter(|(_, v)| !v.is_nan()).map(|(o, v)| (o.as_str(), *v))
    }
}

impl Serialize for OfferUplift<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(self.iter())
    }
}

/// One reason for a score: a feature and its contribution to the log-odds.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct Reason<'a> {
    pub feature: &'a str,
    /// Contribution to the log-odds of churn (> 0 raises the probability).
    pub impact: f64,
}

/// One customer on a campaign's contact list.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct AudienceEntry {
    pub customer_id: String,
    /// `treatment` (contact) or `control` (hold out: do not contact).
    pub group: String,
    pub channel: String,
    pub offer: Option<String>,
    /// Position by the campaign's ranking, 1 first.
    pub rank: u64,
    /// The ranking expression's value.
    pub rank_value: Option<f64>,
}

/// Reason columns of a snapshot (`reason_<k>`, `reason_<k>_impact`).
const REASONS: usize = 3;
/// The float scores, in [`Row::scores`] order.
const SCORES: [&str; 6] =
    ["churn_probability", "response_probability", "uplift", "p_alive", "expected_purchases", "clv"];
/// The text columns, in [`Row::labels`] order (interned).
const LABELS: [&str; 6] =
    ["lifecycle_stage", "value_tier", "risk_band", "contact_strategy", "recommended_treatment", "best_offer"];
const NONE: u32 = u32::MAX;

/// One customer's scores, in one place: a lookup of a random customer
/// reads a few cache lines, not one per column.
#[derive(Debug, Clone, Copy)]
struct Row {
    /// [`SCORES`]; NaN for null.
    scores: [f64; SCORES.len()],
    /// [`LABELS`] as indices into `strings`; [`NONE`] for null.
    labels: [u32; LABELS.len()],
    /// (index into `strings` or [`NONE`], impact), largest first.
    reasons: [(u32, f64); REASONS],
}

const EMPTY_ROW: Row = Row {
    scores: [f64::NAN; SCORES.len()],
    labels: [NONE; LABELS.len()],
    reasons: [(NONE, f64::NAN); REASONS],
};

/// A loaded score snapshot.
#[derive(Debug)]
pub struct ScoreService {
    manifest: SnapshotManifest,
    /// Customer ids by row, and the rows by customer id.
    ids: StrIndex,
    /// Per identifier type of [`LOOKUP_ID_TYPES`]: normalised values, and
    /// the customer row of each.
    identities: [(StrIndex, Vec<u32>); 3],
    /// Scores by row.
    rows: Vec<Row>,
    /// The uplift model's offers (`uplift_<offer>` columns) and their
    /// values, row after row (`row * offers.len() + k`; NaN for null).
    offers: Vec<String>,
    offer_uplift: Vec<f64>,
    /// Interned labels and reason feature names.
    strings: Vec<String>,
    /// Campaign -> contact list in rank order, and its summary.
    audiences: BTreeMap<String, Audience>,
    /// What the dashboard shows of this snapshot.
    board: Board,
}

/// One campaign's contact list in a snapshot.
#[derive(Debug)]
pub struct Audience {
    pub entries: Vec<AudienceEntry>,
    /// The selection's summary (counts, suppressions) as `engage nightly`
    /// wrote it; `null` when the snapshot has none.
    pub summary: serde_json::Value,
}

/// Distinct strings in one buffer, each found by value: no allocation and
/// no pointer per string (a million customer ids, millions of emails and
/// phones), which halves a snapshot's memory against a map of `String`s.
/// Position `i` is the `i`-th string inserted.
#[derive(Debug, Default)]
struct StrIndex {
    text: String,
    /// Where each string ends in `text`.
    ends: Vec<u64>,
    table: HashTable<u32>,
    hasher: RandomState,
}

/// String `i` of a [`StrIndex`]'s `text` and `ends`.
fn nth<'a>(text: &'a str, ends: &[u64], i: u32) -> &'a str {
    let start = if i == 0 { 0 } else { ends[i as usize - 1] as usize };
    &text[start..ends[i as usize] as usize]
}

impl StrIndex {
    fn with_capacity(n: usize) -> StrIndex {
        StrIndex { ends: Vec::with_capacity(n), table: HashTable::with_capacity(n), ..Default::default() }
    }

    fn len(&self) -> usize {
        self.ends.len()
    }

    fn str(&self, i: u32) -> &str {
        nth(&self.text, &self.ends, i)
    }

    fn get(&self, s: &str) -> Option<u32> {
        self.table.find(self.hasher.hash_one(s), |&i| self.str(i) == s).copied()
    }

    /// Adds `s`: its position, or `Err` with the position it already has.
    fn insert(&mut self, s: &str) -> Result<u32, u32> {
        let hash = self.hasher.hash_one(s);
        if let Some(&i) = self.table.find(hash, |&i| self.str(i) == s) {
            return Err(i);
        }
        let i = u32::try_from(self.ends.len()).expect("fewer than 2^32 strings");
        self.text.push_str(s);
        self.ends.push(self.text.len() as u64);
        let StrIndex { text, ends, table, hasher } = self;
        table.insert_unique(hash, i, |&j| hasher.hash_one(nth(text, ends, j)));
        Ok(i)
    }
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

/// Reads a Parquet file batch by batch: a snapshot is loaded while the
/// previous one serves, so no file is held decoded in full.
pub(crate) fn read_parquet(
    path: &Path,
) -> Result<impl Iterator<Item = Result<RecordBatch, ServeError>> + use<>, ServeError> {
    let shown = path.display().to_string();
    let parquet_err = |source| ServeError::Parquet { path: shown.clone(), source };
    let file = std::fs::File::open(path)
        .map_err(|source| engage_models::ModelError::Io { path: shown.clone(), source })?;
    let reader =
        ParquetRecordBatchReaderBuilder::try_new(file).map_err(parquet_err)?.build().map_err(parquet_err)?;
    Ok(reader.map(move |b| b.map_err(|e| ServeError::Parquet { path: shown.clone(), source: e.into() })))
}

/// Column `name` of `batch`, which must have type `ty`.
pub(crate) fn column(
    batch: &RecordBatch,
    path: &Path,
    name: &str,
    ty: &DataType,
) -> Result<ArrayRef, ServeError> {
    let schema_err = |reason: String| ServeError::Schema { path: path.display().to_string(), reason };
    let col = batch.column_by_name(name).ok_or_else(|| schema_err(format!("column `{name}` missing")))?;
    if col.data_type() != ty {
        return Err(schema_err(format!("column `{name}`: expected {ty}, found {}", col.data_type())));
    }
    Ok(col.clone())
}

/// Text column `name` (`Utf8`) of `batch`, with no nulls when `required`.
pub(crate) fn text(
    batch: &RecordBatch,
    path: &Path,
    name: &str,
    required: bool,
) -> Result<ArrayRef, ServeError> {
    let col = column(batch, path, name, &DataType::Utf8)?;
    if required && col.null_count() > 0 {
        return Err(ServeError::Schema {
            path: path.display().to_string(),
            reason: format!("column `{name}`: {} null values", col.null_count()),
        });
    }
    Ok(col)
}

impl ScoreService {
    /// Loads the snapshot that `<root>/CURRENT` points to.
    pub fn load(root: &Path) -> Result<ScoreService, ServeError> {
        let (dir, manifest) = snapshot::current(root)?;
        Self::load_dir(&dir, manifest)
    }

    /// Loads and checks snapshot directory `dir` in full: the scores
    /// (columns, types, one row per customer, as many as the manifest
    /// says), the identity lookup (every identifier resolves to a scored
    /// customer) and every contact list.
    pub fn load_dir(dir: &Path, manifest: SnapshotManifest) -> Result<ScoreService, ServeError> {
        let path = dir.join(SCORES_FILE);
        let schema_err =
            |path: &Path, reason: String| ServeError::Schema { path: path.display().to_string(), reason };
        let n = manifest.rows as usize;
        let mut svc = ScoreService {
            ids: StrIndex::with_capacity(n),
            identities: Default::default(),
            rows: Vec::with_capacity(n),
            offers: Vec::new(),
            offer_uplift: Vec::new(),
            strings: Vec::new(),
            audiences: BTreeMap::new(),
            board: Board::default(),
            manifest,
        };
        let mut index = HashMap::new();
        for batch in read_parquet(&path)? {
            let batch = batch?;
            let ids = text(&batch, &path, "customer_id", true)?;
            let ids = ids.as_string::<i32>();
            if svc.offers.is_empty() {
                for field in batch.schema().fields() {
                    if let Some(offer) = field.name().strip_prefix("uplift_") {
                        svc.offers.push(offer.to_string());
                    }
                }
                svc.offers.sort();
            }
            let base = svc.rows.len();
            svc.rows.resize(base + batch.num_rows(), EMPTY_ROW);
            let rows = &mut svc.rows[base..];
            for (j, name) in SCORES.iter().enumerate() {
                let col = column(&batch, &path, name, &DataType::Float64)?;
                let col = col.as_primitive::<Float64Type>();
                for (i, row) in rows.iter_mut().enumerate() {
                    if col.is_valid(i) {
                        row.scores[j] = col.value(i);
                    }
                }
            }
            let k = svc.offers.len();
            svc.offer_uplift.resize((base + batch.num_rows()) * k, f64::NAN);
            for (o, offer) in svc.offers.iter().enumerate() {
                let col = column(&batch, &path, &format!("uplift_{offer}"), &DataType::Float64)?;
                let col = col.as_primitive::<Float64Type>();
                for i in (0..col.len()).filter(|&i| col.is_valid(i)) {
                    svc.offer_uplift[(base + i) * k + o] = col.value(i);
                }
            }
            for (j, name) in LABELS.iter().enumerate() {
                // Every row has a contact strategy and a treatment.
                let col = text(&batch, &path, name, matches!(j, 3 | 4))?;
                let col = col.as_string::<i32>();
                for (row, v) in rows.iter_mut().zip(col.iter()) {
                    row.labels[j] = v.map_or(NONE, |v| intern(&mut svc.strings, &mut index, v));
                }
            }
            for k in 0..REASONS {
                let feature = text(&batch, &path, &format!("reason_{}", k + 1), false)?;
                let impact = column(&batch, &path, &format!("reason_{}_impact", k + 1), &DataType::Float64)?;
                let (feature, impact) = (feature.as_string::<i32>(), impact.as_primitive::<Float64Type>());
                for (i, row) in rows.iter_mut().enumerate() {
                    if feature.is_valid(i) && impact.is_valid(i) {
                        row.reasons[k] =
                            (intern(&mut svc.strings, &mut index, feature.value(i)), impact.value(i));
                    }
                }
            }
            for id in ids.iter().flatten() {
                if svc.ids.insert(id).is_err() {
                    return Err(schema_err(&path, format!("customer `{id}` appears twice")));
                }
            }
        }
        if svc.ids.len() != n {
            return Err(schema_err(&path, format!("{} customers, the manifest says {n}", svc.ids.len())));
        }

        let path = dir.join(IDENTITIES_FILE);
        for batch in read_parquet(&path)? {
            let batch = batch?;
            let (ty, value, id) = (
                text(&batch, &path, "identifier_type", true)?,
                text(&batch, &path, "identifier_value", true)?,
                text(&batch, &path, "customer_id", true)?,
            );
            let (ty, value, id) = (ty.as_string::<i32>(), value.as_string::<i32>(), id.as_string::<i32>());
            for i in 0..batch.num_rows() {
                let t = LOOKUP_ID_TYPES.iter().position(|t| *t == ty.value(i)).ok_or_else(|| {
                    schema_err(
                        &path,
                        format!(
                            "row {i}: identifier type `{}` is not one of {LOOKUP_ID_TYPES:?}",
                            ty.value(i)
                        ),
                    )
                })?;
                let row = svc.row_of(id.value(i)).ok_or_else(|| {
                    schema_err(&path, format!("row {i}: customer `{}` is not in {SCORES_FILE}", id.value(i)))
                })?;
                let (values, rows) = &mut svc.identities[t];
                if values.insert(value.value(i)).is_err() {
                    return Err(schema_err(
                        &path,
                        format!("row {i}: {} `{}` appears twice", ty.value(i), value.value(i)),
                    ));
                }
                rows.push(row);
            }
        }

        let snapshot_dir = dir;
        let dir = dir.join(AUDIENCES_DIR);
        let summaries: Vec<serde_json::Value> = match std::fs::read(dir.join(AUDIENCE_SUMMARY_FILE)) {
            Ok(bytes) => {
                serde_json::from_slice(&bytes).map_err(|source| engage_models::ModelError::Parse {
                    path: dir.join(AUDIENCE_SUMMARY_FILE).display().to_string(),
                    source,
                })?
            }
            Err(_) => Vec::new(),
        };
        let mut files: Vec<_> = match std::fs::read_dir(&dir) {
            Ok(entries) => entries
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|e| e == "parquet"))
                .collect(),
            Err(_) => Vec::new(),
        };
        files.sort();
        for path in files {
            let campaign = path.file_stem().expect("a file name").to_string_lossy().to_string();
            let mut entries = Vec::new();
            for batch in read_parquet(&path)? {
                let batch = batch?;
                let (id, group, channel, offer) = (
                    text(&batch, &path, "customer_id", true)?,
                    text(&batch, &path, "group", true)?,
                    text(&batch, &path, "channel", true)?,
                    text(&batch, &path, "offer", false)?,
                );
                let rank = column(&batch, &path, "rank", &DataType::UInt64)?;
                let value = column(&batch, &path, "rank_value", &DataType::Float64)?;
                let (id, group, channel, offer) = (
                    id.as_string::<i32>(),
                    group.as_string::<i32>(),
                    channel.as_string::<i32>(),
                    offer.as_string::<i32>(),
                );
                let (rank, value) = (rank.as_primitive::<UInt64Type>(), value.as_primitive::<Float64Type>());
                for i in 0..batch.num_rows() {
                    if svc.row_of(id.value(i)).is_none() {
                        return Err(schema_err(
                            &path,
                            format!("row {i}: customer `{}` is not in {SCORES_FILE}", id.value(i)),
                        ));
                    }
                    entries.push(AudienceEntry {
                        customer_id: id.value(i).to_string(),
                        group: group.value(i).to_string(),
                        channel: channel.value(i).to_string(),
                        offer: offer.is_valid(i).then(|| offer.value(i).to_string()),
                        rank: rank.value(i),
                        rank_value: value.is_valid(i).then(|| value.value(i)),
                    });
                }
            }
            entries.sort_by_key(|e| e.rank);
            let summary = summaries
                .iter()
                .find(|s| s.get("campaign_id").and_then(|c| c.as_str()) == Some(campaign.as_str()))
                .cloned()
                .unwrap_or(serde_json::Value::Null);
            svc.audiences.insert(campaign, Audience { entries, summary });
        }
        svc.board = Board::build(&svc, snapshot_dir)?;
        Ok(svc)
    }

    /// The dashboard's view of this snapshot.
    pub(crate) fn board(&self) -> &Board {
        &self.board
    }

    /// Score `name` (a scores column: `churn_probability`, `clv`, ...) of
    /// every customer by row; NaN where null.
    pub(crate) fn score_values(&self, name: &str) -> Vec<f64> {
        let j = SCORES.iter().position(|s| *s == name).expect("a score column");
        self.rows.iter().map(|r| r.scores[j]).collect()
    }

    /// Label `name` (`lifecycle_stage`, `value_tier`, `risk_band`, ...) of
    /// every customer by row.
    pub(crate) fn label_values(&self, name: &str) -> Vec<Option<&str>> {
        let j = LABELS.iter().position(|s| *s == name).expect("a label column");
        self.rows.iter().map(|r| self.label(r.labels[j])).collect()
    }

    /// The row of customer id `id`.
    pub(crate) fn row_of(&self, id: &str) -> Option<u32> {
        self.ids.get(id)
    }

    /// The row of the customer `id` names: a customer id as it is, an
    /// email, phone or loyalty id normalised as identity resolution does
    /// and looked up in the snapshot's identity map.
    pub(crate) fn row(&self, id_type: IdType, id: &str) -> Result<u32, ApiError> {
        let unknown = || ApiError::UnknownCustomer { id_type: id_type.name(), id: id.to_string() };
        let malformed = |what: &str| ApiError::invalid("id", format!("`{id}` is not {what}"));
        let (table, key) = match id_type {
            IdType::CustomerId => {
                let key = normalize_id(id).ok_or_else(|| malformed("a customer id"))?;
                return self.row_of(&key).ok_or_else(unknown);
            }
            IdType::Email => {
                (&self.identities[0], normalize_email(id).ok_or_else(|| malformed("an email address"))?)
            }
            IdType::Phone => (
                &self.identities[1],
                normalize_phone(id, &self.manifest.default_country_code)
                    .ok_or_else(|| malformed("a phone number (7 to 15 digits)"))?,
            ),
            IdType::LoyaltyId => {
                (&self.identities[2], normalize_id(id).ok_or_else(|| malformed("a loyalty id"))?)
            }
        };
        let (values, rows) = table;
        values.get(&key).map(|i| rows[i as usize]).ok_or_else(unknown)
    }

    /// Scores of the customer `id` names (an identifier of `id_type`).
    pub fn lookup(&self, id_type: IdType, id: &str) -> Result<CustomerScores<'_>, ApiError> {
        Ok(self.scores_at(self.row(id_type, id)? as usize))
    }

    /// An interned label.
    fn label(&self, s: u32) -> Option<&str> {
        (s != NONE).then(|| self.strings[s as usize].as_str())
    }

    /// Scores of the customer in `row`.
    pub(crate) fn scores_at(&self, row: usize) -> CustomerScores<'_> {
        let r = &self.rows[row];
        let score = |j: usize| Some(r.scores[j]).filter(|v| !v.is_nan());
        let label = |j: usize| self.label(r.labels[j]);
        let m = &self.manifest;
        CustomerScores {
            customer_id: self.ids.str(row as u32),
            churn_probability: score(0),
            model_version: m.models.get("churn").map(String::as_str),
            response_probability: score(1),
            uplift: score(2),
            best_offer: label(5),
            uplift_by_offer: OfferUplift {
                offers: &self.offers,
                values: &self.offer_uplift[row * self.offers.len()..(row + 1) * self.offers.len()],
            },
            p_alive: score(3),
            expected_purchases: score(4),
            clv: score(5),
            lifecycle_stage: label(0),
            value_tier: label(1),
            risk_band: label(2),
            contact_strategy: label(3).expect("checked at load"),
            recommended_treatment: label(4).expect("checked at load"),
            model_versions: &m.models,
            reasons: r
                .reasons
                .iter()
                .copied()
                .filter(|(f, _)| *f != NONE)
                .map(|(f, impact)| Reason { feature: &self.strings[f as usize], impact })
                .collect(),
            as_of: &m.as_of,
            scored_at: &m.scored_at,
            snapshot_id: &m.snapshot_id,
        }
    }

    /// Scores of one customer by customer id, or `UnknownCustomer`.
    pub fn scores_for(&self, customer_id: &str) -> Result<CustomerScores<'_>, ApiError> {
        self.lookup(IdType::CustomerId, customer_id)
    }

    /// The manifest of the loaded snapshot.
    pub fn manifest(&self) -> &SnapshotManifest {
        &self.manifest
    }

    /// Identifiers in the identity lookup, per type of [`LOOKUP_ID_TYPES`].
    pub fn identifiers(&self) -> [usize; 3] {
        self.identities.each_ref().map(|(values, _)| values.len())
    }

    /// Campaigns with a contact list, by id.
    pub fn audiences(&self) -> &BTreeMap<String, Audience> {
        &self.audiences
    }

    /// Customers in the snapshot.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// True when the snapshot has no rows.
    pub fn is_empty(&self) -> bool {
        self.ids.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::{CustomerScores, OfferUplift, Reason, StrIndex};
    use std::collections::BTreeMap;

    #[test]
    fn scores_json_is_what_serde_writes() {
        let versions: BTreeMap<String, String> =
            [("churn", "churn-1"), ("clv", "clv \"2\"")].map(|(k, v)| (k.into(), v.into())).into();
        let offers = ["10pct_off".to_string(), "b\u{e9}\\n".into(), "free_ship".into()];
        let values = [0.13340621072534178, f64::NAN, -1e-300];
        let full = CustomerScores {
            customer_id: "C\"0\u{1}\u{1f}\n\u{7f}\u{1F600}",
            churn_probability: Some(0.6459976682901849),
            model_version: Some("churn-1"),
            response_probability: Some(1e21),
            uplift: Some(-0.0),
            best_offer: Some("10pct_off"),
            uplift_by_offer: OfferUplift { offers: &offers, values: &values },
            p_alive: Some(f64::INFINITY),
            expected_purchases: Some(3.0),
            clv: Some(1234.5),
            lifecycle_stage: Some(""),
            value_tier: Some("\u{1f}"),
            risk_band: Some("\t"),
            contact_strategy: "tech_touch",
            recommended_treatment: "nurture",
            model_versions: &versions,
            as_of: "2026-07-01",
            scored_at: "2026-12-03T11:51:30Z",
            snapshot_id: "2026-07-01_20261203T115130",
            reasons: vec![
                Reason { feature: "emails_sent_30d", impact: 1.9507322091458648 },
                Reason { feature: "a\\b", impact: f64::NAN },
            ],
        };
        let empty = BTreeMap::new();
        let bare = CustomerScores {
            churn_probability: None,
            model_version: None,
            response_probability: None,
            uplift: None,
            best_offer: None,
            uplift_by_offer: OfferUplift { offers: &[], values: &[] },
            p_alive: None,
            expected_purchases: None,
            clv: None,
            lifecycle_stage: None,
            value_tier: None,
            risk_band: None,
            model_versions: &empty,
            reasons: Vec::new(),
            ..full.clone()
        };
        for scores in [full, bare] {
            let ours = String::from_utf8(scores.to_json()).unwrap();
            assert_eq!(ours, serde_json::to_string(&scores).unwrap());
        }
    }

    #[test]
    fn strings_are_found_by_value_and_position_and_added_once() {
        let mut index = StrIndex::with_capacity(2);
        // More than the capacity: the table grows and rehashes from the text.
        let values: Vec<String> = (0..1000).map(|i| format!("C{i:07}")).chain(["".into()]).collect();
        for (i, v) in values.iter().enumerate() {
            assert_eq!(index.insert(v), Ok(i as u32));
        }
        assert_eq!(index.insert("C0000007"), Err(7));
        assert_eq!(index.insert(""), Err(1000));
        assert_eq!(index.len(), values.len());
        for (i, v) in values.iter().enumerate() {
            assert_eq!(index.get(v), Some(i as u32), "{v}");
            assert_eq!(index.str(i as u32), v);
        }
        assert_eq!(index.get("C0001000"), None);
        assert_eq!(index.get("C000000"), None, "a prefix of a stored string");
    }
}
