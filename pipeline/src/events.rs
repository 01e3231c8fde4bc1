//! Where event rows wait between the two passes of identity resolution
//! (read every event to build the graph, then attribute each), and where
//! the attributed events live for the SQL that reads them: in memory, or
//! under a memory limit in Parquet files in the spill directory, so that
//! the events of a large history never have to fit in memory at once.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, AsArray, UInt32Array};
use datafusion::arrow::buffer::ScalarBuffer;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, UInt32Type};
use datafusion::arrow::error::ArrowError;
use datafusion::arrow::ipc::CompressionType;
use datafusion::arrow::ipc::reader::StreamReader;
use datafusion::arrow::ipc::writer::{IpcWriteOptions, StreamWriter};
use datafusion::arrow::record_batch::RecordBatch;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use crate::error::{PipelineError, Result, io};
use crate::output::ParquetSink;

/// A spill file being written: written once and read once, so snappy
/// (fast both ways) rather than the outputs' zstd; encoded on the sink's
/// thread, not the one producing the rows (see [`ParquetSink`]).
fn spill_sink(path: &Path, schema: SchemaRef) -> Result<Box<ParquetSink>> {
    let properties = crate::output::writer_properties(&schema)
        .into_builder()
        .set_compression(parquet::basic::Compression::SNAPPY)
        .build();
    ParquetSink::with_properties(path, schema, properties).map(Box::new)
}

/// Column holding each row's identifier reference on disk.
const REF_COLUMN: &str = "__identity_ref";

/// A directory of spilled event files, removed when dropped.
///
/// A run that is killed (out of memory, a timeout, `kill -9`) drops
/// nothing, and a spill directory can hold gigabytes. So each one holds an
/// exclusive lock (`flock`) on its `.owner` file for as long as it exists,
/// which the operating system releases when the process ends however it
/// ends, and creating one first removes the `engage-*` directories beside
/// it whose owner file nobody holds: those of runs that ended without
/// cleaning up. A directory without an owner file is left alone.
#[derive(Debug)]
pub struct SpillDir {
    path: PathBuf,
    _owner: std::fs::File,
}

/// The file a live spill directory's process holds locked.
const OWNER_FILE: &str = ".owner";

impl SpillDir {
    /// A fresh directory `engage-<what>-...` under `base` (the system temp
    /// directory if None), absolute, after the directories there that
    /// runs which did not finish left behind are removed.
    pub fn create(base: Option<&Path>, what: &str) -> Result<SpillDir> {
        let base = base.map(Path::to_path_buf).unwrap_or_else(std::env::temp_dir);
        std::fs::create_dir_all(&base).map_err(io(&base))?;
        remove_abandoned(&base);
        let dir = std::path::absolute(base.join(SpillDir::name(what))).map_err(io(&base))?;
        std::fs::create_dir(&dir).map_err(io(&dir))?;
        // Locked before it has its name: a directory's owner file is never
        // seen unlocked while its process lives.
        let claim = dir.join(".owner.new");
        let owned = dir.join(OWNER_FILE);
        let owner = std::fs::File::create(&claim)
            .and_then(|owner| owner.lock().map(|()| owner))
            .map_err(io(&claim))
            .and_then(|owner| std::fs::rename(&claim, &owned).map(|()| owner).map_err(io(&owned)));
        match owner {
            Ok(owner) => Ok(SpillDir { path: dir, _owner: owner }),
            Err(e) => {
                let _ = std::fs::remove_dir_all(&dir);
                Err(e)
            }
        }
    }

    /// `engage-<what>-<pid>-<time>`: a name no other run takes.
    pub fn name(what: &str) -> String {
        let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%S%.f");
        format!("engage-{what}-{}-{stamp}", std::process::id())
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Removes the spill directories under `base` whose owner file can be
/// locked: their process is gone. Says so on stderr; a directory that
/// cannot be read or removed (another user's, say) is skipped, and so is
/// one of this process (on NFS a lock is a POSIX lock, which a process
/// does not conflict with).
fn remove_abandoned(base: &Path) {
    let Ok(entries) = std::fs::read_dir(base) else { return };
    let ours = format!("-{}-", std::process::id());
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.starts_with("engage-") || name.contains(&ours) {
            continue;
        }
        let dir = entry.path();
        let Ok(owner) = std::fs::File::open(dir.join(OWNER_FILE)) else { continue };
        if owner.try_lock().is_ok() && std::fs::remove_dir_all(&dir).is_ok() {
            eprintln!("engage: removed {}, left behind by a run that did not finish", dir.display());
        }
    }
}

impl Drop for SpillDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// Event batches with their identifier references, one at a time.
pub type Batches = Box<dyn Iterator<Item = Result<(RecordBatch, ScalarBuffer<u32>)>>>;

/// Event batches and their identifier references, kept in memory or
/// written to one Parquet file.
pub enum Held {
    Memory(Vec<(RecordBatch, ScalarBuffer<u32>)>),
    /// `closed` once the file is complete and readable.
    Disk {
        path: PathBuf,
        writer: Option<Box<ParquetSink>>,
        closed: bool,
    },
    /// A complete file kept between runs (the checked-inputs cache,
    /// [`crate::cache`]): read as often as needed, never removed here; a
    /// thread of its own decodes up to `ahead` batches ahead of the reader.
    Stored {
        path: PathBuf,
        ahead: usize,
    },
}

impl Held {
    /// In memory, or in `dir/name.parquet`.
    pub fn new(dir: Option<&SpillDir>, name: &str) -> Held {
        match dir {
            None => Held::Memory(Vec::new()),
            Some(d) => {
                Held::Disk { path: d.path().join(format!("{name}.parquet")), writer: None, closed: false }
            }
        }
    }

    pub fn push(&mut self, batch: RecordBatch, refs: Vec<u32>) -> Result<()> {
        match self {
            Held::Memory(v) => v.push((batch, refs.into())),
            Held::Disk { closed: true, path, .. } | Held::Stored { path, .. } => {
                panic!("{} pushed to after it was read", path.display())
            }
            Held::Disk { path, writer, .. } => {
                let with_refs = with_refs(&batch, refs).map_err(|e| PipelineError::Query {
                    name: path.display().to_string(),
                    source: e.into(),
                })?;
                if writer.is_none() {
                    *writer = Some(spill_sink(path, with_refs.schema())?);
                }
                writer.as_mut().expect("just made").write(&with_refs)?;
            }
        }
        Ok(())
    }

    /// Every batch with its references, in the order pushed, read once.
    pub fn drain(mut self) -> Result<Batches> {
        let batches = self.batches()?;
        if let Held::Disk { path, closed: true, .. } = &self {
            // The open file outlives its name.
            std::fs::remove_file(path).map_err(io(path))?;
        }
        Ok(batches)
    }

    /// Every batch with its references, in the order pushed; they stay to
    /// be read again. No batch may be pushed after.
    pub fn batches(&mut self) -> Result<Batches> {
        let (path, closed) = match self {
            Held::Memory(v) => return Ok(Box::new(v.clone().into_iter().map(Ok))),
            Held::Stored { path, ahead } => return read_stored(path, *ahead),
            Held::Disk { path, writer, closed } => {
                if let Some(w) = writer.take() {
                    w.finish()?;
                    *closed = true;
                }
                (path.clone(), *closed)
            }
        };
        if !closed {
            return Ok(Box::new(std::iter::empty()));
        }
        let file = std::fs::File::open(&path).map_err(io(&path))?;
        let reader = ParquetRecordBatchReaderBuilder::try_new(file)
            .and_then(|b| b.build())
            .map_err(|source| PipelineError::UnreadableFile { path: path.display().to_string(), source })?;
        Ok(Box::new(reader.map(move |batch| {
            let batch = batch
                .map_err(|e| PipelineError::Query { name: path.display().to_string(), source: e.into() })?;
            Ok(split_refs(batch).expect("the spill file's last column is its references"))
        })))
    }
}

impl Held {
    /// Writes every batch with its references to `path` (read back as
    /// [`Held::Stored`]): an Arrow IPC stream, LZ4-compressed, which reads
    /// back about three times as fast as the spill files' Parquet, in less
    /// room (BENCHMARKS.md). The rows written.
    pub fn write_to(&mut self, path: &Path) -> Result<u64> {
        let tmp = path.with_extension("tmp");
        let written = self.write_stream(&tmp);
        match written {
            Ok(rows) => std::fs::rename(&tmp, path).map(|()| rows).map_err(io(path)),
            Err(e) => {
                let _ = std::fs::remove_file(&tmp);
                Err(e)
            }
        }
    }

    fn write_stream(&mut self, path: &Path) -> Result<u64> {
        let err = |e: ArrowError| PipelineError::Query { name: path.display().to_string(), source: e.into() };
        let options =
            IpcWriteOptions::default().try_with_compression(Some(CompressionType::LZ4_FRAME)).map_err(err)?;
        let mut file = Some(std::io::BufWriter::new(std::fs::File::create(path).map_err(io(path))?));
        let mut writer = None;
        let mut rows = 0;
        for item in self.batches()? {
            let (batch, refs) = item?;
            rows += batch.num_rows() as u64;
            let batch = with_refs(&batch, refs.to_vec()).map_err(err)?;
            if let Some(out) = file.take() {
                writer = Some(
                    StreamWriter::try_new_with_options(out, &batch.schema(), options.clone()).map_err(err)?,
                );
            }
            writer.as_mut().expect("made for the first batch").write(&batch).map_err(err)?;
        }
        if let Some(w) = writer {
            // Finished and flushed, or the error that stopped either.
            w.into_inner().map_err(err)?.into_inner().map_err(|e| io(path)(e.into_error()))?;
        }
        Ok(rows)
    }
}

/// A held batch read back and its references, which [`with_refs`] put in
/// its last column; `None` if that column holds no references.
fn split_refs(batch: RecordBatch) -> Option<(RecordBatch, ScalarBuffer<u32>)> {
    let last = batch.num_columns().checked_sub(1)?;
    let refs = batch.column(last).as_primitive_opt::<UInt32Type>()?.values().clone();
    let keep: Vec<usize> = (0..last).collect();
    Some((batch.project(&keep).expect("columns in range"), refs))
}

/// `batch` with its references as the last column.
fn with_refs(batch: &RecordBatch, refs: Vec<u32>) -> std::result::Result<RecordBatch, ArrowError> {
    let mut fields: Vec<Field> = batch.schema().fields().iter().map(|f| f.as_ref().clone()).collect();
    fields.push(Field::new(REF_COLUMN, DataType::UInt32, false));
    let mut columns = batch.columns().to_vec();
    columns.push(Arc::new(UInt32Array::from(refs)) as ArrayRef);
    RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)
}

/// The batches of a file [`Held::write_to`] wrote, with their references,
/// decoded on a thread of its own up to `ahead` batches ahead.
fn read_stored(path: &Path, ahead: usize) -> Result<Batches> {
    let broken = |path: &Path, e: ArrowError| PipelineError::Cache {
        path: path.display().to_string(),
        reason: e.to_string(),
    };
    let file = std::fs::File::open(path).map_err(io(path))?;
    let reader = StreamReader::try_new(std::io::BufReader::new(file), None).map_err(|e| broken(path, e))?;
    let path = path.to_path_buf();
    let (batches, received) = std::sync::mpsc::sync_channel(ahead);
    let thread = std::thread::Builder::new()
        .name("held-events".into())
        .spawn(move || {
            for batch in reader {
                let item = batch.map_err(|e| broken(&path, e)).and_then(|batch| {
                    split_refs(batch).ok_or_else(|| PipelineError::Cache {
                        path: path.display().to_string(),
                        reason: "no identity references".into(),
                    })
                });
                let failed = item.is_err();
                // A receiver gone has what it wanted.
                if batches.send(item).is_err() || failed {
                    break;
                }
            }
        })
        .expect("a thread starts");
    Ok(Box::new(ReadAhead { received, thread: Some(thread) }))
}

/// Batches decoded on another thread, in order; that thread's panic goes on
/// in the reader once its batches are read.
struct ReadAhead {
    received: std::sync::mpsc::Receiver<Result<(RecordBatch, ScalarBuffer<u32>)>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Iterator for ReadAhead {
    type Item = Result<(RecordBatch, ScalarBuffer<u32>)>;

    fn next(&mut self) -> Option<Self::Item> {
        match self.received.recv() {
            Ok(item) => Some(item),
            Err(_) => {
                if let Some(thread) = self.thread.take() {
                    crate::worker::joined(thread.join());
                }
                None
            }
        }
    }
}

/// Attributed events being collected: memory partitions, or a Parquet file
/// the SQL then scans.
pub enum Attributed {
    Memory(Vec<Vec<RecordBatch>>),
    Disk { path: PathBuf, writer: Option<Box<ParquetSink>> },
}

impl Attributed {
    pub fn new(dir: Option<&SpillDir>, name: &str, partitions: usize) -> Attributed {
        match dir {
            None => Attributed::Memory(vec![Vec::new(); partitions]),
            Some(d) => Attributed::Disk { path: d.path().join(format!("{name}.parquet")), writer: None },
        }
    }

    /// Adds the `i`-th batch.
    pub fn push(&mut self, i: usize, batch: RecordBatch) -> Result<()> {
        match self {
            Attributed::Memory(parts) => {
                let n = parts.len();
                parts[i % n].push(batch);
            }
            Attributed::Disk { path, writer } => {
                if writer.is_none() {
                    *writer = Some(spill_sink(path, batch.schema())?);
                }
                writer.as_mut().expect("just made").write(&batch)?;
            }
        }
        Ok(())
    }

    /// The memory partitions, or the closed file (written empty with
    /// `schema` when no batch came).
    pub fn finish(self, schema: &SchemaRef) -> Result<Finished> {
        match self {
            Attributed::Memory(parts) => Ok(Finished::Memory(parts)),
            Attributed::Disk { path, writer } => {
                let w = match writer {
                    Some(w) => w,
                    None => spill_sink(&path, schema.clone())?,
                };
                w.finish()?;
                Ok(Finished::File(path))
            }
        }
    }
}

/// Where the attributed events ended up.
pub enum Finished {
    Memory(Vec<Vec<RecordBatch>>),
    File(PathBuf),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spill_directories_of_runs_that_ended_are_removed_by_the_next() {
        let base = std::env::temp_dir().join(format!("spill-sweep-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        let live = SpillDir::create(Some(&base), "events").unwrap();
        std::fs::write(live.path().join("events.parquet"), b"rows").unwrap();
        // What a killed run leaves: its files and an owner file nobody holds.
        let dead = base.join("engage-events-1-20260101T000000.0");
        std::fs::create_dir(&dead).unwrap();
        std::fs::write(dead.join(OWNER_FILE), b"").unwrap();
        std::fs::write(dead.join("events.parquet"), b"rows").unwrap();
        // Another run's, alive: it holds its owner file locked.
        let other = base.join("engage-events-4194304-20260101T000000.0");
        std::fs::create_dir(&other).unwrap();
        let held = std::fs::File::create(other.join(OWNER_FILE)).unwrap();
        held.lock().unwrap();
        // Not a spill directory of a run: no owner file, or not engage's.
        let unowned = base.join("engage-notes");
        let foreign = base.join("other");
        for dir in [&unowned, &foreign] {
            std::fs::create_dir(dir).unwrap();
        }
        std::fs::write(foreign.join(OWNER_FILE), b"").unwrap();

        let next = SpillDir::create(Some(&base), "ingest").unwrap();
        assert!(!dead.exists(), "the abandoned directory is removed");
        for dir in [live.path(), next.path(), &other, &unowned, &foreign] {
            assert!(dir.is_dir(), "{} stays", dir.display());
        }
        assert!(live.path().join("events.parquet").is_file());
        let live_path = live.path().to_path_buf();
        drop(live);
        assert!(!live_path.exists(), "removed when dropped");
        drop(next);
        // Once its process is gone, the other run's directory goes too.
        drop(held);
        drop(SpillDir::create(Some(&base), "events").unwrap());
        assert!(!other.exists());
        std::fs::remove_dir_all(&base).unwrap();
    }
}
