//! Uplift from treatment/control contact history: `engage dataset --task
//! response` then `engage train uplift`, checked against the generator's
//! true response probabilities with and without contact.

use std::collections::HashMap;

use engage_models::uplift::UpliftArtifact;
use engage_pipeline::datafusion::arrow::array::{Array, AsArray};
use engage_pipeline::datafusion::arrow::datatypes::Float64Type;
use engage_pipeline::datafusion::prelude::*;
use engage_pipeline::{TableColumns, table_training_set};

use crate::common::{engage, registered, sample, stderr, stdout};

async fn read(path: &str) -> Vec<engage_pipeline::datafusion::arrow::record_batch::RecordBatch> {
    let ctx = SessionContext::new();
    ctx.read_parquet(path, ParquetReadOptions::default()).await.unwrap().collect().await.unwrap()
}

fn text(b: &engage_pipeline::datafusion::arrow::record_batch::RecordBatch, c: &str) -> Vec<String> {
    let col = engage_pipeline::datafusion::arrow::compute::cast(
        b.column_by_name(c).unwrap(),
        &engage_pipeline::datafusion::arrow::datatypes::DataType::Utf8,
    )
    .unwrap();
    let col = col.as_string::<i32>();
    (0..col.len()).map(|i| col.value(i).to_string()).collect()
}

/// Mean of `truth` over the top `share` of rows by `score`.
fn mean_of_top(score: &[f64], truth: &[f64], share: f64) -> f64 {
    let mut order: Vec<usize> = (0..score.len()).collect();
    order.sort_by(|&a, &b| score[b].total_cmp(&score[a]));
    let top = &order[..(score.len() as f64 * share) as usize];
    top.iter().map(|&i| truth[i]).sum::<f64>() / top.len() as f64
}

#[tokio::test]
async fn uplift_model_finds_the_customers_a_contact_changes() {
    let tmp = tempfile::tempdir().unwrap();
    let data = sample().to_str().unwrap();
    let ds = tmp.path().join("ds");
    let models = tmp.path().join("models");
    let (ds, models) = (ds.to_str().unwrap(), models.to_str().unwrap());
    let made = engage(&[
        "dataset",
        "--data",
        data,
        "--task",
        "response",
        "--every",
        "60d",
        "--from",
        "2024-09-01",
        "--to",
        "2026-03-01",
        "--horizon",
        "60d",
        "--out",
        ds,
    ]);
    assert!(made.status.success(), "{}", stderr(&made));
    let file = format!("{ds}/dataset.parquet");
    let trained = engage(&["train", "uplift", "--features", &file, "--models", models]);
    assert!(trained.status.success(), "{}", stderr(&trained));
    let said = stdout(&trained);
    // Cutoffs every 60 days from 2024-09-01: the last is 2026-02-23.
    assert!(said.contains("time-based backtest") && said.contains("at 2026-02-23"), "{said}");
    for offer in ["10pct_off", "free_shipping", "double_points", "bundle_deal"] {
        assert!(said.contains(offer), "no line for {offer}: {said}");
    }
    let dir = registered(&said);
    let dir = std::path::Path::new(&dir);
    assert!(dir.starts_with(models) && said.contains("(promoted"), "{said}");
    let art = UpliftArtifact::load(&dir.join("model.json")).unwrap();
    assert_eq!(art.task, "uplift");
    assert_eq!(art.model.treatments.len(), 4);
    // Labels and bookkeeping columns never reach the models.
    for leak in
        ["converted", "responded", "funnel_depth", "contact_ts", "treatment", "contact_group", "as_of"]
    {
        assert!(
            !art.model.feature_names.iter().any(|f| f == leak || f.starts_with(&format!("{leak}="))),
            "{leak}"
        );
    }
    assert!(art.metrics.qini > 0.0, "Qini {} is no better than random", art.metrics.qini);
    // Each offer is judged against the control groups of its own campaigns.
    let controls: Vec<usize> = art.metrics.arms.iter().map(|a| a.control_rows).collect();
    assert!(controls.windows(2).any(|w| w[0] != w[1]), "shared controls {controls:?}");

    // The validation rows (last cutoff), scored by the model and compared
    // with the generator's truth for wave contacts (one per customer and wave).
    let batches = read(&file).await;
    let columns = TableColumns { label: "converted", id: None, ignore: &["treatment".to_string()] };
    let (set, cutoffs) = table_training_set(&batches, &columns, &file).unwrap();
    let cutoffs = cutoffs.unwrap();
    let (mut campaign, mut arm) = (Vec::new(), Vec::new());
    for b in &batches {
        campaign.extend(text(b, "campaign_id"));
        arm.extend(text(b, "treatment"));
    }
    let truth_batches = read(sample().join("truth/contacts").to_str().unwrap()).await;
    let mut truth = HashMap::new();
    for b in &truth_batches {
        let (camp, cust) = (text(b, "campaign_id"), text(b, "customer_id"));
        let pc = b.column_by_name("p_response_control").unwrap().as_primitive::<Float64Type>();
        let pt = b.column_by_name("p_response_treatment").unwrap().as_primitive::<Float64Type>();
        for i in 0..b.num_rows() {
            truth.insert((camp[i].clone(), cust[i].clone()), (pc.value(i), pt.value(i)));
        }
    }
    let last = cutoffs.iter().max().unwrap().clone();
    let rows: Vec<usize> = (0..set.ids.len())
        .filter(|&i| cutoffs[i] == last && campaign[i].starts_with('W') && arm[i] != "control")
        .collect();
    assert!(rows.len() > 500, "{} treated wave contacts at {last}", rows.len());
    let x = set.x.select(ndarray::Axis(0), &rows);
    let scores = art.model.predict(&x);
    let (mut by_uplift, mut by_response, mut true_uplift) = (Vec::new(), Vec::new(), Vec::new());
    for (r, &i) in rows.iter().enumerate() {
        let k = art.model.treatments.iter().position(|t| *t == arm[i]).unwrap();
        let (pc, pt) = truth[&(campaign[i].clone(), set.ids[i].clone())];
        by_uplift.push(scores.uplift(r, k));
        by_response.push(scores.treated[[r, k]]);
        true_uplift.push(pt - pc);
    }
    let overall = true_uplift.iter().sum::<f64>() / true_uplift.len() as f64;
    let top_uplift = mean_of_top(&by_uplift, &true_uplift, 0.3);
    let top_response = mean_of_top(&by_response, &true_uplift, 0.3);
    println!(
        "true uplift: {overall:.4} on average, {top_uplift:.4} in the top 30 % by predicted uplift, \
         {top_response:.4} in the top 30 % by predicted response"
    );
    assert!(top_uplift > overall * 1.15, "top 30 % by uplift {top_uplift:.4} vs average {overall:.4}");
    assert!(top_uplift > top_response, "ranking by uplift {top_uplift:.4} vs by response {top_response:.4}");

    // Report and metrics sit beside the artifact; the registry lists it.
    let run: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("run_report.json")).unwrap()).unwrap();
    assert_eq!(run["command"], "train uplift");
    assert_eq!(run["data"], file.as_str());
    let html = std::fs::read_to_string(dir.join("report.html")).unwrap();
    let validated = art.metrics.arms.len();
    assert!(validated >= 2 && validated + art.metrics.unvalidated.len() == 4, "{:?}", art.metrics);
    assert_eq!(html.matches("<title>Qini curve: ").count(), validated, "one Qini chart per validated offer");
    assert!(html.contains("Observed uplift by predicted-uplift decile"));
    let metrics: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("metrics.json")).unwrap()).unwrap();
    assert_eq!(metrics["curves"][0]["qini"].as_array().unwrap().len(), 101);
    println!("{said}");
    let listed = stdout(&engage(&["models", "list", "--models", models]));
    assert!(listed.contains("uplift:logistic") && listed.contains("Qini "), "{listed}");

    // Scoring with it: every customer's uplift per offer, the best offer
    // and its uplift, as the model predicts from the feature table.
    let scores = tmp.path().join("scores");
    let features = tmp.path().join("features");
    for args in [
        vec!["score", "--data", data, "--as-of", "2026-07-01", "--models", models, "--model", "uplift"],
        vec!["features", "--data", data, "--as-of", "2026-07-01"],
    ] {
        let out = if args[0] == "score" {
            engage(&[args.as_slice(), &["--out", scores.to_str().unwrap()]].concat())
        } else {
            engage(&[args.as_slice(), &["--out", features.to_str().unwrap()]].concat())
        };
        assert!(out.status.success(), "{}", stderr(&out));
    }
    let id = std::fs::read_to_string(scores.join("CURRENT")).unwrap();
    let scored =
        read(scores.join("snapshots").join(id.trim()).join("scores.parquet").to_str().unwrap()).await;
    let feature_batches = read(features.join("customer_features.parquet").to_str().unwrap()).await;
    let (ids, _, x) = engage_pipeline::feature_matrix(&feature_batches).unwrap();
    let expected = art.model.predict(&x);
    let row_of: HashMap<&str, usize> = ids.iter().enumerate().map(|(i, c)| (c.as_str(), i)).collect();
    let mut best_offers = std::collections::BTreeSet::new();
    let mut scored_rows = 0;
    for b in &scored {
        let (cust, best) = (text(b, "customer_id"), text(b, "best_offer"));
        let uplift = b.column_by_name("uplift").unwrap().as_primitive::<Float64Type>();
        for i in 0..b.num_rows() {
            let r = row_of[cust[i].as_str()];
            let (k, u) = expected.best(r);
            assert_eq!(
                (best[i].as_str(), uplift.value(i)),
                (art.model.treatments[k].as_str(), u),
                "{}",
                cust[i]
            );
            for (k, arm) in art.model.treatments.iter().enumerate() {
                let col = b.column_by_name(&format!("uplift_{arm}")).unwrap().as_primitive::<Float64Type>();
                assert_eq!(col.value(i), expected.uplift(r, k));
            }
            best_offers.insert(best[i].clone());
            scored_rows += 1;
        }
    }
    assert_eq!(scored_rows, ids.len());
    assert!(best_offers.len() >= 2, "one best offer for everyone: {best_offers:?}");

    // A column that is not there, and no control group, are clear errors.
    let wrong = engage(&["train", "uplift", "--features", &file, "--treatment", "arm", "--models", models]);
    assert_eq!(wrong.status.code(), Some(1));
    assert!(stderr(&wrong).contains("column `arm`: no such column"), "{}", stderr(&wrong));
    let none = engage(&["train", "uplift", "--features", &file, "--control", "nobody", "--models", models]);
    assert_eq!(none.status.code(), Some(1));
    assert!(stderr(&none).contains("no row is in the control group `nobody`"), "{}", stderr(&none));
}
