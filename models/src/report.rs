//! The training report: one self-contained HTML file with the validation
//! metrics and charts drawn as inline SVG (no scripts, no external files),
//! so a data scientist opens it in any browser, or attaches it to a ticket.

use std::fmt::Write;
use std::path::{Path, PathBuf};

use serde::Serialize;

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

/// The stylesheet of every report.
const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:2em;color:#222}\
     table{border-collapse:collapse}td,th{padding:2px 10px;text-align:right}\
     th{text-align:left}.charts{display:flex;flex-wrap:wrap;gap:24px}\
     svg{background:#fff;border:1px solid #ddd}";

const W: f64 = 360.0;
const H: f64 = 300.0;
const PAD: f64 = 44.0;

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

/// The page's head and the lines saying what was trained on what.
fn page_head(title: &str, trained_at: &str, as_of: &str, split: &str, params: &ClassifierConfig) -> String {
    format!(
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
    )
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

/// Vertical bars in pairs per group: (group, first value, second value).
fn paired_bars(title: &str, x_label: &str, names: (&str, &str), groups: &[(String, f64, f64)]) -> String {
    let (width, height) = (W + 120.0, H);
    let max = groups.iter().map(|g| g.1.max(g.2)).fold(0.0, f64::max).max(1e-12);
    let slot = (width - 2.0 * PAD) / groups.len().max(1) as f64;
    let bar = slot * 0.38;
    let base = height - PAD;
    let scale = |v: f64| v / max * (height - 2.0 * PAD - 20.0);
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" role=\"img\">\
         <title>{t}</title><text x=\"{}\" y=\"18\" font-size=\"13\" font-weight=\"bold\" text-anchor=\"middle\">{t}</text>",
        width / 2.0,
        t = esc(title)
    );
    for (k, (name, color)) in [(names.0, "#222"), (names.1, "#1f6fb4")].into_iter().enumerate() {
        let y = 34.0 + 13.0 * k as f64;
        let _ = write!(
            s,
            "<rect x=\"{}\" y=\"{}\" width=\"10\" height=\"8\" fill=\"{color}\"/>\
             <text x=\"{}\" y=\"{}\" font-size=\"10\">{}</text>",
            PAD + 8.0,
            y - 6.0,
            PAD + 22.0,
            y + 2.0,
            esc(name)
        );
    }
    for k in 0..=4 {
        let v = max * k as f64 / 4.0;
        let y = base - scale(v);
        let _ = write!(
            s,
            "<line x1=\"{PAD}\" y1=\"{y:.1}\" x2=\"{:.1}\" y2=\"{y:.1}\" stroke=\"#eee\"/>\
             <text x=\"{:.1}\" y=\"{y:.1}\" font-size=\"10\" text-anchor=\"end\" dy=\"3\">{}</text>",
            width - PAD,
            PAD - 5.0,
            tick(v, max)
        );
    }
    for (i, (group, a, b)) in groups.iter().enumerate() {
        let x = PAD + slot * i as f64 + slot * 0.1;
        for (j, (v, color)) in [(*a, "#222"), (*b, "#1f6fb4")].into_iter().enumerate() {
            let h = scale(v);
            let _ = write!(
                s,
                "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"{bar:.1}\" height=\"{h:.1}\" fill=\"{color}\">\
                 <title>{}: {v:.3}</title></rect>",
                x + bar * j as f64,
                base - h,
                esc(group),
            );
        }
        let _ = write!(
            s,
            "<text x=\"{:.1}\" y=\"{}\" font-size=\"10\" text-anchor=\"middle\">{}</text>",
            x + bar,
            base + 14.0,
            esc(group)
        );
    }
    let _ = writeln!(
        s,
        "<line x1=\"{PAD}\" y1=\"{base}\" x2=\"{}\" y2=\"{base}\" stroke=\"#666\"/>\
         <text x=\"{}\" y=\"{}\" font-size=\"11\" text-anchor=\"middle\">{}</text></svg>",
        width - PAD,
        width / 2.0,
        height - 8.0,
        esc(x_label)
    );
    s
}

/// A matrix of values in [0, 1] as coloured cells (white 0 to blue 1),
/// `values[row][column]`, rows drawn bottom-up so the y axis grows upward.
fn heatmap(title: &str, x_label: &str, y_label: &str, xs: &[f64], ys: &[f64], values: &[Vec<f64>]) -> String {
    let (width, height) = (W + 60.0, H + 40.0);
    let (left, right, top, bottom) = (PAD + 6.0, 60.0, 30.0, PAD + 4.0);
    let cw = (width - left - right) / xs.len().max(1) as f64;
    let ch = (height - top - bottom) / ys.len().max(1) as f64;
    let color = |v: f64| {
        let v = v.clamp(0.0, 1.0);
        let mix = |from: f64, to: f64| (from + (to - from) * v).round() as u8;
        format!("#{:02x}{:02x}{:02x}", mix(255.0, 31.0), mix(255.0, 111.0), mix(255.0, 180.0))
    };
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" role=\"img\">\
         <title>{t}</title><text x=\"{}\" y=\"18\" font-size=\"13\" font-weight=\"bold\" text-anchor=\"middle\">{t}</text>",
        width / 2.0,
        t = esc(title)
    );
    for (i, row) in values.iter().enumerate() {
        let y = height - bottom - ch * (i + 1) as f64;
        for (j, &v) in row.iter().enumerate() {
            let _ = write!(
                s,
                "<rect x=\"{:.1}\" y=\"{y:.1}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"{}\">\
                 <title>{} repeat purchases, recency {}: P(alive) {v:.3}</title></rect>",
                left + cw * j as f64,
                cw + 0.5,
                ch + 0.5,
                color(v),
                tick(ys[i], 1.0),
                tick(xs[j], 1.0)
            );
        }
    }
    let every = |n: usize| (n / 5).max(1);
    for (j, x) in xs.iter().enumerate().step_by(every(xs.len())) {
        let _ = write!(
            s,
            "<text x=\"{:.1}\" y=\"{:.1}\" font-size=\"10\" text-anchor=\"middle\">{}</text>",
            left + cw * (j as f64 + 0.5),
            height - bottom + 13.0,
            tick(*x, xs.last().copied().unwrap_or(0.0) - xs[0])
        );
    }
    for (i, y) in ys.iter().enumerate().step_by(every(ys.len())) {
        let _ = write!(
            s,
            "<text x=\"{:.1}\" y=\"{:.1}\" font-size=\"10\" text-anchor=\"end\" dy=\"3\">{}</text>",
            left - 4.0,
            height - bottom - ch * (i as f64 + 0.5),
            tick(*y, ys.last().copied().unwrap_or(0.0) - ys[0])
        );
    }
    for k in 0..=4 {
        let v = k as f64 / 4.0;
        let y = top + (1.0 - v) * (height - top - bottom - 10.0);
        let _ = write!(
            s,
            "<rect x=\"{:.1}\" y=\"{y:.1}\" width=\"12\" height=\"10\" fill=\"{}\" stroke=\"#ccc\"/>\
             <text x=\"{:.1}\" y=\"{:.1}\" font-size=\"10\">{v}</text>",
            width - right + 10.0,
            color(v),
            width - right + 26.0,
            y + 9.0
        );
    }
    let _ = writeln!(
        s,
        "<text x=\"{}\" y=\"{}\" font-size=\"11\" text-anchor=\"middle\">{}</text>\
         <text transform=\"translate(12 {}) rotate(-90)\" font-size=\"11\" text-anchor=\"middle\">{}</text></svg>",
        left + (width - left - right) / 2.0,
        height - 8.0,
        esc(x_label),
        top + (height - top - bottom) / 2.0,
        esc(y_label)
    );
    s
}

/// A line chart over the unit square with the diagonal for reference.
fn line_chart(title: &str, x_label: &str, y_label: &str, points: &[[f64; 2]]) -> String {
    let diagonal = [[0.0, 0.0], [1.0, 1.0]];
    chart(
        title,
        x_label,
        y_label,
        (0.0, 1.0),
        (0.0, 1.0),
        &[
            Series { label: None, color: "#999", dashed: true, points: &diagonal },
            Series { label: None, color: "#1f6fb4", dashed: false, points },
        ],
    )
}

/// One line of a [`chart`].
struct Series<'a> {
    /// Legend text, if the chart has a legend.
    label: Option<&'a str>,
    color: &'a str,
    dashed: bool,
    points: &'a [[f64; 2]],
}

/// Lines over x in [0, 1] and y in `y_range`, with grid and tick labels;
/// a solid line of at most 30 points gets markers.
fn chart(
    title: &str,
    x_label: &str,
    y_label: &str,
    x_range: (f64, f64),
    y_range: (f64, f64),
    series: &[Series],
) -> String {
    let widen = |(lo, hi): (f64, f64)| if hi > lo { (lo, hi) } else { (lo, lo + 1.0) };
    let ((x_lo, x_hi), (y_lo, y_hi)) = (widen(x_range), widen(y_range));
    let sx = |x: f64| PAD + ((x - x_lo) / (x_hi - x_lo)).clamp(0.0, 1.0) * (W - 2.0 * PAD);
    let sy = |y: f64| H - PAD - ((y - y_lo) / (y_hi - y_lo)).clamp(0.0, 1.0) * (H - 2.0 * PAD);
    let mut s = svg_open(title);
    for t in [0.0, 0.25, 0.5, 0.75, 1.0] {
        let (xv, yv) = (x_lo + t * (x_hi - x_lo), y_lo + t * (y_hi - y_lo));
        let _ = write!(
            s,
            "<line x1=\"{x}\" y1=\"{y0}\" x2=\"{x}\" y2=\"{y1}\" stroke=\"#eee\"/>\
             <line x1=\"{x0}\" y1=\"{y}\" x2=\"{x1}\" y2=\"{y}\" stroke=\"#eee\"/>\
             <text x=\"{x}\" y=\"{ty}\" font-size=\"10\" text-anchor=\"middle\">{xt}</text>\
             <text x=\"{tx}\" y=\"{y}\" font-size=\"10\" text-anchor=\"end\" dy=\"3\">{yt}</text>",
            x = sx(xv),
            y = sy(yv),
            x0 = sx(x_lo),
            x1 = sx(x_hi),
            y0 = sy(y_lo),
            y1 = sy(y_hi),
            ty = sy(y_lo) + 14.0,
            tx = sx(x_lo) - 5.0,
            xt = tick(xv, x_hi - x_lo),
            yt = tick(yv, y_hi - y_lo),
        );
    }
    for (k, line) in series.iter().enumerate() {
        let path: Vec<String> =
            line.points.iter().map(|[x, y]| format!("{:.1},{:.1}", sx(*x), sy(*y))).collect();
        let style = if line.dashed { " stroke-dasharray=\"4 3\"" } else { " stroke-width=\"2\"" };
        let _ = write!(
            s,
            "<polyline fill=\"none\" stroke=\"{}\"{style} points=\"{}\"/>",
            line.color,
            path.join(" ")
        );
        if !line.dashed && line.points.len() <= 30 {
            for [x, y] in line.points {
                let _ = write!(
                    s,
                    "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"2.5\" fill=\"{}\"/>",
                    sx(*x),
                    sy(*y),
                    line.color
                );
            }
        }
        if let Some(label) = line.label {
            let y = 34.0 + 13.0 * k as f64;
            let _ = write!(
                s,
                "<line x1=\"{x}\" y1=\"{y}\" x2=\"{x2}\" y2=\"{y}\" stroke=\"{c}\"{style}/>\
                 <text x=\"{tx}\" y=\"{ty}\" font-size=\"10\">{l}</text>",
                x = PAD + 8.0,
                x2 = PAD + 26.0,
                c = line.color,
                tx = PAD + 30.0,
                ty = y + 3.0,
                l = esc(label)
            );
        }
    }
    let _ = writeln!(
        s,
        "<text x=\"{}\" y=\"{}\" font-size=\"11\" text-anchor=\"middle\">{}</text>\
         <text transform=\"translate(12 {}) rotate(-90)\" font-size=\"11\" text-anchor=\"middle\">{}</text></svg>",
        W / 2.0,
        H - 8.0,
        esc(x_label),
        H / 2.0,
        esc(y_label)
    );
    s
}

/// A tick label for `v` on an axis spanning `span`: no decimals on a wide
/// axis, up to three on a narrow one, trailing zeros dropped.
fn tick(v: f64, span: f64) -> String {
    let decimals = match span.abs() {
        s if s >= 20.0 => 0,
        s if s >= 2.0 => 1,
        _ => 3,
    };
    let s = format!("{v:.decimals$}");
    let s = if s.contains('.') { s.trim_end_matches('0').trim_end_matches('.') } else { &s };
    if s == "-0" { "0".into() } else { s.into() }
}

/// Horizontal bars from a zero line: positive values right, negative left.
fn bars(title: &str, items: &[(String, f64)]) -> String {
    let row = 16.0;
    let height = 40.0 + row * items.len() as f64;
    let (label_w, width) = (190.0, W + 120.0);
    let max = items.iter().map(|(_, v)| v.abs()).fold(0.0, f64::max).max(1e-12);
    let any_negative = items.iter().any(|(_, v)| *v < 0.0);
    let zero = if any_negative { label_w + (width - label_w - 50.0) / 2.0 } else { label_w };
    let span = if any_negative { (width - label_w - 50.0) / 2.0 } else { width - label_w - 50.0 };
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" role=\"img\">\
         <title>{t}</title><text x=\"8\" y=\"18\" font-size=\"13\" font-weight=\"bold\">{t}</text>",
        t = esc(title)
    );
    for (i, (name, v)) in items.iter().enumerate() {
        let y = 30.0 + row * i as f64;
        let len = v.abs() / max * span;
        let x = if *v < 0.0 { zero - len } else { zero };
        let color = if *v < 0.0 { "#c0504d" } else { "#1f6fb4" };
        let _ = write!(
            s,
            "<text x=\"{}\" y=\"{}\" font-size=\"10\" text-anchor=\"end\">{}</text>\
             <rect x=\"{x:.1}\" y=\"{}\" width=\"{len:.1}\" height=\"{}\" fill=\"{color}\"/>\
             <text x=\"{}\" y=\"{}\" font-size=\"10\">{v:.2}</text>",
            label_w - 6.0,
            y + 11.0,
            esc(name),
            y + 2.0,
            row - 4.0,
            if *v < 0.0 { zero + 3.0 } else { zero + len + 3.0 },
            y + 11.0,
        );
    }
    let _ = writeln!(
        s,
        "<line x1=\"{zero}\" y1=\"26\" x2=\"{zero}\" y2=\"{}\" stroke=\"#666\"/></svg>",
        height - 6.0
    );
    s
}

fn svg_open(title: &str) -> String {
    format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{W}\" height=\"{H}\" role=\"img\"><title>{t}</title>\
         <text x=\"{}\" y=\"18\" font-size=\"13\" font-weight=\"bold\" text-anchor=\"middle\">{t}</text>",
        W / 2.0,
        t = esc(title)
    )
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}
