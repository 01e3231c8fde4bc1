//! How the engine runs: DataFusion in process, with an optional memory
//! limit past which sorts, aggregations and joins spill to disk, and
//! optionally the feature SQL on a Ballista cluster (docs/scale-out.md).

use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use datafusion::execution::disk_manager::{DiskManagerBuilder, DiskManagerMode};
use datafusion::execution::memory_pool::{
    FairSpillPool, MemoryConsumer, MemoryLimit, MemoryPool, MemoryReservation, TrackConsumersPool,
    UnboundedMemoryPool,
};
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::prelude::{SessionConfig, SessionContext};
use serde::{Deserialize, Serialize};

use crate::claim::SpillDir;
use crate::error::{PipelineError, Result, query};

/// `[engine]` in the nightly config, `--memory-limit` / `--spill-dir` on
/// the command line.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EngineSettings {
    /// Where the feature SQL runs: in process (None, `local`), or on a
    /// Ballista cluster: `ballista://host:port` (the scheduler), or
    /// `ballista://standalone` (scheduler and executor in this process).
    pub url: Option<String>,
    /// With a cluster: where the tables the feature SQL reads are staged
    /// as Parquet: a directory every executor sees at the same path, or an
    /// object store prefix (`s3://bucket/prefix`) (default: `spill_dir`,
    /// else the system temp directory).
    pub stage_dir: Option<String>,
    /// Memory the job may hold at once (`"4GiB"`, `"512MB"` or bytes): the
    /// engine's pool gets [`EngineSettings::pool_bytes`] of it, past which
    /// its operators spill to `spill_dir`. None: unbounded.
    pub memory_limit: Option<ByteSize>,
    /// Where spill files go (default: the system temp directory).
    pub spill_dir: Option<PathBuf>,
    /// A local directory where what the contract checks, the identity
    /// graph and the events held for attribution learn from the inputs is
    /// kept between runs, so that a run over unchanged files skips that
    /// pass (`crate::cache`). None: every run reads every row.
    pub checked_inputs: Option<PathBuf>,
    /// No spilling at all: a query past the limit fails (tests use it to
    /// show a limit is binding).
    #[serde(skip)]
    pub spill_disabled: bool,
}

/// Where the feature SQL runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cluster {
    /// Scheduler and executor started in this process.
    Standalone,
    /// A scheduler's `ballista://host:port`.
    Scheduler(String),
}

impl EngineSettings {
    /// Under a memory limit (spilling allowed), a fresh directory in
    /// `spill_dir` for the driver's own working sets (`what` names it);
    /// None without a limit, where they stay in memory.
    pub fn spill(&self, what: &str) -> Result<Option<SpillDir>> {
        match self.memory_limit {
            Some(_) if !self.spill_disabled => Ok(Some(SpillDir::create(self.spill_dir.as_deref(), what)?)),
            _ => Ok(None),
        }
    }

    /// The cluster named by `url`; None for the in-process engine. A URL
    /// other than `local` or `ballista://...` is an error, and so is a
    /// cluster when this build has no Ballista.
    pub fn cluster(&self) -> Result<Option<Cluster>> {
        let bad = |reason: &str| PipelineError::InvalidArgument {
            name: "--engine",
            value: self.url.clone().unwrap_or_default(),
            reason: reason.to_string(),
        };
        let cluster = match self.url.as_deref() {
            None | Some("local") => return Ok(None),
            Some("ballista://standalone") => Cluster::Standalone,
            Some(url) if url.starts_with("ballista://") && url.len() > "ballista://".len() => {
                if self.stage_dir.is_none() {
                    return Err(bad(
                        "a cluster's executors read the staged tables: give --stage-dir ([engine] stage_dir), a directory every executor sees at the same path or an object store prefix (s3://bucket/prefix)",
                    ));
                }
                Cluster::Scheduler(url.to_string())
            }
            Some(_) => return Err(bad("use `local`, `ballista://host:port` or `ballista://standalone`")),
        };
        if cfg!(feature = "ballista") {
            Ok(Some(cluster))
        } else {
            Err(bad(
                "this engage was built without Ballista: build it with `cargo build --release --features ballista`",
            ))
        }
    }

    /// The engine's memory pool under a limit: seven eighths of it. The
    /// pool sees the operators' reservations and the driver's counted sets
    /// (the identity graph, scoring's numbers per customer), not the rest of
    /// the process: Parquet readers' and writers' buffers, batches on their
    /// way between operators, the allocator's slack, the program itself.
    /// The eighth kept back is for those, so that a stage whose operators
    /// fill the pool still ends under the limit (docs/scale-out.md).
    pub fn pool_bytes(&self) -> Option<u64> {
        self.memory_limit.map(|ByteSize(limit)| limit - limit / 8)
    }

    /// A session with these settings over `config`, and under a memory
    /// limit the directory its operators spill to (in `spill_dir`, removed
    /// when dropped: keep it for as long as the session runs).
    pub fn session(&self, mut config: SessionConfig) -> Result<(SessionContext, Option<SpillDir>)> {
        let mut runtime = RuntimeEnvBuilder::new();
        if let Some(pool) = self.pool_bytes() {
            // Hash joins hold their build side in memory and cannot spill;
            // sort-merge joins can. Each sort keeps a reserve for merging its
            // spill files (10 MB by default): a query runs dozens of sorts at
            // once, so the reserve shrinks with the pool.
            let reserve = (pool / 64).clamp(256 << 10, 10 << 20);
            // DataFusion plans sort-merge joins only with 2+ partitions.
            let partitions = config.target_partitions().max(2);
            config = config
                .with_target_partitions(partitions)
                .set_bool("datafusion.optimizer.prefer_hash_join", false)
                .set_usize("datafusion.execution.sort_spill_reservation_bytes", reserve as usize);
        }
        let pool: Arc<dyn MemoryPool> = match self.pool_bytes() {
            // Fair: every spilling operator of a query gets its share rather
            // than the first one taking everything. Tracking names the
            // largest consumers when a query still runs out.
            Some(bytes) => {
                let pool = FairSpillPool::new(bytes as usize);
                Arc::new(TrackConsumersPool::new(pool, NonZeroUsize::new(5).expect("5 > 0")))
            }
            None => Arc::new(UnboundedMemoryPool::default()),
        };
        runtime = runtime.with_memory_pool(Arc::new(Watermarked { inner: pool, usage: Arc::default() }));
        // The operators' spill files in a directory of engage's own, which
        // the next run removes should this one be killed (see SpillDir);
        // without a limit nothing spills.
        let spill = self.spill("engine")?;
        let mode = match &spill {
            _ if self.spill_disabled => Some(DiskManagerMode::Disabled),
            Some(dir) => Some(DiskManagerMode::Directories(vec![dir.path().to_path_buf()])),
            None => None,
        };
        if let Some(mode) = mode {
            runtime = runtime.with_disk_manager_builder(DiskManagerBuilder::default().with_mode(mode));
        }
        let runtime = runtime.build_arc().map_err(query("engine runtime"))?;
        Ok((SessionContext::new_with_config_rt(config, runtime), spill))
    }
}

/// What the engine's memory pool holds (its operators' reservations and
/// the driver's counted sets), and the most it held since last asked: the
/// run report's per-stage `pool_peak_mib`, beside the process's RSS.
#[derive(Debug, Default)]
pub struct PoolUsage {
    held: AtomicUsize,
    peak: AtomicUsize,
}

impl PoolUsage {
    /// The most held since the last call (or since the pool was made);
    /// the next call counts from what is held now.
    pub fn take_peak(&self) -> usize {
        self.peak.swap(self.held.load(Ordering::Relaxed), Ordering::Relaxed)
    }

    fn grew(&self, bytes: usize) {
        let held = self.held.fetch_add(bytes, Ordering::Relaxed) + bytes;
        self.peak.fetch_max(held, Ordering::Relaxed);
    }
}

/// A memory pool that keeps a [`PoolUsage`] of the pool it wraps.
#[derive(Debug)]
struct Watermarked {
    inner: Arc<dyn MemoryPool>,
    usage: Arc<PoolUsage>,
}

impl std::fmt::Display for Watermarked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.inner.fmt(f)
    }
}

impl MemoryPool for Watermarked {
    fn name(&self) -> &str {
        self.inner.name()
    }
    fn register(&self, consumer: &MemoryConsumer) {
        self.inner.register(consumer)
    }
    fn unregister(&self, consumer: &MemoryConsumer) {
        self.inner.unregister(consumer)
    }
    fn grow(&self, reservation: &MemoryReservation, additional: usize) {
        self.inner.grow(reservation, additional);
        self.usage.grew(additional);
    }
    fn shrink(&self, reservation: &MemoryReservation, shrink: usize) {
        self.inner.shrink(reservation, shrink);
        self.usage.held.fetch_sub(shrink, Ordering::Relaxed);
    }
    fn try_grow(&self, reservation: &MemoryReservation, additional: usize) -> datafusion::error::Result<()> {
        self.inner.try_grow(reservation, additional)?;
        self.usage.grew(additional);
        Ok(())
    }
    fn reserved(&self) -> usize {
        self.inner.reserved()
    }
    fn memory_limit(&self) -> MemoryLimit {
        self.inner.memory_limit()
    }
}

/// The usage of `ctx`'s memory pool, when it is one [`EngineSettings::session`] made.
pub fn pool_usage(ctx: &SessionContext) -> Option<Arc<PoolUsage>> {
    let pool = &ctx.runtime_env().memory_pool;
    pool.downcast_ref::<Watermarked>().map(|w| w.usage.clone())
}

/// A size in bytes, written `4GiB`, `512MiB`, `2GB`, `100k` or a plain
/// number of bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "SizeText", into = "u64")]
pub struct ByteSize(pub u64);

#[derive(Deserialize)]
#[serde(untagged)]
enum SizeText {
    Bytes(u64),
    Text(String),
}

impl TryFrom<SizeText> for ByteSize {
    type Error = String;
    fn try_from(v: SizeText) -> std::result::Result<Self, String> {
        match v {
            SizeText::Bytes(n) => Ok(ByteSize(n)),
            SizeText::Text(s) => s.parse(),
        }
    }
}

impl From<ByteSize> for u64 {
    fn from(b: ByteSize) -> u64 {
        b.0
    }
}

impl std::str::FromStr for ByteSize {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let t = s.trim();
        let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
        let (num, unit) = t.split_at(split);
        let unit = unit.trim().to_ascii_lowercase();
        let mult: u64 = match unit.as_str() {
            "" | "b" => 1,
            "k" | "kb" => 1_000,
            "kib" => 1 << 10,
            "m" | "mb" => 1_000_000,
            "mib" => 1 << 20,
            "g" | "gb" => 1_000_000_000,
            "gib" => 1 << 30,
            "t" | "tb" => 1_000_000_000_000,
            "tib" => 1 << 40,
            _ => return Err(format!("`{s}` is not a size: use e.g. 4GiB, 512MB or a number of bytes")),
        };
        match num.parse::<f64>() {
            Ok(n) if n > 0.0 && n.is_finite() => Ok(ByteSize((n * mult as f64) as u64)),
            _ => Err(format!("`{s}` is not a size: use e.g. 4GiB, 512MB or a number of bytes")),
        }
    }
}

impl std::fmt::Display for ByteSize {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:.1} MiB", self.0 as f64 / (1u64 << 20) as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_binary_and_decimal_units() {
        let p = |s: &str| s.parse::<ByteSize>().map(|b| b.0);
        assert_eq!(p("4GiB"), Ok(4 << 30));
        assert_eq!(p("512 MiB"), Ok(512 << 20));
        assert_eq!(p("2GB"), Ok(2_000_000_000));
        assert_eq!(p("1.5g"), Ok(1_500_000_000));
        assert_eq!(p("1048576"), Ok(1 << 20));
        assert!(p("lots").is_err());
        assert!(p("0MiB").is_err());
        assert!(p("4 parsecs").unwrap_err().contains("4GiB"), "the error shows an example");
        let toml: EngineSettings = toml::from_str("memory_limit = \"64MiB\"").unwrap();
        assert_eq!(toml.memory_limit, Some(ByteSize(64 << 20)));
        let toml: EngineSettings = toml::from_str("memory_limit = 1000").unwrap();
        assert_eq!(toml.memory_limit, Some(ByteSize(1000)));
    }

    #[test]
    fn the_pool_keeps_its_high_water_mark_per_ask() {
        let limited = EngineSettings { memory_limit: Some(ByteSize(1000)), ..EngineSettings::default() };
        for settings in [limited, EngineSettings::default()] {
            let (ctx, _spill) = settings.session(SessionConfig::new()).unwrap();
            let usage = pool_usage(&ctx).expect("a session engage made");
            let pool = &ctx.runtime_env().memory_pool;
            if settings.memory_limit.is_some() {
                assert!(matches!(pool.memory_limit(), MemoryLimit::Finite(875)), "7/8 of the limit");
            }
            let (a, b) = (MemoryConsumer::new("a").register(pool), MemoryConsumer::new("b").register(pool));
            a.try_grow(600).unwrap();
            b.grow(300);
            a.shrink(500);
            if settings.memory_limit.is_some() {
                assert!(b.try_grow(800).is_err(), "past the limit");
            }
            assert_eq!(usage.take_peak(), 900, "{settings:?}");
            assert_eq!(usage.take_peak(), 400, "from what is held now");
            drop((a, b));
            assert_eq!(usage.take_peak(), 400);
            assert_eq!(usage.take_peak(), 0);
        }
    }
}
