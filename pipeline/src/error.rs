//! The one error type of engage-pipeline.

use datafusion::error::DataFusionError;

/// What can go wrong reading inputs, running SQL jobs or writing outputs.
/// The first group are user mistakes (bad input or arguments) and say what
/// to fix; `Query` on a checked input is our bug.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error(
        "required table `{table}` not found: expected {root}/{table}.parquet, {root}/{table}.csv or a directory {root}/{table}/ of .parquet or .csv files"
    )]
    MissingTable { table: String, root: String },
    #[error("table `{table}` is given twice: {first} and {second}; keep one")]
    AmbiguousTable { table: String, first: String, second: String },
    #[error("table `{table}`: directory {path} holds no .parquet or .csv files")]
    EmptyTableDir { table: String, path: String },
    #[error(
        "{table}.{column}: column missing in {file} (the data contract requires it; see docs/data-contract.md)"
    )]
    MissingColumn { table: String, column: String, file: String },
    #[error("{table}.{column}: expected {expected}, found {found} in {file}")]
    ColumnType { table: String, column: String, expected: String, found: String, file: String },
    #[error("cannot read {path} as Parquet")]
    UnreadableFile {
        path: String,
        #[source]
        source: parquet::errors::ParquetError,
    },
    #[error("cannot read {path} as CSV: {reason}")]
    UnreadableCsv { path: String, reason: String },
    #[error("{path}")]
    Store {
        path: String,
        #[source]
        source: object_store::Error,
    },
    /// A conditional write found the object changed since it was read:
    /// another command wrote it meanwhile, and nothing was overwritten.
    #[error(
        "{path} changed on the store while this command ran (another command wrote it); this command's change to it was not written: run the command again"
    )]
    Changed { path: String },
    /// An entry of the checked-inputs cache (`--checked-inputs`) does not hold what
    /// was written there.
    #[error("checked-inputs cache entry {path}: {reason}; remove the cache directory to have it made again")]
    Cache { path: String, reason: String },
    #[error("invalid argument {name} = `{value}`: {reason}")]
    InvalidArgument { name: &'static str, value: String, reason: String },
    /// A configuration file's field (`segments.rules[2].stage`) is wrong.
    #[error("config {field}: {reason}")]
    Config { field: String, reason: String },
    #[error("no training rows: {0}")]
    NoTrainingRows(String),
    #[error("{path}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("writing {path}")]
    Write {
        path: String,
        #[source]
        source: parquet::errors::ParquetError,
    },
    /// The engine's memory limit is too small for a query even with spilling.
    #[error(
        "query `{name}` needs more memory than the engine's limit allows, even spilling to disk: raise --memory-limit ([engine] memory_limit) or check the spill directory has room"
    )]
    MemoryLimit {
        name: String,
        #[source]
        source: DataFusionError,
    },
    /// What the driver holds itself (the identity graph, scoring's numbers
    /// per customer), which cannot spill, does not fit in what the engine's
    /// memory limit leaves.
    #[error(
        "the {what} needs {needed} so far and cannot spill to disk: more than the engine's memory limit ({limit}) leaves; raise --memory-limit ([engine] memory_limit)"
    )]
    DriverMemory {
        what: &'static str,
        needed: crate::runtime::ByteSize,
        limit: crate::runtime::ByteSize,
        #[source]
        source: DataFusionError,
    },
    #[error("query `{name}` failed")]
    Query {
        name: String,
        #[source]
        source: DataFusionError,
    },
    #[error(transparent)]
    Model(#[from] engage_models::ModelError),
}

/// Shorthand for results of this crate.
pub type Result<T, E = PipelineError> = std::result::Result<T, E>;

pub(crate) fn io(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> PipelineError + '_ {
    move |source| PipelineError::Io { path: path.display().to_string(), source }
}

pub(crate) fn query(name: &str) -> impl FnOnce(DataFusionError) -> PipelineError + '_ {
    move |source| match source.find_root() {
        DataFusionError::ResourcesExhausted(_) => {
            PipelineError::MemoryLimit { name: name.to_string(), source }
        }
        _ => PipelineError::Query { name: name.to_string(), source },
    }
}
