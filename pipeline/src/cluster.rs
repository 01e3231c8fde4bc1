//! The feature SQL, and the scoring SQL over the same inputs (CLV purchase
//! summaries, campaign results, contact history, the holdout's purchases),
//! on a DataFusion Ballista cluster. Identity resolution stays in process
//! (the identity graph is not SQL); the tables that SQL reads are staged as
//! Parquet where every executor can read them, and the same SQL files run
//! on the cluster with the same parameters.

use std::path::Path;

use ballista::prelude::{SessionConfigExt, SessionContextExt};
use datafusion::dataframe::DataFrameWriteOptions;
use datafusion::execution::SendableRecordBatchStream;
use datafusion::execution::SessionStateBuilder;
use datafusion::prelude::{ParquetReadOptions, SessionConfig, SessionContext};
use datafusion::scalar::ScalarValue;

use crate::claim::SpillDir;
use crate::error::{Result, query};
use crate::runtime::{Cluster, EngineSettings};
use crate::sql::FEATURES;
use crate::store::DataRoot;

/// The tables and views the feature SQL reads (besides its own views).
pub const FEATURE_INPUTS: [&str; 8] = [
    "customers",
    "contacts",
    "responses",
    "campaigns",
    "transactions_resolved",
    "interactions_resolved",
    crate::engine::KEYS,
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

/// Where the tables the feature SQL reads are staged for the executors: a
/// directory every executor sees at the same path, or a prefix on an object
/// store (`s3://bucket/prefix`, credentials from the environment, as the
/// executors read them). Removed when dropped, success or not.
enum Stage {
    Dir(SpillDir),
    Store(DataRoot),
}

impl Stage {
    fn create(settings: &EngineSettings) -> Result<Stage> {
        match settings.stage_dir.as_deref() {
            Some(given) if DataRoot::is_remote(given) => {
                let url = format!("{}/{}", given.trim_end_matches('/'), SpillDir::name("stage"));
                Ok(Stage::Store(DataRoot::parse_with("--stage-dir", &url, &Default::default())?))
            }
            given => {
                let base = given.map(Path::new).or(settings.spill_dir.as_deref());
                Ok(Stage::Dir(SpillDir::create(base, "stage")?))
            }
        }
    }

    /// The directory (URL) of the staged table `name`.
    fn table(&self, name: &str) -> String {
        match self {
            Stage::Dir(dir) => format!("{}/", dir.path().join(name).display()),
            Stage::Store(root) => root.url(&format!("{name}/")),
        }
    }

    /// Makes the stage's object store known to `ctx`.
    fn register(&self, ctx: &SessionContext) {
        if let Stage::Store(root) = self {
            root.register(ctx);
        }
    }
}

impl Drop for Stage {
    /// Deletes the staged objects (a directory goes with its [`SpillDir`]):
    /// on a thread of its own with its own runtime, since a drop cannot
    /// wait for the caller's.
    fn drop(&mut self) {
        if let Stage::Store(root) = self {
            let root = root.clone();
            let _ = std::thread::spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build();
                runtime.map(|rt| rt.block_on(root.delete_dir("")))
            })
            .join();
        }
    }
}

/// A session on a cluster over the staged inputs of one cutoff's resolved
/// events; the staged copies are removed when it is dropped.
pub struct Session {
    pub ctx: SessionContext,
    /// Dropped after the session (fields drop in order).
    _stage: Stage,
}

/// Stages the tables the feature SQL reads ([`FEATURE_INPUTS`], from
/// `local`, the in-process session holding the resolved inputs) and opens a
/// session on `cluster` over them.
pub async fn stage(local: &SessionContext, settings: &EngineSettings, cluster: &Cluster) -> Result<Session> {
    let stage = Stage::create(settings)?;
    let remote = session(cluster).await?;
    stage.register(local);
    stage.register(&remote);
    for name in FEATURE_INPUTS {
        let dir = stage.table(name);
        let df = local.table(name).await.map_err(query(name))?;
        df.write_parquet(&dir, DataFrameWriteOptions::new(), None).await.map_err(query(name))?;
        remote.register_parquet(name, &dir, ParquetReadOptions::default()).await.map_err(query(name))?;
    }
    Ok(Session { ctx: remote, _stage: stage })
}

/// Registers the feature groups in `session` and returns the feature
/// table's stream, computed by the cluster as the driver reads it.
pub async fn features(
    session: &Session,
    params: &[(&str, ScalarValue)],
) -> Result<SendableRecordBatchStream> {
    let remote = &session.ctx;
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
