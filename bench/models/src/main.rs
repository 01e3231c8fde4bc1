//! Times engage's classifiers and linfa's trees on train.csv / valid.csv
//! (header row, `y` first, empty = missing) and BG/NBD on the CDNOW
//! summary; prints one JSON object per model.
//!
//!   engage-bench-models classifiers DIR
//!   engage-bench-models bgnbd CDNOW_SUMMARY.csv REPEATS
//!   engage-bench-models clvscore CDNOW_SUMMARY.csv CUSTOMERS

use std::time::Instant;

use engage_models::clv::{BgNbd, GammaGamma, Rfm, customer_lifetime_value};
use engage_models::gbm::GbmParams;
use engage_models::metrics::roc_auc;
use engage_models::{ChurnModel, TrainingSet};
use linfa::prelude::*;
use ndarray::{Array1, Array2};

fn read(path: &str) -> TrainingSet {
    let mut r = csv::Reader::from_path(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let names: Vec<String> = r.headers().unwrap().iter().skip(1).map(String::from).collect();
    let (mut values, mut y) = (Vec::new(), Vec::new());
    for rec in r.records() {
        let rec = rec.unwrap();
        y.push(&rec[0] == "1");
        values.extend(rec.iter().skip(1).map(|v| if v.is_empty() { f64::NAN } else { v.parse().unwrap() }));
    }
    let n = y.len();
    TrainingSet {
        ids: (0..n).map(|i| i.to_string()).collect(),
        x: Array2::from_shape_vec((n, names.len()), values).unwrap(),
        feature_names: names,
        y,
    }
}

fn report(model: &str, fit: f64, valid: &TrainingSet, p: &[f64]) {
    println!(
        "{}",
        serde_json::json!({"side": "engage", "model": model, "fit_seconds": fit, "auc": roc_auc(&valid.y, p)})
    );
}

/// linfa's trees take no missing values: the training mean stands in.
fn impute(x: &Array2<f64>, means: &[f64]) -> Array2<f64> {
    let mut x = x.clone();
    for (j, mut col) in x.columns_mut().into_iter().enumerate() {
        col.mapv_inplace(|v| if v.is_finite() { v } else { means[j] });
    }
    x
}

fn classifiers(dir: &str, which: &[String]) {
    let (train, valid) = (read(&format!("{dir}/train.csv")), read(&format!("{dir}/valid.csv")));
    let want = |m: &str| which.is_empty() || which.iter().any(|w| w == m);
    if want("logistic") {
        let t = Instant::now();
        let m = ChurnModel::params().fit(&train).unwrap();
        report("engage logistic (BFGS)", t.elapsed().as_secs_f64(), &valid, &m.predict_proba(&valid.x));
    }
    if want("gbm") {
        let t = Instant::now();
        let m = GbmParams::default().fit(&train).unwrap();
        let fit = t.elapsed().as_secs_f64();
        eprintln!("gbm: {} trees kept of {}", m.trees.len(), m.trees_trained);
        report("engage gbm", fit, &valid, &m.predict_proba(&valid.x));
    }
    let means: Vec<f64> = train
        .x
        .columns()
        .into_iter()
        .map(|c| {
            let f: Vec<f64> = c.iter().copied().filter(|v| v.is_finite()).collect();
            if f.is_empty() { 0.0 } else { f.iter().sum::<f64>() / f.len() as f64 }
        })
        .collect();
    let (xt, xv) = (impute(&train.x, &means), impute(&valid.x, &means));
    let yt: Array1<usize> = train.y.iter().map(|&v| v as usize).collect();
    let data = Dataset::new(xt, yt);
    if want("tree") {
        // A single tree predicts a class, not a probability: its AUC is that
        // of a 0/1 score.
        let t = Instant::now();
        let tree = linfa_trees::DecisionTree::params().max_depth(Some(8)).min_weight_leaf(50.0).fit(&data).unwrap();
        let fit = t.elapsed().as_secs_f64();
        let p: Vec<f64> = tree.predict(&xv).iter().map(|&c| c as f64).collect();
        report("linfa-trees decision tree (depth 8)", fit, &valid, &p);
    }
    if want("forest") {
        use rand::SeedableRng;
        let rng = rand::rngs::SmallRng::seed_from_u64(42);
        let t = Instant::now();
        let forest = linfa_ensemble::EnsembleLearnerParams::new_fixed_rng(
            linfa_trees::DecisionTree::params().max_depth(Some(8)).min_weight_leaf(50.0),
            rng,
        )
        .ensemble_size(100)
        .bootstrap_proportion(0.7)
        .feature_proportion(0.3)
        .fit(&data)
        .unwrap();
        let fit = t.elapsed().as_secs_f64();
        // The forest votes; the share of trees voting "churn" is the score.
        let subsets: Vec<Array2<f64>> =
            forest.model_features.iter().map(|f| xv.select(ndarray::Axis(1), f)).collect();
        let votes: Vec<Array1<usize>> = forest.generate_predictions(&subsets).collect();
        let p: Vec<f64> = (0..xv.nrows())
            .map(|i| votes.iter().map(|v| v[i] as f64).sum::<f64>() / votes.len() as f64)
            .collect();
        report("linfa-ensemble random forest (100 trees, depth 8)", fit, &valid, &p);
    }
}

fn summaries(path: &str) -> Vec<Rfm> {
    let mut r = csv::Reader::from_path(path).unwrap();
    r.records()
        .map(|rec| {
            let rec = rec.unwrap();
            let f = |i: usize| rec[i].parse::<f64>().unwrap();
            Rfm { frequency: f(1), recency: f(2), age: f(3), monetary: f(4) }
        })
        .collect()
}

/// Scores `count` customers (the CDNOW summaries repeated) with the models
/// fitted on CDNOW: probability alive, expected purchases in 52 weeks,
/// expected spend per purchase, and CLV over 12 four-week periods at 1 %
/// per period.
fn clvscore(path: &str, count: usize) {
    let cdnow = summaries(path);
    let (bg, gg) = (BgNbd::fit(&cdnow).unwrap().params, GammaGamma::fit(&cdnow).unwrap().params);
    let customers: Vec<Rfm> = cdnow.iter().cycle().take(count).copied().collect();
    let t = Instant::now();
    let mut total = [0.0; 4];
    for c in &customers {
        total[0] += bg.probability_alive(c);
        total[1] += bg.expected_purchases(c, 52.0);
        total[2] += gg.expected_spend(c);
        total[3] += customer_lifetime_value(&bg, &gg, c, 12, 4.0, 0.01);
    }
    let seconds = t.elapsed().as_secs_f64();
    println!(
        "{}",
        serde_json::json!({"side": "engage", "model": "BG/NBD + Gamma-Gamma scoring", "customers": count,
            "seconds": seconds, "mean_p_alive": total[0] / count as f64,
            "mean_expected_purchases_52w": total[1] / count as f64, "mean_clv": total[3] / count as f64})
    );
}

fn bgnbd(path: &str, repeats: usize) {
    let customers = summaries(path);
    let mut best = f64::INFINITY;
    let mut fit = None;
    for _ in 0..repeats {
        let t = Instant::now();
        fit = Some(BgNbd::fit(&customers).unwrap());
        best = best.min(t.elapsed().as_secs_f64());
    }
    let fit = fit.unwrap();
    println!(
        "{}",
        serde_json::json!({"side": "engage", "model": "BG/NBD", "fit_seconds": best, "customers": customers.len(),
            "r": fit.params.r, "alpha": fit.params.alpha, "a": fit.params.a, "b": fit.params.b,
            "log_likelihood": fit.log_likelihood, "iterations": fit.iterations, "converged": fit.converged})
    );
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("classifiers") => classifiers(&args[2], &args[3..]),
        Some("bgnbd") => bgnbd(&args[2], args[3].parse().unwrap()),
        Some("clvscore") => clvscore(&args[2], args[3].parse().unwrap()),
        _ => panic!("usage: engage-bench-models classifiers DIR [MODELS...] | bgnbd CSV REPEATS | clvscore CSV CUSTOMERS"),
    }
}
