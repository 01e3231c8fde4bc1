//! Writing outputs: Parquet files written through a temporary sibling and
//! renamed into place, so a reader never sees a half-written file; and
//! reading one back in batches.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use datafusion::arrow::datatypes::Schema;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::arrow::record_batch::RecordBatchReader;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::{ArrowWriter, ProjectionMask};
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;

use crate::error::{PipelineError, Result, io};

/// Rows per Parquet row group, and per batch read back.
pub const BATCH_ROWS: usize = 65_536;

/// Writer settings for every Parquet file engage writes: zstd level 1 (fast,
/// small), [`BATCH_ROWS`]-row groups.
pub fn writer_properties() -> WriterProperties {
    WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(1).expect("level 1 is valid")))
        .set_max_row_group_row_count(Some(BATCH_ROWS))
        .build()
}

/// Writes `batches` (all of `schema`) to `path` atomically.
pub fn write_parquet(path: &Path, schema: Arc<Schema>, batches: &[RecordBatch]) -> Result<()> {
    let mut sink = ParquetSink::create(path, schema)?;
    for b in batches {
        sink.write(b)?;
    }
    sink.finish().map(drop)
}

/// A Parquet file written batch by batch (a table too big to hold whole)
/// to a temporary sibling, renamed to its path by [`ParquetSink::finish`].
/// Dropped unfinished or failed, it removes the temporary file.
pub struct ParquetSink {
    path: PathBuf,
    tmp: PathBuf,
    writer: Option<ArrowWriter<File>>,
    schema: Arc<Schema>,
    rows: u64,
}

impl ParquetSink {
    pub fn create(path: &Path, schema: Arc<Schema>) -> Result<ParquetSink> {
        let name = path.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
        let tmp = path.with_file_name(format!(".{name}.tmp-{}", std::process::id()));
        let file = File::create(&tmp).map_err(io(&tmp))?;
        let mut sink =
            ParquetSink { path: path.to_path_buf(), tmp, writer: None, schema: schema.clone(), rows: 0 };
        let writer =
            ArrowWriter::try_new(file, schema, Some(writer_properties())).map_err(|e| sink.err(e))?;
        sink.writer = Some(writer);
        Ok(sink)
    }

    fn err(&self, source: parquet::errors::ParquetError) -> PipelineError {
        PipelineError::Write { path: self.path.display().to_string(), source }
    }

    pub fn rows(&self) -> u64 {
        self.rows
    }

    pub fn schema(&self) -> Arc<Schema> {
        self.schema.clone()
    }

    pub fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        let writer = self.writer.as_mut().expect("an unfinished sink");
        let written = writer.write(batch);
        written.map_err(|e| self.err(e))?;
        self.rows += batch.num_rows() as u64;
        Ok(())
    }

    /// Where the file will be once finished.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Closes the file and moves it into place; returns the rows written.
    pub fn finish(mut self) -> Result<u64> {
        let writer = self.writer.take().expect("an unfinished sink");
        writer.close().map_err(|e| self.err(e))?;
        std::fs::rename(&self.tmp, &self.path).map_err(io(&self.path))?;
        Ok(self.rows)
    }
}

impl Drop for ParquetSink {
    /// Removes the temporary file of a sink not finished, or whose
    /// writing failed (after [`ParquetSink::finish`] it is gone already).
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.tmp);
    }
}

/// The Parquet file at `path` in batches of up to `rows` rows, in file
/// order (only `columns`, if named): its schema and the batches.
pub fn read_parquet(
    path: &Path,
    rows: usize,
    columns: Option<&[&str]>,
) -> Result<(Arc<Schema>, impl Iterator<Item = Result<RecordBatch>> + use<>)> {
    let shown = path.display().to_string();
    let unreadable = |source| PipelineError::UnreadableFile { path: path.display().to_string(), source };
    let file = File::open(path).map_err(io(path))?;
    let mut builder =
        ParquetRecordBatchReaderBuilder::try_new(file).map_err(unreadable)?.with_batch_size(rows);
    if let Some(columns) = columns {
        let mask = ProjectionMask::columns(builder.parquet_schema(), columns.iter().copied());
        builder = builder.with_projection(mask);
    }
    let reader = builder.build().map_err(unreadable)?;
    let schema = reader.schema();
    let batches = reader
        .map(move |b| b.map_err(|e| PipelineError::UnreadableFile { path: shown.clone(), source: e.into() }));
    Ok((schema, batches))
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::Int64Array;
    use datafusion::arrow::datatypes::{DataType, Field};

    fn batch(values: Vec<i64>) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![Field::new("x", DataType::Int64, false)]));
        RecordBatch::try_new(schema, vec![Arc::new(Int64Array::from(values))]).unwrap()
    }

    #[test]
    fn a_sink_publishes_on_finish_and_leaves_nothing_when_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.parquet");
        let mut sink = ParquetSink::create(&path, batch(vec![]).schema()).unwrap();
        sink.write(&batch(vec![1, 2])).unwrap();
        drop(sink);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "a dropped sink left a file");

        let mut sink = ParquetSink::create(&path, batch(vec![]).schema()).unwrap();
        for part in [vec![1, 2], vec![3], vec![4, 5, 6]] {
            sink.write(&batch(part)).unwrap();
        }
        assert!(!path.exists(), "visible before finish");
        assert_eq!(sink.finish().unwrap(), 6);
        let files: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(files, ["t.parquet"]);
        let (schema, batches) = read_parquet(&path, 4, None).unwrap();
        let batches: Vec<RecordBatch> = batches.map(|b| b.unwrap()).collect();
        assert_eq!(schema, batch(vec![]).schema());
        assert_eq!(batches.iter().map(|b| b.num_rows()).collect::<Vec<_>>(), [4, 2], "slices of 4 rows");
        let values: Vec<i64> = batches
            .iter()
            .flat_map(|b| b.column(0).as_any().downcast_ref::<Int64Array>().unwrap().values().to_vec())
            .collect();
        assert_eq!(values, [1, 2, 3, 4, 5, 6]);
    }
}
