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
#[derive(Debug)]
pub struct SpillDir(PathBuf);

impl SpillDir {
    /// A fresh directory `engage-<what>-...` under `base` (the system temp
    /// directory if None), absolute.
    pub fn create(base: Option<&Path>, what: &str) -> Result<SpillDir> {
        let base = base.map(Path::to_path_buf).unwrap_or_else(std::env::temp_dir);
        let dir = base.join(SpillDir::name(what));
        std::fs::create_dir_all(&dir).map_err(io(&dir))?;
        Ok(SpillDir(std::path::absolute(&dir).map_err(io(&dir))?))
    }

    /// `engage-<what>-<pid>-<time>`: a name no other run takes.
    pub fn name(what: &str) -> String {
        let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%S%.f");
        format!("engage-{what}-{}-{stamp}", std::process::id())
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for SpillDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
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
            Held::Disk { closed: true, path, .. } => panic!("{} pushed to after it was read", path.display()),
            Held::Disk { path, writer, .. } => {
                let mut fields: Vec<Field> =
                    batch.schema().fields().iter().map(|f| f.as_ref().clone()).collect();
                fields.push(Field::new(REF_COLUMN, DataType::UInt32, false));
                let schema = Arc::new(Schema::new(fields));
                let mut columns = batch.columns().to_vec();
                columns.push(Arc::new(UInt32Array::from(refs)) as ArrayRef);
                let with_refs = RecordBatch::try_new(schema.clone(), columns).map_err(|e| {
                    PipelineError::Query { name: path.display().to_string(), source: e.into() }
                })?;
                if writer.is_none() {
                    *writer = Some(spill_sink(path, schema)?);
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
            let last = batch.num_columns() - 1;
            let refs = batch.column(last).as_primitive::<UInt32Type>().values().clone();
            let keep: Vec<usize> = (0..last).collect();
            let batch = batch.project(&keep).expect("columns in range");
            Ok((batch, refs))
        })))
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
