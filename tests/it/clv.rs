//! The CLV models against the published CDNOW results (figures and source in
//! tests/fixtures/cdnow/README.md): parameters fitted from the published
//! per-customer summary and from the raw purchases must match the papers
//! within 1%.

use std::path::{Path, PathBuf};

use engage_models::clv::{
    BgNbd, ClvArtifact, Fit, GammaGamma, ParetoNbd, Rfm, customer_lifetime_value, summarize,
};
use engage_models::retention::{ShiftedBetaGeometric, Tenure, cohort_tenures};

use crate::common::{engage, registered, stderr, stdout};

fn cdnow(file: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/cdnow").join(file)
}

/// The published calibration summary: (id, x, t_x, T, zbar).
fn published_summary() -> Vec<(String, Rfm)> {
    let text = std::fs::read_to_string(cdnow("cdnow_customers_summary_with_transactions.csv")).unwrap();
    text.lines()
        .skip(1)
        .map(|line| {
            let f: Vec<&str> = line.split(',').collect();
            let v = |i: usize| f[i].parse::<f64>().unwrap();
            (f[0].to_string(), Rfm { frequency: v(1), recency: v(2), age: v(3), monetary: v(4) })
        })
        .collect()
}

/// The raw purchases summarised by engage up to `end` (YYYYMMDD): weeks,
/// same-day purchases merged.
fn raw_purchases(end: &str) -> Vec<(String, Rfm)> {
    let text = std::fs::read_to_string(cdnow("CDNOW_sample.txt")).unwrap();
    let day = |s: &str| {
        let d = chrono::NaiveDate::parse_from_str(s, "%Y%m%d").unwrap();
        (d - chrono::NaiveDate::from_ymd_opt(1970, 1, 1).unwrap()).num_days()
    };
    let purchases = text.lines().map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        (f[1].trim_start_matches('0').to_string(), day(f[2]), f[4].parse::<f64>().unwrap())
    });
    summarize(purchases, day(end), 7.0)
}

/// `actual` within `tolerance` (relative) of `expected` (a published figure or a count from the data).
fn assert_close(name: &str, actual: f64, expected: f64, tolerance: f64) {
    let off = (actual - expected).abs() / expected.abs();
    eprintln!("{name}: {actual:.4} against {expected}: {:.2}% off", off * 100.0);
    assert!(
        off <= tolerance,
        "{name} = {actual:.4} against {expected}: {:.2}% off (allowed {:.0}%)",
        off * 100.0,
        tolerance * 100.0
    );
}

fn check_bg_nbd(customers: &[Rfm]) -> BgNbd {
    check_bg_nbd_fit(&BgNbd::fit(customers).unwrap())
}

fn check_bg_nbd_fit(fit: &Fit<BgNbd>) -> BgNbd {
    assert!(fit.converged, "{fit:?}");
    assert_eq!(fit.customers, 2357);
    let p = fit.params;
    assert_close("r", p.r, 0.243, 0.01);
    assert_close("alpha", p.alpha, 4.414, 0.01);
    assert_close("a", p.a, 0.793, 0.01);
    assert_close("b", p.b, 2.426, 0.01);
    assert_close("log-likelihood", fit.log_likelihood, -9582.4, 0.001);
    p
}

fn check_gamma_gamma(customers: &[Rfm]) -> GammaGamma {
    check_gamma_gamma_fit(&GammaGamma::fit(customers).unwrap())
}

fn check_gamma_gamma_fit(fit: &Fit<GammaGamma>) -> GammaGamma {
    assert!(fit.converged, "{fit:?}");
    assert_eq!(fit.customers, 946, "customers with a repeat purchase");
    let p = fit.params;
    assert_close("p", p.p, 6.25, 0.01);
    assert_close("q", p.q, 3.74, 0.01);
    assert_close("gamma", p.gamma, 15.44, 0.01);
    p
}

#[test]
fn bg_nbd_and_gamma_gamma_match_the_published_cdnow_fits() {
    let customers: Vec<Rfm> = published_summary().into_iter().map(|(_, c)| c).collect();
    let bg = check_bg_nbd(&customers);
    let gg = check_gamma_gamma(&customers);

    // The paper's tracking check: over the 78 weeks (calibration and
    // holdout), the expected repeat purchases of the cohort follow the
    // actual ones, counted from the raw purchases. Each customer's clock
    // starts at their first purchase: 39 more weeks than `T`.
    let expected: f64 = customers.iter().map(|c| bg.expected_purchases_new(c.age + 39.0)).sum();
    let actual: f64 = raw_purchases("19980630").iter().map(|(_, c)| c.frequency).sum();
    assert_close("expected repeat purchases in 78 weeks", expected, actual, 0.05);

    // A customer with no repeat purchase is alive with certainty in the
    // model; one who bought often early and then stopped, much less so.
    let quiet = Rfm { frequency: 0.0, recency: 0.0, age: 38.86, monetary: 0.0 };
    let lapsed = Rfm { frequency: 7.0, recency: 10.0, age: 38.86, monetary: 30.0 };
    let regular = Rfm { frequency: 7.0, recency: 38.0, age: 38.86, monetary: 30.0 };
    assert_eq!(bg.probability_alive(&quiet), 1.0);
    assert!(bg.probability_alive(&lapsed) < 0.1, "{}", bg.probability_alive(&lapsed));
    assert!(bg.probability_alive(&regular) > 0.9, "{}", bg.probability_alive(&regular));
    assert!(bg.expected_purchases(&regular, 39.0) > 10.0 * bg.expected_purchases(&lapsed, 39.0));

    // Spend shrinks toward the population mean p gamma / (q - 1).
    let mean = gg.p * gg.gamma / (gg.q - 1.0);
    assert!((gg.expected_spend(&quiet) - mean).abs() < 1e-9);
    let e = gg.expected_spend(&regular);
    assert!(e > mean.min(30.0) && e < mean.max(30.0), "{e} between {mean} and 30");

    // Lifetime value: more periods add value, discounting removes some.
    let clv = |periods, rate| customer_lifetime_value(&bg, &gg, &regular, periods, 4.0, rate);
    assert!(clv(12, 0.0) > clv(6, 0.0) && clv(12, 0.01) < clv(12, 0.0), "{} {}", clv(12, 0.0), clv(12, 0.01));
    let undiscounted = bg.expected_purchases(&regular, 48.0) * e;
    assert!((clv(12, 0.0) - undiscounted).abs() < 1e-6 * undiscounted);
}

#[test]
fn raw_cdnow_purchases_summarise_to_the_published_summary_and_fit_the_same() {
    let raw = raw_purchases("19970930");
    let published = published_summary();
    assert_eq!(raw.len(), published.len());
    let by_id: std::collections::HashMap<_, _> = published.into_iter().collect();
    for (id, c) in &raw {
        let p = by_id[id];
        // The published summary is rounded to 2 decimals.
        assert_eq!(c.frequency, p.frequency, "customer {id}");
        for (name, a, b) in
            [("t_x", c.recency, p.recency), ("T", c.age, p.age), ("zbar", c.monetary, p.monetary)]
        {
            assert!(
                (a - b).abs() <= 0.0051,
                "customer {id}: {name} {a} from the raw purchases, {b} published"
            );
        }
    }
    let customers: Vec<Rfm> = raw.into_iter().map(|(_, c)| c).collect();
    check_bg_nbd(&customers);
    check_gamma_gamma(&customers);
}

#[test]
fn fits_refuse_inconsistent_summaries() {
    let bad = Rfm { frequency: 2.0, recency: 40.0, age: 30.0, monetary: 10.0 };
    let err = BgNbd::fit(&[bad]).unwrap_err().to_string();
    assert!(err.contains("recency <= age"), "{err}");
    // A customer whose first purchase is on the last observed day has age 0.
    let arrived = Rfm { frequency: 0.0, recency: 0.0, age: 0.0, monetary: 0.0 };
    let repeat = Rfm { frequency: 2.0, recency: 5.0, age: 30.0, monetary: 10.0 };
    assert!(BgNbd::fit(&[arrived, repeat]).is_ok());
    let no_repeat = Rfm { frequency: 0.0, recency: 0.0, age: 30.0, monetary: 0.0 };
    assert!(BgNbd::fit(&[no_repeat]).unwrap_err().to_string().contains("no customer made a repeat purchase"));
    let free = Rfm { frequency: 1.0, recency: 3.0, age: 30.0, monetary: 0.0 };
    assert!(GammaGamma::fit(&[free]).unwrap_err().to_string().contains("expected a positive amount"));
}

/// The raw CDNOW purchases as engage input tables (customers.csv,
/// transactions.csv), trained with `engage train clv`: same parameters.
#[test]
fn engage_train_clv_fits_cdnow_through_the_input_contract() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let raw = std::fs::read_to_string(cdnow("CDNOW_sample.txt")).unwrap();
    let mut customers = std::collections::BTreeSet::new();
    let mut tx = String::from("transaction_id,ts,amount,channel,customer_id,email,loyalty_id\n");
    for (i, line) in raw.lines().enumerate() {
        let f: Vec<&str> = line.split_whitespace().collect();
        let (id, d) = (f[1].trim_start_matches('0'), f[2]);
        customers.insert(id.to_string());
        tx += &format!("c{i},{}-{}-{}T00:00:00Z,{},store,{id},,\n", &d[..4], &d[4..6], &d[6..], f[4]);
    }
    std::fs::write(data.join("transactions.csv"), tx).unwrap();
    let mut crm = String::from(
        "customer_id,signup_date,email,phone,loyalty_id,region,consent_email,consent_sms,consent_call\n",
    );
    for id in customers {
        crm += &format!("{id},,,,,,,,\n");
    }
    std::fs::write(data.join("customers.csv"), crm).unwrap();

    let models = tmp.path().join("models");
    let o = engage(&[
        "train",
        "clv",
        "--data",
        data.to_str().unwrap(),
        "--as-of",
        "1997-10-01",
        "--time-unit",
        "weeks",
        "--pareto-nbd",
        "--models",
        models.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = stdout(&o);
    assert!(text.contains("BG/NBD (2357 customers, time in weeks)") && text.contains("converged"), "{text}");
    let dir = registered(&text);
    let dir = dir.as_str();
    let artifact = ClvArtifact::load(&Path::new(dir).join("model.json")).unwrap();
    // The registry lists it as the promoted clv model, converged.
    let listed = stdout(&engage(&["models", "list", "--models", models.to_str().unwrap()]));
    let row =
        listed.lines().find(|l| l.contains(&artifact.model_version)).unwrap_or_else(|| panic!("{listed}"));
    assert!(
        row.starts_with('*') && row.contains("bg_nbd+gamma_gamma") && row.ends_with("converged"),
        "{row}"
    );
    assert_eq!((artifact.as_of.as_str(), artifact.time_unit.as_str()), ("1997-10-01", "weeks"));
    assert!(artifact.model_version.starts_with("clv-1997-10-01-"), "{}", artifact.model_version);
    check_bg_nbd_fit(&artifact.bg_nbd);
    check_gamma_gamma_fit(&artifact.gamma_gamma);
    // Pareto/NBD on request, at the published fit.
    let pareto = artifact.pareto_nbd.as_ref().expect("--pareto-nbd fits it");
    assert!(pareto.converged && text.contains("Pareto/NBD: r 0.55"), "{text}");
    for (name, actual, published) in [
        ("Pareto/NBD r", pareto.params.r, 0.55),
        ("Pareto/NBD alpha", pareto.params.alpha, 10.58),
        ("Pareto/NBD s", pareto.params.s, 0.61),
        ("Pareto/NBD beta", pareto.params.beta, 11.67),
    ] {
        assert_close(name, actual, published, 0.01);
    }

    // Diagnostics: the tracking curve ends at the paper's 78-week check
    // (the same sum as `bg_nbd_and_gamma_gamma_match_the_published_cdnow_fits`),
    // counted from the raw purchases; the holdout is the 39 weeks after the cutoff.
    let metrics: serde_json::Value =
        serde_json::from_slice(&std::fs::read(Path::new(dir).join("metrics.json")).unwrap()).unwrap();
    let d: engage_models::clv_diagnostics::ClvDiagnostics =
        serde_json::from_value(metrics["diagnostics"].clone()).unwrap();
    let bg = artifact.bg_nbd.params;
    let summary: Vec<Rfm> = published_summary().into_iter().map(|(_, c)| c).collect();
    let expected_78: f64 = summary.iter().map(|c| bg.expected_purchases_new(c.age + 39.0)).sum();
    let actual_78: f64 = raw_purchases("19980630").iter().map(|(_, c)| c.frequency).sum();
    let actual_39: f64 = raw_purchases("19970930").iter().map(|(_, c)| c.frequency).sum();
    let last = d.tracking.last().unwrap();
    assert_eq!(last.actual, actual_78);
    assert_close("tracking: expected at week 78", last.expected, expected_78, 0.002);
    let at_cutoff = d.tracking.iter().find(|p| p.t == d.calibration_end).unwrap();
    assert_eq!(at_cutoff.actual, actual_39);
    let h = d.holdout.as_ref().expect("the data runs to 1998-06-30");
    assert_close("holdout length (weeks)", h.length, 39.0, 0.001);
    assert_eq!(h.actual, actual_78 - actual_39);
    // BG/NBD under-forecasts CDNOW's holdout by 12 %: the Python `lifetimes`
    // 0.11.3 package gives the same conditional expectation on the same data
    // (calibration_and_holdout_data with freq='D', freq_multiplier=7, then
    // conditional_expected_number_of_purchases_up_to_time: 1653.409 of 1882).
    assert_eq!(h.actual, 1882.0);
    assert_close("holdout: expected (lifetimes: 1653.409)", h.expected, 1653.409, 0.0005);
    // Those who bought more in calibration buy more in the holdout, and the model says so.
    let b = &h.by_frequency;
    assert!(b[0].actual < b[3].actual && b[0].expected < b[3].expected, "{b:?}");
    assert_eq!(b.iter().map(|b| b.customers).sum::<usize>(), 2357);
    let html = std::fs::read_to_string(Path::new(dir).join("report.html")).unwrap();
    for needle in
        ["Tracking: cumulative repeat purchases", "by calibration frequency", "P(alive) at age", "r 0.24"]
    {
        assert!(html.contains(needle), "report lacks {needle}");
    }
    assert!(stdout(&o).contains("holdout (39.0 weeks)"), "{}", stdout(&o));
    let p = d.pareto_nbd.as_ref().and_then(|p| p.holdout.as_ref()).expect("Pareto/NBD holdout");
    println!("CDNOW holdout: Pareto/NBD expected {:.1} of {}", p.expected, p.actual);
    assert_eq!(p.actual, h.actual);
    assert!(
        html.contains("<tr><th>Pareto/NBD</th>") && html.contains("Pareto/NBD expected"),
        "report lacks Pareto/NBD"
    );

    // Trained at the end of the data: no holdout, so no holdout check and
    // no supervised spend model, and the report says so.
    let o = engage(&[
        "train",
        "clv",
        "--data",
        data.to_str().unwrap(),
        "--as-of",
        "1998-07-01",
        "--models",
        models.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(!stdout(&o).contains("holdout ("), "{}", stdout(&o));
    let dir = registered(&stdout(&o));
    let artifact = ClvArtifact::load(&Path::new(&dir).join("model.json")).unwrap();
    assert!(artifact.spend_model.is_none() && artifact.bg_nbd.converged);
    let html = std::fs::read_to_string(Path::new(&dir).join("report.html")).unwrap();
    assert!(html.contains("no holdout to check against") && html.contains("Tracking"), "{html}");
}

/// Pareto/NBD on the same CDNOW summary: the figures the BG/NBD paper
/// reports for it.
#[test]
fn pareto_nbd_matches_the_published_cdnow_fit() {
    let customers: Vec<Rfm> = published_summary().into_iter().map(|(_, c)| c).collect();
    let fit = ParetoNbd::fit(&customers).unwrap();
    assert!(fit.converged, "{fit:?}");
    let p = fit.params;
    assert_close("Pareto/NBD r", p.r, 0.55, 0.01);
    assert_close("Pareto/NBD alpha", p.alpha, 10.58, 0.01);
    assert_close("Pareto/NBD s", p.s, 0.61, 0.01);
    assert_close("Pareto/NBD beta", p.beta, 11.67, 0.01);
    eprintln!("Pareto/NBD log-likelihood {:.2}", fit.log_likelihood);
    let regular = Rfm { frequency: 7.0, recency: 38.0, age: 38.86, monetary: 30.0 };
    let lapsed = Rfm { frequency: 7.0, recency: 10.0, age: 38.86, monetary: 30.0 };
    assert!(p.probability_alive(&regular) > 0.9 && p.probability_alive(&lapsed) < 0.2);
    assert!(p.expected_purchases(&regular, 39.0) > 5.0 * p.expected_purchases(&lapsed, 39.0));
    // Over the 78 weeks the cohort's expected repeat purchases follow the
    // actual ones about as well as BG/NBD's.
    let expected: f64 = customers.iter().map(|c| p.expected_purchases_new(c.age + 39.0)).sum();
    let actual: f64 = raw_purchases("19980630").iter().map(|(_, c)| c.frequency).sum();
    assert_close("Pareto/NBD expected repeat purchases in 78 weeks", expected, actual, 0.05);
}

/// sBG on a simulated cohort: 20,000 customers with churn probabilities
/// drawn from Beta(0.7, 1.2), observed for 7 periods; the fit recovers the
/// parameters.
#[test]
fn shifted_beta_geometric_recovers_simulated_parameters() {
    use rand::{Rng, SeedableRng};
    use rand_distr::{Beta, Distribution};
    let (alpha, beta) = (0.7, 1.2);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
    let theta = Beta::new(alpha, beta).unwrap();
    let customers: Vec<Tenure> = (0..20_000)
        .map(|_| {
            let p: f64 = theta.sample(&mut rng);
            (1..=7)
                .find(|_| rng.r#gen::<f64>() < p)
                .map_or(Tenure { periods: 7, churned: false }, |t| Tenure { periods: t, churned: true })
        })
        .collect();
    let fit = ShiftedBetaGeometric::fit(&customers).unwrap();
    assert!(fit.converged, "{fit:?}");
    assert_close("sBG alpha", fit.params.alpha, alpha, 0.05);
    assert_close("sBG beta", fit.params.beta, beta, 0.05);
    // Retention rises with tenure: the heterogeneity the model exists for.
    let r = &fit.params;
    assert!(r.retention_rate(1) < r.retention_rate(2) && r.retention_rate(2) < r.retention_rate(7));
    assert!((r.survival(1) - r.retention_rate(1)).abs() < 1e-12);
}

/// sBG on the published retention data of Fader & Hardie (2007), "How to
/// Project Customer Retention", Journal of Interactive Marketing 21(1):
/// customers of two segments still active after each of 7 years, and the
/// parameters the paper fits to them.
#[test]
fn shifted_beta_geometric_matches_the_published_fits() {
    for (name, alive, a, b) in [
        ("regular", vec![1000, 631, 468, 382, 326, 289, 262, 241], 0.704, 1.182),
        ("high end", vec![1000, 869, 743, 653, 593, 551, 517, 491], 0.668, 3.806),
    ] {
        let fit = ShiftedBetaGeometric::fit(&cohort_tenures(&alive)).unwrap();
        assert_close(&format!("{name} alpha"), fit.params.alpha, a, 0.01);
        assert_close(&format!("{name} beta"), fit.params.beta, b, 0.01);
    }
}

/// `engage train retention` on the paper's regular segment, once as survivor
/// counts and once as a subscriber file: the published parameters, the
/// observed survival beside the model's, the JSON output; bad files are
/// refused with the column and row, and nothing is written.
#[test]
fn retention_command_fits_survivors_and_subscriber_files() {
    let tmp = tempfile::tempdir().unwrap();
    let alive: [u64; 8] = [1000, 631, 468, 382, 326, 289, 262, 241];
    let counts: Vec<String> = alive.iter().map(u64::to_string).collect();
    let json_out = tmp.path().join("survivors.json");
    let out = engage(&[
        "train",
        "retention",
        "--survivors",
        &counts.join(","),
        "--project",
        "10",
        "--out",
        json_out.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!stdout(&out).contains("NOT converged"), "{}", stdout(&out));
    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(&json_out).unwrap()).unwrap();
    let alpha = json["fit"]["params"]["alpha"].as_f64().unwrap();
    let beta = json["fit"]["params"]["beta"].as_f64().unwrap();
    assert_close("alpha (command)", alpha, 0.704, 0.01);
    assert_close("beta (command)", beta, 1.182, 0.01);
    assert_eq!(json["fit"]["converged"], true);
    let projection = json["projection"].as_array().unwrap();
    assert_eq!(projection.len(), 10);
    for (k, row) in projection.iter().enumerate() {
        let model = ShiftedBetaGeometric { alpha, beta };
        assert!((row["survival"].as_f64().unwrap() - model.survival(k as u32 + 1)).abs() < 1e-12);
        match alive.get(k + 1) {
            Some(&a) => {
                let observed = row["observed_survival"].as_f64().unwrap();
                assert!((observed - a as f64 / 1000.0).abs() < 1e-12, "period {}: {observed}", k + 1);
                // The paper's figure: the model tracks the observed curve.
                assert!((row["survival"].as_f64().unwrap() - a as f64 / 1000.0).abs() < 0.02, "{row}");
            }
            None => assert!(row["observed_survival"].is_null(), "{row}"),
        }
    }

    // The same cohort as one row per subscriber, with its own column names.
    let csv = tmp.path().join("subscribers.csv");
    let mut text = String::from("subscriber,tenure,left\n");
    for (i, t) in cohort_tenures(&alive).iter().enumerate() {
        text.push_str(&format!("s{i},{},{}\n", t.periods, t.churned));
    }
    std::fs::write(&csv, text).unwrap();
    let args = |csv: &Path, out: &Path| {
        engage(&[
            "train",
            "retention",
            "--tenures",
            csv.to_str().unwrap(),
            "--periods-column",
            "tenure",
            "--churned-column",
            "left",
            "--out",
            out.to_str().unwrap(),
        ])
    };
    let file_out = tmp.path().join("file.json");
    let out = args(&csv, &file_out);
    assert!(out.status.success(), "{}", stderr(&out));
    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(&file_out).unwrap()).unwrap();
    assert_eq!(json["fit"]["customers"].as_u64(), Some(1000));
    assert_close("alpha (file)", json["fit"]["params"]["alpha"].as_f64().unwrap(), alpha, 1e-6);
    assert_close("beta (file)", json["fit"]["params"]["beta"].as_f64().unwrap(), beta, 1e-6);

    let bad = tmp.path().join("bad.csv");
    let bad_out = tmp.path().join("bad.json");
    std::fs::write(&bad, "subscriber,tenure,left\na,2,true\nb,1,false\nc,0,true\n").unwrap();
    let out = args(&bad, &bad_out);
    assert!(!out.status.success());
    let said = stderr(&out);
    assert!(
        said.contains("`tenure`") && said.contains("row 2") && said.contains("from 1 to 10000"),
        "{said}"
    );
    std::fs::write(&bad, "subscriber,tenure,left\n").unwrap();
    let said = stderr(&args(&bad, &bad_out));
    assert!(said.contains("has no rows"), "{said}");
    std::fs::write(&bad, "subscriber,tenure,gone\na,2,true\n").unwrap();
    let said = stderr(&args(&bad, &bad_out));
    assert!(said.contains("`left`") && said.contains("subscriber, tenure, gone"), "{said}");
    let out = engage(&["train", "retention", "--survivors", "1000,1200"]);
    assert!(!out.status.success() && stderr(&out).contains("never rising"), "{}", stderr(&out));
    assert!(!bad_out.exists());
}
