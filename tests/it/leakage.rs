//! Point-in-time correctness: events at or after the cutoff change no
//! feature value. The same generated data is read twice, once whole and once
//! with every event at or after the cutoff removed; the feature tables must
//! be identical.

use std::path::Path;

use engage_pipeline::Engine;
use engage_pipeline::datafusion::arrow::util::pretty::pretty_format_batches;
use engage_pipeline::datafusion::dataframe::DataFrameWriteOptions;
use engage_pipeline::datafusion::prelude::*;
use engage_pipeline::datafusion::scalar::ScalarValue;

use crate::common::{copy_dir, date, sample};

async fn truncate(from: &Path, to: &Path, cutoff: ScalarValue) {
    let ctx = SessionContext::new();
    for table in ["transactions", "interactions", "contacts", "responses"] {
        let df = ctx
            .read_parquet(from.join(table).to_str().unwrap(), ParquetReadOptions::default())
            .await
            .unwrap();
        let before = df.clone().count().await.unwrap();
        let kept = df.filter(col("ts").lt(lit(cutoff.clone()))).unwrap();
        let out = to.join(table);
        std::fs::create_dir_all(&out).unwrap();
        kept.write_parquet(out.join("part-0.parquet").to_str().unwrap(), DataFrameWriteOptions::new(), None)
            .await
            .unwrap();
        let after = ctx
            .read_parquet(out.to_str().unwrap(), ParquetReadOptions::default())
            .await
            .unwrap()
            .count()
            .await
            .unwrap();
        assert!(after < before, "{table}: the sample must have events after the cutoff to remove");
    }
    copy_dir(&from.join("customers"), &to.join("customers"));
    std::fs::copy(from.join("campaigns.parquet"), to.join("campaigns.parquet")).unwrap();
}

#[tokio::test]
async fn events_at_or_after_the_cutoff_change_no_feature() {
    let as_of = date("2025-09-01");
    let tmp = tempfile::tempdir().unwrap();
    let truncated = tmp.path().join("truncated");
    truncate(sample(), &truncated, engage_pipeline::as_of_param(as_of)).await;

    let full = Engine::open(sample()).await.unwrap().features(as_of).await.unwrap();
    let past_only = Engine::open(&truncated).await.unwrap().features(as_of).await.unwrap();
    let (full, past_only) = (
        pretty_format_batches(&full).unwrap().to_string(),
        pretty_format_batches(&past_only).unwrap().to_string(),
    );
    assert!(full.lines().count() > 1000, "the comparison must cover many customers");
    if full != past_only {
        let diff: Vec<_> = full.lines().zip(past_only.lines()).filter(|(a, b)| a != b).take(5).collect();
        panic!("a feature changed when events at/after {as_of} were removed: {diff:#?}");
    }
    assert_eq!(full, past_only, "a feature changed when events at/after {as_of} were removed");
}
