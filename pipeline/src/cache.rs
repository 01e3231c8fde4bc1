//! The checked-inputs cache (`--checked-inputs DIR`, `[engine] checked_inputs`): what a run
//! learns from its inputs that does not depend on the cutoff, kept between
//! runs, so that the next run over the same files skips the pass that
//! decodes and checks every row and builds the identity graph (most of
//! `engage features`' time at 1M customers, BENCHMARKS.md).
//!
//! An entry holds each table's check counts ([`Tally`]), the dated
//! identity graph ([`GraphParts`]) and the events held for attribution,
//! with their graph references ([`Held`]), for the files it was made from
//! (path, size, modification time, e-tag), the identity options, the
//! erasure list and the engage version. A run whose identity-graph tables
//! (customers, transactions, interactions) or options differ makes a new
//! entry; one where only other tables changed checks those again and uses
//! the rest; so does a table with a row rejected as `in_future`, which may
//! be due by now. The canonical views stay lazy views over the input
//! files, so every query reads the inputs as they are; only the counts,
//! the graph and the held events come from the cache.
//!
//! Layout: `DIR/CURRENT` names the entry in force, `DIR/entry-<pid>-<time>/`
//! holds one: `manifest.json` (written last), the graph's three Parquet
//! files and each attributed table's held events (`<table>.arrows`, an
//! LZ4-compressed Arrow IPC stream). A run
//! holds a shared lock on its entry's `.lock` for as long as it reads it;
//! making an entry removes the others nobody holds (an older entry, one a
//! killed run left half-written).

use std::fs::File;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::engine::DataSource;
use crate::error::{PipelineError, Result, io};
use crate::events::Held;
use crate::identity::{GraphBuilder, GraphParts};
use crate::ingest::{Located, Tally};
use crate::output::{read_parquet, write_parquet};
use crate::report::CacheUse;

/// Bumped when what an entry holds changes, or how a row rule, the key
/// checks or the identity graph decide (the contract's own text is in the
/// key already): an entry made by other checks must not be read.
const CACHE_FORMAT: u32 = 1;
const CURRENT: &str = "CURRENT";
const MANIFEST: &str = "manifest.json";
const LOCK: &str = ".lock";
const GRAPH_FILES: [&str; 3] = ["graph_nodes.parquet", "graph_crm.parquet", "graph_sets.parquet"];

/// One input file as the cache saw it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Stamp {
    path: String,
    size: u64,
    modified: String,
    e_tag: Option<String>,
}

/// A table's files and what its checks found.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct CachedTable {
    table: String,
    files: Vec<Stamp>,
    tally: Tally,
}

#[derive(Debug, Serialize, Deserialize)]
struct Manifest {
    /// What else the entry depends on ([`key`]).
    key: serde_json::Value,
    tables: Vec<CachedTable>,
    /// Rows held per attributed event table, in the engine's order.
    events: Vec<u64>,
}

/// The tables whose rows the identity graph and the held events come from.
const GRAPH_TABLES: [&str; 3] =
    [crate::schema::CUSTOMERS, crate::schema::TRANSACTIONS, crate::schema::INTERACTIONS];

/// What an entry depends on besides the files: the format, engage's
/// version and data contract (its checks), the data root, the identity
/// options and the erasure list (so that an entry never outlives an
/// `engage forget`).
fn key(source: &DataSource) -> serde_json::Value {
    let erasure = source.erasure.fingerprint();
    // A local root however it was spelled (relative, absolute, a link).
    let root = match source.root.local_path().and_then(|p| p.canonicalize().ok()) {
        Some(path) => path.display().to_string(),
        None => source.root.to_string(),
    };
    // The contract's tables, columns, types and vocabularies: a build whose
    // contract differs checks every row again.
    let contract = {
        use sha2::{Digest, Sha256};
        let digest = Sha256::digest(format!("{:?}", crate::schema::TABLES));
        digest.iter().map(|b| format!("{b:02x}")).collect::<String>()
    };
    serde_json::json!({
        "format": CACHE_FORMAT,
        "contract": contract,
        "engage": env!("CARGO_PKG_VERSION"),
        "root": root,
        "identity": source.identity,
        "erasure_list": erasure,
    })
}

/// Each table's files as they are now.
fn stamps(located: &Located) -> Vec<(String, Vec<Stamp>)> {
    located
        .sources()
        .map(|(spec, source)| {
            let files = source.map_or_else(Vec::new, |s| {
                s.files
                    .iter()
                    .map(|f| Stamp {
                        path: f.location.to_string(),
                        size: f.size,
                        modified: f.last_modified.to_rfc3339(),
                        e_tag: f.e_tag.clone(),
                    })
                    .collect()
            });
            (spec.name.to_string(), files)
        })
        .collect()
}

/// Writes the manifest of the entry `dir`: the files of each table as
/// `lookup` found them, with its counts in `tallies`, and the rows held
/// per event table. Replaces one there at once (a run reading the entry
/// reads the old one or the new one).
fn write_manifest(dir: &Path, lookup: &Lookup, tallies: &[Tally], events: &[u64]) -> Result<()> {
    let tables = lookup
        .stamps
        .iter()
        .zip(tallies)
        .map(|((table, files), tally)| CachedTable {
            table: table.clone(),
            files: files.clone(),
            tally: tally.clone(),
        })
        .collect();
    let manifest = Manifest { key: lookup.key.clone(), tables, events: events.to_vec() };
    let json = serde_json::to_vec_pretty(&manifest).expect("the manifest serialises");
    let (tmp, path) = (dir.join(format!("{MANIFEST}.{}", std::process::id())), dir.join(MANIFEST));
    std::fs::write(&tmp, json).map_err(io(&tmp))?;
    std::fs::rename(&tmp, &path).map_err(io(&path))
}

/// The cache directory.
pub(crate) struct Cache {
    dir: PathBuf,
}

/// An entry in use: its files stay until the run ends.
pub(crate) struct Entry {
    dir: PathBuf,
    events: Vec<u64>,
    /// How the run used it (for its report).
    pub(crate) used: CacheUse,
    _lock: File,
}

/// What the cache has for a run: per table (in [`crate::schema::TABLES`]
/// order) its counts if its files are unchanged, and the entry with the
/// identity graph if the graph's tables and the options are.
pub(crate) struct Lookup {
    pub known: Vec<Option<Tally>>,
    pub entry: Option<(Entry, GraphBuilder)>,
    stamps: Vec<(String, Vec<Stamp>)>,
    key: serde_json::Value,
}

/// Says on stderr that the cache is not used for `why`.
fn warn(dir: &Path, why: &str) {
    eprintln!("engage: checked-inputs cache {}: {why}", dir.display());
}

impl Cache {
    pub(crate) fn new(dir: &Path) -> Cache {
        Cache { dir: dir.to_path_buf() }
    }

    /// The entry in force for `located` read as `source` says, as far as it
    /// still holds. An entry that cannot be read, or that the inputs or
    /// options no longer match, is passed over (said on stderr): a new one
    /// is made.
    pub(crate) fn lookup(&self, located: &Located, source: &DataSource) -> Lookup {
        let mut lookup = Lookup { known: Vec::new(), entry: None, stamps: stamps(located), key: key(source) };
        let Some((mut entry, manifest)) = self.current() else { return lookup };
        let pass = |why: String| warn(&self.dir, &format!("{why}: making a new entry"));
        if manifest.key != lookup.key {
            pass("made with other identity options, erasure list, contract or engage version".into());
            return lookup;
        }
        let found = |table: &str| manifest.tables.iter().find(|t| t.table == table);
        // A row rejected as in the future may be due by now: its table is
        // checked again.
        let future = |t: &CachedTable| {
            t.tally.rules.iter().any(|(r, _)| r.as_deref().is_some_and(|r| r.starts_with("in_future:")))
        };
        let unchanged = |table: &str, files: &Vec<Stamp>| {
            found(table).filter(|t| &t.files == files && !future(t)).map(|t| t.tally.clone())
        };
        for (table, files) in lookup.stamps.iter().filter(|(t, _)| GRAPH_TABLES.contains(&t.as_str())) {
            if unchanged(table, files).is_none() {
                match found(table).is_some_and(|t| &t.files == files) {
                    true => pass(format!("{table} has rows rejected as in the future, which may be due now")),
                    false => pass(format!("the files of {table} changed")),
                }
                return lookup;
            }
        }
        let graph = match read_graph(&entry.dir, source) {
            Ok(graph) => graph,
            Err(e) => {
                pass(chain(&e));
                return lookup;
            }
        };
        lookup.known = lookup.stamps.iter().map(|(t, f)| unchanged(t, f)).collect();
        entry.used.checked_again = lookup
            .stamps
            .iter()
            .zip(&lookup.known)
            .filter(|(_, k)| k.is_none())
            .map(|((t, _), _)| t.clone())
            .collect();
        lookup.entry = Some((entry, graph));
        lookup
    }

    /// The entry `CURRENT` names, locked, with its manifest; none if there
    /// is none or it cannot be read.
    fn current(&self) -> Option<(Entry, Manifest)> {
        let name = std::fs::read_to_string(self.dir.join(CURRENT)).ok()?;
        let dir = self.dir.join(name.trim());
        let lock = File::open(dir.join(LOCK)).ok()?;
        // Held exclusively: being removed.
        lock.try_lock_shared().ok()?;
        let manifest = match std::fs::read(dir.join(MANIFEST)) {
            Ok(bytes) => bytes,
            Err(_) => return None,
        };
        match serde_json::from_slice::<Manifest>(&manifest) {
            Ok(manifest) => {
                let used =
                    CacheUse { entry: dir.display().to_string(), made: false, checked_again: Vec::new() };
                Some((Entry { dir, events: manifest.events.clone(), used, _lock: lock }, manifest))
            }
            Err(e) => {
                warn(&self.dir, &format!("unreadable {MANIFEST} ({e}): making a new entry"));
                None
            }
        }
    }

    /// Writes a new entry from a run's pass over every table: its counts
    /// (`tallies`, in [`crate::schema::TABLES`] order), its dated `graph`
    /// and its held `events`; then names it in `CURRENT` and removes the
    /// entries no run holds.
    pub(crate) fn fill(
        &self,
        lookup: Lookup,
        tallies: Vec<Tally>,
        graph: &GraphBuilder,
        events: &mut [Held],
        event_names: &[&str],
    ) -> Result<Entry> {
        std::fs::create_dir_all(&self.dir).map_err(io(&self.dir))?;
        let name = crate::claim::run_name("entry");
        let dir = self.dir.join(&name);
        let made = self.write_entry(&dir, &lookup, &tallies, graph, events, event_names);
        if made.is_err() {
            let _ = std::fs::remove_dir_all(&dir);
        }
        let (rows, lock) = made?;
        let tmp = self.dir.join(format!("{CURRENT}.{name}"));
        std::fs::write(&tmp, &name).map_err(io(&tmp))?;
        std::fs::rename(&tmp, self.dir.join(CURRENT)).map_err(io(&tmp))?;
        self.sweep(&name);
        let used = CacheUse { entry: dir.display().to_string(), made: true, checked_again: Vec::new() };
        Ok(Entry { dir, events: rows, used, _lock: lock })
    }

    /// Writes the entry `dir`, manifest last; its rows held per event table
    /// and its lock, held.
    fn write_entry(
        &self,
        dir: &Path,
        lookup: &Lookup,
        tallies: &[Tally],
        graph: &GraphBuilder,
        events: &mut [Held],
        event_names: &[&str],
    ) -> Result<(Vec<u64>, File)> {
        let lock = crate::claim::claim(dir, LOCK, true)?;
        let parts = graph.parts();
        let schemas = [GraphParts::nodes_schema(), GraphParts::crm_schema(), GraphParts::sets_schema()];
        for ((file, schema), batches) in
            GRAPH_FILES.iter().zip(schemas).zip([parts.nodes, parts.crm, parts.sets])
        {
            write_parquet(&dir.join(file), schema, &batches)?;
        }
        let mut rows = Vec::new();
        for (held, name) in events.iter_mut().zip(event_names) {
            rows.push(held.write_to(&events_file(dir, name))?);
        }
        write_manifest(dir, lookup, tallies, &rows)?;
        Ok((rows, lock))
    }

    /// After a run that checked some tables of `entry` again (their files
    /// changed), their files and counts replace the ones it had: the next
    /// run over the same files reads them from the entry.
    pub(crate) fn refresh(&self, entry: &Entry, lookup: &Lookup, tallies: &[Tally]) -> Result<()> {
        write_manifest(&entry.dir, lookup, tallies, &entry.events)
    }

    /// Removes every entry but `keep` that no run holds (an older entry,
    /// one a killed run left half-written) and what a killed run left of
    /// naming its entry in `CURRENT`.
    fn sweep(&self, keep: &str) {
        let Ok(entries) = std::fs::read_dir(&self.dir) else { return };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with("entry-") && name != keep {
                crate::claim::remove_if_left_behind(&entry.path(), LOCK);
            } else if let Some(named) = name.strip_prefix(&format!("{CURRENT}."))
                && !self.dir.join(named).exists()
            {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }
}

impl Entry {
    /// The held events of `names` (the attributed tables), read from the
    /// entry with up to `ahead` batches decoded ahead of their reader.
    pub(crate) fn events(&self, names: &[&str], ahead: usize) -> Vec<Held> {
        names
            .iter()
            .zip(&self.events)
            .map(|(name, &rows)| match rows {
                0 => Held::Memory(Vec::new()),
                _ => Held::Stored { path: events_file(&self.dir, name), ahead },
            })
            .collect()
    }

    /// The entry's dated identity graph, read again (after the run released
    /// the one it had).
    pub(crate) fn graph(&self, source: &DataSource) -> Result<GraphBuilder> {
        read_graph(&self.dir, source)
    }
}

/// The file of an attributed table's held events in the entry `dir`.
fn events_file(dir: &Path, table: &str) -> PathBuf {
    dir.join(format!("{table}.arrows"))
}

/// An error and its causes on one line.
pub(crate) fn chain(e: &PipelineError) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(&format!(": {s}"));
        source = s.source();
    }
    text
}

/// The dated identity graph of the entry in `dir`.
fn read_graph(dir: &Path, source: &DataSource) -> Result<GraphBuilder> {
    let part =
        |name: &str| read_parquet(&dir.join(name), crate::output::BATCH_ROWS, None).map(|(_, rows)| rows);
    let graph = GraphBuilder::from_parts(
        &source.identity,
        part(GRAPH_FILES[0])?,
        part(GRAPH_FILES[1])?,
        part(GRAPH_FILES[2])?,
    )?;
    graph.map_err(|reason| PipelineError::Cache { path: dir.display().to_string(), reason })
}
