//! The feature SQL on a DataFusion Ballista cluster. Identity resolution
//! stays in process (the identity graph is not SQL); the tables the feature
//! SQL reads are staged as Parquet where every executor can read them, and
//! the same SQL files run on the cluster with the same parameters.

use std::path::Path;

use ballista::prelude::{SessionConfigExt, SessionContextExt};
use datafusion::dataframe::DataFrameWriteOptions;
use datafusion::execution::SendableRecordBatchStream;
use datafusion::execution::SessionStateBuilder;
use datafusion::prelude::{ParquetReadOptions, SessionConfig, SessionContext};
use datafusion::scalar::ScalarValue;

use crate::error::{Result, query};
use crate::events::SpillDir;
use crate::runtime::{Cluster, EngineSettings};
use crate::sql::FEATURES;

/// The tables and views the feature SQL reads (besides its own views).
pub const FEATURE_INPUTS: [&str; 7] = [
    "customers",
    "contacts",
    "responses",
    "campaigns",
    "transactions_resolved",
    "interactions_resolved",
    "response_funnel",
];

/// A session on `cluster`, reading Parquet text as `Utf8` as the local
/// engine does.
async fn session(cluster: &Cluster) -> Result<SessionContext> {
    let config = SessionConfig::new_with_ballista()
        .with_information_schema(false)
        .set_bool("datafusion.execution.parquet.schema_force_view_types", false);
    let state = SessionStateBuilder::new().with_config(config).with_default_features().build();
    let ctx = match cluster {
        Cluster::Standalone => SessionContext::standalone_with_state(state).await,
        // Only the host and port of the URL are used.
        Cluster::Scheduler(url) => SessionContext::remote_with_state(url, state).await,
    };
    ctx.map_err(query("ballista session"))
}

/// The feature table as the cluster computes it, streamed to the driver
/// (which never holds it whole); the staged inputs stay until it is
/// dropped.
pub struct Remote {
    pub stream: SendableRecordBatchStream,
    /// Removed when dropped, after the stream (fields drop in order).
    _stage: SpillDir,
}

/// Runs the feature SQL on `cluster` over the tables of `local` (the
/// in-process session holding the resolved inputs) and returns the feature
/// table's stream. The staged copies are removed with it.
pub async fn features(
    local: &SessionContext,
    settings: &EngineSettings,
    cluster: &Cluster,
    params: &[(&str, ScalarValue)],
) -> Result<Remote> {
    let base = settings.stage_dir.as_deref().or(settings.spill_dir.as_deref());
    let stage = SpillDir::create(base, "stage")?;
    let stream = run(local, cluster, params, stage.path()).await?;
    Ok(Remote { stream, _stage: stage })
}

async fn run(
    local: &SessionContext,
    cluster: &Cluster,
    params: &[(&str, ScalarValue)],
    stage: &Path,
) -> Result<SendableRecordBatchStream> {
    let remote = session(cluster).await?;
    for name in FEATURE_INPUTS {
        let dir = stage.join(name);
        let df = local.table(name).await.map_err(query(name))?;
        df.write_parquet(&format!("{}/", dir.display()), DataFrameWriteOptions::new(), None)
            .await
            .map_err(query(name))?;
        remote
            .register_parquet(name, &format!("{}/", dir.display()), ParquetReadOptions::default())
            .await
            .map_err(query(name))?;
    }
    let (last, groups) = FEATURES.split_last().expect("FEATURES is not empty");
    for file in groups {
        let df = remote
            .sql(file.sql)
            .await
            .and_then(|df| df.with_param_values(params.to_vec()))
            .map_err(query(file.path))?;
        remote.register_table(file.name, df.into_view()).map_err(query(file.path))?;
    }
    let df = remote
        .sql(last.sql)
        .await
        .and_then(|df| df.with_param_values(params.to_vec()))
        .map_err(query(last.path))?;
    df.execute_stream().await.map_err(query(last.path))
}
