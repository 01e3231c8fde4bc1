//! Ingest: find each contract table under the data root, check every file's
//! columns and types against the contract, and register one canonical view
//! per table (fixed column order and types, timestamps as UTC microseconds)
//! holding only the rows that pass the contract's row rules. Rows that break
//! a rule are not dropped: they stay queryable in `rejects_<table>` with the
//! rule they broke, and jobs write them to `rejects/<table>.parquet`.
//!
//! This is the one place that knows the physical layout of inputs; SQL jobs
//! only ever see the canonical views.

use std::ops::Not;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use datafusion::common::ScalarValue;
use datafusion::datasource::MemTable;
use datafusion::functions_aggregate::expr_fn::count;
use datafusion::arrow::array::{AsArray, BooleanArray};
use datafusion::logical_expr::{
    ColumnarValue, Expr, ScalarUDF, Volatility, cast, create_udf, ident, lit, when,
};
use datafusion::prelude::{CsvReadOptions, ParquetReadOptions, SessionContext};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use crate::error::{PipelineError, Result, io, query};
use crate::schema::{ColType, ColumnSpec, TABLES, TableSpec};

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
    /// The `.parquet`/`.csv` file or the directory holding them.
    pub location: PathBuf,
    /// Every data file, sorted.
    pub files: Vec<PathBuf>,
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
    /// Rows that break a row rule (`rows = accepted + rejected`).
    pub rejected: u64,
    /// Rejected rows per rule (see [`REJECT_RULE`]).
    pub rejected_by_rule: std::collections::BTreeMap<String, u64>,
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
pub fn locate(root: &Path, spec: &'static TableSpec) -> Result<Option<TableSource>> {
    let candidates = [
        (root.join(format!("{}.parquet", spec.name)), Some(Format::Parquet)),
        (root.join(format!("{}.csv", spec.name)), Some(Format::Csv)),
        (root.join(spec.name), None),
    ];
    let found: Vec<&(PathBuf, Option<Format>)> = candidates.iter().filter(|(p, _)| p.exists()).collect();
    let (location, format) = match found.as_slice() {
        [] => return Ok(None),
        [one] => (*one).clone(),
        [a, b, ..] => {
            return Err(PipelineError::AmbiguousTable {
                table: spec.name.into(),
                first: a.0.display().to_string(),
                second: b.0.display().to_string(),
            });
        }
    };
    if let Some(format) = format {
        return Ok(Some(TableSource { table: spec, format, files: vec![location.clone()], location }));
    }
    let mut parquet = Vec::new();
    let mut csv = Vec::new();
    for entry in std::fs::read_dir(&location).map_err(io(&location))? {
        let path = entry.map_err(io(&location))?.path();
        match path.extension().and_then(|e| e.to_str()) {
            Some("parquet") => parquet.push(path),
            Some("csv") => csv.push(path),
            _ => {}
        }
    }
    parquet.sort();
    csv.sort();
    let (format, files) = match (parquet.is_empty(), csv.is_empty()) {
        (false, true) => (Format::Parquet, parquet),
        (true, false) => (Format::Csv, csv),
        (true, true) => {
            return Err(PipelineError::EmptyTableDir {
                table: spec.name.into(),
                path: location.display().to_string(),
            });
        }
        (false, false) => {
            return Err(PipelineError::AmbiguousTable {
                table: spec.name.into(),
                first: parquet[0].display().to_string(),
                second: csv[0].display().to_string(),
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
    pub fn check(&self) -> Result<Vec<String>> {
        let mut first: Option<Vec<String>> = None;
        for file in &self.files {
            let names = match self.format {
                Format::Parquet => self.check_parquet(file)?,
                Format::Csv => self.check_csv(file)?,
            };
            if let Some(first) = &first {
                if self.format == Format::Csv && *first != names {
                    return Err(PipelineError::UnreadableCsv {
                        path: file.display().to_string(),
                        reason: format!(
                            "its header {names:?} differs from {:?} in {}",
                            first,
                            self.files[0].display()
                        ),
                    });
                }
            } else {
                first = Some(names);
            }
        }
        Ok(first.unwrap_or_default())
    }

    fn check_parquet(&self, file: &Path) -> Result<Vec<String>> {
        let unreadable = |source| PipelineError::UnreadableFile { path: file.display().to_string(), source };
        let handle = std::fs::File::open(file).map_err(io(file))?;
        let builder = ParquetRecordBatchReaderBuilder::try_new(handle).map_err(unreadable)?;
        let schema = builder.schema();
        for spec in self.table.columns {
            let field = schema.field_with_name(spec.name).map_err(|_| self.missing(spec, file))?;
            if !spec.ty.accepts(field.data_type()) {
                return Err(PipelineError::ColumnType {
                    table: self.table.name.into(),
                    column: spec.name.into(),
                    expected: spec.ty.name().into(),
                    found: field.data_type().to_string(),
                    file: file.display().to_string(),
                });
            }
        }
        Ok(schema.fields().iter().map(|f| f.name().clone()).collect())
    }

    fn check_csv(&self, file: &Path) -> Result<Vec<String>> {
        use std::io::BufRead;
        let handle = std::fs::File::open(file).map_err(io(file))?;
        let mut header = String::new();
        std::io::BufReader::new(handle).read_line(&mut header).map_err(io(file))?;
        let names: Vec<String> = header
            .trim_end_matches(['\r', '\n'])
            .split(',')
            .map(|s| s.trim().trim_matches('"').to_string())
            .collect();
        if header.trim().is_empty() {
            return Err(PipelineError::UnreadableCsv {
                path: file.display().to_string(),
                reason: "no header line".into(),
            });
        }
        for spec in self.table.columns {
            if !names.iter().any(|n| n == spec.name) {
                return Err(self.missing(spec, file));
            }
        }
        Ok(names)
    }

    fn missing(&self, spec: &ColumnSpec, file: &Path) -> PipelineError {
        PipelineError::MissingColumn {
            table: self.table.name.into(),
            column: spec.name.into(),
            file: file.display().to_string(),
        }
    }
}

/// Checks and registers every contract table of `root` in `ctx` as a
/// canonical view named after the table. Absent optional tables are
/// registered empty. Fails before registering anything if a required table
/// is missing or any file breaks the contract.
pub async fn register_inputs(ctx: &SessionContext, root: &Path) -> Result<Vec<TableCounts>> {
    if !root.is_dir() {
        return Err(PipelineError::InvalidArgument {
            name: "--data",
            value: root.display().to_string(),
            reason: "not a directory".into(),
        });
    }
    let mut sources = Vec::new();
    for spec in TABLES {
        let source = locate(root, spec)?;
        if source.is_none() && spec.required {
            return Err(PipelineError::MissingTable {
                table: spec.name.into(),
                root: root.display().to_string(),
            });
        }
        let header = match &source {
            Some(s) => s.check()?,
            None => Vec::new(),
        };
        sources.push((spec, source, header));
    }
    let mut counts = Vec::new();
    for (spec, source, header) in sources {
        counts.push(register_table(ctx, spec, source.as_ref(), &header).await?);
    }
    Ok(counts)
}

async fn register_table(
    ctx: &SessionContext,
    spec: &'static TableSpec,
    source: Option<&TableSource>,
    header: &[String],
) -> Result<TableCounts> {
    let Some(source) = source else {
        let empty =
            MemTable::try_new(Arc::new(canonical_schema(spec)), vec![vec![]]).map_err(query(spec.name))?;
        ctx.register_table(spec.name, Arc::new(empty)).map_err(query(spec.name))?;
        return Ok(TableCounts { table: spec.name.into(), ..Default::default() });
    };
    let raw = format!("raw_{}", spec.name);
    let location = source.location.to_string_lossy().to_string();
    match source.format {
        Format::Parquet => ctx
            .register_parquet(raw.as_str(), &location, ParquetReadOptions::default())
            .await
            .map_err(query(spec.name))?,
        Format::Csv => {
            // Read every CSV column as text, by header position; the
            // canonical view below casts to the contract types.
            let schema =
                Schema::new(header.iter().map(|n| Field::new(n, DataType::Utf8, true)).collect::<Vec<_>>());
            let options = CsvReadOptions::new().has_header(true).schema(&schema).file_extension(".csv");
            ctx.register_csv(raw.as_str(), &location, options).await.map_err(query(spec.name))?
        }
    }
    let df = ctx.table(raw.as_str()).await.map_err(query(spec.name))?;
    let canonical = spec
        .columns
        .iter()
        .map(|c| {
            let found = df.schema().field_with_unqualified_name(c.name).map(|f| f.data_type().clone());
            let column = match found {
                // Zone-less timestamps are UTC: relabel them (a cast would
                // convert every value from local time through the zone
                // database).
                Ok(DataType::Timestamp(_, None)) => cast(
                    cast(cast(ident(c.name), DataType::Timestamp(TimeUnit::Microsecond, None)), DataType::Int64),
                    canonical_type(c.ty),
                ),
                _ => cast(ident(c.name), canonical_type(c.ty)),
            };
            column.alias(c.name)
        })
        .collect::<Vec<_>>();
    let typed = df.select(canonical).map_err(query(spec.name))?;
    let checked = typed.with_column(REJECT_RULE, reject_rule(spec)).map_err(query(spec.name))?;
    let tally = checked
        .clone()
        .aggregate(vec![ident(REJECT_RULE)], vec![count(lit(1)).alias("rows")])
        .map_err(query(spec.name))?
        .collect()
        .await
        .map_err(query(spec.name))?;
    let bytes = source.files.iter().filter_map(|f| std::fs::metadata(f).ok()).map(|m| m.len()).sum();
    let mut counts = TableCounts {
        table: spec.name.into(),
        location: Some(location),
        files: source.files.len() as u64,
        bytes,
        ..Default::default()
    };
    for (rule, n) in rule_counts(&tally) {
        counts.rows += n;
        match rule {
            None => counts.accepted = n,
            Some(rule) => {
                counts.rejected += n;
                counts.rejected_by_rule.insert(rule, n);
            }
        }
    }
    let columns: Vec<Expr> = spec.columns.iter().map(|c| ident(c.name)).collect();
    let accepted = checked.clone().filter(ident(REJECT_RULE).is_null()).and_then(|df| df.select(columns));
    let rejected = checked.filter(ident(REJECT_RULE).is_not_null());
    ctx.register_table(spec.name, accepted.map_err(query(spec.name))?.into_view())
        .map_err(query(spec.name))?;
    ctx.register_table(rejects_view(spec.name), rejected.map_err(query(spec.name))?.into_view())
        .map_err(query(spec.name))?;
    Ok(counts)
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
            ColType::Timestamp => checks.push((
                ident(c.name)
                    .lt(lit(ScalarValue::TimestampMicrosecond(Some(MIN_TS_MICROS), Some("UTC".into())))),
                format!("out_of_range:{}", c.name),
            )),
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
    let mut iter = checks.into_iter();
    let Some((cond, rule)) = iter.next() else { return lit(ScalarValue::Utf8(None)) };
    let mut case = when(cond, lit(rule));
    for (cond, rule) in iter {
        case = case.when(cond, lit(rule));
    }
    case.otherwise(lit(ScalarValue::Utf8(None))).expect("a CASE with at least one branch")
}

/// `has_text(text) -> bool`: false for NULL or blank (whitespace only) text.
/// Checks in place, where `btrim(x) <> ''` would copy every value.
fn has_text() -> ScalarUDF {
    create_udf(
        "has_text",
        vec![DataType::Utf8],
        DataType::Boolean,
        Volatility::Immutable,
        Arc::new(|args: &[ColumnarValue]| {
            let test = |v: Option<&str>| Some(v.is_some_and(|s| !s.trim().is_empty()));
            Ok(match &args[0] {
                ColumnarValue::Array(a) => {
                    let out: BooleanArray = a.as_string::<i32>().iter().map(test).collect();
                    ColumnarValue::Array(Arc::new(out))
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

/// `(rule or None for accepted, rows)` from the per-rule tally.
fn rule_counts(batches: &[datafusion::arrow::record_batch::RecordBatch]) -> Vec<(Option<String>, u64)> {
    use datafusion::arrow::array::Array;
    use datafusion::arrow::compute::cast;
    use datafusion::arrow::datatypes::Int64Type;
    let mut out = Vec::new();
    for b in batches {
        let rules = cast(b.column(0), &DataType::Utf8).expect("rule names are text");
        let rules = rules.as_string::<i32>();
        let n = b.column(1).as_primitive::<Int64Type>();
        for i in 0..b.num_rows() {
            let rule = rules.is_valid(i).then(|| rules.value(i).to_string());
            out.push((rule, n.value(i) as u64));
        }
    }
    out
}
