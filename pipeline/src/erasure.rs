//! The erasure list: people who asked to be forgotten.
//!
//! `engage forget` adds every identifier of a person's resolved customer to
//! the list and scrubs what engage wrote; every later run reads the list and
//! leaves that person out (see [`crate::identity::GraphBuilder`] and
//! [`crate::Engine`]). The list holds salted SHA-256 digests of normalised
//! identifiers, never the identifiers, so it is not itself a copy of the
//! data it erases; the salt is random per list, so digests of common
//! addresses cannot be looked up in precomputed tables.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::Utc;
use datafusion::arrow::array::{Array, ArrayRef, AsArray, BooleanArray, StringArray};
use datafusion::arrow::compute::{cast, filter_record_batch};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::arrow::record_batch::RecordBatch;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{PipelineError, Result, io};
use crate::identity::{ID_TYPES, IdentityOptions, normalize};
use crate::output::write_parquet;

/// Bumped when the list's layout changes incompatibly.
pub const ERASURE_FORMAT_VERSION: u32 = 1;

/// The erasure list (a JSON file).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErasureList {
    pub format_version: u32,
    /// Hex; random per list.
    salt: String,
    /// Hex SHA-256 of salt, identifier type and normalised value.
    digests: BTreeSet<String>,
    /// One entry per `engage forget`: when, and how many identifiers it added.
    pub requests: Vec<ErasureRequest>,
    /// Where the list was read from (not stored).
    #[serde(skip)]
    pub path: Option<PathBuf>,
}

/// One recorded request, by count only.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErasureRequest {
    /// UTC time (RFC 3339).
    pub at: String,
    /// Identifiers the request added to the list.
    pub identifiers: u64,
}

impl Default for ErasureList {
    fn default() -> Self {
        let salt: [u8; 16] = rand::random();
        ErasureList {
            format_version: ERASURE_FORMAT_VERSION,
            salt: hex(&salt),
            digests: BTreeSet::new(),
            requests: Vec::new(),
            path: None,
        }
    }
}

impl ErasureList {
    /// Reads the list at `path`; an absent file is an empty list (created by
    /// the first `engage forget`).
    pub fn load(path: &Path) -> Result<ErasureList> {
        let bad = |reason: String| PipelineError::InvalidArgument {
            name: "--erasure-list",
            value: path.display().to_string(),
            reason,
        };
        let mut list = match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice::<ErasureList>(&bytes)
                .map_err(|e| bad(format!("not an engage erasure list: {e}")))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => ErasureList::default(),
            Err(e) => return Err(io(path)(e)),
        };
        if list.format_version != ERASURE_FORMAT_VERSION {
            return Err(bad(format!(
                "format version {} (this engage reads {ERASURE_FORMAT_VERSION})",
                list.format_version
            )));
        }
        list.path = Some(path.to_path_buf());
        Ok(list)
    }

    /// Writes the list to where it was read from, atomically.
    pub fn save(&self) -> Result<()> {
        let path = self.path.as_ref().ok_or_else(|| PipelineError::InvalidArgument {
            name: "--erasure-list",
            value: String::new(),
            reason: "the list was not read from a file".into(),
        })?;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(io(dir))?;
        }
        let bytes = serde_json::to_vec_pretty(self).expect("the list serialises");
        engage_models::snapshot::write_atomic(path, &bytes)?;
        Ok(())
    }

    /// Identifiers on the list.
    pub fn len(&self) -> usize {
        self.digests.len()
    }

    pub fn is_empty(&self) -> bool {
        self.digests.is_empty()
    }

    /// One digest of every entry: lists with the same people have the same
    /// fingerprint (an empty list, whatever its random salt, has "empty").
    pub fn fingerprint(&self) -> String {
        if self.digests.is_empty() {
            return "empty".into();
        }
        let mut h = Sha256::new();
        for d in &self.digests {
            h.update(d.as_bytes());
            h.update([0]);
        }
        hex(&h.finalize())
    }

    fn digest(&self, identifier_type: &str, value: &str) -> String {
        let mut h = Sha256::new();
        for part in [self.salt.as_str(), identifier_type, value] {
            h.update(part.as_bytes());
            h.update([0]);
        }
        hex(&h.finalize())
    }

    /// Whether a normalised identifier is on the list. Customer keys
    /// (`customer_key`) are listed under `customer_id`.
    pub fn contains(&self, identifier_type: &str, value: &str) -> bool {
        !self.digests.is_empty() && self.digests.contains(&self.digest(identifier_type, value))
    }

    /// Adds a normalised identifier; false if it was listed already.
    pub fn add(&mut self, identifier_type: &str, value: &str) -> bool {
        let d = self.digest(identifier_type, value);
        self.digests.insert(d)
    }

    /// Records a request that added `identifiers`.
    pub fn record(&mut self, identifiers: u64) {
        let at = Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        self.requests.push(ErasureRequest { at, identifiers });
    }

    /// The rows of `batch` that belong to nobody on the list, and how many
    /// were dropped. A row is dropped when any identity column it has
    /// (`customer_id`, `customer_key`, `email`, `phone`, `loyalty_id`,
    /// `cookie_id`, or an `identifier_type`/`identifier_value` pair)
    /// normalises to a listed identifier.
    pub fn scrub(&self, batch: &RecordBatch, opts: &IdentityOptions) -> Result<(RecordBatch, u64)> {
        if self.is_empty() || batch.num_rows() == 0 {
            return Ok((batch.clone(), 0));
        }
        let text = |name: &str| -> Option<ArrayRef> {
            let c = batch.column_by_name(name)?;
            cast(c, &DataType::Utf8).ok()
        };
        let mut columns: Vec<(&str, ArrayRef)> = Vec::new();
        for ty in ID_TYPES {
            if let Some(c) = text(ty) {
                columns.push((ty, c));
            }
        }
        if let Some(c) = text("customer_key") {
            columns.push(("customer_id", c));
        }
        let pair = text("identifier_type").zip(text("identifier_value"));
        let mut dropped = 0;
        let keep: BooleanArray = (0..batch.num_rows())
            .map(|row| {
                let mut erased = columns.iter().any(|(ty, c)| {
                    let c = c.as_string::<i32>();
                    c.is_valid(row)
                        && normalize(ty, c.value(row), opts).is_some_and(|v| self.contains(ty, &v))
                });
                if let Some((t, v)) = &pair {
                    let (t, v) = (t.as_string::<i32>(), v.as_string::<i32>());
                    erased |= t.is_valid(row) && v.is_valid(row) && self.contains(t.value(row), v.value(row));
                }
                dropped += erased as u64;
                Some(!erased)
            })
            .collect();
        if dropped == 0 {
            return Ok((batch.clone(), 0));
        }
        let kept = filter_record_batch(batch, &keep)
            .map_err(|e| PipelineError::Query { name: "erasure".into(), source: e.into() })?;
        Ok((kept, dropped))
    }
}

/// What scrubbing one directory did.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Scrubbed {
    /// Parquet files read.
    pub files_checked: u64,
    /// Files rewritten without the erased rows.
    pub files_rewritten: u64,
    pub rows_removed: u64,
}

/// Removes the rows of everyone on `list` from every Parquet and CSV file
/// under `dir` (recursively: identity maps, feature tables, rejects, score
/// snapshots with their features and contact lists, training sets),
/// rewriting each affected file atomically; a score snapshot's
/// `manifest.json` row count follows its `scores.parquet`.
pub fn scrub_dir(list: &ErasureList, opts: &IdentityOptions, dir: &Path) -> Result<Scrubbed> {
    let mut done = Scrubbed::default();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(&d)
            .map_err(io(&d))?
            .map(|e| e.map(|e| e.path()))
            .collect::<std::io::Result<_>>()
            .map_err(io(&d))?;
        entries.sort();
        for path in entries {
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "parquet" || e == "csv") {
                done.files_checked += 1;
                let removed = if path.extension().is_some_and(|e| e == "csv") {
                    scrub_csv(list, opts, &path)?
                } else {
                    scrub_file(list, opts, &path)?
                };
                if removed > 0 {
                    done.files_rewritten += 1;
                    done.rows_removed += removed;
                }
            }
        }
    }
    Ok(done)
}

fn scrub_file(list: &ErasureList, opts: &IdentityOptions, path: &Path) -> Result<u64> {
    let unreadable = |source| PipelineError::UnreadableFile { path: path.display().to_string(), source };
    let file = std::fs::File::open(path).map_err(io(path))?;
    let reader = ParquetRecordBatchReaderBuilder::try_new(file).map_err(unreadable)?;
    let schema = reader.schema().clone();
    let mut kept = Vec::new();
    let mut removed = 0;
    for batch in reader.build().map_err(unreadable)? {
        let batch =
            batch.map_err(|e| PipelineError::Query { name: path.display().to_string(), source: e.into() })?;
        let (batch, n) = list.scrub(&batch, opts)?;
        removed += n;
        kept.push(batch);
    }
    if removed == 0 {
        return Ok(0);
    }
    write_parquet(path, Arc::new(schema.as_ref().clone()), &kept)?;
    let manifest = path.with_file_name(engage_models::snapshot::MANIFEST_FILE);
    if path.file_name().is_some_and(|n| n == engage_models::snapshot::SCORES_FILE) && manifest.exists() {
        let bytes = std::fs::read(&manifest).map_err(io(&manifest))?;
        if let Ok(mut m) = serde_json::from_slice::<engage_models::snapshot::SnapshotManifest>(&bytes) {
            m.rows = m.rows.saturating_sub(removed);
            engage_models::snapshot::write_atomic(
                &manifest,
                &serde_json::to_vec_pretty(&m).expect("serialises"),
            )?;
        }
    }
    Ok(removed)
}

/// A CSV file's rows without those of erased people (identifier columns
/// by name, as in Parquet files); rewritten only when a row goes.
fn scrub_csv(list: &ErasureList, opts: &IdentityOptions, path: &Path) -> Result<u64> {
    let bad = |e: csv::Error| PipelineError::UnreadableCsv {
        path: path.display().to_string(),
        reason: e.to_string(),
    };
    let mut reader = csv::ReaderBuilder::new().flexible(true).from_path(path).map_err(bad)?;
    let headers = reader.headers().map_err(bad)?.clone();
    let rows: Vec<csv::StringRecord> =
        reader.records().collect::<std::result::Result<_, _>>().map_err(bad)?;
    let fields: Vec<Field> = headers.iter().map(|h| Field::new(h, DataType::Utf8, true)).collect();
    let columns: Vec<ArrayRef> = (0..headers.len())
        .map(|j| Arc::new(StringArray::from_iter(rows.iter().map(|r| r.get(j)))) as ArrayRef)
        .collect();
    let batch = RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)
        .map_err(|e| PipelineError::Query { name: path.display().to_string(), source: e.into() })?;
    let (kept, removed) = list.scrub(&batch, opts)?;
    if removed == 0 {
        return Ok(0);
    }
    let name = path.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.tmp-{}", std::process::id()));
    let write = || -> std::result::Result<(), csv::Error> {
        let mut w = csv::Writer::from_path(&tmp)?;
        w.write_record(&headers)?;
        for i in 0..kept.num_rows() {
            w.write_record(kept.columns().iter().map(|c| {
                let c = c.as_string::<i32>();
                if c.is_valid(i) { c.value(i) } else { "" }
            }))?;
        }
        w.flush()?;
        Ok(())
    };
    write().map_err(bad)?;
    std::fs::rename(&tmp, path).map_err(io(path))?;
    Ok(removed)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
