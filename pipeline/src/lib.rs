//! engage-pipeline: everything that runs on DataFusion.
//!
//! Flow: [`ingest`] checks the inputs against the data contract and
//! registers canonical views; [`engine::Engine`] resolves identities and
//! runs the SQL in `sql/` ([`sql`] is its registry); [`jobs`] builds
//! features and trains, [`scoring`] publishes score snapshots with
//! [`segments`], [`nightly`] runs the scheduled job from its config,
//! all writing outputs atomically ([`output`]);
//! [`generate`] writes realistic sample data.

pub mod audience;
mod cache;
mod claim;
#[cfg(feature = "ballista")]
pub mod cluster;
mod engine;
pub mod erasure;
mod error;
pub(crate) mod events;
mod frame;
pub mod generate;
pub mod identity;
pub mod ingest;
pub mod jobs;
pub mod nightly;
pub mod output;
pub mod publish;
pub mod registry;
pub mod report;
pub mod runtime;
pub mod schema;
pub mod scoring;
pub mod segments;
pub mod sql;
pub mod store;
mod worker;

/// Re-exported so tests and tools use the same DataFusion (and its arrow and parquet).
pub use datafusion;
pub use engine::{
    DataSource, Engine, IdentityMap, LifecycleRules, PurchaseSummaries, ResolvedCounts, ResolvedIdentity,
    Task, as_of_param, default_response_funnel,
};
pub use error::{PipelineError, Result};
pub use frame::{LABEL_COLUMNS, TableColumns, feature_matrix, table_training_set};
