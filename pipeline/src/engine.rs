//! The engine: one DataFusion session over one data root, with the inputs
//! checked and registered, identity resolved, and the feature and label SQL
//! runnable as of any cutoff.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::NaiveDate;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::ScalarValue;
use datafusion::prelude::{DataFrame, SessionConfig, SessionContext};

use crate::error::{Result, io, query};
use crate::ingest::{TableCounts, register_inputs, rejects_view};
use crate::output::write_parquet;
use crate::sql::{CHURN_LABEL, FEATURES, IDENTITY, SqlFile};

/// Events per source table and how many of them resolved to a customer.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ResolvedCounts {
    pub transactions: u64,
    pub interactions: u64,
}

/// A session over one data root.
pub struct Engine {
    ctx: SessionContext,
    /// Rows read, accepted and rejected per input table.
    pub inputs: Vec<TableCounts>,
    /// Events attributed to a customer.
    pub resolved: ResolvedCounts,
}

/// The cutoff as the `$as_of` parameter: midnight UTC starting `as_of`.
pub fn as_of_param(as_of: NaiveDate) -> ScalarValue {
    let micros = as_of.and_hms_opt(0, 0, 0).expect("midnight exists").and_utc().timestamp_micros();
    ScalarValue::TimestampMicrosecond(Some(micros), Some("UTC".into()))
}

impl Engine {
    /// Checks and registers the inputs under `root`, then resolves identities
    /// once (materialised, since every feature group reads them).
    pub async fn open(root: &Path) -> Result<Engine> {
        let config = SessionConfig::new().with_information_schema(false);
        let ctx = SessionContext::new_with_config(config);
        let inputs = register_inputs(&ctx, root).await?;
        let mut resolved = HashMap::new();
        for file in IDENTITY {
            let df = ctx.sql(file.sql).await.map_err(query(file.path))?;
            // The resolved event tables are read by several feature groups:
            // compute them once.
            let df = if file.name.ends_with("_resolved") {
                let cached = df.cache().await.map_err(query(file.path))?;
                resolved.insert(file.name, cached.clone().count().await.map_err(query(file.path))? as u64);
                cached
            } else {
                df
            };
            ctx.register_table(file.name, df.into_view()).map_err(query(file.path))?;
        }
        let resolved = ResolvedCounts {
            transactions: resolved["transactions_resolved"],
            interactions: resolved["interactions_resolved"],
        };
        Ok(Engine { ctx, inputs, resolved })
    }

    /// Rows read for an input table (0 if absent).
    pub fn input_rows(&self, table: &str) -> u64 {
        self.inputs.iter().find(|c| c.table == table).map_or(0, |c| c.rows)
    }

    /// The feature table as of `as_of`: one row per customer, sorted by id.
    pub async fn features(&self, as_of: NaiveDate) -> Result<Vec<RecordBatch>> {
        let params = vec![("as_of", as_of_param(as_of))];
        let mut last = None;
        for file in FEATURES {
            last = Some(self.register_view(file, &params).await?);
        }
        let df = last.expect("FEATURES is not empty");
        df.collect().await.map_err(query("features/customer_features.sql"))
    }

    /// Churn labels as of `as_of` over `horizon_days`: (customer_id, churned).
    pub async fn churn_labels(&self, as_of: NaiveDate, horizon_days: u32) -> Result<Vec<RecordBatch>> {
        let params = vec![
            ("as_of", as_of_param(as_of)),
            ("horizon_days", ScalarValue::Float64(Some(horizon_days as f64))),
        ];
        let df = self.register_view(&CHURN_LABEL, &params).await?;
        df.collect().await.map_err(query(CHURN_LABEL.path))
    }

    /// Plans `file` with `params` bound and (re)registers it as a view.
    async fn register_view(&self, file: &SqlFile, params: &[(&str, ScalarValue)]) -> Result<DataFrame> {
        let df = self
            .ctx
            .sql(file.sql)
            .await
            .and_then(|df| df.with_param_values(params.to_vec()))
            .map_err(query(file.path))?;
        self.ctx.deregister_table(file.name).map_err(query(file.path))?;
        self.ctx.register_table(file.name, df.clone().into_view()).map_err(query(file.path))?;
        Ok(df)
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
            let batches = df.collect().await.map_err(query(&view))?;
            std::fs::create_dir_all(&rejects).map_err(io(&rejects))?;
            write_parquet(&path, schema, &batches)?;
            written.push(path);
        }
        Ok(written)
    }

    /// Runs any SQL over the registered views (for tests and ad-hoc checks).
    pub async fn query(&self, sql: &str) -> Result<Vec<RecordBatch>> {
        self.ctx.sql(sql).await.map_err(query("ad-hoc"))?.collect().await.map_err(query("ad-hoc"))
    }
}
