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
use parquet::arrow::arrow_writer::{
    ArrowColumnWriter, ArrowLeafColumn, ArrowRowGroupWriterFactory, compute_leaves,
};
use parquet::arrow::{ArrowWriter, ProjectionMask};
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;
use parquet::file::writer::SerializedFileWriter;
use parquet::schema::types::ColumnPath;

use crate::error::{PipelineError, Result, io};
use crate::worker::{Worker, joined};

/// Rows per Parquet row group, and per batch read back.
pub const BATCH_ROWS: usize = 65_536;

/// Writer settings for every Parquet file engage writes with `schema`: zstd
/// level 1 (fast, small), [`BATCH_ROWS`]-row groups, and no dictionary for
/// floating point columns: a row group's floats (amounts, rates, scores)
/// rarely repeat, so interning each value only to fall back costs time and
/// bytes (1M customers' feature table: 59.2 MB against 60.7 MB).
pub fn writer_properties(schema: &Schema) -> WriterProperties {
    let floats = schema.fields().iter().filter(|f| f.data_type().is_floating());
    floats
        .fold(WriterProperties::builder(), |b, f| {
            b.set_column_dictionary_enabled(ColumnPath::from(f.name().as_str()), false)
        })
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(1).expect("level 1 is valid")))
        .set_max_row_group_row_count(Some(BATCH_ROWS))
        .build()
}

/// Writes `batches` (all of `schema`) to `path` atomically: a slice, or
/// batches made one at a time and never held together.
pub fn write_parquet<B: std::borrow::Borrow<RecordBatch>>(
    path: &Path,
    schema: Arc<Schema>,
    batches: impl IntoIterator<Item = B>,
) -> Result<()> {
    let mut sink = ParquetSink::create(path, schema)?;
    for b in batches {
        sink.write(b.borrow())?;
    }
    sink.finish().map(drop)
}

/// A Parquet file written batch by batch (a table too big to hold whole)
/// to a temporary sibling, renamed to its path by [`ParquetSink::finish`].
/// Dropped unfinished or failed, it removes the temporary file.
///
/// The encoding (dictionaries, compression) runs on a thread of its own,
/// beside the thread producing the batches: a query feeding a sink leaves
/// that thread free to run the query's next batch.
pub struct ParquetSink {
    path: PathBuf,
    tmp: PathBuf,
    encoder: Option<Encoder>,
    schema: Arc<Schema>,
    rows: u64,
}

/// What the encoding thread is sent.
enum ToEncode {
    Batch(RecordBatch),
    /// No more batches: close the file. Without it (a sink dropped
    /// unfinished) the thread stops without writing the footer.
    Finish,
}

/// The writer's thread: the file's row groups, encoded as batches come.
type Encoder = Worker<ToEncode, (), parquet::errors::ParquetError>;

fn start_encoder(writer: ArrowWriter<File>, schema: Arc<Schema>) -> Encoder {
    // Two batches in flight keep both threads busy; more only hold memory.
    Worker::start("parquet-sink", 2, move |batches| {
        let (file, factory) = writer.into_serialized_writer()?;
        let mut groups = RowGroups { file, factory, schema, pending: Vec::new(), rows: 0, written: 0 };
        for message in batches {
            match message {
                ToEncode::Batch(batch) => groups.write(batch)?,
                ToEncode::Finish => return groups.close(),
            }
        }
        Ok(())
    })
}

/// A Parquet file's row groups, each gathered to [`BATCH_ROWS`] rows and
/// then encoded with its columns split between this thread and one more
/// (the columns of a row group are independent): what `ArrowWriter` writes,
/// byte for byte, in about half the time where a core is free.
struct RowGroups {
    file: SerializedFileWriter<File>,
    factory: ArrowRowGroupWriterFactory,
    schema: Arc<Schema>,
    pending: Vec<RecordBatch>,
    rows: usize,
    written: usize,
}

/// A leaf column's writer and its slices of one row group.
type Job = (ArrowColumnWriter, Vec<ArrowLeafColumn>);

impl RowGroups {
    fn write(&mut self, mut batch: RecordBatch) -> parquet::errors::Result<()> {
        let types = |s: &Schema| s.fields().iter().map(|f| f.data_type().clone()).collect::<Vec<_>>();
        if types(&batch.schema()) != types(&self.schema) {
            return Err(parquet::errors::ParquetError::ArrowError(format!(
                "a batch of columns {:?} where the file has {:?}",
                types(&batch.schema()),
                types(&self.schema)
            )));
        }
        while self.rows + batch.num_rows() >= BATCH_ROWS {
            let room = BATCH_ROWS - self.rows;
            self.pending.push(batch.slice(0, room));
            self.flush()?;
            batch = batch.slice(room, batch.num_rows() - room);
        }
        if batch.num_rows() > 0 {
            self.rows += batch.num_rows();
            self.pending.push(batch);
        }
        Ok(())
    }

    fn flush(&mut self) -> parquet::errors::Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let mut jobs: Vec<Job> =
            self.factory.create_column_writers(self.written)?.into_iter().map(|w| (w, Vec::new())).collect();
        for batch in std::mem::take(&mut self.pending) {
            let mut leaf = 0;
            for (field, column) in self.schema.fields().iter().zip(batch.columns()) {
                for slice in compute_leaves(field, column)? {
                    jobs[leaf].1.push(slice);
                    leaf += 1;
                }
            }
        }
        self.rows = 0;
        let encode = |(mut writer, slices): Job| {
            for slice in &slices {
                writer.write(slice)?;
            }
            writer.close()
        };
        let (mut even, mut odd) = (Vec::new(), Vec::new());
        for (i, job) in jobs.into_iter().enumerate() {
            if i % 2 == 0 { even.push(job) } else { odd.push(job) }
        }
        let (even, odd) = std::thread::scope(|s| {
            let other = s.spawn(|| odd.into_iter().map(encode).collect::<parquet::errors::Result<Vec<_>>>());
            let mine = even.into_iter().map(encode).collect::<parquet::errors::Result<Vec<_>>>();
            (mine, joined(other.join()))
        });
        let (mut even, mut odd) = (even?.into_iter(), odd?.into_iter());
        let mut group = self.file.next_row_group()?;
        for i in 0.. {
            let chunk = if i % 2 == 0 { even.next() } else { odd.next() };
            match chunk {
                Some(chunk) => chunk.append_to_row_group(&mut group)?,
                None => break,
            }
        }
        group.close()?;
        self.written += 1;
        Ok(())
    }

    fn close(mut self) -> parquet::errors::Result<()> {
        self.flush()?;
        self.file.close().map(drop)
    }
}

impl ParquetSink {
    pub fn create(path: &Path, schema: Arc<Schema>) -> Result<ParquetSink> {
        let properties = writer_properties(&schema);
        ParquetSink::with_properties(path, schema, properties)
    }

    /// [`ParquetSink::create`] with other writer settings.
    pub fn with_properties(
        path: &Path,
        schema: Arc<Schema>,
        properties: WriterProperties,
    ) -> Result<ParquetSink> {
        let name = path.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
        let tmp = path.with_file_name(format!(".{name}.tmp-{}", std::process::id()));
        let file = File::create(&tmp).map_err(io(&tmp))?;
        let mut sink =
            ParquetSink { path: path.to_path_buf(), tmp, encoder: None, schema: schema.clone(), rows: 0 };
        let writer = ArrowWriter::try_new(file, schema, Some(properties)).map_err(|e| sink.err(e))?;
        sink.encoder = Some(start_encoder(writer, sink.schema.clone()));
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

    /// Queues `batch` for writing. An error writing an earlier batch comes
    /// back here or from [`ParquetSink::finish`].
    pub fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        let encoder = self.encoder.as_mut().expect("an unfinished sink");
        let sent = encoder.send(ToEncode::Batch(batch.clone()));
        sent.map_err(|e| self.err(e))?;
        self.rows += batch.num_rows() as u64;
        Ok(())
    }

    /// Where the file will be once finished.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes what is queued, closes the file and moves it into place;
    /// returns the rows written.
    pub fn finish(mut self) -> Result<u64> {
        let mut encoder = self.encoder.take().expect("an unfinished sink");
        encoder.send(ToEncode::Finish).and_then(|()| encoder.finish()).map_err(|e| self.err(e))?;
        std::fs::rename(&self.tmp, &self.path).map_err(io(&self.path))?;
        Ok(self.rows)
    }
}

impl Drop for ParquetSink {
    /// Stops the encoding thread of a sink not finished, or whose writing
    /// failed, and removes its temporary file (after
    /// [`ParquetSink::finish`] both are gone already).
    fn drop(&mut self) {
        drop(self.encoder.take());
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
    use datafusion::arrow::array::{Int64Array, StringArray};
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

    #[test]
    fn a_batch_the_encoding_thread_cannot_write_fails_the_sink_and_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.parquet");
        let mut sink = ParquetSink::create(&path, batch(vec![]).schema()).unwrap();
        sink.write(&batch(vec![1])).unwrap();
        let other = Arc::new(Schema::new(vec![Field::new("y", DataType::Utf8, false)]));
        let text = RecordBatch::try_new(other, vec![Arc::new(StringArray::from(vec!["a"]))]).unwrap();
        // Queued, then refused on the encoding thread: the error comes back
        // from a later write or from finish, naming the file.
        let err = match sink.write(&text).and_then(|()| sink.write(&batch(vec![2]))) {
            Err(e) => {
                drop(sink);
                e
            }
            Ok(()) => sink.finish().expect_err("a batch of another schema was written"),
        };
        let err = err.to_string();
        assert!(err.contains("t.parquet"), "{err}");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "a failed sink left a file");
    }

    #[test]
    fn row_groups_encoded_on_two_threads_are_what_arrow_writer_writes() {
        use datafusion::arrow::array::{Float64Array, ListBuilder, StringArray};
        let schema = Arc::new(Schema::new(vec![
            Field::new("k", DataType::Int64, false),
            Field::new("x", DataType::Float64, true),
            Field::new("s", DataType::Utf8, true),
            Field::new("l", DataType::List(Arc::new(Field::new("item", DataType::Int64, true))), true),
        ]));
        let batch = |from: i64, n: i64| {
            let k = Int64Array::from((from..from + n).map(|i| i % 7).collect::<Vec<_>>());
            let x = Float64Array::from(
                (from..from + n).map(|i| (i % 5 != 0).then_some(i as f64 / 3.0)).collect::<Vec<_>>(),
            );
            let s = StringArray::from(
                (from..from + n).map(|i| (i % 3 != 0).then(|| format!("v{}", i % 11))).collect::<Vec<_>>(),
            );
            let mut l = ListBuilder::new(Int64Array::builder(0));
            for i in from..from + n {
                l.values().append_slice(&vec![i; (i % 3) as usize]);
                l.append(i % 4 != 0);
            }
            RecordBatch::try_new(
                schema.clone(),
                vec![Arc::new(k), Arc::new(x), Arc::new(s), Arc::new(l.finish())],
            )
            .unwrap()
        };
        // Three row groups, the batches straddling their edges.
        let batches = [batch(0, 50_000), batch(50_000, 90_000), batch(140_000, 10_000)];
        let dir = tempfile::tempdir().unwrap();
        let ours = dir.path().join("ours.parquet");
        let mut sink = ParquetSink::create(&ours, schema.clone()).unwrap();
        for b in &batches {
            sink.write(b).unwrap();
        }
        assert_eq!(sink.finish().unwrap(), 150_000);
        let theirs = dir.path().join("theirs.parquet");
        let file = File::create(&theirs).unwrap();
        let mut writer =
            ArrowWriter::try_new(file, schema.clone(), Some(writer_properties(&schema))).unwrap();
        for b in &batches {
            writer.write(b).unwrap();
        }
        writer.close().unwrap();
        let (ours, theirs) = (std::fs::read(ours).unwrap(), std::fs::read(theirs).unwrap());
        assert!(ours == theirs, "{} bytes against ArrowWriter's {}", ours.len(), theirs.len());
    }

    #[test]
    fn floats_are_written_without_a_dictionary() {
        let schema = Schema::new(vec![
            Field::new("x", DataType::Int64, false),
            Field::new("p", DataType::Float64, true),
        ]);
        let properties = writer_properties(&schema);
        assert!(properties.dictionary_enabled(&ColumnPath::from("x")));
        assert!(!properties.dictionary_enabled(&ColumnPath::from("p")));
    }
}
