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

/// `engage train churn --features FILE`: a training set from `engage
/// dataset` trains with a time-based backtest, and the model scores
/// engage's feature table; a hand-made CSV with text and boolean columns
/// trains with a stratified hold-out; bad input names the column.
#[test]
fn train_on_a_feature_table_file() {
    use crate::common::{engage, stderr, stdout};
    let tmp = tempfile::tempdir().unwrap();
    let data = sample().to_str().unwrap();
    let dir = |name: &str| tmp.path().join(name).to_str().unwrap().to_string();
    let ok = |args: &[&str]| {
        let o = engage(args);
        assert!(o.status.success(), "{args:?}: {}", stderr(&o));
        stdout(&o)
    };
    let (ds, models) = (dir("ds"), dir("models"));
    let cutoffs = "2025-12-31,2026-03-31";
    ok(&["dataset", "--data", data, "--task", "churn", "--as-of", cutoffs, "--out", &ds]);
    let file = format!("{ds}/dataset.parquet");
    let said = ok(&["train", "churn", "--features", &file, "--label", "churned", "--models", &models]);
    assert!(
        said.contains("time-based backtest")
            && said.contains("validated on")
            && said.contains("at 2026-03-31"),
        "{said}"
    );
    let auc: f64 = said.split("ROC AUC ").nth(1).unwrap().split(',').next().unwrap().parse().unwrap();
    assert!(auc > 0.75, "backtest AUC {auc}");
    let model = said.lines().find_map(|l| l.strip_prefix("wrote ")).unwrap().to_string();
    assert!(model.contains("churn-2026-03-31-"), "{model}");
    // Same feature names as engage's feature table: it scores directly.
    ok(&["score", "--data", data, "--as-of", "2026-03-31", "--model", &model, "--out", &dir("scores")]);

    let csv = tmp.path().join("mine.csv");
    let mut text = String::from("id,plan,tenure_months,autopay,left\n");
    for i in 0..400 {
        let plan = ["gold", "silver", "basic"][i % 3];
        let left = (i % 3 == 2 && i % 4 != 0) || i % 11 == 0;
        text += &format!("u{i},{plan},{},{},{}\n", (i * 7) % 48, i % 2 == 0, left as u8);
    }
    std::fs::write(&csv, text).unwrap();
    let csv = csv.to_str().unwrap();
    let said =
        ok(&["train", "churn", "--features", csv, "--label", "left", "--id", "id", "--models", &models]);
    assert!(said.contains("stratified hold-out (seed 42): trained on 320 rows, validated on 80"), "{said}");
    let path = said.lines().find_map(|l| l.strip_prefix("wrote ")).unwrap();
    let artifact = engage_models::ModelArtifact::load(std::path::Path::new(path)).unwrap();
    assert_eq!(
        artifact.model.feature_names,
        ["plan=basic", "plan=gold", "plan=silver", "tenure_months", "autopay"].map(String::from)
    );
    assert!(artifact.metrics.roc_auc > 0.8, "{:?}", artifact.metrics);
    // The metrics file and the report sit next to the artifact.
    let html = std::fs::read_to_string(path.replace(".json", ".report.html")).unwrap();
    assert_eq!(html.matches("<svg").count(), 5, "ROC, gains, calibration, decile lift, weights");
    for needle in ["ROC curve (AUC", "Cumulative gains", "Calibration", "plan=basic", "stratified hold-out"] {
        assert!(html.contains(needle), "report lacks {needle}");
    }
    let metrics: serde_json::Value =
        serde_json::from_slice(&std::fs::read(path.replace(".json", ".metrics.json")).unwrap()).unwrap();
    let roc = metrics["curves"]["roc"].as_array().unwrap();
    assert_eq!(
        (roc[0].to_string(), roc[roc.len() - 1].to_string()),
        ("[0.0,0.0]".into(), "[1.0,1.0]".into())
    );
    assert_eq!(metrics["curves"]["calibration"].as_array().unwrap().len(), 10);
    assert_eq!(metrics["metrics"]["roc_auc"], serde_json::json!(artifact.metrics.roc_auc));

    let missing = engage(&["train", "churn", "--features", csv, "--label", "churned", "--models", &models]);
    assert_eq!(missing.status.code(), Some(1));
    let err = stderr(&missing);
    assert!(err.contains("column `churned`: no such column") && err.contains("mine.csv"), "{err}");
    let both = engage(&[
        "train",
        "churn",
        "--features",
        csv,
        "--label",
        "left",
        "--data",
        data,
        "--models",
        &models,
    ]);
    assert_eq!(both.status.code(), Some(2), "{}", stderr(&both));
}
