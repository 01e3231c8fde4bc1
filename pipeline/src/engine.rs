//! The engine: one DataFusion session over one data root, with the inputs
//! checked and registered, identities resolved per cutoff, and the feature
//! and label SQL runnable as of any cutoff.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::NaiveDate;
use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, DictionaryArray, Int64Array, Scalar, StringArray, UInt8Array, UInt32Builder,
};
use datafusion::arrow::buffer::ScalarBuffer;
use datafusion::arrow::compute::kernels::cmp::lt;
use datafusion::arrow::compute::{cast, filter_record_batch, is_not_null};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimestampMicrosecondType};
use datafusion::arrow::error::ArrowError;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::{JoinType, ScalarValue};
use datafusion::datasource::{MemTable, TableProvider};
use datafusion::execution::memory_pool::{MemoryConsumer, MemoryReservation};
use datafusion::functions::string::expr_fn::btrim;
use datafusion::prelude::{DataFrame, ParquetReadOptions, SessionConfig, SessionContext, col, lit};
use futures::StreamExt;

use crate::cache::Cache;
use crate::claim::SpillDir;
use crate::erasure::ErasureList;
use crate::error::{PipelineError, Result, io, query};
use crate::events::{Attributed as AttributedEvents, Batches, Finished, Held};
use crate::identity::{
    Attribution, GraphBuilder, ID_TYPES, IdentityOptions, IdentityQuality, IdentityStats, Resolution,
    key_schema, map_schema, pairwise_quality,
};
use crate::ingest::{AcceptedRows, Located, TableCounts, register_inputs, rejects_view};
use crate::output::{BATCH_ROWS, ParquetSink, read_parquet, write_parquet};
use crate::report::Stopwatch;
use crate::runtime::{ByteSize, EngineSettings};
use crate::schema::{CONTACTS, CUSTOMERS, INTERACTIONS, RESPONSES, TRANSACTIONS};
use crate::sql::{
    AUDIENCE_ELIGIBILITY, CAMPAIGN_RESULTS, CHURN_LABEL, CONTACT_HISTORY, FEATURES, HOLDOUT,
    IDENTITY_QUALITY, LABELS, LIFECYCLE, PURCHASE_DAYS, PURCHASE_SUMMARY, RESPONSE_LABEL, SPEND_LABEL,
    SqlFile,
};
use crate::store::DataRoot;
use crate::worker::{Worker, joined};

/// Column of the erased customer ids joined against.
const ERASED_ID: &str = "__erased_customer_id";

/// Partitions of the attributed event views (feature queries scan them in
/// parallel).
const ATTRIBUTION_PARTITIONS: usize = 2;

/// The identifier columns of `batch` named `names`, with their types.
fn id_columns<'a>(batch: &'a RecordBatch, names: &[&str]) -> Vec<(usize, &'a StringArray)> {
    names
        .iter()
        .map(|name| {
            let ty = ID_TYPES.iter().position(|t| t == name).expect("an identifier type");
            let values = batch.column_by_name(name).expect("selected column").as_string::<i32>();
            (ty, values)
        })
        .collect()
}

/// How events were attributed, per event table.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ResolvedCounts {
    /// Transactions attributed to a CRM customer (a customer of the
    /// customers table); the other attributed ones went to anonymous or
    /// shared-identifier keys.
    pub transactions: u64,
    /// Interactions attributed to a CRM customer.
    pub interactions: u64,
    /// Accepted transactions none of whose identifiers normalises (e.g. an
    /// email without `@` and nothing else): they reach no customer's features.
    pub unattributed_transactions: u64,
    /// Accepted interactions without a usable identifier.
    pub unattributed_interactions: u64,
    /// Transactions of people on the erasure list, left out.
    #[serde(default)]
    pub erased_transactions: u64,
    /// Interactions of people on the erasure list, left out.
    #[serde(default)]
    pub erased_interactions: u64,
}

/// The feature table: the last of [`FEATURES`], joining the others.
const FEATURE_TABLE: SqlFile = FEATURES[FEATURES.len() - 1];

/// The purchase summaries of [`Engine::write_purchase_summaries`] as
/// BG/NBD and Gamma-Gamma take them (in `unit_days`-day units; the same
/// summary as [`engage_models::clv::summarize`] of
/// [`Engine::purchase_days`]), looked up in customer order: a walk along
/// the file that holds one batch at a time, not every customer.
pub struct PurchaseSummaries {
    batches: Box<dyn Iterator<Item = Result<RecordBatch>>>,
    batch: Option<(StringArray, RecordBatch)>,
    row: usize,
    /// The id asked for last: ids must come in ascending order.
    last: String,
    end_day: i64,
    unit_days: f64,
}

impl PurchaseSummaries {
    pub fn open(path: &Path, as_of: NaiveDate, unit_days: f64) -> Result<PurchaseSummaries> {
        let (_, batches) = read_parquet(path, BATCH_ROWS, None)?;
        let end_day = day_number(as_of) as i64 - 1;
        let batches = Box::new(batches);
        Ok(PurchaseSummaries { batches, batch: None, row: 0, last: String::new(), end_day, unit_days })
    }

    /// `id`'s summary, None if they bought nothing; an error if `id` comes
    /// before the id asked for last.
    pub fn get(&mut self, id: &str) -> Result<Option<engage_models::clv::Rfm>> {
        if id < self.last.as_str() {
            return Err(PipelineError::InvalidArgument {
                name: "feature table",
                value: id.to_string(),
                reason: format!(
                    "customers must come in customer_id order to be scored (`{id}` after `{}`)",
                    self.last
                ),
            });
        }
        self.last.clear();
        self.last.push_str(id);
        loop {
            match &self.batch {
                Some((ids, _)) if self.row < ids.len() => match ids.value(self.row).cmp(id) {
                    std::cmp::Ordering::Less => self.row += 1,
                    std::cmp::Ordering::Equal => return Ok(Some(self.summary())),
                    std::cmp::Ordering::Greater => return Ok(None),
                },
                _ => match self.batches.next() {
                    None => {
                        self.batch = None;
                        return Ok(None);
                    }
                    Some(b) => {
                        let b = b?;
                        let ids = cast(b.column(0), &DataType::Utf8)
                            .map_err(|e| query(PURCHASE_SUMMARY.path)(e.into()))?;
                        self.batch = Some((ids.as_string::<i32>().clone(), b));
                        self.row = 0;
                    }
                },
            }
        }
    }

    fn summary(&self) -> engage_models::clv::Rfm {
        let (_, b) = self.batch.as_ref().expect("a current batch");
        let i = self.row;
        let int = |j: usize| b.column(j).as_primitive::<datafusion::arrow::datatypes::Int64Type>().value(i);
        let (first, last, days) = (int(1), int(2), int(3));
        let repeat = b.column(4).as_primitive::<datafusion::arrow::datatypes::Float64Type>().value(i);
        let repeats = (days - 1) as f64;
        engage_models::clv::Rfm {
            frequency: repeats,
            recency: (last - first) as f64 / self.unit_days,
            age: (self.end_day - first) as f64 / self.unit_days,
            monetary: if repeats > 0.0 { repeat / repeats } else { 0.0 },
        }
    }
}

/// Memory the driver holds itself, outside the engine's operators (the
/// identity graph, scoring's few numbers per customer), counted in the
/// engine's memory pool: the SQL running beside it leaves it room, and
/// holding more than the limit leaves stops the run with an error that
/// says so (without a limit the pool is unbounded).
pub(crate) struct Counted {
    reservation: MemoryReservation,
    what: &'static str,
    limit: Option<ByteSize>,
    largest: usize,
}

impl Counted {
    /// Nothing held yet, as `what`, in the pool of `ctx`.
    fn new(ctx: &SessionContext, what: &'static str, limit: Option<ByteSize>) -> Counted {
        let reservation = MemoryConsumer::new(what).register(&ctx.runtime_env().memory_pool);
        Counted { reservation, what, limit, largest: 0 }
    }

    /// Now holding `bytes` in all.
    pub(crate) fn hold(&mut self, bytes: usize) -> Result<()> {
        self.largest = self.largest.max(bytes);
        self.reservation.try_resize(bytes).map_err(|source| PipelineError::DriverMemory {
            what: self.what,
            needed: ByteSize(bytes as u64),
            limit: self.limit.unwrap_or(ByteSize(0)),
            source,
        })
    }
}

/// `df` planned with sort-merge joins instead of hash joins. The feature
/// table joins eight tables of one row per customer and is ordered by
/// customer, the order a merge join's output is in already; hash joins,
/// each repartitioning both sides, then a sort of the whole table held
/// 1.1 to 1.4 GiB of the engine's pool at 1M customers against 0.68 GiB,
/// in about the same time (BENCHMARKS.md).
fn merge_joined(df: DataFrame) -> DataFrame {
    let (mut state, plan) = df.into_parts();
    state.config_mut().options_mut().optimizer.prefer_hash_join = false;
    DataFrame::new(state, plan)
}

/// Registers `table` as `name` in `ctx`, replacing one of that name.
fn replace_table(ctx: &SessionContext, name: &str, table: Arc<dyn TableProvider>) -> Result<()> {
    ctx.deregister_table(name).map_err(query(name))?;
    ctx.register_table(name, table).map_err(query(name))?;
    Ok(())
}

/// An empty feature table, as an error.
fn no_customers(as_of: NaiveDate) -> PipelineError {
    PipelineError::InvalidArgument {
        name: "--as-of",
        value: as_of.to_string(),
        reason: "no customer signed up before this date: the feature table would be empty".into(),
    }
}

/// Runs `df` (the query `name`) into a Parquet sink at `path`, batch by
/// batch; the caller finishes it.
async fn sink_stream(df: DataFrame, path: &Path, name: &str) -> Result<ParquetSink> {
    let mut stream = df.execute_stream().await.map_err(query(name))?;
    sink_batches(&mut stream, path, name).await
}

/// The batches of `stream` (of the query `name`) into a Parquet sink at
/// `path`; the caller finishes it.
async fn sink_batches(
    stream: &mut datafusion::execution::SendableRecordBatchStream,
    path: &Path,
    name: &str,
) -> Result<ParquetSink> {
    let mut sink = ParquetSink::create(path, stream.schema())?;
    while let Some(batch) = stream.next().await {
        sink.write(&batch.map_err(query(name))?)?;
    }
    Ok(sink)
}

/// The feature table to come: its plan over the materialised feature
/// groups, or its stream from the cluster computing it.
enum FeatureTable {
    Plan(DataFrame),
    #[cfg(feature = "ballista")]
    Remote(datafusion::execution::SendableRecordBatchStream),
}

/// The customer keys of the resolution in force, by the number the
/// attributed events carry ([`crate::identity::key_schema`]).
pub const KEYS: &str = "customer_keys";

/// An event table and the columns its attributed view keeps (the ones
/// feature SQL reads), plus `customer_no`.
struct Attributed {
    table: &'static str,
    view: &'static str,
    keep: &'static [&'static str],
}

const ATTRIBUTED: [Attributed; 2] = [
    Attributed {
        table: TRANSACTIONS,
        view: "transactions_resolved",
        keep: &["transaction_id", "ts", "amount", "channel"],
    },
    Attributed {
        table: INTERACTIONS,
        view: "interactions_resolved",
        keep: &["ts", "channel", "event_type", "duration_s"],
    },
];

impl Attributed {
    /// The closed vocabulary of a kept column of [`Attributed::table`]
    /// (`channel`, `event_type`), if it has one.
    fn vocabulary(&self, column: &str) -> Option<&'static [&'static str]> {
        let spec = crate::schema::table(self.table).expect("a contract table");
        spec.columns.iter().find(|c| c.name == column).and_then(|c| c.allowed)
    }

    /// The type a kept column is held in: a column of a closed vocabulary
    /// dictionary-encoded, one byte a row instead of its text (tens of
    /// millions of rows, a handful of values), which the feature SQL also
    /// compares faster; the others as the contract has them.
    fn held_type(&self, column: &str, canonical: &DataType) -> DataType {
        match self.vocabulary(column) {
            Some(_) => DataType::Dictionary(Box::new(DataType::UInt8), Box::new(DataType::Utf8)),
            None => canonical.clone(),
        }
    }

    /// The schema the kept columns `fields` are held in.
    fn held_schema<'f>(&self, fields: impl IntoIterator<Item = &'f Field>) -> Schema {
        Schema::new(
            fields
                .into_iter()
                .map(|f| f.clone().with_data_type(self.held_type(f.name(), f.data_type())))
                .collect::<Vec<_>>(),
        )
    }

    /// `rows` (the kept columns) in their held types. A vocabulary's
    /// dictionary is the vocabulary itself, in the contract's order, and a
    /// value's key its place there: no hashing, and every batch has the
    /// same dictionary.
    fn held(&self, rows: RecordBatch) -> Result<RecordBatch> {
        let schema = Arc::new(self.held_schema(rows.schema().fields().iter().map(|f| f.as_ref())));
        let err = |e: ArrowError| query(self.table)(e.into());
        let mut columns = Vec::with_capacity(rows.num_columns());
        for (column, field) in rows.columns().iter().zip(schema.fields()) {
            let Some(words) = self.vocabulary(field.name()) else {
                columns.push(column.clone());
                continue;
            };
            let text = column.as_string::<i32>();
            let keys = text
                .iter()
                .map(|v| match v {
                    None => Ok(None),
                    Some(v) => match words.iter().position(|w| *w == v).and_then(|k| u8::try_from(k).ok()) {
                        Some(k) => Ok(Some(k)),
                        // The contract check rejects such rows before.
                        None => Err(ArrowError::InvalidArgumentError(format!(
                            "{}: {v:?} is not one of {words:?}",
                            field.name()
                        ))),
                    },
                })
                .collect::<std::result::Result<UInt8Array, _>>()
                .map_err(err)?;
            let dictionary = DictionaryArray::try_new(keys, Arc::new(StringArray::from(words.to_vec())));
            columns.push(Arc::new(dictionary.map_err(err)?) as ArrayRef);
        }
        RecordBatch::try_new(schema, columns).map_err(err)
    }
}

/// The identity map in force and what it found.
#[derive(Debug, Clone)]
pub struct ResolvedIdentity {
    /// Only rows before this date were used (`None`: all rows).
    pub cutoff: Option<NaiveDate>,
    pub map: IdentityMap,
    pub stats: IdentityStats,
    /// Events attributed to a CRM customer.
    pub resolved: ResolvedCounts,
}

/// The identity map being built ([`IdentityMap::sink`]).
enum MapSink {
    Memory(Vec<RecordBatch>),
    File(SpillDir, Box<ParquetSink>),
}

impl MapSink {
    fn push(&mut self, chunk: RecordBatch) -> Result<()> {
        match self {
            MapSink::Memory(chunks) => chunks.push(chunk),
            MapSink::File(_, sink) => sink.write(&chunk)?,
        }
        Ok(())
    }

    fn finish(self) -> Result<IdentityMap> {
        Ok(match self {
            MapSink::Memory(chunks) => IdentityMap::Memory(chunks),
            MapSink::File(dir, sink) => {
                sink.finish()?;
                IdentityMap::File(Arc::new(dir))
            }
        })
    }
}

/// The identity map (see [`crate::identity::map_schema`]): in memory, or
/// under a memory limit in a Parquet file in a spill directory of its own
/// (at 10M customers it is some 50 M rows; it outlives the attributed
/// events, until the snapshot's identity lookup is written).
#[derive(Debug, Clone)]
pub enum IdentityMap {
    Memory(Vec<RecordBatch>),
    File(Arc<SpillDir>),
}

impl IdentityMap {
    const FILE: &str = "identity_map.parquet";

    /// Where the map goes as it is built: memory, or with `spill` a file
    /// there.
    fn sink(spill: Option<SpillDir>) -> Result<MapSink> {
        Ok(match spill {
            None => MapSink::Memory(Vec::new()),
            Some(dir) => {
                let sink = ParquetSink::create(&dir.path().join(Self::FILE), map_schema())?;
                MapSink::File(dir, Box::new(sink))
            }
        })
    }

    /// The map's rows, a chunk at a time.
    pub fn chunks(&self) -> Result<Box<dyn Iterator<Item = Result<RecordBatch>>>> {
        match self {
            IdentityMap::Memory(chunks) => Ok(Box::new(chunks.clone().into_iter().map(Ok))),
            IdentityMap::File(dir) => {
                Ok(Box::new(read_parquet(&dir.path().join(Self::FILE), BATCH_ROWS, None)?.1))
            }
        }
    }

    /// Writes the map to the Parquet file `path`; returns its rows.
    pub fn write(&self, path: &Path) -> Result<u64> {
        let mut sink = ParquetSink::create(path, map_schema())?;
        for chunk in self.chunks()? {
            sink.write(&chunk?)?;
        }
        sink.finish()
    }
}

/// An attributed view's schema: the held columns, then `customer_no`, the
/// number of the row's customer key in the resolution in force (see the
/// `customer_keys` table, [`crate::identity::key_schema`]): the feature
/// SQL groups and joins tens of millions of rows on it, twice as fast as on
/// the key's text.
fn with_customer_no<'f>(held: impl IntoIterator<Item = &'f Field>) -> SchemaRef {
    let key = Field::new("customer_no", DataType::UInt32, true);
    Arc::new(Schema::new(held.into_iter().cloned().chain([key]).collect::<Vec<_>>()))
}

/// Where an event table's rows went.
#[derive(Default)]
struct Tally {
    crm: u64,
    unattributed: u64,
    erased: u64,
}

/// Which held rows get a customer key: those before `before` (a dated
/// graph resolved for an earlier cutoff than its own; `None`: every row),
/// and whether the rows without one are left out of the attributed batch.
#[derive(Clone, Copy)]
struct Keyed<'a> {
    before: Option<&'a Scalar<ArrayRef>>,
    /// Leave them out (a copy of the batch's columns: for events written to
    /// disk), else keep them, keyless, in a batch that shares the held
    /// columns: the attributed view reads the rows with a key only
    /// ([`keyed_rows`]).
    compact: bool,
}

/// `batch` (held rows of the view `view`) with each row's customer key
/// from its reference in `refs`, counted in `tally`; rows of no customer
/// and rows `keyed` leaves out of time get none.
fn attribute(
    resolution: &Resolution,
    view: &str,
    schema: &SchemaRef,
    batch: RecordBatch,
    refs: &[u32],
    keyed: Keyed,
    tally: &mut Tally,
) -> Result<RecordBatch> {
    let err = |e: ArrowError| query(view)(e.into());
    let in_time = match keyed.before {
        Some(before) => Some(lt(batch.column_by_name("ts").expect("events have ts"), before).map_err(err)?),
        None => None,
    };
    let mut keys = UInt32Builder::with_capacity(refs.len());
    for (i, &r) in refs.iter().enumerate() {
        // A row from the cutoff on may refer to an identifier first seen
        // after it, which this resolution does not know.
        if in_time.as_ref().is_some_and(|t| !t.value(i)) {
            keys.append_null();
            continue;
        }
        match resolution.attribute(r) {
            Attribution::Customer { no, crm } => {
                tally.crm += crm as u64;
                keys.append_value(no);
            }
            Attribution::Unattributed => {
                tally.unattributed += 1;
                keys.append_null();
            }
            Attribution::Erased => {
                tally.erased += 1;
                keys.append_null();
            }
        }
    }
    let keys = keys.finish();
    let some_left_out = keys.null_count() > 0;
    let mut columns = batch.columns().to_vec();
    columns.push(Arc::new(keys));
    let full = RecordBatch::try_new(schema.clone(), columns).map_err(err)?;
    if !(keyed.compact && some_left_out) {
        return Ok(full);
    }
    let keep = is_not_null(full.column(full.num_columns() - 1)).map_err(err)?;
    filter_record_batch(&full, &keep).map_err(err)
}

/// The attributed view over `rows` (held columns and `customer_no`): the
/// rows with a key.
fn keyed_rows(
    ctx: &SessionContext,
    view: &str,
    rows: Arc<dyn TableProvider>,
) -> Result<Arc<dyn TableProvider>> {
    let rows = ctx.read_table(rows).map_err(query(view))?;
    Ok(rows.filter(col("customer_no").is_not_null()).map_err(query(view))?.into_view())
}

/// [`attribute`] for every held batch, the `i`-th into partition `i %`
/// [`ATTRIBUTION_PARTITIONS`], each partition on a thread of its own: a
/// key lookup per row (78 M at 1M customers) is a second of one core.
fn attribute_in_memory(
    resolution: &Resolution,
    view: &str,
    schema: &SchemaRef,
    held: Vec<(RecordBatch, ScalarBuffer<u32>)>,
    keyed: Keyed,
) -> Result<(Finished, Tally)> {
    let mut parts: Vec<Vec<_>> = (0..ATTRIBUTION_PARTITIONS).map(|_| Vec::new()).collect();
    for (i, item) in held.into_iter().enumerate() {
        parts[i % ATTRIBUTION_PARTITIONS].push(item);
    }
    let done: Vec<Result<(Vec<RecordBatch>, Tally)>> = std::thread::scope(|s| {
        let threads: Vec<_> = parts
            .into_iter()
            .map(|part| {
                s.spawn(move || {
                    let mut tally = Tally::default();
                    let batches = part
                        .into_iter()
                        .map(|(batch, refs)| {
                            attribute(resolution, view, schema, batch, &refs, keyed, &mut tally)
                        })
                        .collect::<Result<Vec<_>>>()?;
                    Ok((batches, tally))
                })
            })
            .collect();
        threads.into_iter().map(|t| joined(t.join())).collect()
    });
    let mut partitions = Vec::new();
    let mut total = Tally::default();
    for part in done {
        let (batches, tally) = part?;
        partitions.push(batches);
        total.crm += tally.crm;
        total.unattributed += tally.unattributed;
        total.erased += tally.erased;
    }
    Ok((Finished::Memory(partitions), total))
}

/// Whether a dated graph of the rows before `latest` (`None`: all rows)
/// resolves identities as of `cutoff`: any cutoff up to its own.
fn serves(latest: Option<NaiveDate>, cutoff: Option<NaiveDate>) -> bool {
    match (latest, cutoff) {
        (None, _) => true,
        (Some(latest), Some(cutoff)) => cutoff <= latest,
        (Some(_), None) => false,
    }
}

/// Microseconds in a day.
const DAY_MICROS: i64 = 86_400_000_000;

/// The tables the identity graph reads.
const GRAPH_TABLES: [&str; 3] = [CUSTOMERS, TRANSACTIONS, INTERACTIONS];

/// Identifier columns of the CRM records the identity graph reads.
const CRM_COLUMNS: [&str; 4] = ["customer_id", "email", "phone", "loyalty_id"];

/// The identity graph of one cutoff being built, and the events it was
/// built from (kept to be attributed once it is resolved). Reads the CRM
/// records and each event table's rows before the cutoff, in any order; a
/// row it is given is taken as accepted, once.
struct GraphInProgress {
    /// Rows before this date are in the graph (`None`: all rows).
    cutoff: Option<NaiveDate>,
    /// Whether the graph is dated and serves every earlier cutoff too
    /// ([`Engine::open_for_cutoffs`]), else it serves `cutoff` alone.
    dated: bool,
    graph: GraphBuilder,
    /// Per [`ATTRIBUTED`] table: its kept columns and references.
    events: Vec<Held>,
    /// The graph's bytes, counted against the memory limit.
    held: Counted,
    /// Under a memory limit the events wait on disk until attributed, and
    /// the SQL scans the attributed ones from there.
    spill: Option<SpillDir>,
}

impl GraphInProgress {
    fn new(
        ctx: &SessionContext,
        source: &DataSource,
        cutoff: Option<NaiveDate>,
        dated: bool,
    ) -> Result<GraphInProgress> {
        let spill = source.engine.spill("events")?;
        let events = ATTRIBUTED.iter().map(|a| Held::new(spill.as_ref(), a.table)).collect();
        let held = Counted::new(ctx, "identity graph", source.engine.memory_limit);
        let graph = match dated {
            true => GraphBuilder::dated(&source.identity),
            false => GraphBuilder::new(&source.identity),
        };
        Ok(GraphInProgress { cutoff, dated, graph, events, held, spill })
    }

    /// The dated graph of every row and its held events, from the
    /// checked-inputs cache `entry`.
    fn cached(
        ctx: &SessionContext,
        source: &DataSource,
        graph: GraphBuilder,
        entry: &crate::cache::Entry,
    ) -> Result<GraphInProgress> {
        let spill = source.engine.spill("events")?;
        let mut held = Counted::new(ctx, "identity graph", source.engine.memory_limit);
        held.hold(graph.heap_bytes())?;
        // In memory every held batch is collected before it is attributed:
        // both tables decode at once. Under a limit they stream, a few
        // batches at a time.
        let ahead = if spill.is_some() { 4 } else { 4096 };
        let events = entry.events(&ATTRIBUTED.map(|a| a.table), ahead);
        Ok(GraphInProgress { cutoff: None, dated: true, graph, events, held, spill })
    }

    /// Whether the graph resolves identities as of `cutoff`.
    fn serves(&self, cutoff: Option<NaiveDate>) -> bool {
        match self.dated {
            true => serves(self.cutoff, cutoff),
            false => self.cutoff == cutoff,
        }
    }

    /// The columns of `table` the graph reads (none: not read).
    fn columns(table: &str) -> Vec<&'static str> {
        if table == CUSTOMERS {
            return CRM_COLUMNS.to_vec();
        }
        match ATTRIBUTED.iter().find(|a| a.table == table) {
            Some(a) => {
                let ids = crate::schema::table(a.table).expect("a contract table").identity;
                a.keep.iter().chain(ids).copied().collect()
            }
            None => Vec::new(),
        }
    }

    /// Adds `rows` of `table`, in the order of [`GraphInProgress::columns`];
    /// events at or after the cutoff are left out here.
    fn read(&mut self, table: &str, rows: RecordBatch) -> Result<()> {
        if table == CUSTOMERS {
            self.graph.add_crm(&id_columns(&rows, &CRM_COLUMNS), rows.num_rows());
            return self.held.hold(self.graph.heap_bytes());
        }
        let Some(i) = ATTRIBUTED.iter().position(|a| a.table == table) else { return Ok(()) };
        let (a, err) = (&ATTRIBUTED[i], |e: ArrowError| query(table)(e.into()));
        let rows = match self.cutoff {
            Some(cutoff) => {
                let ts = rows.column_by_name("ts").expect("events have ts");
                let cutoff = as_of_param(cutoff).to_scalar().map_err(query(table))?;
                filter_record_batch(&rows, &lt(ts, &cutoff).map_err(err)?).map_err(err)?
            }
            None => rows,
        };
        let ids = crate::schema::table(table).expect("a contract table").identity;
        let days: Option<Vec<i32>> = self.dated.then(|| {
            let ts =
                rows.column_by_name("ts").expect("events have ts").as_primitive::<TimestampMicrosecondType>();
            ts.values().iter().map(|&t| t.div_euclid(DAY_MICROS) as i32).collect()
        });
        let refs = self.graph.add_events(&id_columns(&rows, ids), rows.num_rows(), days.as_deref());
        self.held.hold(self.graph.heap_bytes())?;
        let keep: Vec<usize> = (0..a.keep.len()).collect();
        self.events[i].push(a.held(rows.project(&keep).map_err(err)?)?, refs)
    }
}

impl GraphInProgress {
    /// Resolves the graph (built for one cutoff) and hands over the events
    /// to attribute through it and the spill directory they wait in, with
    /// the graph's largest size in the resolution's stats.
    fn resolve_once(
        self,
        erasure: &ErasureList,
        map: &mut MapSink,
    ) -> Result<(Resolution, Vec<Batches>, Option<SpillDir>)> {
        let GraphInProgress { graph, events, mut held, spill, .. } = self;
        let mut resolution =
            graph.resolve(erasure, &mut |chunk| map.push(chunk), &mut |bytes| held.hold(bytes))?;
        held.hold(resolution.heap_bytes())?;
        resolution.stats.graph_bytes = held.largest as u64;
        let events = events.into_iter().map(Held::drain).collect::<Result<_>>()?;
        Ok((resolution, events, spill))
    }

    /// Resolves the dated graph as it stood before `cutoff` and hands over
    /// the held events, all of them, and the day from which they get no key
    /// (`None`: every held row is before the cutoff); both stay for another
    /// cutoff.
    fn resolve_kept(
        &mut self,
        cutoff: Option<NaiveDate>,
        erasure: &ErasureList,
        map: &mut MapSink,
    ) -> Result<(Resolution, Vec<Batches>, Option<NaiveDate>)> {
        // The graph holds no row from its own cutoff on.
        let before = cutoff.filter(|_| cutoff != self.cutoff);
        let GraphInProgress { graph, held, events, .. } = self;
        let mut resolution = graph.resolve_before(
            before.map(day_number),
            erasure,
            &mut |chunk| map.push(chunk),
            &mut |bytes| held.hold(bytes),
        )?;
        held.hold(graph.heap_bytes() + resolution.heap_bytes())?;
        resolution.stats.graph_bytes = held.largest as u64;
        let events = events.iter_mut().map(Held::batches).collect::<Result<_>>()?;
        Ok((resolution, events, before))
    }
}

/// A [`GraphInProgress`] fed on a thread of its own: the graph (one hash
/// probe per identifier, memory latency) runs beside the thread that
/// decodes and checks the rows instead of after it on the same one.
struct GraphThread(Worker<(&'static str, RecordBatch), GraphInProgress, PipelineError>);

impl GraphThread {
    fn start(mut graph: GraphInProgress) -> GraphThread {
        // The CRM records come first and their identifiers are new, each
        // normalised and inserted: the graph takes a second or two over
        // them, while a few batches in flight would hold the checks of the
        // events back and leave a core idle. Without a memory limit the
        // checks run up to 256 batches ahead (some 100 MB); under one, the
        // rows in flight are not counted, so few.
        let ahead = if graph.spill.is_some() { 4 } else { 256 };
        GraphThread(Worker::start("identity-graph", ahead, move |inbox| {
            for (table, batch) in inbox {
                graph.read(table, batch)?;
            }
            Ok(graph)
        }))
    }

    /// The graph, once every row sent is in it, or the error that stopped it.
    fn finish(self) -> Result<GraphInProgress> {
        self.0.finish()
    }
}

impl AcceptedRows for GraphThread {
    fn columns(&self, table: &str) -> Vec<&'static str> {
        GraphInProgress::columns(table)
    }

    fn read(&mut self, table: &'static str, rows: RecordBatch) -> Result<()> {
        self.0.send((table, rows))
    }
}

/// A session over one data root.
pub struct Engine {
    ctx: SessionContext,
    source: DataSource,
    /// Rows read, accepted and rejected per input table.
    pub inputs: Vec<TableCounts>,
    identity: Option<ResolvedIdentity>,
    /// The graph built while the inputs were checked ([`Engine::open_at`]),
    /// until identities are resolved; a dated one
    /// ([`Engine::open_for_cutoffs`]) until the events are released.
    graph: Option<GraphInProgress>,
    /// Opened for several cutoffs up to this one: a graph built again
    /// (see [`Engine::open_at`]) is dated too.
    cutoffs_upto: Option<Option<NaiveDate>>,
    /// The canonical views of the tables keyed by CRM customer_id, before
    /// erased customers are taken out of them.
    keyed_by_customer: Vec<(&'static str, DataFrame)>,
    /// Under a memory limit: the files of the attributed events.
    spilled: Option<SpillDir>,
    /// The checked-inputs cache entry in use ([`EngineSettings::checked_inputs`]):
    /// where the graph and the held events come from once released.
    cache: Option<crate::cache::Entry>,
    /// Under a memory limit: the CSV inputs as Parquet (held for as long
    /// as the engine reads them, removed with it).
    _ingest: Option<SpillDir>,
    /// Under a memory limit: where the SQL engine's operators spill.
    _operator_spill: Option<SpillDir>,
    /// On a cluster, once the feature table was computed there: the
    /// session over the staged inputs, where the scoring SQL runs too.
    #[cfg(feature = "ballista")]
    cluster: Option<crate::cluster::Session>,
}

/// What a run reads: the data root, how identities are resolved in it, and
/// who is to be left out.
#[derive(Debug, Clone)]
pub struct DataSource {
    pub root: DataRoot,
    pub identity: IdentityOptions,
    pub erasure: ErasureList,
    pub lifecycle: LifecycleRules,
    /// The response funnel's stages in order (the `stage` values of the
    /// responses table); a response's depth is its stage's position.
    pub response_funnel: Vec<String>,
    /// How the engine runs (memory limit, spilling).
    pub engine: EngineSettings,
}

/// The default response funnel: the stages the generator writes.
pub fn default_response_funnel() -> Vec<String> {
    ["click", "visit", "purchase"].iter().map(|s| s.to_string()).collect()
}

/// What a training set predicts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Task {
    /// No purchase in the horizon (`churned`).
    Churn,
    /// A response to a contact within the response window (`responded`).
    Response,
    /// Net spend in the horizon (`future_spend`).
    Spend,
}

impl Task {
    fn label_file(self) -> &'static SqlFile {
        match self {
            Task::Churn => &CHURN_LABEL,
            Task::Response => &RESPONSE_LABEL,
            Task::Spend => &SPEND_LABEL,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Task::Churn => "churn",
            Task::Response => "response",
            Task::Spend => "spend",
        }
    }
}

/// The day limits of the lifecycle stages (`sql/features/lifecycle.sql`).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LifecycleRules {
    /// First purchase at most this many days ago: `new`.
    pub new_days: u32,
    /// Last purchase at most this many days ago: `active` (or `reactivated`).
    pub active_days: u32,
    /// ... else at most this many: `at_risk`.
    pub at_risk_days: u32,
    /// ... else at most this many: `dormant`; beyond: `churned`. A gap this
    /// long before a recent purchase makes it `reactivated`.
    pub dormant_days: u32,
}

impl Default for LifecycleRules {
    fn default() -> Self {
        LifecycleRules { new_days: 90, active_days: 90, at_risk_days: 180, dormant_days: 365 }
    }
}

impl LifecycleRules {
    /// Checks the limits are in order.
    pub fn check(&self) -> Result<()> {
        let ok = self.active_days <= self.at_risk_days && self.at_risk_days <= self.dormant_days;
        if ok {
            return Ok(());
        }
        Err(PipelineError::InvalidArgument {
            name: "--lifecycle-*-days",
            value: format!("{self:?}"),
            reason: "need active <= at_risk <= dormant".into(),
        })
    }

    fn params(&self) -> Vec<(&'static str, ScalarValue)> {
        let days = |d: u32| ScalarValue::Float64(Some(d as f64));
        vec![
            ("new_days", days(self.new_days)),
            ("active_days", days(self.active_days)),
            ("at_risk_days", days(self.at_risk_days)),
            ("dormant_days", days(self.dormant_days)),
        ]
    }
}

impl DataSource {
    /// `root` with the default identity options and lifecycle rules, and an
    /// empty erasure list.
    pub fn new(root: &Path) -> DataSource {
        DataSource {
            root: DataRoot::local(root),
            identity: IdentityOptions::default(),
            erasure: ErasureList::default(),
            lifecycle: LifecycleRules::default(),
            response_funnel: default_response_funnel(),
            engine: EngineSettings::default(),
        }
    }
}

const LIFECYCLE_FILE: &str = "features/lifecycle.sql";

/// A date as a DataFusion `Date32` value.
pub fn date_value(date: NaiveDate) -> ScalarValue {
    ScalarValue::Date32(Some(day_number(date)))
}

/// Days from 1970-01-01 to `date`.
pub fn day_number(date: NaiveDate) -> i32 {
    (date - NaiveDate::from_ymd_opt(1970, 1, 1).expect("valid date")).num_days() as i32
}

/// The date of a `Date32` value.
pub fn date_from_value(days: i32) -> NaiveDate {
    NaiveDate::from_ymd_opt(1970, 1, 1).expect("valid date") + chrono::Duration::days(days as i64)
}

/// The cutoff as the `$as_of` parameter: midnight UTC starting `as_of`.
pub fn as_of_param(as_of: NaiveDate) -> ScalarValue {
    let micros = as_of.and_hms_opt(0, 0, 0).expect("midnight exists").and_utc().timestamp_micros();
    ScalarValue::TimestampMicrosecond(Some(micros), Some("UTC".into()))
}

impl Engine {
    /// [`Engine::open_source`] with the default identity options and no erasures.
    pub async fn open(root: &Path) -> Result<Engine> {
        Engine::open_source(&DataSource::new(root)).await
    }

    /// Checks and registers the inputs of `source`. Identities are resolved
    /// on demand, per cutoff (see [`Engine::resolve_identities`]).
    pub async fn open_source(source: &DataSource) -> Result<Engine> {
        Engine::open_with(source, None).await
    }

    /// [`Engine::open_source`] for a job that resolves identities as of
    /// `cutoff` (`None`: all rows) first: the identity graph is built from
    /// the rows the contract checks read, in the same pass over each table,
    /// instead of a second pass that decodes every event again (see
    /// [`Engine::resolve_identities`]). Should a key of the customers or
    /// an event table repeat, the graph is dropped and built by that second
    /// pass over the deduplicated rows.
    pub async fn open_at(source: &DataSource, cutoff: Option<NaiveDate>) -> Result<Engine> {
        Engine::open_with(source, Some((cutoff, false))).await
    }

    /// [`Engine::open_at`] for a job that resolves identities as of several
    /// cutoffs, up to `latest` (`None`: all rows, and any cutoff): the graph
    /// built in the contract checks' pass is dated (it knows when each
    /// identifier and each link was first seen) and serves every one of
    /// them, as do the events held for attribution, instead of a second
    /// pass over the events per cutoff. Both are kept until the events are
    /// released ([`Engine::release_events`]): in memory, the events before
    /// `latest` stay beside those attributed for the cutoff in force.
    pub async fn open_for_cutoffs(source: &DataSource, latest: Option<NaiveDate>) -> Result<Engine> {
        Engine::open_with(source, Some((latest, true))).await
    }

    async fn open_with(source: &DataSource, resolve_at: Option<(Option<NaiveDate>, bool)>) -> Result<Engine> {
        source.lifecycle.check()?;
        source.engine.cluster()?;
        // Parquet text is read as Utf8 (the canonical type) rather than as
        // Utf8View and then copied by a cast.
        let config = SessionConfig::new()
            .with_information_schema(false)
            .set_bool("datafusion.execution.parquet.schema_force_view_types", false);
        let (ctx, operator_spill) = source.engine.session(config)?;
        // Under a memory limit, the contract checks' key hashes and CSV
        // inputs (as Parquet, scanned for as long as the engine runs) go here.
        let ingest = source.engine.spill("ingest")?;
        let located = Located::find(&source.root).await?;
        let cache = source.engine.checked_inputs.as_deref().map(Cache::new);
        let mut lookup = cache.as_ref().map(|c| c.lookup(&located, source));
        let hit = lookup.as_mut().and_then(|l| l.entry.take());
        let known = lookup.as_mut().map(|l| std::mem::take(&mut l.known)).unwrap_or_default();
        // A cache entry being made holds the dated graph of every row: it
        // serves any cutoff.
        let filling = lookup.is_some() && hit.is_none();
        let build = if hit.is_some() {
            None
        } else if filling {
            Some((None, true))
        } else {
            resolve_at
        };
        let mut graph = match build {
            Some((cutoff, dated)) => {
                Some(GraphThread::start(GraphInProgress::new(&ctx, source, cutoff, dated)?))
            }
            None => None,
        };
        let reader = graph.as_mut().map(|g| g as &mut dyn AcceptedRows);
        let checked = register_inputs(&ctx, &source.root, located, ingest.as_ref(), reader, known).await?;
        let (inputs, tallies): (Vec<TableCounts>, Vec<_>) = checked.into_iter().unzip();
        let graph = graph.map(GraphThread::finish).transpose()?;
        // The graph saw every accepted copy of a repeated key; the views
        // hold one (or none): it is built again from them.
        let repeated = |c: &TableCounts| {
            GRAPH_TABLES.contains(&c.table.as_str())
                && (c.duplicates > 0 || c.rejected_by_rule.keys().any(|r| r.starts_with("conflicting_key")))
        };
        let graph = graph.filter(|_| !inputs.iter().any(repeated));
        let stages: ArrayRef = Arc::new(StringArray::from(source.response_funnel.clone()));
        let depths: ArrayRef =
            Arc::new(Int64Array::from((1..=source.response_funnel.len() as i64).collect::<Vec<_>>()));
        let funnel = RecordBatch::try_from_iter([("stage", stages), ("depth", depths)])
            .map_err(|e| query("response_funnel")(e.into()))?;
        ctx.register_batch("response_funnel", funnel).map_err(query("response_funnel"))?;
        let mut keyed_by_customer = Vec::new();
        for table in [CUSTOMERS, CONTACTS, RESPONSES] {
            keyed_by_customer.push((table, ctx.table(table).await.map_err(query(table))?));
        }
        let mut engine = Engine {
            ctx,
            source: source.clone(),
            inputs,
            identity: None,
            graph,
            cutoffs_upto: match cache {
                Some(_) => Some(None),
                None => resolve_at.filter(|&(_, dated)| dated).map(|(latest, _)| latest),
            },
            keyed_by_customer,
            spilled: None,
            cache: None,
            _ingest: ingest,
            _operator_spill: operator_spill,
            #[cfg(feature = "ballista")]
            cluster: None,
        };
        if let Some((entry, graph)) = hit {
            if let (Some(cache), Some(lookup)) = (&cache, &lookup)
                && !entry.used.checked_again.is_empty()
                && let Err(e) = cache.refresh(&entry, lookup, &tallies)
            {
                eprintln!("engage: not keeping the tables checked again: {}", crate::cache::chain(&e));
            }
            engine.graph = Some(GraphInProgress::cached(&engine.ctx, source, graph, &entry)?);
            engine.cache = Some(entry);
        } else if let (Some(cache), Some(lookup)) = (cache, lookup) {
            let mut built = match engine.graph.take() {
                Some(built) => built,
                None => engine.build_graph(None, true).await?,
            };
            let names = ATTRIBUTED.map(|a| a.table);
            match cache.fill(lookup, tallies, &built.graph, &mut built.events, &names) {
                Ok(entry) => engine.cache = Some(entry),
                Err(e) => eprintln!("engage: not keeping the checked inputs: {}", crate::cache::chain(&e)),
            }
            engine.graph = Some(built);
        }
        Ok(engine)
    }

    /// How the run used the checked-inputs cache, if it was given one.
    pub fn cache_use(&self) -> Option<crate::report::CacheUse> {
        self.cache.as_ref().map(|e| e.used.clone())
    }

    /// What this engine reads.
    pub fn source(&self) -> &DataSource {
        &self.source
    }

    /// The identity in force, if resolved yet.
    pub fn identity(&self) -> Option<&ResolvedIdentity> {
        self.identity.as_ref()
    }

    /// What the engine's memory pool holds and held at most.
    pub(crate) fn pool_usage(&self) -> Option<Arc<crate::runtime::PoolUsage>> {
        crate::runtime::pool_usage(&self.ctx)
    }

    /// A count of memory the driver holds outside the engine's operators.
    pub(crate) fn counted(&self, what: &'static str) -> Counted {
        Counted::new(&self.ctx, what, self.source.engine.memory_limit)
    }

    /// Frees the attributed events and every view over them (feature,
    /// label and CLV views, materialised or not), and a graph kept for
    /// other cutoffs; the next use resolves identities again. The input
    /// tables stay. A batch job calls it once it has what it needs from the
    /// events, before its own allocations.
    pub fn release_events(&mut self) -> Result<()> {
        self.identity = None;
        self.graph = None;
        self.spilled = None;
        #[cfg(feature = "ballista")]
        {
            self.cluster = None;
        }
        let views = ATTRIBUTED.iter().map(|a| a.view).chain([KEYS]);
        let views = views
            .chain(FEATURES.iter().chain(LABELS).chain([&PURCHASE_DAYS, &PURCHASE_SUMMARY]).map(|f| f.name));
        for view in views {
            self.ctx.deregister_table(view).map_err(query(view))?;
        }
        Ok(())
    }

    /// Builds the identity graph from the rows before `cutoff` (all rows for
    /// `None`) and attributes those rows through it, in one pass over each
    /// event table (see [`GraphBuilder`]): the pass that checked the inputs,
    /// when the engine was opened for this cutoff ([`Engine::open_at`]) or
    /// for several up to a later one ([`Engine::open_for_cutoffs`]), else
    /// one over the canonical views. The attributed events
    /// (`transactions_resolved`, `interactions_resolved`) are held in memory,
    /// since every feature group reads them, or under a memory limit in
    /// Parquet files in the spill directory (see [`crate::events`]). Point in time: features as of a
    /// cutoff use only links known before it, so a later login cannot
    /// re-attribute an earlier anonymous visit. A no-op when that cutoff is
    /// already in force.
    pub async fn resolve_identities(&mut self, cutoff: Option<NaiveDate>) -> Result<&ResolvedIdentity> {
        if self.identity.as_ref().is_some_and(|i| i.cutoff == cutoff) {
            return Ok(self.identity.as_ref().expect("checked"));
        }
        let built = self.graph.take().filter(|g| g.serves(cutoff));
        // Free the events attributed for another cutoff first, and the views
        // whose plans hold them: keeping them while attributing anew doubles
        // the peak memory. Every view is registered again by its user.
        self.release_events()?;
        let mut built = match built {
            Some(built) => built,
            None if self.cache.is_some() => {
                let entry = self.cache.as_ref().expect("checked");
                GraphInProgress::cached(&self.ctx, &self.source, entry.graph(&self.source)?, entry)?
            }
            None => match self.cutoffs_upto.filter(|&latest| serves(latest, cutoff)) {
                Some(latest) => self.build_graph(latest, true).await?,
                None => self.build_graph(cutoff, false).await?,
            },
        };
        let mut sink = IdentityMap::sink(self.source.engine.spill("identity")?)?;
        let erasure = &self.source.erasure;
        // A dated graph stays for the next cutoff, with its held events; the
        // events attributed for this one spill to a directory of their own.
        let (resolution, events, spill, before, mut kept) = if built.dated {
            let (resolution, events, before) = built.resolve_kept(cutoff, erasure, &mut sink)?;
            let spill = match built.spill {
                Some(_) => self.source.engine.spill("attributed")?,
                None => None,
            };
            (resolution, events, spill, before, Some(built))
        } else {
            let (resolution, events, spill) = built.resolve_once(erasure, &mut sink)?;
            (resolution, events, spill, None, None)
        };
        let before =
            before.map(|day| as_of_param(day).to_scalar()).transpose().map_err(query("held events"))?;
        // Events written to disk are compacted first; in memory they share
        // the held columns.
        let keyed = Keyed { before: before.as_ref(), compact: spill.is_some() };
        let map = sink.finish()?;
        match &map {
            IdentityMap::Memory(chunks) => {
                let table =
                    MemTable::try_new(map_schema(), vec![chunks.clone()]).map_err(query("identity_map"))?;
                self.replace_table("identity_map", Arc::new(table))?;
            }
            IdentityMap::File(dir) => {
                self.register_parquet("identity_map", &dir.path().join(IdentityMap::FILE)).await?;
            }
        }
        self.leave_out_erased_customers(&resolution.erased_crm_ids).await?;
        self.register_keys(&resolution, spill.as_ref()).await?;
        let mut tallies = Vec::new();
        for (a, held) in ATTRIBUTED.iter().zip(events) {
            let mut held = held.peekable();
            let schema = match held.peek() {
                Some(Ok((batch, _))) => with_customer_no(batch.schema().fields().iter().map(|f| f.as_ref())),
                // An error: the loop below returns it.
                Some(Err(_)) => with_customer_no([]),
                None => {
                    let df = self.ctx.table(a.table).await.map_err(query(a.table))?;
                    let kept = a
                        .keep
                        .iter()
                        .map(|c| df.schema().as_arrow().field_with_name(c).expect("kept column"));
                    with_customer_no(a.held_schema(kept).fields().iter().map(|f| f.as_ref()))
                }
            };
            let (finished, tally) = match &spill {
                None => {
                    attribute_in_memory(&resolution, a.view, &schema, held.collect::<Result<_>>()?, keyed)?
                }
                Some(dir) => {
                    let mut out = AttributedEvents::new(Some(dir), a.view, ATTRIBUTION_PARTITIONS);
                    let mut tally = Tally::default();
                    for (i, item) in held.enumerate() {
                        let (batch, refs) = item?;
                        out.push(
                            i,
                            attribute(&resolution, a.view, &schema, batch, &refs, keyed, &mut tally)?,
                        )?;
                    }
                    (out.finish(&schema)?, tally)
                }
            };
            match finished {
                Finished::Memory(partitions) => {
                    let table = MemTable::try_new(schema, partitions).map_err(query(a.view))?;
                    self.replace_table(a.view, keyed_rows(&self.ctx, a.view, Arc::new(table))?)?;
                }
                Finished::File(path) => {
                    self.ctx.deregister_table(a.view).map_err(query(a.view))?;
                    let options = ParquetReadOptions::default().schema(&schema);
                    let path = path.display().to_string();
                    self.ctx.register_parquet(a.view, &path, options).await.map_err(query(a.view))?;
                }
            }
            tallies.push(tally);
        }
        let resolved = ResolvedCounts {
            transactions: tallies[0].crm,
            interactions: tallies[1].crm,
            unattributed_transactions: tallies[0].unattributed,
            unattributed_interactions: tallies[1].unattributed,
            erased_transactions: tallies[0].erased,
            erased_interactions: tallies[1].erased,
        };
        let Resolution { stats, .. } = resolution;
        self.spilled = spill;
        if let Some(kept) = kept.as_mut() {
            kept.held.hold(kept.graph.heap_bytes())?;
        }
        self.graph = kept;
        Ok(self.identity.insert(ResolvedIdentity { cutoff, map, stats, resolved }))
    }

    /// Registers `customer_keys`, the keys of `resolution` by number (the
    /// attributed events carry the number): in memory, or in a Parquet file
    /// in `spill`, where the attributed events wait under a memory limit.
    async fn register_keys(&self, resolution: &Resolution, spill: Option<&SpillDir>) -> Result<()> {
        match spill {
            None => {
                let chunks = resolution.key_chunks().collect();
                let table = MemTable::try_new(key_schema(), vec![chunks]).map_err(query(KEYS))?;
                self.replace_table(KEYS, Arc::new(table))
            }
            Some(dir) => {
                let path = dir.path().join(format!("{KEYS}.parquet"));
                write_parquet(&path, key_schema(), resolution.key_chunks())?;
                self.register_parquet(KEYS, &path).await.map(|_| ())
            }
        }
    }

    /// The identity graph as of `cutoff` (`dated`: of every cutoff up to
    /// it) from the canonical views: the CRM records, then each event
    /// table's rows before the cutoff.
    async fn build_graph(&self, cutoff: Option<NaiveDate>, dated: bool) -> Result<GraphInProgress> {
        let mut g = GraphThread::start(GraphInProgress::new(&self.ctx, &self.source, cutoff, dated)?);
        for table in GRAPH_TABLES {
            let df = match table {
                CUSTOMERS => self.keyed_by_customer[0].1.clone(),
                _ => self.ctx.table(table).await.map_err(query(table))?,
            };
            let df = df.select_columns(&GraphInProgress::columns(table)).map_err(query(table))?;
            let mut stream = df.execute_stream().await.map_err(query(table))?;
            while let Some(batch) = stream.next().await {
                g.read(table, batch.map_err(query(table))?)?;
            }
        }
        g.finish()
    }

    /// Re-registers the tables keyed by CRM customer_id without the rows of
    /// `erased` customers.
    async fn leave_out_erased_customers(&self, erased: &[String]) -> Result<()> {
        if self.source.erasure.is_empty() {
            return Ok(());
        }
        for (table, original) in &self.keyed_by_customer {
            let view = if erased.is_empty() {
                original.clone()
            } else {
                let ids: ArrayRef = Arc::new(StringArray::from(erased.to_vec()));
                let ids = self
                    .ctx
                    .read_batch(RecordBatch::try_from_iter([(ERASED_ID, ids)]).expect("one text column"))
                    .map_err(query(table))?;
                let on = btrim(vec![col("customer_id")]).eq(col(ERASED_ID));
                original.clone().join_on(ids, JoinType::LeftAnti, [on]).map_err(query(table))?
            };
            self.replace_table(table, view.into_view())?;
        }
        Ok(())
    }

    /// Pairwise precision and recall of the identity in force against the
    /// generator's ground truth at `<root>/truth/identities`, or `None` when
    /// the data has no truth.
    pub async fn identity_quality(&self) -> Result<Option<IdentityQuality>> {
        let root = &self.source.root;
        let name = IDENTITY_QUALITY.path;
        let (_, dirs) = root.list("truth").await?;
        if !dirs.iter().any(|d| d == "identities") || self.identity.is_none() {
            return Ok(None);
        }
        self.ctx.deregister_table("truth_identities").map_err(query(name))?;
        self.ctx
            .register_parquet(
                "truth_identities",
                root.url("truth/identities/"),
                ParquetReadOptions::default(),
            )
            .await
            .map_err(query(name))?;
        let batches = self.query(IDENTITY_QUALITY.sql).await?;
        let (mut resolved, mut truth) = (Vec::new(), Vec::new());
        for b in &batches {
            for (col, out) in [(0, &mut resolved), (1, &mut truth)] {
                let c = cast(b.column(col), &DataType::Utf8).map_err(|e| query(name)(e.into()))?;
                out.extend(c.as_string::<i32>().iter().map(|v| v.unwrap_or_default().to_string()));
            }
        }
        let (precision, recall) = pairwise_quality(&resolved, &truth);
        Ok(Some(IdentityQuality { identifiers: resolved.len() as u64, precision, recall }))
    }

    fn replace_table(&self, name: &str, table: Arc<dyn TableProvider>) -> Result<()> {
        replace_table(&self.ctx, name, table)
    }

    /// The feature table as of `as_of`: one row per customer, sorted by id.
    /// Resolves identities as of `as_of` first, then computes one feature
    /// group at a time (each view materialised in memory before the next;
    /// the feature table joins them).
    pub async fn features(&mut self, as_of: NaiveDate) -> Result<Vec<RecordBatch>> {
        match self.feature_table(as_of, &mut Stopwatch::start()).await? {
            FeatureTable::Plan(df) => df.collect().await.map_err(query(FEATURE_TABLE.path)),
            #[cfg(feature = "ballista")]
            FeatureTable::Remote(stream) => {
                futures::TryStreamExt::try_collect(stream).await.map_err(query(FEATURE_TABLE.path))
            }
        }
    }

    /// [`Engine::features`] streamed into the Parquet file `path` (written
    /// atomically), never held whole: what a job over every customer uses.
    /// Times each feature group on `clock` under its SQL file's path, so a
    /// run report shows where the time goes. Returns the rows and the
    /// schema written; an empty table is an error and leaves nothing
    /// written.
    pub async fn write_features(
        &mut self,
        as_of: NaiveDate,
        path: &Path,
        clock: &mut Stopwatch,
    ) -> Result<(u64, Arc<Schema>)> {
        let sink = match self.feature_table(as_of, clock).await? {
            FeatureTable::Plan(df) => {
                let sink = sink_stream(df, path, FEATURE_TABLE.path).await?;
                clock.lap(FEATURE_TABLE.path);
                sink
            }
            // Streamed from the cluster as its executors compute it.
            #[cfg(feature = "ballista")]
            FeatureTable::Remote(mut stream) => {
                let sink = sink_batches(&mut stream, path, FEATURE_TABLE.path).await?;
                clock.lap("features on ballista");
                sink
            }
        };
        if sink.rows() == 0 {
            return Err(no_customers(as_of));
        }
        let schema = sink.schema();
        Ok((sink.finish()?, schema))
    }

    /// Resolves identities as of `as_of` and materialises every feature
    /// group but the feature table itself (timed on `clock`); returns the
    /// feature table's plan, or on a cluster its stream.
    async fn feature_table(&mut self, as_of: NaiveDate, clock: &mut Stopwatch) -> Result<FeatureTable> {
        self.resolve_identities(Some(as_of)).await?;
        let mut params = vec![("as_of", as_of_param(as_of))];
        params.extend(self.source.lifecycle.params());
        #[cfg(feature = "ballista")]
        if let Some(cluster) = self.source.engine.cluster()? {
            let session = crate::cluster::stage(&self.ctx, &self.source.engine, &cluster).await?;
            clock.lap("staging for ballista");
            let stream = crate::cluster::features(&session, &params).await?;
            self.cluster = Some(session);
            return Ok(FeatureTable::Remote(stream));
        }
        for file in &FEATURES[..FEATURES.len() - 1] {
            let df = self.register_view(file, &params).await?;
            // Under a memory limit each group waits on disk beside the
            // attributed events (together they are about the size of the
            // feature table); otherwise in memory.
            if let Some(dir) = &self.spilled {
                let path = dir.path().join(format!("{}.parquet", file.name));
                sink_stream(df, &path, file.path).await?.finish()?;
                self.register_parquet(file.name, &path).await?;
            } else {
                let schema = Arc::new(df.schema().as_arrow().clone());
                let batches = df.collect().await.map_err(query(file.path))?;
                let table = MemTable::try_new(schema, vec![batches]).map_err(query(file.path))?;
                self.replace_table(file.name, Arc::new(table))?;
            }
            clock.lap(file.path);
        }
        Ok(FeatureTable::Plan(merge_joined(self.register_view(&FEATURE_TABLE, &params).await?)))
    }

    /// Resolves identities as of `as_of` and registers every feature view
    /// for it; returns the feature table's (last view's) plan.
    async fn register_features(&mut self, as_of: NaiveDate) -> Result<DataFrame> {
        self.resolve_identities(Some(as_of)).await?;
        let mut params = vec![("as_of", as_of_param(as_of))];
        params.extend(self.source.lifecycle.params());
        let mut last = None;
        for file in FEATURES {
            last = Some(self.register_view(file, &params).await?);
        }
        Ok(last.expect("FEATURES is not empty"))
    }

    /// Daily purchase totals `(customer_id, day, value)` of the customers
    /// as of `as_of` (days since 1970-01-01, see `sql/models/purchase_days.sql`),
    /// with identities resolved as of `as_of`.
    pub async fn purchase_days(&mut self, as_of: NaiveDate) -> Result<Vec<(String, i64, f64)>> {
        self.register_features(as_of).await?;
        let df = self.register_view(&PURCHASE_DAYS, &[("as_of", as_of_param(as_of))]).await?;
        let batches = df.collect().await.map_err(query(PURCHASE_DAYS.path))?;
        let mut out = Vec::with_capacity(batches.iter().map(|b| b.num_rows()).sum());
        for b in &batches {
            let ids = b.column(0).as_string::<i32>();
            let days = b.column(1).as_primitive::<datafusion::arrow::datatypes::Int64Type>();
            let values = b.column(2).as_primitive::<datafusion::arrow::datatypes::Float64Type>();
            for i in 0..b.num_rows() {
                out.push((ids.value(i).to_string(), days.value(i), values.value(i)));
            }
        }
        Ok(out)
    }

    /// Each buying customer's purchase summary as of `as_of` (see
    /// `sql/models/purchase_summary.sql`), with identities resolved as of
    /// `as_of`, streamed into the Parquet file `path` in customer order;
    /// [`PurchaseSummaries`] reads it beside the feature table. Returns the
    /// rows written.
    pub async fn write_purchase_summaries(&mut self, as_of: NaiveDate, path: &Path) -> Result<u64> {
        self.resolve_identities(Some(as_of)).await?;
        let mut params = vec![("as_of", as_of_param(as_of))];
        params.extend(self.source.lifecycle.params());
        let ctx = self.scoring_session();
        self.register_view_in(ctx, &FEATURES[0], &params).await?;
        let df = self.register_view_in(ctx, &PURCHASE_SUMMARY, &[("as_of", as_of_param(as_of))]).await?;
        sink_stream(df, path, PURCHASE_SUMMARY.path).await?.finish()
    }

    /// Each customer's lifecycle stage at every cutoff (each point in time,
    /// identities resolved as of it), registered as `lifecycle_stages`; then
    /// the views of [`LIFECYCLE`]. Returns the history (customer_id, as_of,
    /// lifecycle_stage, previous_stage) by customer and cutoff, and the
    /// transition counts (as_of, from_stage, to_stage, customers).
    pub async fn lifecycle_history(
        &mut self,
        cutoffs: &[NaiveDate],
    ) -> Result<(Vec<RecordBatch>, Vec<RecordBatch>)> {
        let mut stages = Vec::new();
        for &cutoff in cutoffs {
            self.register_features(cutoff).await?;
            let df = self.ctx.table("lifecycle_features").await.map_err(query(LIFECYCLE_FILE))?;
            let df = df
                .select(vec![
                    col("customer_id"),
                    lit(date_value(cutoff)).alias("as_of"),
                    col("lifecycle_stage"),
                ])
                .map_err(query(LIFECYCLE_FILE))?;
            stages.push(df.collect().await.map_err(query(LIFECYCLE_FILE))?);
        }
        let schema = Arc::new(Schema::new(vec![
            Field::new("customer_id", DataType::Utf8, true),
            Field::new("as_of", DataType::Date32, false),
            Field::new("lifecycle_stage", DataType::Utf8, false),
        ]));
        let stages: Vec<RecordBatch> = stages.into_iter().flatten().collect();
        let stages = stages
            .iter()
            .map(|b| RecordBatch::try_new(schema.clone(), b.columns().to_vec()))
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| query("lifecycle_stages")(e.into()))?;
        let table = MemTable::try_new(schema, vec![stages]).map_err(query("lifecycle_stages"))?;
        self.replace_table("lifecycle_stages", Arc::new(table))?;
        let [history, transitions] = LIFECYCLE else { unreachable!("two lifecycle views") };
        let h = self.register_view(history, &[]).await?;
        let h = h.sort(vec![col("customer_id").sort(true, false), col("as_of").sort(true, false)]);
        let h = h.map_err(query(history.path))?.collect().await.map_err(query(history.path))?;
        let t = self.register_view(transitions, &[]).await?;
        let order = ["as_of", "from_stage", "to_stage"].map(|c| col(c).sort(true, true)).to_vec();
        let t = t.sort(order).map_err(query(transitions.path))?;
        let t = t.collect().await.map_err(query(transitions.path))?;
        Ok((h, t))
    }

    /// Churn labels as of `as_of` over `horizon_days`: (customer_id, churned).
    pub async fn churn_labels(&mut self, as_of: NaiveDate, horizon_days: u32) -> Result<Vec<RecordBatch>> {
        self.labels(Task::Churn, as_of, horizon_days, 0).await
    }

    /// The labels of `task` as of `as_of` over `horizon_days` (see the
    /// files under `sql/labels/`; `response_days` is the response window of
    /// the response task). Uses identities resolved from all rows: a
    /// purchase in the horizon is the customer's whatever the identifier it
    /// was made with.
    pub async fn labels(
        &mut self,
        task: Task,
        as_of: NaiveDate,
        horizon_days: u32,
        response_days: u32,
    ) -> Result<Vec<RecordBatch>> {
        self.resolve_identities(None).await?;
        let params = vec![
            ("as_of", as_of_param(as_of)),
            ("horizon_days", ScalarValue::Float64(Some(horizon_days as f64))),
            ("response_days", ScalarValue::Float64(Some(response_days as f64))),
        ];
        let file = task.label_file();
        let df = self.register_view(file, &params).await?;
        df.collect().await.map_err(query(file.path))
    }

    /// The facts an audience's suppressions need per CRM customer (see
    /// `sql/audiences/eligibility.sql`), from the input tables as ingested.
    pub async fn audience_eligibility(
        &self,
        as_of: NaiveDate,
        campaign_id: &str,
        cap_days: u32,
        responded_days: u32,
        cooldown_days: u32,
    ) -> Result<Vec<RecordBatch>> {
        let days = |d: u32| ScalarValue::Float64(Some(d as f64));
        let params = vec![
            ("as_of", as_of_param(as_of)),
            ("campaign_id", ScalarValue::Utf8(Some(campaign_id.to_string()))),
            ("cap_days", days(cap_days)),
            ("responded_days", days(responded_days)),
            ("cooldown_days", days(cooldown_days)),
        ];
        let df = self.register_view(&AUDIENCE_ELIGIBILITY, &params).await?;
        df.collect().await.map_err(query(AUDIENCE_ELIGIBILITY.path))
    }

    /// What happened after each campaign's contacts (see
    /// `sql/campaigns/results.sql`).
    pub async fn campaign_results(&self, as_of: NaiveDate, response_days: u32) -> Result<Vec<RecordBatch>> {
        let params = vec![
            ("as_of", as_of_param(as_of)),
            ("response_days", ScalarValue::Float64(Some(response_days as f64))),
        ];
        let df = self.register_view_in(self.scoring_session(), &CAMPAIGN_RESULTS, &params).await?;
        df.collect().await.map_err(query(CAMPAIGN_RESULTS.path))
    }

    /// Each customer's campaign contacts in the `days` before `as_of` and
    /// their responses (see `sql/campaigns/contact_history.sql`), streamed
    /// into the Parquet file `path`; no file when there are none. Returns
    /// the rows written.
    pub async fn write_contact_history(
        &self,
        as_of: NaiveDate,
        days: u32,
        response_days: u32,
        path: &Path,
    ) -> Result<u64> {
        let params = vec![
            ("as_of", as_of_param(as_of)),
            ("days", ScalarValue::Float64(Some(days as f64))),
            ("response_days", ScalarValue::Float64(Some(response_days as f64))),
        ];
        let df = self.register_view_in(self.scoring_session(), &CONTACT_HISTORY, &params).await?;
        let sink = sink_stream(df, path, CONTACT_HISTORY.path).await?;
        match sink.rows() {
            0 => Ok(0),
            _ => sink.finish(),
        }
    }

    /// Per CRM customer, whether and for how much they bought in
    /// [`since`, `as_of`) (see `sql/campaigns/holdout.sql`), identities
    /// resolved as of `as_of`.
    pub async fn purchases_between(
        &mut self,
        since: NaiveDate,
        as_of: NaiveDate,
    ) -> Result<Vec<RecordBatch>> {
        self.resolve_identities(Some(as_of)).await?;
        let params = vec![("as_of", as_of_param(as_of)), ("since", as_of_param(since))];
        let df = self.register_view_in(self.scoring_session(), &HOLDOUT, &params).await?;
        df.collect().await.map_err(query(HOLDOUT.path))
    }

    /// Registers the Parquet file at `path` as the table `name` (replacing
    /// one of that name), read as queries need it, never held whole.
    /// Returns its schema.
    pub async fn register_parquet(&self, name: &str, path: &Path) -> Result<Arc<Schema>> {
        let shown = path.display().to_string();
        self.ctx.deregister_table(name).map_err(query(name))?;
        let options = ParquetReadOptions::default();
        self.ctx.register_parquet(name, shown.as_str(), options).await.map_err(query(&shown))?;
        let table = self.ctx.table(name).await.map_err(query(&shown))?;
        Ok(Arc::new(table.schema().as_arrow().clone()))
    }

    /// (Re)registers the view `name` as `sql`.
    pub async fn create_view(&self, name: &str, sql: &str) -> Result<()> {
        let df = self.ctx.sql(sql).await.map_err(query(name))?;
        self.replace_table(name, df.into_view())
    }

    /// Plans `file` with `params` bound and (re)registers it as a view.
    async fn register_view(&self, file: &SqlFile, params: &[(&str, ScalarValue)]) -> Result<DataFrame> {
        self.register_view_in(&self.ctx, file, params).await
    }

    /// [`Engine::register_view`] in the session `ctx`.
    async fn register_view_in(
        &self,
        ctx: &SessionContext,
        file: &SqlFile,
        params: &[(&str, ScalarValue)],
    ) -> Result<DataFrame> {
        let df = ctx
            .sql(file.sql)
            .await
            .and_then(|df| df.with_param_values(params.to_vec()))
            .map_err(query(file.path))?;
        replace_table(ctx, file.name, df.clone().into_view())?;
        Ok(df)
    }

    /// Where the SQL over the resolved inputs that scoring needs (CLV
    /// purchase summaries, campaign results, contact history, the
    /// holdout's purchases) runs: on the cluster whose session holds those
    /// inputs staged, once the feature table was computed there; else in
    /// process.
    fn scoring_session(&self) -> &SessionContext {
        #[cfg(feature = "ballista")]
        if let Some(session) = &self.cluster {
            return &session.ctx;
        }
        &self.ctx
    }

    /// Whether [`Engine::scoring_session`] is a cluster's.
    pub fn scores_on_cluster(&self) -> bool {
        !std::ptr::eq(self.scoring_session(), &self.ctx)
    }

    /// Writes the rejected rows of every input table to
    /// `dir/rejects/<table>.parquet` (the table's columns plus `reject_rule`)
    /// and removes a stale file for a table without rejects. Returns the
    /// files written.
    pub async fn write_rejects(&self, dir: &Path) -> Result<Vec<PathBuf>> {
        let rejects = dir.join("rejects");
        let mut written = Vec::new();
        for counts in &self.inputs {
            let path = rejects.join(format!("{}.parquet", counts.table));
            if counts.rejected == 0 {
                if path.exists() {
                    std::fs::remove_file(&path).map_err(io(&path))?;
                }
                continue;
            }
            let view = rejects_view(&counts.table);
            let df = self.ctx.table(view.as_str()).await.map_err(query(&view))?;
            let schema = Arc::new(df.schema().as_arrow().clone());
            let mut batches = Vec::new();
            for b in df.collect().await.map_err(query(&view))? {
                batches.push(self.source.erasure.scrub(&b, &self.source.identity)?.0);
            }
            std::fs::create_dir_all(&rejects).map_err(io(&rejects))?;
            write_parquet(&path, schema, &batches)?;
            written.push(path);
        }
        Ok(written)
    }

    /// Whether any accepted transaction is at or after `day` (so data
    /// after a cutoff exists, e.g. a holdout).
    pub async fn has_transactions_from(&self, day: NaiveDate) -> Result<bool> {
        let df = self.ctx.table(TRANSACTIONS).await.map_err(query(TRANSACTIONS))?;
        let later = df.filter(col("ts").gt_eq(lit(as_of_param(day)))).map_err(query(TRANSACTIONS))?;
        let n = later
            .limit(0, Some(1))
            .map_err(query(TRANSACTIONS))?
            .count()
            .await
            .map_err(query(TRANSACTIONS))?;
        Ok(n > 0)
    }

    /// Runs any SQL over the registered views (for tests and ad-hoc checks).
    pub async fn query(&self, sql: &str) -> Result<Vec<RecordBatch>> {
        self.ctx.sql(sql).await.map_err(query("ad-hoc"))?.collect().await.map_err(query("ad-hoc"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn held_batches_are_attributed_on_every_partition_and_counted_once() {
        let mut graph = GraphBuilder::new(&IdentityOptions::default());
        let crm = StringArray::from(vec!["c1", "c2"]);
        graph.add_crm(&[(0, &crm)], 2);
        // Each batch: a row of each CRM customer, one of an identifier no
        // record has (an anonymous customer) and one with no identifier.
        let ids = StringArray::from(vec![Some("c1"), Some("c2"), Some("anon"), None]);
        let schema = Arc::new(Schema::new(vec![Field::new("n", DataType::Int64, false)]));
        let held: Vec<(RecordBatch, ScalarBuffer<u32>)> = (0..5)
            .map(|i| {
                let n: ArrayRef = Arc::new(Int64Array::from(vec![i; 4]));
                (
                    RecordBatch::try_new(schema.clone(), vec![n]).unwrap(),
                    graph.add_events(&[(0, &ids)], 4, None).into(),
                )
            })
            .collect();
        let resolution = graph.resolve(&ErasureList::default(), &mut |_| Ok(()), &mut |_| Ok(())).unwrap();
        let with_key = with_customer_no(schema.fields().iter().map(|f| f.as_ref()));
        for compact in [true, false] {
            let keyed = Keyed { before: None, compact };
            let (finished, tally) =
                attribute_in_memory(&resolution, "test", &with_key, held.clone(), keyed).unwrap();
            assert_eq!((tally.crm, tally.unattributed, tally.erased), (10, 5, 0));
            let Finished::Memory(partitions) = finished else { panic!("held in memory") };
            // Batch i in partition i % 2, in order.
            let batches: Vec<Vec<i64>> = partitions
                .iter()
                .map(|p| {
                    p.iter()
                        .map(|b| {
                            b.column(0).as_primitive::<datafusion::arrow::datatypes::Int64Type>().value(0)
                        })
                        .collect()
                })
                .collect();
            assert_eq!(batches, [vec![0, 2, 4], vec![1, 3]]);
            let attributed = [0, 2, 4, 1, 3].map(|i| &held[i].0);
            for (batch, held) in partitions.iter().flatten().zip(attributed) {
                assert_eq!(batch.schema(), with_key);
                let keys = batch.column(1).as_primitive::<datafusion::arrow::datatypes::UInt32Type>();
                let key = |i: usize| resolution.key(keys.value(i));
                assert_eq!((key(0), key(1)), ("c1", "c2"));
                assert!(!key(2).is_empty() && !["c1", "c2"].contains(&key(2)));
                match compact {
                    // The unattributed row left out.
                    true => assert_eq!(keys.len(), 3),
                    // Kept without a key, the held column shared, not copied.
                    false => {
                        assert_eq!((keys.len(), keys.null_count(), keys.is_null(3)), (4, 1, true));
                        assert!(Arc::ptr_eq(batch.column(0), held.column(0)));
                    }
                }
            }
        }
    }

    #[test]
    fn held_vocabularies_are_keys_into_the_contract_order() {
        let interactions = &ATTRIBUTED[1];
        let schema = Arc::new(Schema::new(vec![
            Field::new("channel", DataType::Utf8, true),
            Field::new("duration_s", DataType::Float64, true),
        ]));
        let rows = |channels: Vec<Option<&str>>| {
            let n = channels.len();
            let durations: ArrayRef = Arc::new(datafusion::arrow::array::Float64Array::from(vec![1.5; n]));
            RecordBatch::try_new(schema.clone(), vec![Arc::new(StringArray::from(channels)), durations])
                .unwrap()
        };
        let held = interactions.held(rows(vec![Some("sms"), None, Some("email"), Some("sms")])).unwrap();
        let channel = held.column(0).as_dictionary::<datafusion::arrow::datatypes::UInt8Type>();
        let keys: Vec<Option<u8>> = channel.keys().iter().collect();
        assert_eq!(keys, [Some(3), None, Some(0), Some(3)]);
        assert_eq!(
            cast(held.column(0), &DataType::Utf8).unwrap().as_ref(),
            rows(vec![Some("sms"), None, Some("email"), Some("sms")]).column(0).as_ref()
        );
        assert_eq!(
            held.column(1).as_ref(),
            rows(vec![None; 4]).column(1).as_ref(),
            "other columns as they were"
        );
        assert_eq!(
            held.schema().as_ref(),
            &interactions.held_schema(schema.fields().iter().map(|f| f.as_ref()))
        );
        let err = interactions.held(rows(vec![Some("fax")])).unwrap_err();
        let mut chain: Vec<String> = vec![err.to_string()];
        let mut source = std::error::Error::source(&err);
        while let Some(e) = source {
            chain.push(e.to_string());
            source = e.source();
        }
        let err = chain.join(": ");
        assert!(err.contains("interactions") && err.contains("channel") && err.contains("\"fax\""), "{err}");
    }
}
