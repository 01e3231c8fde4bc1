//! Arrow record batches <-> the plain matrices engage-models works on.

use std::collections::HashMap;

use datafusion::arrow::array::{Array, AsArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Float64Type};
use datafusion::arrow::record_batch::RecordBatch;
use ndarray::Array2;

use crate::error::{PipelineError, Result};
use crate::schema::{AS_OF, CUSTOMER_ID};

/// Customer ids, feature names and a row-major matrix (`NaN` = null) from
/// feature batches: every column but `customer_id` is a feature. A text
/// column is categorical: it becomes one 0/1 column per value the registry
/// declares for it (`lifecycle_stage=active`, ...).
pub fn feature_matrix(batches: &[RecordBatch]) -> Result<(Vec<String>, Vec<String>, Array2<f64>)> {
    let Some(first) = batches.first() else {
        return Ok((Vec::new(), Vec::new(), Array2::zeros((0, 0))));
    };
    let schema = first.schema();
    // (column, category or None for a numeric column)
    let mut inputs: Vec<(String, Option<String>)> = Vec::new();
    for f in schema.fields().iter().filter(|f| f.name() != CUSTOMER_ID) {
        if matches!(f.data_type(), DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View) {
            let registered = crate::registry::feature(f.name()).filter(|r| !r.categories.is_empty());
            let registered = registered.ok_or_else(|| {
                internal(&format!("text column `{}` is not a registered categorical feature", f.name()))
            })?;
            inputs.extend(registered.categories.into_iter().map(|c| (f.name().clone(), Some(c))));
        } else {
            inputs.push((f.name().clone(), None));
        }
    }
    let names: Vec<String> = inputs
        .iter()
        .map(|(name, category)| match category {
            Some(c) => format!("{name}={c}"),
            None => name.clone(),
        })
        .collect();
    let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
    let mut ids = Vec::with_capacity(rows);
    let mut x = Array2::from_elem((rows, names.len()), f64::NAN);
    let mut offset = 0;
    for batch in batches {
        let id_col = batch.column_by_name(CUSTOMER_ID).ok_or_else(|| internal("customer_id missing"))?;
        let id_col = cast(id_col, &DataType::Utf8).map_err(|e| internal(&e.to_string()))?;
        let id_col = id_col.as_string::<i32>();
        ids.extend((0..batch.num_rows()).map(|i| id_col.value(i).to_string()));
        for (j, (name, category)) in inputs.iter().enumerate() {
            let col = batch.column_by_name(name).ok_or_else(|| internal("feature column missing"))?;
            match category {
                Some(c) => {
                    let col = cast(col, &DataType::Utf8).map_err(|e| internal(&e.to_string()))?;
                    let col = col.as_string::<i32>();
                    for i in 0..batch.num_rows() {
                        if col.is_valid(i) {
                            x[[offset + i, j]] = (col.value(i) == c) as u8 as f64;
                        }
                    }
                }
                None => {
                    let col = cast(col, &DataType::Float64).map_err(|e| internal(&e.to_string()))?;
                    let col = col.as_primitive::<Float64Type>();
                    for i in 0..batch.num_rows() {
                        if col.is_valid(i) {
                            x[[offset + i, j]] = col.value(i);
                        }
                    }
                }
            }
        }
        offset += batch.num_rows();
    }
    Ok((ids, names, x))
}

/// `customer_id -> churned` from label batches.
pub fn labels(batches: &[RecordBatch], column: &str) -> Result<HashMap<String, bool>> {
    let mut out = HashMap::new();
    for batch in batches {
        let ids = batch.column_by_name(CUSTOMER_ID).ok_or_else(|| internal("customer_id missing"))?;
        let ids = cast(ids, &DataType::Utf8).map_err(|e| internal(&e.to_string()))?;
        let ids = ids.as_string::<i32>();
        let y = batch.column_by_name(column).ok_or_else(|| internal("label column missing"))?;
        let y = y.as_boolean();
        for i in 0..batch.num_rows() {
            out.insert(ids.value(i).to_string(), y.value(i));
        }
    }
    Ok(out)
}

fn internal(what: &str) -> PipelineError {
    PipelineError::Query {
        name: "internal: feature batches".into(),
        source: datafusion::error::DataFusionError::Internal(what.to_string()),
    }
}

/// Most distinct values a text column of a user's feature table may have
/// to be one-hot encoded.
pub const MAX_CATEGORIES: usize = 50;

/// The columns engage's label SQL writes (`sql/labels/`, besides
/// `customer_id`): in a training set from `engage dataset` they are labels
/// or bookkeeping, never features.
pub const LABEL_COLUMNS: &[&str] = &[
    "churned",
    "future_spend",
    "campaign_id",
    "contact_group",
    "contact_ts",
    "offer",
    "treatment",
    "responded",
    "funnel_depth",
    "converted",
];

/// Which columns of a user's feature table are what.
#[derive(Debug, Clone, Copy)]
pub struct TableColumns<'a> {
    /// The target column.
    pub label: &'a str,
    /// The row id column: `Some` must exist; `None` uses `customer_id` when
    /// present, else row numbers.
    pub id: Option<&'a str>,
    /// Further columns that are not features (e.g. the treatment arm); each
    /// must exist.
    pub ignore: &'a [String],
}

/// A column of `batches` as text (nulls `None`); `source` names the file
/// and `flag` the option that gave it in errors.
pub fn table_text(
    batches: &[RecordBatch],
    column: &str,
    source: &str,
    flag: &'static str,
) -> Result<Vec<Option<String>>> {
    let mut out = Vec::new();
    for b in batches {
        let col = b.column_by_name(column).ok_or_else(|| {
            let names: Vec<String> = b.schema().fields().iter().map(|f| f.name().clone()).collect();
            bad_table(flag, source, column, format!("no such column; the file has {}", names.join(", ")))
        })?;
        let col = cast(col, &DataType::Utf8)
            .map_err(|e| bad_table(flag, source, column, format!("cannot be read as text: {e}")))?;
        let col = col.as_string::<i32>();
        out.extend((0..b.num_rows()).map(|i| col.is_valid(i).then(|| col.value(i).to_string())));
    }
    Ok(out)
}

/// A yes/no value as engage reads it from files: `true`/`false`, `1`/`0`
/// or `1.0`/`0.0` (pandas writes integer columns with nulls as floats).
pub fn parse_flag(v: &str) -> Option<bool> {
    match v {
        "true" | "1" | "1.0" => Some(true),
        "false" | "0" | "0.0" => Some(false),
        _ => None,
    }
}

fn bad_table(flag: &'static str, source: &str, column: &str, reason: String) -> PipelineError {
    PipelineError::InvalidArgument {
        name: flag,
        value: source.to_string(),
        reason: format!("column `{column}`: {reason}"),
    }
}

/// A training set from any feature table (a user's file): `columns.label`
/// is the target (boolean, 0/1 integers, or `true`/`false` text), the id
/// column names rows (see [`TableColumns::id`]), an `as_of` column (if
/// any) is returned per row as text for a time-based split and not a
/// feature; the columns of [`LABEL_COLUMNS`] and `columns.ignore` are left
/// out, and every other column is a feature: numbers and booleans as they
/// are, text one-hot over its distinct values (sorted; at most
/// [`MAX_CATEGORIES`]; a registered categorical feature over the
/// registry's values, in its order, as [`feature_matrix`] encodes it).
/// Nulls stay missing (`NaN`) for the model to impute. `source` names the
/// file in errors.
pub fn table_training_set(
    batches: &[RecordBatch],
    columns: &TableColumns,
    source: &str,
) -> Result<(engage_models::TrainingSet, Option<Vec<String>>)> {
    let bad = |column: &str, reason: String| bad_table("--features", source, column, reason);
    let Some(first) = batches.first() else {
        return Err(PipelineError::NoTrainingRows(format!("{source} has no rows")));
    };
    let schema = first.schema();
    let names: Vec<String> = schema.fields().iter().map(|f| f.name().clone()).collect();
    let (label, id) = (columns.label, columns.id.unwrap_or(CUSTOMER_ID));
    let explicit = columns.id.iter().map(|i| (*i, "--id")).chain(std::iter::once((label, "--label")));
    for (column, flag) in explicit.chain(columns.ignore.iter().map(|c| (c.as_str(), "--ignore"))) {
        if !names.iter().any(|n| n == column) {
            return Err(bad(column, format!("no such column ({flag}); the file has {}", names.join(", "))));
        }
    }
    let text = |c: &str| table_text(batches, c, source, "--features");
    let mut y = Vec::new();
    for (row, v) in text(label)?.into_iter().enumerate() {
        match v.as_deref().and_then(parse_flag) {
            Some(flag) => y.push(flag),
            None => {
                return Err(bad(label, format!("row {row} holds {v:?}; expected true/false or 1/0")));
            }
        }
    }
    let has_id = names.iter().any(|n| n == id);
    let ids: Vec<String> = if has_id {
        text(id)?.into_iter().enumerate().map(|(i, v)| v.unwrap_or_else(|| format!("row {i}"))).collect()
    } else {
        (0..y.len()).map(|i| i.to_string()).collect()
    };
    let as_of = if names.iter().any(|n| n == AS_OF) {
        let v = text(AS_OF)?;
        if let Some(row) = v.iter().position(Option::is_none) {
            return Err(bad(AS_OF, format!("row {row} is empty; every row needs its cutoff")));
        }
        Some(v.into_iter().map(|d| d.expect("checked")).collect())
    } else {
        None
    };
    let not_features: Vec<&str> = [label, id, AS_OF]
        .into_iter()
        .chain(LABEL_COLUMNS.iter().copied())
        .chain(columns.ignore.iter().map(String::as_str))
        .collect();
    let mut feature_names = Vec::new();
    let mut columns: Vec<Vec<f64>> = Vec::new();
    for f in schema.fields().iter().filter(|f| !not_features.contains(&f.name().as_str())) {
        let name = f.name();
        if matches!(
            f.data_type(),
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View | DataType::Dictionary(..)
        ) {
            let values = text(name)?;
            // A registered categorical (from `engage dataset`) keeps the
            // registry's values, so the model scores engage's feature table.
            let registered = crate::registry::feature(name).map(|f| f.categories).unwrap_or_default();
            // Observed values sorted and distinct, or the registry's, in its order.
            let categories: Vec<&str> = if registered.is_empty() {
                let seen: std::collections::BTreeSet<&str> =
                    values.iter().flatten().map(String::as_str).collect();
                seen.into_iter().collect()
            } else {
                registered.iter().map(String::as_str).collect()
            };
            if categories.len() > MAX_CATEGORIES {
                return Err(bad(
                    name,
                    format!(
                        "text with {} distinct values; one-hot encoding takes at most {MAX_CATEGORIES}: drop or encode it",
                        categories.len()
                    ),
                ));
            }
            for c in categories {
                feature_names.push(format!("{name}={c}"));
                columns.push(
                    values.iter().map(|v| v.as_deref().map_or(f64::NAN, |v| (v == c) as u8 as f64)).collect(),
                );
            }
        } else {
            let mut out = Vec::with_capacity(y.len());
            for b in batches {
                let col = b.column_by_name(name).expect("in the schema");
                let col = if col.data_type() == &DataType::Boolean {
                    cast(col, &DataType::UInt8).and_then(|c| cast(&c, &DataType::Float64))
                } else {
                    cast(col, &DataType::Float64)
                }
                .map_err(|e| bad(name, format!("not numeric, boolean or text ({}): {e}", col.data_type())))?;
                let col = col.as_primitive::<Float64Type>();
                out.extend((0..b.num_rows()).map(|i| if col.is_valid(i) { col.value(i) } else { f64::NAN }));
            }
            feature_names.push(name.clone());
            columns.push(out);
        }
    }
    if feature_names.is_empty() {
        return Err(bad(label, "the file has no feature column besides the label, id and as_of".into()));
    }
    let x = Array2::from_shape_fn((y.len(), columns.len()), |(i, j)| columns[j][i]);
    Ok((engage_models::TrainingSet { ids, feature_names, x, y }, as_of))
}
