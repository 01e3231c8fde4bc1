//! Ingest: find each contract table under the data root, check every file's
//! columns and types against the contract, and register one canonical view
//! per table (fixed column order and types, timestamps as UTC microseconds)
//! holding only the rows that pass the contract's row rules. Rows that break
//! a rule are not dropped: they stay queryable in `rejects_<table>` with the
//! rule they broke, and jobs write them to `rejects/<table>.parquet`.
//!
//! This is the one place that knows the physical layout of inputs; SQL jobs
//! only ever see the canonical views.

use std::collections::BTreeMap;
use std::hash::BuildHasher;
use std::ops::Not;
use std::path::PathBuf;
use std::sync::Arc;

use chrono::Utc;
use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, BooleanBuilder, StringArray, StringBuilder, UInt32Array,
};
use datafusion::arrow::buffer::BooleanBuffer;
use datafusion::arrow::compute::{filter_record_batch, is_null};
use datafusion::arrow::datatypes::{DataType, Field, Int64Type, Schema, TimeUnit};
use datafusion::arrow::error::ArrowError;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::{JoinType, ScalarValue};
use datafusion::datasource::MemTable;
use datafusion::error::DataFusionError;
use datafusion::functions_aggregate::expr_fn::count;
use datafusion::logical_expr::{
    ColumnarValue, Expr, ScalarUDF, Volatility, cast, create_udf, ident, lit, try_cast, when,
};
use datafusion::prelude::{DataFrame, ParquetReadOptions, SessionContext};
use futures::StreamExt;
use object_store::ObjectMeta;
use parquet::arrow::parquet_to_arrow_schema;
use parquet::errors::ParquetError;
use parquet::file::metadata::ParquetMetaDataReader;

use crate::claim::SpillDir;
use crate::error::{PipelineError, Result, io, query};
use crate::output::ParquetSink;
use crate::schema::{ColType, ColumnSpec, TABLES, TableSpec};
use crate::store::DataRoot;
use crate::worker::joined;

/// How a table is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Parquet,
    Csv,
}

/// Where one table's files are.
#[derive(Debug, Clone)]
pub struct TableSource {
    pub table: &'static TableSpec,
    pub format: Format,
    /// The `.parquet`/`.csv` file or the directory holding them, relative to
    /// the root (a directory ends in `/`).
    pub location: String,
    /// Every data file, sorted.
    pub files: Vec<ObjectMeta>,
}

/// Rows read per table and how many broke a row rule.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TableCounts {
    pub table: String,
    /// Where the table was read from; `None` for an absent optional table.
    pub location: Option<String>,
    /// Data files read.
    pub files: u64,
    /// Bytes of those files.
    pub bytes: u64,
    pub rows: u64,
    /// Rows that pass every row rule and feed the jobs.
    pub accepted: u64,
    /// Rows that break a row rule.
    pub rejected: u64,
    /// Extra copies of rows whose key appears more than once with identical
    /// content: kept once (`rows = accepted + rejected + duplicates`).
    #[serde(default)]
    pub duplicates: u64,
    /// Rejected rows per rule (see [`REJECT_RULE`]).
    pub rejected_by_rule: BTreeMap<String, u64>,
}

/// The canonical Arrow type a contract type is read as.
pub fn canonical_type(ty: ColType) -> DataType {
    match ty {
        ColType::Utf8 => DataType::Utf8,
        ColType::Float64 => DataType::Float64,
        ColType::Boolean => DataType::Boolean,
        ColType::Date => DataType::Date32,
        ColType::Timestamp => DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
    }
}

/// The canonical schema of a contract table.
pub fn canonical_schema(spec: &TableSpec) -> Schema {
    Schema::new(
        spec.columns.iter().map(|c| Field::new(c.name, canonical_type(c.ty), true)).collect::<Vec<_>>(),
    )
}

impl ColType {
    /// Whether a physical Arrow type can be read as this contract type.
    pub fn accepts(self, found: &DataType) -> bool {
        use DataType as D;
        match (self, found) {
            (_, D::Dictionary(_, value)) => self.accepts(value),
            (ColType::Utf8, D::Utf8 | D::LargeUtf8 | D::Utf8View) => true,
            (ColType::Float64, t) => t.is_numeric(),
            (ColType::Boolean, D::Boolean) => true,
            (ColType::Date, D::Date32 | D::Date64) => true,
            (ColType::Timestamp, D::Timestamp(_, _)) => true,
            _ => false,
        }
    }
}

/// Finds a table under `root`: `<name>.parquet`, `<name>.csv`, or a directory
/// `<name>/` of such files. `Ok(None)` when absent.
pub async fn locate(root: &DataRoot, spec: &'static TableSpec) -> Result<Option<TableSource>> {
    let (objects, dirs) = root.list("").await?;
    let file = |ext: &str| {
        let name = format!("{}.{ext}", spec.name);
        objects.iter().find(|o| o.location.filename() == Some(name.as_str())).map(|o| (name, o.clone()))
    };
    let mut found: Vec<(String, Option<(Format, ObjectMeta)>)> = Vec::new();
    if let Some((name, o)) = file("parquet") {
        found.push((name, Some((Format::Parquet, o))));
    }
    if let Some((name, o)) = file("csv") {
        found.push((name, Some((Format::Csv, o))));
    }
    if dirs.iter().any(|d| d == spec.name) {
        found.push((format!("{}/", spec.name), None));
    }
    let (location, single) = match found.as_slice() {
        [] => return Ok(None),
        [one] => one.clone(),
        [a, b, ..] => {
            return Err(PipelineError::AmbiguousTable {
                table: spec.name.into(),
                first: root.display(&a.0),
                second: root.display(&b.0),
            });
        }
    };
    if let Some((format, object)) = single {
        return Ok(Some(TableSource { table: spec, format, files: vec![object], location }));
    }
    let (objects, _) = root.list(&location).await?;
    let with_ext = |ext: &str| -> Vec<ObjectMeta> {
        let mut v: Vec<ObjectMeta> =
            objects.iter().filter(|o| o.location.extension() == Some(ext)).cloned().collect();
        v.sort_by(|a, b| a.location.cmp(&b.location));
        v
    };
    let (parquet, csv) = (with_ext("parquet"), with_ext("csv"));
    let (format, files) = match (parquet.is_empty(), csv.is_empty()) {
        (false, true) => (Format::Parquet, parquet),
        (true, false) => (Format::Csv, csv),
        (true, true) => {
            return Err(PipelineError::EmptyTableDir {
                table: spec.name.into(),
                path: root.display(spec.name),
            });
        }
        (false, false) => {
            return Err(PipelineError::AmbiguousTable {
                table: spec.name.into(),
                first: root.display(&root.relative(&parquet[0])),
                second: root.display(&root.relative(&csv[0])),
            });
        }
    };
    Ok(Some(TableSource { table: spec, format, location, files }))
}

impl TableSource {
    /// Checks every file's columns and types against the contract, naming the
    /// file, table and column on the first problem. For CSV files, checks the
    /// header (values are typed when read). Returns the column names of the
    /// first file, in file order.
    pub async fn check(&self, root: &DataRoot) -> Result<Vec<String>> {
        let mut first: Option<Vec<String>> = None;
        for file in &self.files {
            let shown = root.display(&root.relative(file));
            let names = match self.format {
                Format::Parquet => self.check_parquet(root, file, &shown).await?,
                Format::Csv => self.check_csv(root, file, &shown).await?,
            };
            if let Some(first) = &first {
                if self.format == Format::Csv && *first != names {
                    return Err(PipelineError::UnreadableCsv {
                        path: shown,
                        reason: format!(
                            "its header {names:?} differs from {:?} in {}",
                            first,
                            root.display(&root.relative(&self.files[0]))
                        ),
                    });
                }
            } else {
                first = Some(names);
            }
        }
        Ok(first.unwrap_or_default())
    }

    async fn check_parquet(&self, root: &DataRoot, file: &ObjectMeta, shown: &str) -> Result<Vec<String>> {
        let schema = parquet_schema(root, file).await.map_err(|source| match source {
            FooterError::Store(e) => e,
            FooterError::Parquet(source) => PipelineError::UnreadableFile { path: shown.to_string(), source },
        })?;
        for spec in self.table.columns {
            let field = schema.field_with_name(spec.name).map_err(|_| self.missing(spec, shown))?;
            if !spec.ty.accepts(field.data_type()) {
                return Err(PipelineError::ColumnType {
                    table: self.table.name.into(),
                    column: spec.name.into(),
                    expected: spec.ty.name().into(),
                    found: field.data_type().to_string(),
                    file: shown.to_string(),
                });
            }
        }
        Ok(schema.fields().iter().map(|f| f.name().clone()).collect())
    }

    async fn check_csv(&self, root: &DataRoot, file: &ObjectMeta, shown: &str) -> Result<Vec<String>> {
        let head = root.get_range(file, 0..file.size.min(64 * 1024)).await?;
        let line = head.split(|&b| b == b'\n').next().unwrap_or_default();
        let header = String::from_utf8_lossy(line);
        let names: Vec<String> = header
            .trim_end_matches('\r')
            .split(',')
            .map(|s| s.trim().trim_matches('"').to_string())
            .collect();
        if header.trim().is_empty() {
            return Err(PipelineError::UnreadableCsv {
                path: shown.to_string(),
                reason: "no header line".into(),
            });
        }
        for spec in self.table.columns {
            if !names.iter().any(|n| n == spec.name) {
                return Err(self.missing(spec, shown));
            }
        }
        Ok(names)
    }

    fn missing(&self, spec: &ColumnSpec, file: &str) -> PipelineError {
        PipelineError::MissingColumn {
            table: self.table.name.into(),
            column: spec.name.into(),
            file: file.to_string(),
        }
    }
}

enum FooterError {
    Store(PipelineError),
    Parquet(ParquetError),
}

/// A Parquet file's Arrow schema, from its footer alone (two ranged reads).
async fn parquet_schema(root: &DataRoot, file: &ObjectMeta) -> std::result::Result<Schema, FooterError> {
    let not_parquet = || FooterError::Parquet(ParquetError::General("no Parquet footer (PAR1)".into()));
    if file.size < 12 {
        return Err(not_parquet());
    }
    let tail = root.get_range(file, file.size - 8..file.size).await.map_err(FooterError::Store)?;
    if &tail[4..] != b"PAR1" {
        return Err(not_parquet());
    }
    let len = u32::from_le_bytes(tail[..4].try_into().expect("4 bytes")) as u64;
    if len + 8 > file.size {
        return Err(not_parquet());
    }
    let footer =
        root.get_range(file, file.size - 8 - len..file.size - 8).await.map_err(FooterError::Store)?;
    let meta = ParquetMetaDataReader::decode_metadata(&footer).map_err(FooterError::Parquet)?;
    let fm = meta.file_metadata();
    parquet_to_arrow_schema(fm.schema_descr(), fm.key_value_metadata()).map_err(FooterError::Parquet)
}

/// What else reads a table's accepted rows in the contract checks' pass
/// over it (the engine builds its identity graph there rather than decode
/// every event a second time).
pub(crate) trait AcceptedRows {
    /// The columns it reads of `table`; none: it reads nothing of it.
    fn columns(&self, table: &str) -> Vec<&'static str>;
    /// Rows of `table` that pass the row rules, in the order of
    /// [`AcceptedRows::columns`]. A key's copies are all among them: whether
    /// a key repeated is known only when the pass is over
    /// ([`TableCounts::duplicates`], `conflicting_key` rejects).
    fn read(&mut self, table: &'static str, rows: RecordBatch) -> Result<()>;
}

/// What the contract checks' pass over a table found ([`tally`]): rows
/// per rule (`None`: accepted), and the keys accepted rows repeat. The
/// checked-inputs cache ([`crate::cache`]) keeps it, so that a run over
/// unchanged files skips the pass.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub(crate) struct Tally {
    pub rules: Vec<(Option<String>, u64)>,
    pub repeated: Vec<String>,
}

/// The contract tables found under a root, in [`TABLES`] order: each
/// one's files (none: an absent optional table) and its checked header.
pub(crate) struct Located(Vec<(&'static TableSpec, Option<TableSource>, Vec<String>)>);

impl Located {
    /// Finds every contract table under `root` and checks each file's
    /// columns. Fails if a required table is missing or any file breaks the
    /// contract.
    pub(crate) async fn find(root: &DataRoot) -> Result<Located> {
        if root.local_path().is_some_and(|p| !p.is_dir()) {
            return Err(PipelineError::InvalidArgument {
                name: "--data",
                value: root.to_string(),
                reason: "not a directory".into(),
            });
        }
        let mut sources = Vec::new();
        for spec in TABLES {
            let source = locate(root, spec).await?;
            if source.is_none() && spec.required {
                return Err(PipelineError::MissingTable { table: spec.name.into(), root: root.to_string() });
            }
            let header = match &source {
                Some(s) => s.check(root).await?,
                None => Vec::new(),
            };
            sources.push((spec, source, header));
        }
        Ok(Located(sources))
    }

    /// Each table and its files.
    pub(crate) fn sources(&self) -> impl Iterator<Item = (&'static TableSpec, Option<&TableSource>)> {
        self.0.iter().map(|(spec, source, _)| (*spec, source.as_ref()))
    }
}

/// Registers every contract table `located` under `root` in `ctx` as a
/// canonical view named after the table; absent optional tables are
/// registered empty. A table's checks are one pass over its rows, unless
/// `known` (by place in [`TABLES`]) has its [`Tally`] already.
/// Under a memory limit the key checks' working set goes to `spill`
/// ([`Hashes`]). `reader`, if any, is handed the accepted rows of the
/// tables checked.
pub(crate) async fn register_inputs(
    ctx: &SessionContext,
    root: &DataRoot,
    located: Located,
    spill: Option<&SpillDir>,
    mut reader: Option<&mut dyn AcceptedRows>,
    mut known: Vec<Option<Tally>>,
) -> Result<Vec<(TableCounts, Tally)>> {
    root.register(ctx);
    known.resize(located.0.len(), None);
    let mut counts = Vec::new();
    for ((spec, source, header), known) in located.0.into_iter().zip(known) {
        let pass = match known {
            Some(found) => Pass::Known(found),
            None => Pass::Read(reader.as_mut().map(|r| &mut **r as &mut dyn AcceptedRows)),
        };
        counts.push(register_table(ctx, root, spec, source.as_ref(), &header, spill, pass).await?);
    }
    Ok(counts)
}

/// How a table's checks are counted: by a pass over its rows (handing the
/// accepted ones to a reader, if any), or known from an earlier one.
enum Pass<'r> {
    Read(Option<&'r mut dyn AcceptedRows>),
    Known(Tally),
}

async fn register_table(
    ctx: &SessionContext,
    root: &DataRoot,
    spec: &'static TableSpec,
    source: Option<&TableSource>,
    header: &[String],
    spill: Option<&SpillDir>,
    pass: Pass<'_>,
) -> Result<(TableCounts, Tally)> {
    let Some(source) = source else {
        let empty =
            MemTable::try_new(Arc::new(canonical_schema(spec)), vec![vec![]]).map_err(query(spec.name))?;
        ctx.register_table(spec.name, Arc::new(empty)).map_err(query(spec.name))?;
        let none = Tally { rules: Vec::new(), repeated: Vec::new() };
        return Ok((TableCounts { table: spec.name.into(), ..Default::default() }, none));
    };
    let raw = format!("raw_{}", spec.name);
    match source.format {
        Format::Parquet => ctx
            .register_parquet(raw.as_str(), root.url(&source.location), ParquetReadOptions::default())
            .await
            .map_err(query(spec.name))?,
        Format::Csv => register_csv(ctx, &raw, root, source, header, spill).await?,
    }
    let df = ctx.table(raw.as_str()).await.map_err(query(spec.name))?;
    let mut canonical = Vec::new();
    // Rules only the raw values can tell: a CSV line with the wrong number
    // of fields, a CSV value that does not parse as its contract type.
    let mut raw_rules: Vec<(Expr, String)> = Vec::new();
    if source.format == Format::Csv {
        raw_rules.push((ident(MALFORMED), "malformed_csv".into()));
    }
    for c in spec.columns {
        let found = df.schema().field_with_unqualified_name(c.name).map(|f| f.data_type().clone());
        let column = match found {
            // Zone-less timestamps are UTC: relabel them (a cast would
            // convert every value from local time through the zone database).
            Ok(DataType::Timestamp(_, None)) => cast(
                cast(cast(ident(c.name), DataType::Timestamp(TimeUnit::Microsecond, None)), DataType::Int64),
                canonical_type(c.ty),
            ),
            Ok(DataType::Utf8) if c.ty != ColType::Utf8 => {
                let parsed = try_cast(ident(c.name), canonical_type(c.ty));
                raw_rules.push((
                    has_text().call(vec![ident(c.name)]).and(parsed.clone().is_null()),
                    format!("unparsable:{}", c.name),
                ));
                parsed
            }
            _ => cast(ident(c.name), canonical_type(c.ty)),
        };
        canonical.push(column.alias(c.name));
    }
    let has_raw_rules = !raw_rules.is_empty();
    if has_raw_rules {
        canonical.push(first_rule(raw_rules).alias(RAW_RULE));
    }
    let typed = df.select(canonical).map_err(query(spec.name))?;
    let checked = typed.with_column(REJECT_RULE, reject_rule(spec)).map_err(query(spec.name))?;
    let checked = if has_raw_rules {
        let first = when(ident(RAW_RULE).is_not_null(), ident(RAW_RULE)).otherwise(ident(REJECT_RULE));
        checked.with_column(REJECT_RULE, first.map_err(query(spec.name))?).map_err(query(spec.name))?
    } else {
        checked
    };
    let checked = checked
        .select(spec.columns.iter().map(|c| ident(c.name)).chain([ident(REJECT_RULE)]).collect::<Vec<_>>())
        .map_err(query(spec.name))?;
    let found = match pass {
        Pass::Known(found) => found,
        Pass::Read(reader) => {
            let (rules, repeated) = tally(&checked, spec.key, spec.name, spill, reader).await?;
            Tally { rules: rules.into_iter().collect(), repeated }
        }
    };
    let bytes = source.files.iter().map(|f| f.size).sum();
    let mut counts = TableCounts {
        table: spec.name.into(),
        location: Some(root.display(source.location.trim_end_matches('/'))),
        files: source.files.len() as u64,
        bytes,
        ..Default::default()
    };
    for (rule, n) in &found.rules {
        counts.rows += n;
        match rule {
            None => counts.accepted = *n,
            Some(rule) => {
                counts.rejected += n;
                counts.rejected_by_rule.insert(rule.clone(), *n);
            }
        }
    }
    let columns: Vec<Expr> = spec.columns.iter().map(|c| ident(c.name)).collect();
    let mut accepted =
        checked.clone().filter(ident(REJECT_RULE).is_null()).and_then(|df| df.select(columns.clone()));
    let mut rejected = checked.filter(ident(REJECT_RULE).is_not_null()).map_err(query(spec.name))?;
    if let Some(key) = spec.key {
        let ok = accepted.map_err(query(spec.name))?;
        let dups = Duplicates::find(ctx, spec, key, &ok, found.repeated.clone()).await?;
        (accepted, rejected) = dups.apply(ctx, spec, key, ok, rejected, &mut counts)?;
    }
    ctx.register_table(spec.name, accepted.map_err(query(spec.name))?.into_view())
        .map_err(query(spec.name))?;
    ctx.register_table(rejects_view(spec.name), rejected.into_view()).map_err(query(spec.name))?;
    Ok((counts, found))
}

/// Rows of a keyed table whose key is not unique among accepted rows.
struct Duplicates {
    /// Distinct rows of every duplicated key, with how many copies each.
    rows: Vec<RecordBatch>,
    /// Per duplicated key: distinct row variants.
    variants: std::collections::HashMap<String, u64>,
}

impl Duplicates {
    /// Collects the rows of the `repeated` keys of `accepted` (few, in any
    /// sane input), distinct, with their copies.
    async fn find(
        ctx: &SessionContext,
        spec: &TableSpec,
        key: &str,
        accepted: &DataFrame,
        repeated: Vec<String>,
    ) -> Result<Duplicates> {
        let name = spec.name;
        if repeated.is_empty() {
            return Ok(Duplicates { rows: Vec::new(), variants: Default::default() });
        }
        let keys: ArrayRef = Arc::new(StringArray::from(repeated));
        let keys = vec![RecordBatch::try_from_iter([(DUP_KEY, keys)]).expect("one text column")];
        let keys = ctx.read_batches(keys).map_err(query(name))?;
        let columns: Vec<Expr> = spec.columns.iter().map(|c| ident(c.name)).collect();
        let rows = accepted
            .clone()
            .join(keys, JoinType::LeftSemi, &[key], &[DUP_KEY], None)
            .and_then(|df| df.aggregate(columns, vec![count(lit(1)).alias(COPIES)]))
            .map_err(query(name))?
            .collect()
            .await
            .map_err(query(name))?;
        let mut variants = std::collections::HashMap::new();
        for b in &rows {
            let k = cast_utf8(b.column_by_name(key).expect("key column"));
            for i in 0..b.num_rows() {
                *variants.entry(k.value(i).to_string()).or_insert(0) += 1;
            }
        }
        Ok(Duplicates { rows, variants })
    }

    /// Exact duplicates (every copy of a key identical) are kept once and
    /// counted; keys whose copies differ are all rejected as
    /// `conflicting_key:<key>`: which copy is right is not ours to guess.
    fn apply(
        self,
        ctx: &SessionContext,
        spec: &TableSpec,
        key: &str,
        accepted: DataFrame,
        rejected: DataFrame,
        counts: &mut TableCounts,
    ) -> Result<(Result<DataFrame, DataFusionError>, DataFrame)> {
        if self.rows.is_empty() {
            return Ok((Ok(accepted), rejected));
        }
        let name = spec.name;
        let rule = format!("conflicting_key:{key}");
        let (mut keep, mut conflict) = (Vec::new(), Vec::new());
        for b in &self.rows {
            let k = cast_utf8(b.column_by_name(key).expect("key column"));
            let copies = b.column_by_name(COPIES).expect("copies").as_primitive::<Int64Type>();
            let mut keep_idx = Vec::new();
            let mut conflict_idx = Vec::new();
            for i in 0..b.num_rows() {
                let n = copies.value(i) as u64;
                if self.variants[k.value(i)] == 1 {
                    counts.accepted -= n - 1;
                    counts.duplicates += n - 1;
                    keep_idx.push(i as u32);
                } else {
                    counts.accepted -= n;
                    counts.rejected += n;
                    *counts.rejected_by_rule.entry(rule.clone()).or_default() += n;
                    conflict_idx.extend(std::iter::repeat_n(i as u32, n as usize));
                }
            }
            let columns: Vec<usize> = (0..spec.columns.len()).collect();
            let contract = b.project(&columns).map_err(|e| query(name)(e.into()))?;
            let take = |idx: Vec<u32>| -> Result<RecordBatch> {
                let idx = UInt32Array::from(idx);
                let cols = contract
                    .columns()
                    .iter()
                    .map(|c| datafusion::arrow::compute::take(c, &idx, None))
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| query(name)(e.into()))?;
                RecordBatch::try_new(contract.schema(), cols).map_err(|e| query(name)(e.into()))
            };
            keep.push(take(keep_idx)?);
            conflict.push(take(conflict_idx)?);
        }
        let dup_keys: Vec<RecordBatch> = self
            .rows
            .iter()
            .map(|b| {
                let k = b.column_by_name(key).expect("key column").clone();
                RecordBatch::try_from_iter([(DUP_KEY, k)]).map_err(|e| query(name)(e.into()))
            })
            .collect::<Result<_>>()?;
        let dup_keys = ctx.read_batches(dup_keys).map_err(query(name))?;
        let unique = accepted.join(dup_keys, JoinType::LeftAnti, &[key], &[DUP_KEY], None);
        let accepted = unique.and_then(|u| u.union(ctx.read_batches(keep)?));
        let conflict = ctx
            .read_batches(conflict)
            .and_then(|df| df.with_column(REJECT_RULE, lit(rule.as_str())))
            .and_then(|df| rejected.union(df))
            .map_err(query(name))?;
        Ok((accepted, conflict))
    }
}

const DUP_KEY: &str = "__dup_key";
const COPIES: &str = "__copies";

fn cast_utf8(a: &ArrayRef) -> StringArray {
    datafusion::arrow::compute::cast(a, &DataType::Utf8).expect("text key").as_string::<i32>().clone()
}

/// Column the CSV reader sets on a line with the wrong number of fields.
const MALFORMED: &str = "__malformed";
/// Column holding the first raw-value rule a row breaks.
const RAW_RULE: &str = "__raw_rule";

/// Reads `source`'s CSV files as text columns named by `header`, plus
/// [`MALFORMED`], and registers them as the table `raw`. A line with more
/// or fewer fields than the header, or with bytes that are not UTF-8, is
/// kept with the fields it has (by position) and flagged, to be rejected as
/// `malformed_csv`. Empty fields are NULL. Without a memory limit the rows
/// are held in memory; under one (`spill`) they go to a Parquet file in the
/// spill directory, which the engine scans for as long as it runs. Local
/// files are read as a stream; a file on an object store is fetched whole,
/// one file at a time.
async fn register_csv(
    ctx: &SessionContext,
    raw: &str,
    root: &DataRoot,
    source: &TableSource,
    header: &[String],
    spill: Option<&SpillDir>,
) -> Result<()> {
    let mut fields: Vec<Field> = header.iter().map(|n| Field::new(n, DataType::Utf8, true)).collect();
    fields.push(Field::new(MALFORMED, DataType::Boolean, false));
    let schema = Arc::new(Schema::new(fields));
    let on_disk =
        |dir: &SpillDir| ParquetSink::create(&dir.path().join(format!("{raw}.parquet")), schema.clone());
    let mut sink = spill.map(on_disk).transpose()?;
    let mut batches = Vec::new();
    for file in &source.files {
        let shown = root.display(&root.relative(file));
        let unreadable =
            |e: csv::Error| PipelineError::UnreadableCsv { path: shown.clone(), reason: e.to_string() };
        let bytes: Box<dyn std::io::Read> = match root.local_path() {
            Some(dir) => {
                let path = dir.join(root.relative(file));
                Box::new(std::fs::File::open(&path).map_err(io(&path))?)
            }
            None => Box::new(std::io::Cursor::new(root.get(file).await?)),
        };
        let mut reader = csv::ReaderBuilder::new().has_headers(true).flexible(true).from_reader(bytes);
        let mut record = csv::ByteRecord::new();
        let mut done = false;
        while !done {
            let mut columns: Vec<StringBuilder> = header.iter().map(|_| StringBuilder::new()).collect();
            let mut malformed = BooleanBuilder::new();
            let mut rows = 0;
            while rows < 8192 {
                if !reader.read_byte_record(&mut record).map_err(unreadable)? {
                    done = true;
                    break;
                }
                let mut bad = record.len() != header.len();
                for (i, column) in columns.iter_mut().enumerate() {
                    match record.get(i).map(std::str::from_utf8) {
                        Some(Ok(v)) if !v.is_empty() => column.append_value(v),
                        Some(Err(_)) => {
                            bad = true;
                            column.append_null();
                        }
                        _ => column.append_null(),
                    }
                }
                malformed.append_value(bad);
                rows += 1;
            }
            if rows > 0 {
                let mut arrays: Vec<ArrayRef> =
                    columns.iter_mut().map(|c| Arc::new(c.finish()) as ArrayRef).collect();
                arrays.push(Arc::new(malformed.finish()));
                let batch = RecordBatch::try_new(schema.clone(), arrays).expect("columns match the header");
                match &mut sink {
                    Some(sink) => sink.write(&batch)?,
                    None => batches.push(batch),
                }
            }
        }
    }
    let name = source.table.name;
    match sink {
        Some(sink) => {
            let path = sink.path().display().to_string();
            sink.finish()?;
            let options = ParquetReadOptions::default().schema(&schema);
            ctx.register_parquet(raw, &path, options).await.map_err(query(name))
        }
        None => {
            let table = MemTable::try_new(schema, vec![batches]).map_err(query(name))?;
            ctx.register_table(raw, Arc::new(table)).map(|_| ()).map_err(query(name))
        }
    }
}

/// Column of a rejected row that names the rule it broke.
pub const REJECT_RULE: &str = "reject_rule";

/// The view holding the rejected rows of `table` (its columns plus
/// [`REJECT_RULE`]).
pub fn rejects_view(table: &str) -> String {
    format!("rejects_{table}")
}

/// Timestamps before this are out of range (epoch microseconds of 1990-01-01).
const MIN_TS_MICROS: i64 = 631_152_000_000_000;

/// The contract's row rules as one expression: NULL for a row that passes,
/// else the first rule it breaks, as `rule:column`:
/// `missing:<col>` (required value NULL or blank: whitespace only), `not_finite:<col>`
/// (NaN or infinite number), `out_of_range:<col>` (timestamp before 1990),
/// `unknown_value:<col>` (not an allowed enum value), `no_identifier` (no
/// identity column set).
fn reject_rule(spec: &TableSpec) -> Expr {
    let text_present = |name: &str| -> Expr { has_text().call(vec![ident(name)]) };
    let mut checks: Vec<(Expr, String)> = Vec::new();
    let future = Utc::now().timestamp_micros() + FUTURE_TOLERANCE_MICROS;
    for c in spec.columns {
        if c.required {
            let present = match c.ty {
                ColType::Utf8 => text_present(c.name),
                _ => ident(c.name).is_not_null(),
            };
            checks.push((present.not(), format!("missing:{}", c.name)));
        }
        match c.ty {
            ColType::Float64 => checks.push((
                ident(c.name).is_not_null().and(ident(c.name).between(lit(f64::MIN), lit(f64::MAX)).not()),
                format!("not_finite:{}", c.name),
            )),
            ColType::Timestamp => {
                let ts = |micros| lit(ScalarValue::TimestampMicrosecond(Some(micros), Some("UTC".into())));
                checks.push((ident(c.name).lt(ts(MIN_TS_MICROS)), format!("out_of_range:{}", c.name)));
                checks.push((ident(c.name).gt(ts(future)), format!("in_future:{}", c.name)));
            }
            _ => {}
        }
        if let Some(allowed) = c.allowed {
            let known = ident(c.name).in_list(allowed.iter().map(|v| lit(*v)).collect(), false);
            checks.push((known.not(), format!("unknown_value:{}", c.name)));
        }
    }
    if let Some((first, rest)) = spec.identity.split_first() {
        let any = rest.iter().fold(text_present(first), |acc, name| acc.or(text_present(name)));
        checks.push((any.not(), "no_identifier".into()));
    }
    first_rule(checks)
}

/// The rule of the first true condition, NULL if none is.
fn first_rule(checks: Vec<(Expr, String)>) -> Expr {
    let mut iter = checks.into_iter();
    let Some((cond, rule)) = iter.next() else { return lit(ScalarValue::Utf8(None)) };
    let mut case = when(cond, lit(rule));
    for (cond, rule) in iter {
        case = case.when(cond, lit(rule));
    }
    case.otherwise(lit(ScalarValue::Utf8(None))).expect("a CASE with at least one branch")
}

/// How far past the run's start a timestamp may be (clock skew between
/// systems) before it is `in_future`: one day.
const FUTURE_TOLERANCE_MICROS: i64 = 86_400_000_000;

/// `has_text(text) -> bool`: false for NULL or blank (whitespace only) text.
/// Checks in place, where `btrim(x) <> ''` would copy every value.
fn has_text() -> ScalarUDF {
    create_udf(
        "has_text",
        vec![DataType::Utf8],
        DataType::Boolean,
        Volatility::Immutable,
        Arc::new(|args: &[ColumnarValue]| {
            // Most values start with a non-blank byte: no trim needed.
            let text = |s: &str| {
                s.as_bytes().first().is_some_and(|b| !b.is_ascii_whitespace()) || !s.trim().is_empty()
            };
            let test = |v: Option<&str>| Some(v.is_some_and(text));
            Ok(match &args[0] {
                ColumnarValue::Array(a) => {
                    let a = a.as_string::<i32>();
                    let bits = BooleanBuffer::collect_bool(a.len(), |i| a.is_valid(i) && text(a.value(i)));
                    ColumnarValue::Array(Arc::new(BooleanArray::new(bits, None)))
                }
                ColumnarValue::Scalar(ScalarValue::Utf8(v)) => {
                    ColumnarValue::Scalar(ScalarValue::Boolean(test(v.as_deref())))
                }
                ColumnarValue::Scalar(other) => {
                    return datafusion::common::exec_err!("has_text: expected text, got {other:?}");
                }
            })
        }),
    )
}

/// One pass over a checked table: rows per rule (`None`: accepted), and the
/// keys (of `key`, if given) that accepted rows repeat. Keys are first
/// compared by a 64-bit hash (8 bytes per row, not the key's text, kept in
/// [`Hashes`]); only when some hash repeats does a second pass compare the
/// keys themselves. `reader` gets the accepted rows of the first pass.
async fn tally(
    checked: &DataFrame,
    key: Option<&str>,
    name: &'static str,
    spill: Option<&SpillDir>,
    reader: Option<&mut dyn AcceptedRows>,
) -> Result<(BTreeMap<Option<String>, u64>, Vec<String>)> {
    let hasher = foldhash::fast::FixedState::with_seed(0);
    let mut rules: BTreeMap<Option<String>, u64> = BTreeMap::new();
    let mut hashes = match key {
        Some(_) => Some(Hashes::new(spill, name)?),
        None => None,
    };
    let mut names: Vec<&str> = [REJECT_RULE].into_iter().chain(key).collect();
    let read = reader.as_ref().map(|r| r.columns(name)).unwrap_or_default();
    let read_at: Vec<usize> = read
        .iter()
        .map(|c| match names.iter().position(|n| n == c) {
            Some(i) => i,
            None => {
                names.push(c);
                names.len() - 1
            }
        })
        .collect();
    let mut reader = reader.filter(|_| !read.is_empty());
    let columns: Vec<Expr> = names.iter().map(|c| ident(*c)).collect();
    let mut stream =
        checked.clone().select(columns).map_err(query(name))?.execute_stream().await.map_err(query(name))?;
    let mut accepted = 0;
    while let Some(batch) = stream.next().await {
        let batch = batch.map_err(query(name))?;
        let rule = batch.column(0).as_string::<i32>();
        let keys = key.map(|_| batch.column(1).as_string::<i32>());
        for i in 0..batch.num_rows() {
            if rule.is_valid(i) {
                let r = rule.value(i);
                match rules.get_mut(&Some(r.to_string())) {
                    Some(n) => *n += 1,
                    None => {
                        rules.insert(Some(r.to_string()), 1);
                    }
                }
                continue;
            }
            accepted += 1;
            if let (Some(keys), Some(hashes)) = (keys, hashes.as_mut()) {
                hashes.push(hasher.hash_one(keys.value(i)))?;
            }
        }
        if let Some(reader) = reader.as_deref_mut() {
            let err = |e: ArrowError| query(name)(e.into());
            let rows = match rule.null_count() {
                0 => batch.project(&read_at),
                _ => filter_record_batch(&batch, &is_null(rule).map_err(err)?)
                    .and_then(|b| b.project(&read_at)),
            };
            reader.read(name, rows.map_err(err)?)?;
        }
    }
    let twice = match hashes {
        Some(h) => h.repeated()?,
        None => Default::default(),
    };
    if accepted > 0 {
        rules.insert(None, accepted);
    }
    let Some(key) = key.filter(|_| !twice.is_empty()) else { return Ok((rules, Vec::new())) };
    let mut copies: std::collections::HashMap<String, u64> = Default::default();
    let mut stream = checked
        .clone()
        .filter(ident(REJECT_RULE).is_null())
        .and_then(|df| df.select(vec![ident(key)]))
        .map_err(query(name))?
        .execute_stream()
        .await
        .map_err(query(name))?;
    while let Some(batch) = stream.next().await {
        let batch = batch.map_err(query(name))?;
        let keys = batch.column(0).as_string::<i32>();
        for k in keys.iter().flatten() {
            if twice.contains(&hasher.hash_one(k)) {
                *copies.entry(k.to_string()).or_default() += 1;
            }
        }
    }
    let mut repeated: Vec<String> = copies.into_iter().filter(|(_, n)| *n > 1).map(|(k, _)| k).collect();
    repeated.sort();
    Ok((rules, repeated))
}

/// The key hashes of a table's accepted rows, in buckets by their top bits,
/// each small enough to sort in cache afterwards (a probe per row into one
/// big table would miss the cache on every row). 8 bytes a row: 4.9 GB for
/// the 616 M interactions of 10M customers, so under a memory limit the
/// buckets are files in the spill directory, read back one at a time.
enum Hashes {
    Memory(Vec<Vec<u64>>),
    Disk { files: Vec<(PathBuf, std::io::BufWriter<std::fs::File>)> },
}

/// Buckets in memory (top 10 bits) and on disk (top 7: 128 open files,
/// about 38 MB each at 10M customers).
const MEMORY_BUCKET_SHIFT: u32 = 54;
const DISK_BUCKET_SHIFT: u32 = 57;

impl Hashes {
    fn new(spill: Option<&SpillDir>, table: &str) -> Result<Hashes> {
        let Some(dir) = spill else {
            return Ok(Hashes::Memory(vec![Vec::new(); 1 << (64 - MEMORY_BUCKET_SHIFT)]));
        };
        let files = (0..1usize << (64 - DISK_BUCKET_SHIFT))
            .map(|i| {
                let path = dir.path().join(format!("{table}-keys-{i:03}.u64"));
                let file = std::fs::File::create(&path).map_err(io(&path))?;
                Ok((path, std::io::BufWriter::with_capacity(32 << 10, file)))
            })
            .collect::<Result<_>>()?;
        Ok(Hashes::Disk { files })
    }

    fn push(&mut self, h: u64) -> Result<()> {
        match self {
            Hashes::Memory(buckets) => buckets[(h >> MEMORY_BUCKET_SHIFT) as usize].push(h),
            Hashes::Disk { files } => {
                let (path, file) = &mut files[(h >> DISK_BUCKET_SHIFT) as usize];
                std::io::Write::write_all(file, &h.to_le_bytes()).map_err(io(path))?;
            }
        }
        Ok(())
    }

    /// The hashes seen more than once.
    fn repeated(self) -> Result<std::collections::HashSet<u64>> {
        fn repeats(mut bucket: Vec<u64>) -> Vec<u64> {
            bucket.sort_unstable();
            bucket.windows(2).filter(|w| w[0] == w[1]).map(|w| w[0]).collect()
        }
        let mut twice = std::collections::HashSet::new();
        match self {
            // The buckets sorted on every core: at 1M customers the 61 M
            // interaction keys took a second on one, the rest of the run
            // waiting.
            Hashes::Memory(mut buckets) => {
                let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
                let share = buckets.len().div_ceil(threads);
                let mut shares = Vec::new();
                while !buckets.is_empty() {
                    let rest = buckets.split_off(share.min(buckets.len()));
                    shares.push(std::mem::replace(&mut buckets, rest));
                }
                std::thread::scope(|s| {
                    let found: Vec<_> = shares
                        .into_iter()
                        .map(|share| s.spawn(|| share.into_iter().flat_map(repeats).collect::<Vec<u64>>()))
                        .collect();
                    for f in found {
                        twice.extend(joined(f.join()));
                    }
                });
            }
            Hashes::Disk { files } => {
                for (path, file) in files {
                    file.into_inner().map_err(|e| io(&path)(e.into_error()))?;
                    let bytes = std::fs::read(&path).map_err(io(&path))?;
                    std::fs::remove_file(&path).map_err(io(&path))?;
                    twice.extend(repeats(
                        bytes
                            .chunks_exact(8)
                            .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
                            .collect(),
                    ));
                }
            }
        }
        Ok(twice)
    }
}
