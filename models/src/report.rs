//! The training report: one self-contained HTML file with the validation
//! metrics and charts drawn as inline SVG (no scripts, no external files),
//! so a data scientist opens it in any browser, or attaches it to a ticket.

use std::fmt::Write;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::chart::{STYLE, Series, bars, chart, esc, heatmap, line_chart, paired_bars};
use crate::clv::{BgNbd, ClvArtifact, Fit, GammaGamma, ParetoNbd};
use crate::clv_diagnostics::ClvDiagnostics;
use crate::metrics::{Curves, Metrics};
use crate::uplift::{ArmCurves, UpliftArtifact, UpliftMetrics};
use crate::{ClassifierConfig, ModelArtifact, ModelError};

/// The metrics file in a model's registry directory.
pub const METRICS_FILE: &str = "metrics.json";
/// The HTML report in a model's registry directory.
pub const REPORT_FILE: &str = "report.html";

/// Writes `<dir>/metrics.json` (metrics, curves, split) and
/// `<dir>/report.html`, atomically. Returns both paths.
pub fn write(dir: &Path, artifact: &ModelArtifact, curves: &Curves) -> Result<Vec<PathBuf>, ModelError> {
    let split = artifact.split.as_str();
    #[derive(Serialize)]
    struct MetricsFile<'a> {
        model_version: &'a str,
        split: &'a str,
        metrics: &'a Metrics,
        curves: &'a Curves,
    }
    let file =
        MetricsFile { model_version: &artifact.model_version, split, metrics: &artifact.metrics, curves };
    write_files(dir, &file, &html(artifact, curves))
}

/// `<dir>/metrics.json` and `<dir>/report.html`, each written atomically.
fn write_files(dir: &Path, metrics: &impl Serialize, report: &str) -> Result<Vec<PathBuf>, ModelError> {
    let (metrics_path, report_path) = (dir.join(METRICS_FILE), dir.join(REPORT_FILE));
    crate::artifact::save_json(metrics, &metrics_path)?;
    crate::snapshot::write_atomic(&report_path, report.as_bytes())?;
    Ok(vec![metrics_path, report_path])
}

/// The campaigns report's files inside its output directory.
pub const CAMPAIGNS_JSON: &str = "campaigns.json";
pub const CAMPAIGNS_HTML: &str = "campaigns.html";

/// Writes `<dir>/campaigns.json` and `<dir>/campaigns.html` (results as of
/// `as_of`), atomically. Returns both paths.
pub fn write_campaigns(
    dir: &Path,
    results: &[crate::lift::CampaignResult],
    holdout: Option<&crate::lift::HoldoutResult>,
    as_of: &str,
) -> Result<Vec<PathBuf>, ModelError> {
    std::fs::create_dir_all(dir)
        .map_err(|source| ModelError::Io { path: dir.display().to_string(), source })?;
    let (json, html) = (dir.join(CAMPAIGNS_JSON), dir.join(CAMPAIGNS_HTML));
    #[derive(Serialize)]
    struct File<'a> {
        as_of: &'a str,
        campaigns: &'a [crate::lift::CampaignResult],
        universal_holdout: Option<&'a crate::lift::HoldoutResult>,
    }
    crate::artifact::save_json(&File { as_of, campaigns: results, universal_holdout: holdout }, &json)?;
    crate::snapshot::write_atomic(&html, campaigns_html(results, holdout, as_of).as_bytes())?;
    Ok(vec![json, html])
}

/// The campaigns report: per campaign and stage, rates, lift with its 95 %
/// interval, increments and cost; charts of treatment against control.
pub fn campaigns_html(
    results: &[crate::lift::CampaignResult],
    holdout: Option<&crate::lift::HoldoutResult>,
    as_of: &str,
) -> String {
    let pct = |v: f64| if v.is_finite() { format!("{:.2}%", v * 100.0) } else { "n/a".into() };
    let pts = |v: f64| if v.is_finite() { format!("{:+.2}", v * 100.0) } else { "n/a".into() };
    let num = |v: f64| if v.is_finite() { format!("{v:.1}") } else { "n/a".into() };
    let mut out = format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>Campaign results</title>\n\
         <style>{STYLE}</style></head><body>\n<h1>Campaign results as of {}</h1>\n\
         <p>Lift is the treatment group's rate minus the control group's, in points, with its 95 % interval; \
         a control customer received nothing, so only the stages both groups can reach (a purchase) compare like \
         with like. Incremental responders = lift × treated customers.</p>\n<table>\n\
         <tr><th>campaign</th><th>stage</th><th>treated</th><th>rate</th><th>control</th><th>rate</th>\
         <th>lift (pts)</th><th>95 % interval</th><th>relative</th><th>incremental</th></tr>\n",
        esc(as_of)
    );
    for r in results {
        for s in &r.stages {
            let l = &s.lift;
            let _ = writeln!(
                out,
                "<tr><th>{}</th><th>{}</th><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>\
                 <td>{} to {}</td><td>{}</td><td>{}</td></tr>",
                esc(&r.campaign_id),
                esc(&s.stage),
                s.treatment.customers,
                pct(s.treatment.rate()),
                s.control.customers,
                pct(s.control.rate()),
                pts(l.absolute),
                pts(l.absolute_low),
                pts(l.absolute_high),
                pct(l.relative),
                num(l.incremental_responders)
            );
        }
        let _ = writeln!(
            out,
            "<tr><td colspan=\"10\" style=\"text-align:left\">incremental revenue {}; cost {}; cost per \
             incremental response {}</td></tr>",
            num(r.incremental_revenue),
            r.cost.map_or("n/a".into(), |c| format!("{c:.2}")),
            r.cost_per_incremental_response.map_or("n/a".into(), |c| format!("{c:.2}"))
        );
    }
    out += "</table>\n";
    if let Some(h) = holdout {
        let _ = writeln!(
            out,
            "<h2>Universal holdout</h2>\n<p>{} customers held out of every campaign ({} of all) against {} \
             marketed, purchases from {} to before {}: buying rate {} held out, {} marketed, lift {} points \
             (95 % interval {} to {}); incremental revenue {}.</p>",
            h.holdout.customers,
            pct(h.share),
            h.marketed.customers,
            esc(&h.since),
            esc(as_of),
            pct(h.holdout.rate()),
            pct(h.marketed.rate()),
            pts(h.lift.absolute),
            pts(h.lift.absolute_low),
            pts(h.lift.absolute_high),
            num(h.incremental_revenue)
        );
    }
    out += "<div class=\"charts\">\n";
    let mut stages: Vec<&str> = Vec::new();
    for s in results.iter().flat_map(|r| &r.stages) {
        if !stages.contains(&s.stage.as_str()) {
            stages.push(&s.stage);
        }
    }
    for stage in stages {
        let groups: Vec<(String, f64, f64)> = results
            .iter()
            .filter_map(|r| r.stages.iter().find(|s| s.stage == *stage).map(|s| (r, s)))
            .filter(|(_, s)| s.control.customers > 0)
            .map(|(r, s)| (r.campaign_id.clone(), s.treatment.rate(), s.control.rate()))
            .collect();
        if !groups.is_empty() {
            out += &paired_bars(&format!("Rate: {stage}"), "campaign", ("treatment", "control"), &groups);
        }
    }
    out += "</div>\n</body></html>\n";
    out
}

/// The report of `artifact` with its validation `curves`.
pub fn html(artifact: &ModelArtifact, curves: &Curves) -> String {
    let split = artifact.split.as_str();
    let m = &artifact.metrics;
    let mut out = page_head(
        &format!("{} model {}", artifact.task, artifact.model_version),
        &artifact.trained_at,
        &artifact.window.as_of,
        split,
        &artifact.params,
        &artifact.warnings(),
    );
    let _ = write!(
        out,
        "<h2>Validation</h2>\n<table>\
         <tr><th>rows</th><td>{}</td></tr><tr><th>positive rate</th><td>{:.3}</td></tr>\
         <tr><th>ROC AUC</th><td>{:.3}</td></tr><tr><th>PR AUC (chance = positive rate)</th><td>{:.3}</td></tr>\
         <tr><th>log loss</th><td>{:.4}</td></tr><tr><th>Brier score</th><td>{:.4}</td></tr>\
         <tr><th>top-decile lift</th><td>{:.2}</td></tr></table>\n<div class=\"charts\">\n",
        m.rows, m.positive_rate, m.roc_auc, m.pr_auc, m.log_loss, m.brier, m.top_decile_lift
    );
    out += &line_chart(
        &format!("ROC curve (AUC {:.3})", m.roc_auc),
        "false positive rate",
        "true positive rate",
        &curves.roc,
    );
    out += &line_chart(
        "Cumulative gains",
        "share of customers contacted, by score",
        "share of positives reached",
        &curves.gains,
    );
    let calibration: Vec<[f64; 2]> = curves.calibration.iter().map(|b| [b.predicted, b.observed]).collect();
    out += &line_chart(
        "Calibration (10 equal-count bins)",
        "mean predicted probability",
        "observed rate",
        &calibration,
    );
    out += &bars(
        "Lift by score decile (highest first)",
        &curves
            .decile_lift
            .iter()
            .enumerate()
            .map(|(i, l)| (format!("decile {}", i + 1), *l))
            .collect::<Vec<_>>(),
    );
    let (title, mut weights) = artifact.model.importance();
    weights.sort_by(|a, b| b.1.abs().total_cmp(&a.1.abs()));
    weights.truncate(20);
    out += &bars(title, &weights);
    out += "</div>\n</body></html>\n";
    out
}

/// The page's head, the lines saying what was trained on what, and each of
/// `warnings` (a fit that stopped before converging) where it is seen first.
fn page_head(
    title: &str,
    trained_at: &str,
    as_of: &str,
    split: &str,
    params: &ClassifierConfig,
    warnings: &[String],
) -> String {
    let mut out = format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{t}</title>\n<style>{STYLE}</style>\
         </head><body>\n<h1>{t}</h1>\n\
         <p>Trained {trained} by engage {v}; cutoff {as_of}; {split}.</p>\n\
         <p>Model <code>{kind}</code>, configuration <code>{config}</code>.</p>\n",
        t = esc(title),
        kind = esc(params.kind()),
        config = esc(&serde_json::to_string(params).expect("config serialises")),
        trained = esc(trained_at),
        v = esc(env!("CARGO_PKG_VERSION")),
        as_of = esc(as_of),
        split = esc(split),
    );
    for w in warnings {
        let _ = writeln!(out, "<p class=\"warning\">{}</p>", esc(w));
    }
    out
}

/// Writes `<dir>/metrics.json` (metrics, curves, split) and
/// `<dir>/report.html` of an uplift model, atomically.
pub fn write_uplift(
    dir: &Path,
    artifact: &UpliftArtifact,
    curves: &[ArmCurves],
) -> Result<Vec<PathBuf>, ModelError> {
    #[derive(Serialize)]
    struct MetricsFile<'a> {
        model_version: &'a str,
        split: &'a str,
        metrics: &'a UpliftMetrics,
        curves: &'a [ArmCurves],
    }
    let file = MetricsFile {
        model_version: &artifact.model_version,
        split: &artifact.split,
        metrics: &artifact.metrics,
        curves,
    };
    write_files(dir, &file, &uplift_html(artifact, curves))
}

/// The report of an uplift model: per treatment the response rates, the
/// Qini curve against random and perfect targeting, and observed against
/// predicted uplift by decile.
pub fn uplift_html(artifact: &UpliftArtifact, curves: &[ArmCurves]) -> String {
    let m = &artifact.metrics;
    let mut out = page_head(
        &format!("uplift model {}", artifact.model_version),
        &artifact.trained_at,
        &artifact.window.as_of,
        &artifact.split,
        &artifact.params,
        &artifact.model.convergence_warnings(),
    );
    let pct = |v: f64| format!("{:.1} %", v * 100.0);
    let pp = |v: Option<f64>| v.map_or("n/a".to_string(), |v| format!("{:+.1} pts", v * 100.0));
    let _ = write!(
        out,
        "<p>One response model per arm (the two-model approach); a customer's uplift for a treatment is its \
         predicted response rate with that treatment minus without any. Rank customers by uplift to contact \
         those the contact changes, not those who would respond anyway.</p>\n\
         <h2>Validation</h2>\n<p>{} rows; Qini coefficient {:.3} (weighted over treatments; 0 = random \
         targeting, 1 = perfect); control model ROC AUC {:.3}.</p>\n<table><tr><th>treatment</th>\
         <th>treated rows</th><th>control rows</th><th>treated rate</th><th>control rate</th>\
         <th>observed uplift</th><th>predicted uplift</th><th>Qini</th>",
        m.rows, m.qini, m.control_response_auc
    );
    for share in crate::uplift::TOP_SHARES {
        let _ = write!(out, "<th>uplift, top {:.0} %</th>", share * 100.0);
    }
    out += "<th>response ROC AUC</th></tr>\n";
    for a in &m.arms {
        let _ = write!(
            out,
            "<tr><th>{}</th><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{:.3}</td>",
            esc(&a.treatment),
            a.treated_rows,
            a.control_rows,
            pct(a.treated_rate),
            pct(a.control_rate),
            pp(Some(a.observed_uplift)),
            pp(Some(a.predicted_uplift)),
            a.qini
        );
        for (_, u) in &a.uplift_at {
            let _ = write!(out, "<td>{}</td>", pp(*u));
        }
        let _ = writeln!(out, "<td>{:.3}</td></tr>", a.response_auc);
    }
    out += "</table>\n";
    if !m.unvalidated.is_empty() {
        let _ = writeln!(
            out,
            "<p>Trained but not validated (no validation row): {}.</p>",
            esc(&m.unvalidated.join(", "))
        );
    }
    if !m.dropped.is_empty() {
        let dropped: Vec<String> =
            m.dropped.iter().map(|d| format!("{} ({} rows)", d.treatment, d.treated_rows)).collect();
        let _ = writeln!(
            out,
            "<p>Left out, too few treated rows for a model of their own (fewer than {}): {}.</p>",
            crate::uplift::MIN_ARM_ROWS,
            esc(&dropped.join(", "))
        );
    }
    for c in curves {
        let _ = write!(out, "<h3>{}</h3>\n<div class=\"charts\">\n", esc(&c.treatment));
        let end = c.qini.last().map_or(0.0, |p| p[1]);
        let random = [[0.0, 0.0], [1.0, end]];
        let ys = c.qini.iter().chain(&c.perfect).map(|p| p[1]);
        let (lo, hi) = ys.fold((0.0f64, 0.0f64), |(lo, hi), y| (lo.min(y), hi.max(y)));
        out += &chart(
            &format!("Qini curve: {}", c.treatment),
            "share of customers targeted, by predicted uplift",
            "incremental responders per customer",
            (0.0, 1.0),
            (lo, hi),
            &[
                Series { label: Some("perfect"), color: "#7aa974", dashed: true, points: &c.perfect },
                Series { label: Some("random"), color: "#999", dashed: true, points: &random },
                Series { label: Some("model"), color: "#1f6fb4", dashed: false, points: &c.qini },
            ],
        );
        let bins: Vec<(String, f64)> = c
            .deciles
            .iter()
            .enumerate()
            .map(|(i, b)| {
                (
                    format!("decile {} (predicted {:+.1})", i + 1, b.predicted * 100.0),
                    b.observed.unwrap_or(0.0) * 100.0,
                )
            })
            .collect();
        out += &bars("Observed uplift by predicted-uplift decile (pts)", &bins);
        out += "</div>\n";
    }
    out += "</body></html>\n";
    out
}

/// Writes `<dir>/metrics.json` (fits and diagnostics) and
/// `<dir>/report.html` of a CLV model, atomically.
pub fn write_clv(
    dir: &Path,
    artifact: &ClvArtifact,
    diagnostics: &ClvDiagnostics,
) -> Result<Vec<PathBuf>, ModelError> {
    #[derive(Serialize)]
    struct MetricsFile<'a> {
        model_version: &'a str,
        bg_nbd: &'a Fit<BgNbd>,
        gamma_gamma: &'a Fit<GammaGamma>,
        pareto_nbd: &'a Option<Fit<ParetoNbd>>,
        diagnostics: &'a ClvDiagnostics,
    }
    let file = MetricsFile {
        model_version: &artifact.model_version,
        bg_nbd: &artifact.bg_nbd,
        gamma_gamma: &artifact.gamma_gamma,
        pareto_nbd: &artifact.pareto_nbd,
        diagnostics,
    };
    write_files(dir, &file, &clv_html(artifact, diagnostics))
}

/// The report of a CLV model: the fitted parameters, the tracking plot of
/// cumulative repeat purchases through calibration and holdout, holdout
/// purchases by calibration frequency, and the probability-alive matrix.
pub fn clv_html(artifact: &ClvArtifact, d: &ClvDiagnostics) -> String {
    let (bg, gg) = (&artifact.bg_nbd, &artifact.gamma_gamma);
    let pareto = d.pareto_nbd.as_deref();
    let unit = &artifact.time_unit;
    let status = |c: bool| if c { "converged" } else { "NOT converged" };
    let mut out = format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{t}</title>\n<style>{STYLE}</style>\
         </head><body>\n<h1>{t}</h1>\n<p>Trained {trained} by engage {v}; purchases before {as_of}; time in {unit}.</p>\n",
        t = esc(&format!("CLV model {}", artifact.model_version)),
        trained = esc(&artifact.trained_at),
        v = esc(&artifact.engage_version),
        as_of = esc(&artifact.as_of),
        unit = esc(unit),
    );
    let _ = write!(
        out,
        "<h2>Fits</h2>\n<table><tr><th>model</th><th>customers</th><th>parameters</th><th>log-likelihood</th>\
         <th>iterations</th><th>status</th></tr>\n\
         <tr><th>BG/NBD</th><td>{}</td><td>r {:.4}, alpha {:.4}, a {:.4}, b {:.4}</td><td>{:.2}</td><td>{}</td><td>{}</td></tr>\n\
         <tr><th>Gamma-Gamma</th><td>{}</td><td>p {:.4}, q {:.4}, gamma {:.4}</td><td>{:.2}</td><td>{}</td><td>{}</td></tr>\n",
        bg.customers,
        bg.params.r,
        bg.params.alpha,
        bg.params.a,
        bg.params.b,
        bg.log_likelihood,
        bg.iterations,
        status(bg.converged),
        gg.customers,
        gg.params.p,
        gg.params.q,
        gg.params.gamma,
        gg.log_likelihood,
        gg.iterations,
        status(gg.converged),
    );
    if let Some(p) = &artifact.pareto_nbd {
        let _ = writeln!(
            out,
            "<tr><th>Pareto/NBD</th><td>{}</td><td>r {:.4}, alpha {:.4}, s {:.4}, beta {:.4}</td><td>{:.2}</td><td>{}</td><td>{}</td></tr>",
            p.customers,
            p.params.r,
            p.params.alpha,
            p.params.s,
            p.params.beta,
            p.log_likelihood,
            p.iterations,
            status(p.converged)
        );
    }
    out += "</table>\n";
    match &d.holdout {
        Some(h) => {
            let _ = write!(
                out,
                "<h2>Calibration and holdout</h2>\n<p>Holdout of {:.1} {unit} after the cutoff: the cohort made {:.0} \
                 repeat purchases; the model, from each customer's calibration history, expected {:.0} ({:+.1} %).</p>\n",
                h.length,
                h.actual,
                h.expected,
                (h.expected / h.actual.max(1e-12) - 1.0) * 100.0
            );
            if let Some(p) = pareto.and_then(|p| p.holdout.as_ref()) {
                let _ = writeln!(
                    out,
                    "<p>Pareto/NBD expected {:.0} ({:+.1} %).</p>",
                    p.expected,
                    (p.expected / h.actual.max(1e-12) - 1.0) * 100.0
                );
            }
        }
        None => {
            out += "<h2>Calibration</h2>\n<p>The data ends at the cutoff: no holdout to check against.</p>\n"
        }
    }
    if let Some(c) = &d.spend {
        let _ = write!(
            out,
            "<h2>Spend in the holdout: two opinions</h2>\n<p>Spend over the {:.1} {unit} of the holdout, predicted by \
             BG/NBD x Gamma-Gamma from each customer's purchase summary and by a supervised Tweedie GLM from the \
             features at the cutoff (fitted on {} customers); both judged on the same {} held-out customers.</p>\n\
             <table><tr><th>model</th><th>mean actual</th><th>mean predicted</th><th>MAE</th><th>RMSE</th>\
             <th>R²</th><th>Gini</th></tr>\n",
            c.horizon, c.train_customers, c.valid_customers
        );
        for (name, r) in
            [("BG/NBD x Gamma-Gamma", &c.bg_nbd_gamma_gamma), ("supervised (Tweedie GLM)", &c.supervised)]
        {
            let _ = writeln!(
                out,
                "<tr><th>{name}</th><td>{:.2}</td><td>{:.2}</td><td>{:.2}</td><td>{:.2}</td><td>{:.3}</td><td>{:.3}</td></tr>",
                r.mean_actual, r.mean_predicted, r.mae, r.rmse, r.r2, r.gini
            );
        }
        out += "</table>\n";
    }
    out += "<div class=\"charts\">\n";
    let actual: Vec<[f64; 2]> = d.tracking.iter().map(|p| [p.t, p.actual]).collect();
    let expected: Vec<[f64; 2]> = d.tracking.iter().map(|p| [p.t, p.expected]).collect();
    let t_max = d.tracking.last().map_or(1.0, |p| p.t);
    let y_max = d.tracking.iter().chain(pareto.iter().flat_map(|p| &p.tracking));
    let y_max = y_max.map(|p| p.actual.max(p.expected)).fold(0.0, f64::max);
    let cut = [[d.calibration_end, 0.0], [d.calibration_end, y_max]];
    let pareto_expected: Vec<[f64; 2]> =
        pareto.map(|p| p.tracking.iter().map(|p| [p.t, p.expected]).collect()).unwrap_or_default();
    let mut series = vec![
        Series { label: None, color: "#999", dashed: true, points: &cut },
        Series { label: Some("actual"), color: "#222", dashed: false, points: &actual },
        Series { label: Some("BG/NBD"), color: "#1f6fb4", dashed: true, points: &expected },
    ];
    if pareto.is_some() {
        series.push(Series {
            label: Some("Pareto/NBD"),
            color: "#c0504d",
            dashed: true,
            points: &pareto_expected,
        });
    }
    out += &chart(
        "Tracking: cumulative repeat purchases",
        &format!("{unit} since the first purchase (dashed: cutoff)"),
        "repeat purchases",
        (0.0, t_max),
        (0.0, y_max),
        &series,
    );
    if let Some(h) = &d.holdout {
        let groups: Vec<(String, f64, f64)> =
            h.by_frequency.iter().map(|b| (b.frequency.clone(), b.actual, b.expected)).collect();
        out += &paired_bars(
            "Holdout purchases per customer, by calibration frequency",
            "repeat purchases in calibration",
            ("actual", "BG/NBD"),
            &groups,
        );
    }
    if let Some(c) = &d.spend {
        let diagonal = [[0.0, 0.0], [1.0, 1.0]];
        out += &chart(
            "Holdout spend reached, by prediction",
            "share of customers, highest predicted first",
            "share of their holdout spend",
            (0.0, 1.0),
            (0.0, 1.0),
            &[
                Series { label: None, color: "#999", dashed: true, points: &diagonal },
                Series {
                    label: Some("BG/NBD x Gamma-Gamma"),
                    color: "#1f6fb4",
                    dashed: false,
                    points: &c.gains_bg_nbd_gamma_gamma,
                },
                Series {
                    label: Some("supervised (Tweedie GLM)"),
                    color: "#c0504d",
                    dashed: false,
                    points: &c.gains_supervised,
                },
            ],
        );
    }
    let m = &d.p_alive;
    out += &heatmap(
        &format!("P(alive) at age {:.0} {unit}", m.age),
        &format!("recency: {unit} from first to last purchase"),
        "repeat purchases",
        &m.recencies,
        &m.frequencies,
        &m.values,
    );
    out += "</div>\n</body></html>\n";
    out
}
