//! The churn model learns from generated data, in line with what the
//! generator's ground truth makes possible.

use std::collections::HashMap;

use engage_models::metrics::roc_auc;
use engage_pipeline::Engine;
use engage_pipeline::datafusion::arrow::array::{Array, AsArray};
use engage_pipeline::datafusion::arrow::compute::cast;
use engage_pipeline::datafusion::arrow::datatypes::{DataType, Date32Type, Float64Type};
use engage_pipeline::datafusion::prelude::*;
use engage_pipeline::jobs::churn_training_set;

use crate::common::{date, sample, trained};

/// P(no purchase in [as_of, as_of + horizon)) from the generator's latent
/// truth: the purchase rate thinned by the activity decay before churn.
fn oracle(rate: f64, churn_day: f64, start: f64, horizon: f64) -> f64 {
    let mut integral = 0.0;
    let step = 0.25;
    let mut d = start;
    while d < start + horizon {
        if d < churn_day {
            integral += ((churn_day - d) / 120.0).clamp(0.15, 1.0) * step;
        }
        d += step;
    }
    (-(rate / 365.0) * integral).exp()
}

#[tokio::test]
async fn churn_model_learns_and_approaches_the_oracle() {
    let as_of = date("2026-03-31");
    let artifact = &trained().artifact;
    let m = &artifact.metrics;
    assert!(m.roc_auc > 0.72, "validation AUC {:.3} is too close to chance", m.roc_auc);
    assert!(m.top_decile_lift > 1.3, "top-decile lift {:.2}", m.top_decile_lift);
    assert!(
        m.brier < m.positive_rate * (1.0 - m.positive_rate),
        "Brier {:.3} no better than the base rate",
        m.brier
    );

    // The oracle knows each customer's latent rate and churn date.
    let mut engine = Engine::open(sample()).await.unwrap();
    let set = churn_training_set(&mut engine, as_of, 90).await.unwrap();
    let ctx = SessionContext::new();
    let truth = ctx
        .read_parquet(sample().join("truth/customers").to_str().unwrap(), ParquetReadOptions::default())
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    let epoch_as_of = (as_of - date("1970-01-01")).num_days() as f64;
    let mut latent = HashMap::new();
    for b in &truth {
        let ids = cast(b.column_by_name("customer_id").unwrap(), &DataType::Utf8).unwrap();
        let ids = ids.as_string::<i32>();
        let rate = b.column_by_name("purchase_rate_per_year").unwrap().as_primitive::<Float64Type>();
        let churn = b.column_by_name("churn_date").unwrap().as_primitive::<Date32Type>();
        for i in 0..b.num_rows() {
            assert!(churn.is_valid(i));
            latent.insert(ids.value(i).to_string(), (rate.value(i), churn.value(i) as f64 - epoch_as_of));
        }
    }
    let p: Vec<f64> = set
        .ids
        .iter()
        .map(|id| {
            let (rate, churn_day) = latent[id];
            oracle(rate, churn_day + 0.5, 0.0, 90.0)
        })
        .collect();
    let oracle_auc = roc_auc(&set.y, &p);
    println!("churn AUC: model {:.3} (validation), ground-truth oracle {:.3}", m.roc_auc, oracle_auc);
    assert!(
        oracle_auc > m.roc_auc - 0.02,
        "the model cannot beat the oracle: {:.3} vs {oracle_auc:.3}",
        m.roc_auc
    );
    assert!(
        m.roc_auc > oracle_auc - 0.15,
        "model AUC {:.3} is far below the oracle {oracle_auc:.3}",
        m.roc_auc
    );
}

#[test]
fn artifact_records_what_it_was_trained_on() {
    let run = trained();
    let a = engage_models::ModelArtifact::load(&run.path).unwrap();
    assert_eq!(&a, &run.artifact);
    assert_eq!(a.window.as_of, "2026-03-31");
    assert_eq!(a.window.horizon_days, 90);
    assert_eq!(a.data_fingerprint.len(), 64);
    assert!(a.model_version.starts_with("churn-2026-03-31-"));
    assert_eq!(a.model.feature_names.len(), a.model.coefficients.len());
    assert!(a.model.feature_names.iter().any(|n| n == "recency_days"));
    assert_eq!(a.engage_version, env!("CARGO_PKG_VERSION"));
}
