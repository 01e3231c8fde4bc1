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

use crate::common::{date, registered, sample, trained};

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
    let a = engage_models::ModelArtifact::load(&run.dir.join("model.json")).unwrap();
    assert_eq!(&a, &run.artifact);
    assert_eq!(run.dir.file_name().unwrap().to_str().unwrap(), a.model_version);
    assert_eq!(run.dir.parent().unwrap().file_name().unwrap(), "churn");
    assert_eq!(a.window.as_of, "2026-03-31");
    assert_eq!(a.window.horizon_days, 90);
    assert_eq!(a.data_fingerprint.len(), 64);
    assert!(a.model_version.starts_with("churn-2026-03-31-"));
    let engage_models::Classifier::Logistic(m) = &a.model else { panic!("the default is logistic") };
    assert_eq!(m.feature_names.len(), m.coefficients.len());
    assert!(m.feature_names.iter().any(|n| n == "recency_days"));
    // The registry's metadata says the same, without loading the model.
    let meta: engage_models::registry::ModelMeta =
        serde_json::from_slice(&std::fs::read(run.dir.join("meta.json")).unwrap()).unwrap();
    assert_eq!((meta.kind.as_str(), meta.features.as_slice()), ("logistic", m.feature_names.as_slice()));
    assert_eq!(meta.data_fingerprint, a.data_fingerprint);
    for file in ["metrics.json", "report.html", "run_report.json"] {
        assert!(run.dir.join(file).is_file(), "{file}");
    }
    assert_eq!(a.engage_version, env!("CARGO_PKG_VERSION"));
}

/// `engage train churn --features FILE`: a training set from `engage
/// dataset` trains with a time-based backtest, and the model scores
/// engage's feature table; a hand-made CSV with text and boolean columns
/// trains with a stratified hold-out; bad input names the column.
#[test]
fn train_on_a_feature_table_file() {
    use crate::common::{engage, stderr};
    let tmp = tempfile::tempdir().unwrap();
    let data = sample().to_str().unwrap();
    let dir = |name: &str| tmp.path().join(name).to_str().unwrap().to_string();
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
    let auc: f64 =
        said.rsplit("validation: ROC AUC ").next().unwrap().split(',').next().unwrap().parse().unwrap();
    assert!(auc > 0.75, "backtest AUC {auc}");
    let first = registered(&said);
    assert!(first.contains("/churn/churn-2026-03-31-") && said.contains("(promoted"), "{said}");
    // Same feature names as engage's feature table: the promoted model scores directly.
    ok(&["score", "--data", data, "--as-of", "2026-03-31", "--models", &models, "--out", &dir("scores")]);

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
    assert!(
        said.contains("stratified hold-out of 20 % (seed 42): trained on 320 rows, validated on 80"),
        "{said}"
    );
    assert!(said.contains("not promoted"), "{said}");
    let version_dir = std::path::PathBuf::from(registered(&said));
    let artifact = engage_models::ModelArtifact::load(&version_dir.join("model.json")).unwrap();
    assert_eq!(
        artifact.model.feature_names(),
        ["plan=basic", "plan=gold", "plan=silver", "tenure_months", "autopay"].map(String::from)
    );
    assert!(artifact.metrics.roc_auc > 0.8, "{:?}", artifact.metrics);
    // Scoring engage's features with it is a clear error, not a silent zero.
    let version = format!("churn@{}", artifact.model_version);
    let wrong = engage(&[
        "score",
        "--data",
        data,
        "--as-of",
        "2026-03-31",
        "--models",
        &models,
        "--model",
        &version,
        "--out",
        &dir("scores"),
    ]);
    assert_eq!(wrong.status.code(), Some(1));
    assert!(stderr(&wrong).contains("expects features [\"plan=basic\""), "{}", stderr(&wrong));
    // The metrics file, the report and the run report sit next to the artifact.
    let run: serde_json::Value =
        serde_json::from_slice(&std::fs::read(version_dir.join("run_report.json")).unwrap()).unwrap();
    assert_eq!(
        (run["command"].as_str(), run["model"]["train_rows"].as_u64()),
        (Some("train churn --features"), Some(320))
    );
    let html = std::fs::read_to_string(version_dir.join("report.html")).unwrap();
    assert_eq!(html.matches("<svg").count(), 5, "ROC, gains, calibration, decile lift, weights");
    for needle in ["ROC curve (AUC", "Cumulative gains", "Calibration", "plan=basic", "stratified hold-out"] {
        assert!(html.contains(needle), "report lacks {needle}");
    }
    let metrics: serde_json::Value =
        serde_json::from_slice(&std::fs::read(version_dir.join("metrics.json")).unwrap()).unwrap();
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
    let no_id = engage(&[
        "train",
        "churn",
        "--features",
        csv,
        "--label",
        "left",
        "--id",
        "user",
        "--models",
        &models,
    ]);
    assert_eq!(no_id.status.code(), Some(1));
    assert!(stderr(&no_id).contains("column `user`: no such column (--id)"), "{}", stderr(&no_id));
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

/// A boosted model from a TOML config with k-fold validation, and the
/// registry around it: the first model of a name is promoted, later ones
/// wait for `promote`; scoring follows the promoted version; rollback
/// returns to the previous one.
#[test]
fn gbm_from_a_config_with_k_fold_and_the_registry_lifecycle() {
    use crate::common::{engage, stderr};
    let tmp = tempfile::tempdir().unwrap();
    let data = sample().to_str().unwrap();
    let dir = |name: &str| tmp.path().join(name).to_str().unwrap().to_string();
    let (ds, models) = (dir("ds"), dir("models"));
    ok(&["dataset", "--data", data, "--task", "churn", "--as-of", "2025-12-31,2026-03-31", "--out", &ds]);
    let file = format!("{ds}/dataset.parquet");
    let logistic =
        registered(&ok(&["train", "churn", "--features", &file, "--label", "churned", "--models", &models]));

    let config = tmp.path().join("gbm.toml");
    std::fs::write(
        &config,
        "[model]\nkind = \"gbm\"\nn_trees = 150\nmax_depth = 4\nmin_samples_leaf = 20\n\n[split]\nfolds = 3\n",
    )
    .unwrap();
    let config = config.to_str().unwrap();
    let said = ok(&[
        "train",
        "churn",
        "--features",
        &file,
        "--label",
        "churned",
        "--models",
        &models,
        "--config",
        config,
    ]);
    assert!(said.contains("(gbm)") && said.contains("stratified 3-fold cross-validation"), "{said}");
    assert!(said.contains("not promoted"), "{said}");
    let gbm = registered(&said);
    let gbm_version = gbm.rsplit('/').next().unwrap().to_string();
    let auc: f64 =
        said.rsplit("validation: ROC AUC ").next().unwrap().split(',').next().unwrap().parse().unwrap();
    assert!(auc > 0.75, "out-of-fold AUC {auc}");
    let meta: serde_json::Value =
        serde_json::from_slice(&std::fs::read(format!("{gbm}/meta.json")).unwrap()).unwrap();
    assert_eq!((meta["kind"].as_str(), meta["config"]["max_depth"].as_u64()), (Some("gbm"), Some(4)));
    let html = std::fs::read_to_string(format!("{gbm}/report.html")).unwrap();
    assert!(html.contains("Feature importance (share of split gain)"), "the report charts gbm importance");
    assert!(
        html.contains("Model <code>gbm</code>") && html.contains("&quot;max_depth&quot;:4"),
        "the report states the config"
    );

    // A typo in the config is an error naming the field and the file.
    let bad = tmp.path().join("bad.toml");
    std::fs::write(&bad, "[model]\nkind = \"gbm\"\ndepth = 4\n").unwrap();
    let out = engage(&[
        "train",
        "churn",
        "--features",
        &file,
        "--label",
        "churned",
        "--models",
        &models,
        "--config",
        bad.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("depth") && stderr(&out).contains("bad.toml"), "{}", stderr(&out));

    // A logistic fit cut short by its iteration cap is kept (the best
    // coefficients found) with a warning that says what to change.
    let capped = tmp.path().join("capped.toml");
    std::fs::write(&capped, "[model]\nkind = \"logistic\"\nmax_iterations = 3\n").unwrap();
    let capped_models = dir("capped-models");
    let args = ["train", "churn", "--features", &file, "--label", "churned", "--models", &capped_models];
    let out = engage(&[&args[..], &["--config", capped.to_str().unwrap()]].concat());
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("the churn model stopped after 3 iterations (max_iterations)"),
        "{}",
        stderr(&out)
    );
    // The registered version keeps the warning: its run report and its page.
    let version =
        std::fs::read_dir(format!("{capped_models}/churn")).unwrap().flatten().find(|e| e.path().is_dir());
    let version = version.expect("a registered version").path();
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(version.join("run_report.json")).unwrap()).unwrap();
    let warnings = report["warnings"].as_array().expect("warnings in run_report.json");
    assert!(warnings.len() == 1 && warnings[0].as_str().unwrap().contains("after 3 iterations"), "{report}");
    let page = std::fs::read_to_string(version.join("report.html")).unwrap();
    assert!(page.contains("class=\"warning\"") && page.contains("after 3 iterations"), "{page}");
    let out = engage(&args);
    assert!(out.status.success() && !stderr(&out).contains("warning"), "{}", stderr(&out));

    let list = |needle: &str| {
        let text = ok(&["models", "list", "--models", &models]);
        text.lines()
            .find(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("{needle} not in\n{text}"))
            .to_string()
    };
    assert!(list(logistic.rsplit('/').next().unwrap()).starts_with('*'));
    assert!(list(&gbm_version).starts_with(' '));
    ok(&["models", "promote", "--models", &models, &format!("churn@{gbm_version}")]);
    assert!(list(&gbm_version).starts_with('*'));
    let shown = ok(&["models", "show", "--models", &models, "churn"]);
    assert!(shown.contains(&gbm_version) && shown.contains("\"promoted\": true"), "{shown}");

    // Scoring follows the promoted (boosted) model, reasons included.
    let scores = dir("scores");
    ok(&["score", "--data", data, "--as-of", "2026-07-01", "--models", &models, "--out", &scores]);
    let manifest = std::fs::read_to_string(format!("{scores}/CURRENT")).unwrap();
    assert!(!manifest.is_empty());
    let snapshots = std::fs::read_dir(format!("{scores}/snapshots")).unwrap().count();
    let said = ok(&["report", "show", &format!("{scores}/snapshots/{}", manifest.trim())]);
    assert!(said.contains(&gbm_version), "{said}");

    let back = ok(&["models", "rollback", "--models", &models, "churn"]);
    assert!(back.contains(logistic.rsplit('/').next().unwrap()), "{back}");
    let again = engage(&["models", "rollback", "--models", &models, "churn"]);
    assert_eq!(again.status.code(), Some(1));
    assert!(stderr(&again).contains("nothing to roll back to"), "{}", stderr(&again));
    assert_eq!(snapshots, 1);
}

/// Runs `engage args`, requires success, returns its stdout.
fn ok(args: &[&str]) -> String {
    let o = crate::common::engage(args);
    assert!(o.status.success(), "{args:?}: {}", crate::common::stderr(&o));
    crate::common::stdout(&o)
}
