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

use crate::claim::SpillDir;
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
