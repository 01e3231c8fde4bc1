//! Writing outputs: Parquet files written through a temporary sibling and
//! renamed into place, so a reader never sees a half-written file.

use std::path::Path;
use std::sync::Arc;

use datafusion::arrow::datatypes::Schema;
use datafusion::arrow::record_batch::RecordBatch;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;

use crate::error::{PipelineError, Result, io};

/// Writer settings for every Parquet file engage writes: zstd level 1 (fast,
/// small), 64k-row groups.
pub fn writer_properties() -> WriterProperties {
    WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(1).expect("level 1 is valid")))
        .set_max_row_group_row_count(Some(65_536))
        .build()
}

/// Writes `batches` (all of `schema`) to `path` atomically.
pub fn write_parquet(path: &Path, schema: Arc<Schema>, batches: &[RecordBatch]) -> Result<()> {
    let shown = path.display().to_string();
    let write_err = |source| PipelineError::Write { path: shown.clone(), source };
    let name = path.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.tmp-{}", std::process::id()));
    let file = std::fs::File::create(&tmp).map_err(io(&tmp))?;
    let result = (|| {
        let mut writer = ArrowWriter::try_new(file, schema, Some(writer_properties())).map_err(write_err)?;
        for b in batches {
            writer.write(b).map_err(write_err)?;
        }
        writer.close().map_err(write_err)?;
        Ok(())
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    std::fs::rename(&tmp, path).map_err(io(path))
}
