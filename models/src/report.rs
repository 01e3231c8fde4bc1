//! The training report: one self-contained HTML file with the validation
//! metrics and charts drawn as inline SVG (no scripts, no external files),
//! so a data scientist opens it in any browser, or attaches it to a ticket.

use std::fmt::Write;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::metrics::{Curves, Metrics};
use crate::{ModelArtifact, ModelError};

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
    let metrics = dir.join(METRICS_FILE);
    let file =
        MetricsFile { model_version: &artifact.model_version, split, metrics: &artifact.metrics, curves };
    crate::artifact::save_json(&file, &metrics)?;
    let report = dir.join(REPORT_FILE);
    crate::snapshot::write_atomic(&report, html(artifact, curves).as_bytes())?;
    Ok(vec![metrics, report])
}

const W: f64 = 360.0;
const H: f64 = 300.0;
const PAD: f64 = 44.0;

/// The report of `artifact` with its validation `curves`.
pub fn html(artifact: &ModelArtifact, curves: &Curves) -> String {
    let split = artifact.split.as_str();
    let m = &artifact.metrics;
    let mut out = String::new();
    let title = format!("{} model {}", artifact.task, artifact.model_version);
    let _ = write!(
        out,
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{t}</title>\n<style>\
         body{{font-family:system-ui,sans-serif;margin:2em;color:#222}}\
         table{{border-collapse:collapse}}td,th{{padding:2px 10px;text-align:right}}\
         th{{text-align:left}}.charts{{display:flex;flex-wrap:wrap;gap:24px}}\
         svg{{background:#fff;border:1px solid #ddd}}</style></head><body>\n<h1>{t}</h1>\n\
         <p>Trained {trained} by engage {v}; cutoff {as_of}; {split}.</p>\n\
         <p>Model <code>{kind}</code>, configuration <code>{config}</code>.</p>\n",
        t = esc(&title),
        kind = esc(artifact.params.kind()),
        config = esc(&serde_json::to_string(&artifact.params).expect("config serialises")),
        trained = esc(&artifact.trained_at),
        v = esc(&artifact.engage_version),
        as_of = esc(&artifact.window.as_of),
        split = esc(split),
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

/// A line chart over the unit square with the diagonal for reference.
fn line_chart(title: &str, x_label: &str, y_label: &str, points: &[[f64; 2]]) -> String {
    let sx = |x: f64| PAD + x.clamp(0.0, 1.0) * (W - 2.0 * PAD);
    let sy = |y: f64| H - PAD - y.clamp(0.0, 1.0) * (H - 2.0 * PAD);
    let mut s = svg_open(title);
    for t in [0.0, 0.25, 0.5, 0.75, 1.0] {
        let _ = write!(
            s,
            "<line x1=\"{x}\" y1=\"{y0}\" x2=\"{x}\" y2=\"{y1}\" stroke=\"#eee\"/>\
             <line x1=\"{x0}\" y1=\"{y}\" x2=\"{x1}\" y2=\"{y}\" stroke=\"#eee\"/>\
             <text x=\"{x}\" y=\"{ty}\" font-size=\"10\" text-anchor=\"middle\">{t}</text>\
             <text x=\"{tx}\" y=\"{y}\" font-size=\"10\" text-anchor=\"end\" dy=\"3\">{t}</text>",
            x = sx(t),
            y = sy(t),
            x0 = sx(0.0),
            x1 = sx(1.0),
            y0 = sy(0.0),
            y1 = sy(1.0),
            ty = sy(0.0) + 14.0,
            tx = sx(0.0) - 5.0,
        );
    }
    let _ = write!(
        s,
        "<line x1=\"{}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"#999\" stroke-dasharray=\"4 3\"/>",
        sx(0.0),
        sy(0.0),
        sx(1.0),
        sy(1.0)
    );
    let path: Vec<String> = points.iter().map(|[x, y]| format!("{:.1},{:.1}", sx(*x), sy(*y))).collect();
    let _ = write!(
        s,
        "<polyline fill=\"none\" stroke=\"#1f6fb4\" stroke-width=\"2\" points=\"{}\"/>",
        path.join(" ")
    );
    if points.len() <= 30 {
        for [x, y] in points {
            let _ =
                write!(s, "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"2.5\" fill=\"#1f6fb4\"/>", sx(*x), sy(*y));
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
