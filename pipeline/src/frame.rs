//! Arrow record batches <-> the plain matrices engage-models works on.

use std::collections::HashMap;

use datafusion::arrow::array::{Array, AsArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Float64Type};
use datafusion::arrow::record_batch::RecordBatch;
use ndarray::Array2;

use crate::error::{PipelineError, Result};
use crate::schema::CUSTOMER_ID;

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
