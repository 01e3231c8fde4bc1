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
    copy_dir(&from.join("campaigns"), &to.join("campaigns"));
}

/// The property, for cutoffs drawn at random over the sample's history
/// (seeded; `ENGAGE_LEAKAGE_SEED` picks other ones): removing every event at
/// or after the cutoff changes no feature of any customer.
#[tokio::test]
async fn events_at_or_after_the_cutoff_change_no_feature() {
    use rand::{Rng, SeedableRng};
    let seed = std::env::var("ENGAGE_LEAKAGE_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(20261123u64);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let (first, last) = (date("2024-03-01"), date("2026-06-01"));
    let span = (last - first).num_days();
    for _ in 0..3 {
        let as_of = first + chrono::Duration::days(rng.gen_range(0..=span));
        let tmp = tempfile::tempdir().unwrap();
        let truncated = tmp.path().join("truncated");
        truncate(sample(), &truncated, engage_pipeline::as_of_param(as_of)).await;

        let full = Engine::open(sample()).await.unwrap().features(as_of).await.unwrap();
        let past_only = Engine::open(&truncated).await.unwrap().features(as_of).await.unwrap();
        let (full, past_only) = (
            pretty_format_batches(&full).unwrap().to_string(),
            pretty_format_batches(&past_only).unwrap().to_string(),
        );
        assert!(full.lines().count() > 500, "the comparison must cover many customers ({as_of})");
        if full != past_only {
            let diff: Vec<_> = full.lines().zip(past_only.lines()).filter(|(a, b)| a != b).take(5).collect();
            panic!("seed {seed}: a feature changed when events at/after {as_of} were removed: {diff:#?}");
        }
    }
}

/// A training set's rows at each cutoff carry exactly the features computed
/// at that cutoff and the labels of the horizon after it.
#[tokio::test]
async fn dataset_stacks_point_in_time_features_with_their_labels() {
    use engage_pipeline::jobs::{DATASET_FILE, DatasetOptions, build_dataset};
    use engage_pipeline::{DataSource, Task};
    let cutoffs = vec![date("2025-10-01"), date("2026-01-01")];
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("dataset");
    let opts = DatasetOptions {
        source: DataSource::new(sample()),
        task: Task::Churn,
        cutoffs: cutoffs.clone(),
        horizon_days: 90,
        response_days: 14,
        out: out.clone(),
    };
    let run = build_dataset(&opts).await.unwrap();
    assert_eq!(&run.columns[..2], ["customer_id", "as_of"]);
    assert_eq!(run.columns.last().unwrap(), "churned");

    let ctx = SessionContext::new();
    ctx.register_parquet("ds", out.join(DATASET_FILE).to_str().unwrap(), ParquetReadOptions::default())
        .await
        .unwrap();
    for cutoff in cutoffs {
        let mut engine = Engine::open(sample()).await.unwrap();
        let features = engine.features(cutoff).await.unwrap();
        let labels = engine.churn_labels(cutoff, 90).await.unwrap();
        ctx.deregister_table("f").unwrap();
        ctx.deregister_table("l").unwrap();
        ctx.register_batch(
            "f",
            engage_pipeline::datafusion::arrow::compute::concat_batches(&features[0].schema(), &features)
                .unwrap(),
        )
        .unwrap();
        ctx.register_batch(
            "l",
            engage_pipeline::datafusion::arrow::compute::concat_batches(&labels[0].schema(), &labels)
                .unwrap(),
        )
        .unwrap();
        let check = |sql: String| {
            let ctx = ctx.clone();
            async move { crate::common::scalar_i64(&ctx, &sql).await }
        };
        let block = format!("(SELECT * FROM ds WHERE as_of = DATE '{cutoff}')");
        let labelled = check("SELECT count(*) FROM f JOIN l USING (customer_id)".into()).await;
        assert!(labelled > 500, "{cutoff}: {labelled}");
        assert_eq!(
            check(format!("SELECT count(*) FROM {block} d")).await,
            labelled,
            "{cutoff}: one row per labelled customer"
        );
        let differing = format!(
            "SELECT count(*) FROM {block} d JOIN f USING (customer_id) JOIN l USING (customer_id)
             WHERE (d.recency_days IS DISTINCT FROM f.recency_days) OR (d.frequency IS DISTINCT FROM f.frequency)
                OR (d.monetary_sum IS DISTINCT FROM f.monetary_sum)
                OR (d.engagement_trend IS DISTINCT FROM f.engagement_trend)
                OR (d.lifecycle_stage IS DISTINCT FROM f.lifecycle_stage) OR (d.churned IS DISTINCT FROM l.churned)"
        );
        assert_eq!(
            check(differing).await,
            0,
            "{cutoff}: dataset rows differ from the features and labels at that cutoff"
        );
    }
}
