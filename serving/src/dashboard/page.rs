//! The dashboard's HTML: server-rendered pages with inline SVG charts (no
//! scripts, no external files). Every chart sits beside a table of its
//! numbers (for screen readers, and for copying), and its marks carry
//! `data-*` attributes with the exact values.

use std::fmt::Write;

use engage_models::chart::{PALETTE, Stack, bars, esc, intervals, line_chart, paired_bars, stacked_bars};

use super::board::{BINS, Board, Drift, ModelCard, STAGES, TIERS};
use crate::{ApiError, IdType, ScoreService};

/// Who is looking.
pub enum Viewer<'a> {
    /// Signed in to the server with the key of this name (`None`: the
    /// server runs without keys).
    Signed(Option<&'a str>),
    /// A file written by `engage report --out`: no sign-out, no lookups.
    Export,
}

const CSS: &str = "\
:root{color-scheme:light}\
body{font-family:system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;margin:0;color:#1a1a1a;background:#f4f5f7;line-height:1.45}\
header{background:#14293d;color:#fff;padding:.6em 1em;display:flex;flex-wrap:wrap;gap:.4em 1.5em;align-items:center}\
header h1{font-size:1.2em;margin:0}header a{color:#fff}header form{margin-left:auto}\
nav{background:#e3e8ee;padding:.4em 1em;display:flex;flex-wrap:wrap;gap:.3em 1.2em}nav a{color:#0b4f8a}\
main{max-width:1280px;margin:0 auto;padding:.5em 1em 2em}\
section{background:#fff;border:1px solid #d5dbe3;border-radius:6px;padding:1em;margin:1em 0}\
h2{margin:0 0 .5em;font-size:1.3em}h3{font-size:1.05em;margin:1em 0 .4em}\
.grid{display:grid;grid-template-columns:repeat(auto-fit,minmax(min(100%,440px),1fr));gap:1.2em;align-items:start}\
figure{margin:0}figcaption{font-size:.9em;color:#444;margin-top:.3em}\
.scroll{overflow-x:auto}\
table{border-collapse:collapse;font-size:.9em;font-variant-numeric:tabular-nums}\
td,th{padding:3px 8px;text-align:right;border-bottom:1px solid #e6e9ee;vertical-align:top}\
th{text-align:left}thead th{border-bottom:2px solid #b9c2cd}\
svg{max-width:100%;height:auto;background:#fff}\
.kpis{display:flex;flex-wrap:wrap;gap:.8em}.kpis div{background:#eef3f8;border-radius:6px;padding:.5em .9em}\
.kpis b{display:block;font-size:1.3em}\
summary{cursor:pointer;padding:.25em 0}#risk-value td{white-space:nowrap}.note{color:#7a4100}.muted{color:#555}\
form.lookup{display:flex;flex-wrap:wrap;gap:.6em;align-items:flex-end}\
label{display:block;font-size:.85em;color:#333}\
input,select,button{font:inherit;padding:.4em .6em;border:1px solid #8a96a3;border-radius:4px;box-sizing:border-box;max-width:100%}\
#c-history td,#c-contacts td{text-align:left;white-space:nowrap}#c-contacts td.n{text-align:right}\
button{background:#0b5cad;color:#fff;border-color:#0b5cad;cursor:pointer}\
header button{background:transparent;border-color:#fff}\
:focus-visible{outline:3px solid #e69f00;outline-offset:2px}\
@media (max-width:600px){main{padding:.3em .5em}section{padding:.7em}td,th{padding:2px 5px}}";

fn shell(title: &str, header: &str, body: &str) -> String {
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
         <title>{}</title><style>{CSS}</style></head><body>\n{header}\n<main>\n{body}</main>\n</body></html>\n",
        esc(title)
    )
}

fn int(v: u64) -> String {
    let digits = v.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn money(v: f64) -> String {
    if !v.is_finite() {
        return "n/a".into();
    }
    let sign = if v < 0.0 { "-" } else { "" };
    format!("{sign}{}", int(v.abs().round() as u64))
}

fn pct(v: f64) -> String {
    if v.is_finite() { format!("{:.1}%", v * 100.0) } else { "n/a".into() }
}

fn pts(v: f64) -> String {
    if v.is_finite() { format!("{:+.2}", v * 100.0) } else { "n/a".into() }
}

fn num(v: Option<f64>, decimals: usize) -> String {
    match v {
        Some(v) if v.is_finite() => format!("{v:.decimals$}"),
        _ => "–".into(),
    }
}

/// The page header; `home` is where the section links point: `` on the
/// dashboard itself (and in an exported file), `/dashboard` elsewhere.
fn header(svc: &ScoreService, viewer: &Viewer, home: &str) -> String {
    let m = svc.manifest();
    let who = match viewer {
        Viewer::Signed(Some(name)) => format!(
            "<span>signed in as <b>{}</b></span><form method=\"post\" action=\"/dashboard/logout\">\
             <button type=\"submit\">Sign out</button></form>",
            esc(name)
        ),
        Viewer::Signed(None) => "<span class=\"muted\">(no API keys: open to anyone)</span>".into(),
        Viewer::Export => format!(
            "<span>exported {}</span>",
            esc(&chrono::Utc::now().format("%Y-%m-%d %H:%M UTC").to_string())
        ),
    };
    format!(
        "<header><h1><a href=\"{home}#base\">engage</a> lifecycle and campaigns</h1>\
         <span id=\"snapshot\" data-snapshot-id=\"{id}\">snapshot {id}, as of <b>{as_of}</b>, scored {scored}</span>{who}</header>\n\
         <nav aria-label=\"sections\"><a href=\"{home}#base\">Customer base</a><a href=\"{home}#risk\">Risk and value</a>\
         <a href=\"{home}#campaigns\">Campaigns</a><a href=\"{home}#models\">Models</a>\
         <a href=\"{home}#quality\">Data quality</a><a href=\"{home}#lookup\">Customer lookup</a></nav>",
        id = esc(&m.snapshot_id),
        as_of = esc(&m.as_of),
        scored = esc(&m.scored_at),
    )
}

/// The whole dashboard of the snapshot `svc`.
pub fn dashboard(svc: &ScoreService, viewer: &Viewer) -> String {
    let board = svc.board();
    let mut body = String::new();
    for note in &board.notes {
        let _ = writeln!(body, "<p class=\"note\">{}</p>", esc(note));
    }
    body += &base(svc, board);
    body += &risk(board);
    body += &campaigns(board);
    body += &models(board);
    body += &quality(svc, board);
    body += &lookup_section(viewer, None);
    shell("engage dashboard", &header(svc, viewer, ""), &body)
}

/// Stages shown: those with a customer in any snapshot.
fn shown_stages(board: &Board) -> Vec<usize> {
    (0..STAGES.len()).filter(|&s| board.history.iter().any(|h| h.counts[s] > 0)).collect()
}

fn base(svc: &ScoreService, board: &Board) -> String {
    let stages = shown_stages(board);
    let xs: Vec<String> = board.history.iter().map(|h| h.as_of.clone()).collect();
    let stacks: Vec<Stack> = stages
        .iter()
        .map(|&s| Stack {
            name: STAGES[s],
            color: PALETTE[s % PALETTE.len()],
            values: board.history.iter().map(|h| h.counts[s] as f64).collect(),
        })
        .collect();
    let now = board.history.last().expect("the current snapshot");
    let count = |stage: &str| STAGES.iter().position(|s| *s == stage).map_or(0, |i| now.counts[i]);
    let mut out = format!(
        "<section id=\"base\" aria-labelledby=\"base-h\"><h2 id=\"base-h\">Customer base</h2>\n<div class=\"kpis\">\
         <div>customers<b id=\"kpi-customers\">{}</b></div><div>active<b>{}</b></div><div>at risk<b>{}</b></div>\
         <div>churned<b>{}</b></div><div>snapshots<b>{}</b></div></div>\n<div class=\"grid\">\
         <figure id=\"chart-stages\">{}<figcaption>Customers per lifecycle stage at each retained snapshot.</figcaption></figure>\n",
        int(svc.len() as u64),
        int(count("active")),
        int(count("at_risk")),
        int(count("churned")),
        board.history.len(),
        stacked_bars("Customers by lifecycle stage", "snapshot (as of)", &xs, &stacks),
    );
    out += "<div class=\"scroll\"><table id=\"stage-counts\"><caption>Customers per stage</caption><thead><tr><th>stage</th>";
    for h in &board.history {
        let _ = write!(out, "<th>{}</th>", esc(&h.as_of));
    }
    out += "</tr></thead><tbody>";
    for &s in &stages {
        let _ = write!(out, "<tr><th>{}</th>", STAGES[s]);
        for h in &board.history {
            let _ = write!(
                out,
                "<td data-stage=\"{}\" data-as-of=\"{}\">{}</td>",
                STAGES[s],
                esc(&h.as_of),
                int(h.counts[s])
            );
        }
        out += "</tr>";
    }
    out += "</tbody></table></div></div>\n";
    match &board.flows {
        None => {
            out += "<p class=\"muted\">Flows between stages appear once there are two snapshots.</p>";
        }
        Some(f) => {
            let n = STAGES.len();
            let name = |i: usize, side: &str| if i == n { side.to_string() } else { STAGES[i].to_string() };
            let from: Vec<usize> = (0..=n).filter(|&i| f.cells[i].iter().any(|c| *c > 0)).collect();
            let to: Vec<usize> = (0..=n).filter(|&j| f.cells.iter().any(|r| r[j] > 0)).collect();
            let flow = |a: &str, b: &str| {
                let (i, j) = (STAGES.iter().position(|s| *s == a), STAGES.iter().position(|s| *s == b));
                i.zip(j).map_or(0, |(i, j)| f.cells[i][j])
            };
            let reactivated: u64 =
                ["dormant", "churned", "at_risk"].iter().map(|s| flow(s, "reactivated")).sum();
            let _ = write!(
                out,
                "<h3>Flows since {from_as_of}</h3><ul id=\"key-flows\">\
                 <li data-flow=\"new-active\">new → active: <b>{}</b></li>\
                 <li data-flow=\"active-at_risk\">active → at risk: <b>{}</b></li>\
                 <li data-flow=\"at_risk-churned\">at risk → churned: <b>{}</b></li>\
                 <li data-flow=\"at_risk-active\">at risk → active (saved): <b>{}</b></li>\
                 <li data-flow=\"reactivated\">reactivated (from at risk, dormant, churned): <b>{}</b></li></ul>\
                 <div class=\"scroll\"><table id=\"flows\"><caption>Customers by stage on {from_as_of} (rows) and now (columns)</caption>\
                 <thead><tr><th>then \\ now</th>",
                int(flow("new", "active")),
                int(flow("active", "at_risk")),
                int(flow("at_risk", "churned")),
                int(flow("at_risk", "active")),
                int(reactivated),
                from_as_of = esc(&f.from_as_of),
            );
            for &j in &to {
                let _ = write!(out, "<th>{}</th>", name(j, "(gone)"));
            }
            out += "</tr></thead><tbody>";
            for &i in &from {
                let _ = write!(out, "<tr><th>{}</th>", name(i, "(not scored)"));
                for &j in &to {
                    let v = f.cells[i][j];
                    let style = if i == j { " style=\"background:#eef3f8\"" } else { "" };
                    let _ = write!(
                        out,
                        "<td data-from=\"{}\" data-to=\"{}\"{style}>{}</td>",
                        name(i, "(not scored)"),
                        name(j, "(gone)"),
                        int(v)
                    );
                }
                out += "</tr>";
            }
            out += "</tbody></table></div>\n";
        }
    }
    out += "</section>\n";
    out
}

fn risk(board: &Board) -> String {
    let mut out = String::from(
        "<section id=\"risk\" aria-labelledby=\"risk-h\"><h2 id=\"risk-h\">Risk and value</h2>\n<div class=\"grid\">",
    );
    let Some(r) = &board.risk else { return out + "</div></section>" };
    match &r.churn {
        Some(bins) => {
            let items: Vec<(String, f64)> = bins
                .iter()
                .enumerate()
                .map(|(i, c)| {
                    (format!("{:.1}–{:.1}", i as f64 / BINS as f64, (i + 1) as f64 / BINS as f64), *c as f64)
                })
                .collect();
            let _ = write!(
                out,
                "<figure id=\"chart-churn\">{}<figcaption>Customers per band of predicted churn probability.</figcaption></figure>",
                bars("Churn probability: customers", &items)
            );
        }
        None => out += "<p class=\"muted\">No churn model in this snapshot.</p>",
    }
    let tiers: Vec<(String, f64)> =
        TIERS.iter().zip(r.tiers).filter(|(_, c)| *c > 0).map(|(t, c)| (t.to_string(), c as f64)).collect();
    let _ = write!(
        out,
        "<figure id=\"chart-tiers\">{}<figcaption>Value tiers by predicted CLV (none: no CLV model, or no purchase yet).</figcaption></figure></div>",
        bars("Value tier: customers", &tiers)
    );
    let max = r.matrix.iter().flatten().map(|c| c.at_risk).fold(0.0, f64::max).max(1e-9);
    let bands: Vec<usize> =
        (0..TIERS.len()).filter(|&b| r.matrix[b].iter().any(|c| c.customers > 0)).collect();
    let tiers: Vec<usize> =
        (0..TIERS.len()).filter(|&t| r.matrix.iter().any(|row| row[t].customers > 0)).collect();
    out += "<h3>Risk × value</h3><p class=\"muted\">Customers, total predicted CLV and the value at stake \
            (churn probability × CLV, summed) per churn-risk band and value tier. Darker: more value at stake.</p>\
            <div class=\"scroll\"><table id=\"risk-value\"><caption>Churn-risk band (rows) by value tier (columns); \
            none: no churn model, or no CLV</caption><thead><tr><th>risk \\ value</th>";
    for &t in &tiers {
        let _ = write!(out, "<th>{}</th>", TIERS[t]);
    }
    out += "</tr></thead><tbody>";
    for &b in &bands {
        let band = TIERS[b];
        let _ = write!(out, "<tr><th>{band}</th>");
        for &t in &tiers {
            let tier = TIERS[t];
            let c = r.matrix[b][t];
            let shade = (c.at_risk / max * 0.45 * 255.0).round() as u8;
            let _ = write!(
                out,
                "<td data-risk=\"{band}\" data-tier=\"{tier}\" data-customers=\"{}\" data-at-risk=\"{:.2}\" \
                 style=\"background:rgba(213,94,0,{:.2})\"><b>{}</b><br>CLV {}<br>at stake {}</td>",
                c.customers,
                c.at_risk,
                shade as f64 / 255.0,
                int(c.customers),
                money(c.clv),
                money(c.at_risk),
            );
        }
        out += "</tr>";
    }
    out += "</tbody></table></div></section>\n";
    out
}

fn campaigns(board: &Board) -> String {
    let mut out = String::from(
        "<section id=\"campaigns\" aria-labelledby=\"campaigns-h\"><h2 id=\"campaigns-h\">Campaigns</h2>\n",
    );
    let Some(c) = &board.campaigns else {
        return out
            + "<p class=\"muted\">No campaign results in this snapshot (`engage nightly` measures them).</p></section>\n";
    };
    if c.campaigns.is_empty() {
        return out + "<p class=\"muted\">No campaign contacts before the cutoff.</p></section>\n";
    }
    let _ = write!(
        out,
        "<p class=\"muted\">Contacts before {}; a response counts within 30 days. Lift: treatment rate minus control rate, \
         in points, with its 95 % interval. A control customer received nothing, so the stages both groups can reach \
         (a purchase) compare like with like.</p>",
        esc(&c.as_of)
    );
    let last_stage = |r: &engage_models::lift::CampaignResult| r.stages.last().cloned();
    let lifts: Vec<(String, f64, f64, f64)> = c
        .campaigns
        .iter()
        .filter_map(|r| {
            last_stage(r).map(|s| {
                (
                    r.campaign_id.clone(),
                    s.lift.absolute * 100.0,
                    s.lift.absolute_low * 100.0,
                    s.lift.absolute_high * 100.0,
                )
            })
        })
        .collect();
    let revenue: Vec<(String, f64)> = c
        .campaigns
        .iter()
        .filter(|r| r.incremental_revenue.is_finite())
        .map(|r| (r.campaign_id.clone(), r.incremental_revenue))
        .collect();
    let _ = write!(
        out,
        "<div class=\"grid\"><figure id=\"chart-lift\">{}<figcaption>Lift at the last funnel stage, points, with 95 % intervals.</figcaption></figure>\
         <figure id=\"chart-revenue\">{}<figcaption>Incremental revenue: revenue per treated minus per control customer, times the treated.</figcaption></figure></div>",
        intervals("Lift at the last stage (points)", "treatment − control, points", &lifts),
        bars("Incremental revenue", &revenue),
    );
    out += "<div class=\"scroll\"><table id=\"campaign-summary\"><thead><tr><th>campaign</th><th>kind</th><th>offer</th>\
            <th>treated</th><th>control</th><th>last stage</th><th>treated rate</th><th>control rate</th><th>lift (pts)</th>\
            <th>95 % interval</th><th>incremental revenue</th></tr></thead><tbody>";
    for r in &c.campaigns {
        let Some(s) = r.stages.last() else { continue };
        let _ = write!(
            out,
            "<tr data-campaign=\"{id}\"><th>{id}</th><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>\
             <td>{}</td><td>{}</td><td>{} to {}</td><td data-campaign-revenue=\"{}\">{}</td></tr>",
            esc(r.kind.as_deref().unwrap_or("–")),
            esc(r.offer.as_deref().unwrap_or("–")),
            int(s.treatment.customers),
            int(s.control.customers),
            esc(&s.stage),
            pct(s.treatment.rate()),
            pct(s.control.rate()),
            pts(s.lift.absolute),
            pts(s.lift.absolute_low),
            pts(s.lift.absolute_high),
            r.incremental_revenue,
            money(r.incremental_revenue),
            id = esc(&r.campaign_id),
        );
    }
    out += "</tbody></table></div><h3>Response funnel by campaign</h3>";
    for r in &c.campaigns {
        let id = esc(&r.campaign_id);
        let _ = write!(
            out,
            "<details><summary>{id}{}</summary><div class=\"grid\"><div class=\"scroll\"><table class=\"funnel\" data-campaign=\"{id}\">\
             <thead><tr><th>stage</th><th>treated</th><th>rate</th><th>control</th><th>rate</th><th>lift (pts)</th>\
             <th>95 % interval</th><th>incremental</th></tr></thead><tbody>",
            match (&r.kind, &r.offer) {
                (Some(k), Some(o)) => format!(" <span class=\"muted\">({}, offer {})</span>", esc(k), esc(o)),
                (Some(k), None) => format!(" <span class=\"muted\">({})</span>", esc(k)),
                _ => String::new(),
            }
        );
        for s in &r.stages {
            let l = &s.lift;
            let _ = write!(
                out,
                "<tr data-stage=\"{stage}\" data-treated=\"{}\" data-treated-responders=\"{}\" data-control=\"{}\" \
                 data-control-responders=\"{}\"><th>{stage}</th><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>\
                 <td>{} to {}</td><td>{}</td></tr>",
                s.treatment.customers,
                s.treatment.responders,
                s.control.customers,
                s.control.responders,
                int(s.treatment.customers),
                pct(s.treatment.rate()),
                int(s.control.customers),
                pct(s.control.rate()),
                pts(l.absolute),
                pts(l.absolute_low),
                pts(l.absolute_high),
                num(Some(l.incremental_responders), 1),
                stage = esc(&s.stage),
            );
        }
        let _ = write!(
            out,
            "</tbody></table><p>Incremental revenue {}; cost {}; cost per incremental response {}.</p></div>",
            money(r.incremental_revenue),
            r.cost.map_or("not configured".into(), money),
            r.cost_per_incremental_response.map_or("n/a".into(), |v| format!("{v:.2}")),
        );
        let groups: Vec<(String, f64, f64)> = r
            .stages
            .iter()
            .map(|s| (s.stage.clone(), s.treatment.rate(), s.control.rate()))
            .map(|(n, a, b)| (n, if a.is_finite() { a } else { 0.0 }, if b.is_finite() { b } else { 0.0 }))
            .collect();
        let _ = write!(
            out,
            "<figure class=\"chart-funnel\" data-campaign=\"{id}\">{}</figure></div></details>",
            paired_bars(
                &format!("{}: response funnel", r.campaign_id),
                "stage",
                ("treatment", "control"),
                &groups
            )
        );
    }
    if let Some(h) = &c.universal_holdout {
        let _ = write!(
            out,
            "<h3>Universal holdout</h3><p id=\"holdout\">{} customers held out of every campaign ({}) against {} marketed, \
             purchases since {}: buying rate {} held out, {} marketed; lift {} points (95 % interval {} to {}); \
             incremental revenue {}.</p>",
            int(h.holdout.customers),
            pct(h.share),
            int(h.marketed.customers),
            esc(&h.since),
            pct(h.holdout.rate()),
            pct(h.marketed.rate()),
            pts(h.lift.absolute),
            pts(h.lift.absolute_low),
            pts(h.lift.absolute_high),
            money(h.incremental_revenue)
        );
    }
    out + "</section>\n"
}

/// The numbers of a metrics object by name, those one level down as
/// `outer.inner` (a CLV model's `bg_nbd.log_likelihood`).
fn headline(metrics: &serde_json::Value) -> Vec<(String, f64)> {
    let mut out = Vec::new();
    for (k, v) in metrics.as_object().into_iter().flatten() {
        match v {
            serde_json::Value::Object(inner) => {
                out.extend(inner.iter().filter_map(|(i, v)| v.as_f64().map(|v| (format!("{k}.{i}"), v))))
            }
            v => out.extend(v.as_f64().map(|v| (k.clone(), v))),
        }
    }
    out
}

fn points(v: Option<&serde_json::Value>) -> Vec<[f64; 2]> {
    v.and_then(|v| v.as_array())
        .map(|a| {
            a.iter()
                .filter_map(|p| match p {
                    serde_json::Value::Array(xy) => Some([xy.first()?.as_f64()?, xy.get(1)?.as_f64()?]),
                    serde_json::Value::Object(o) => {
                        Some([o.get("predicted")?.as_f64()?, o.get("observed")?.as_f64()?])
                    }
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default()
}

fn model_card(card: &ModelCard) -> String {
    let m = &card.meta;
    let metrics = card.metrics.as_ref().and_then(|f| f.get("metrics")).unwrap_or(&m.metrics);
    let mut out = format!(
        "<div class=\"model\" data-task=\"{task}\" data-version=\"{v}\"><h3>{task}: {name} <code>{v}</code></h3>\
         <p class=\"muted\">{kind}, trained {trained} on data to {as_of}; validation: {split}.</p>\
         <table class=\"metrics\" data-task=\"{task}\"><tbody>",
        task = esc(&card.task),
        name = esc(&m.name),
        v = esc(&m.version),
        kind = esc(&m.kind),
        trained = esc(&m.trained_at),
        as_of = esc(&m.as_of),
        split = esc(&m.split),
    );
    for (name, v) in headline(metrics) {
        let shown = if v.fract() == 0.0 && v.abs() < 1e12 { format!("{v:.0}") } else { format!("{v:.4}") };
        let _ = write!(
            out,
            "<tr><th>{}</th><td data-metric=\"{}\" data-value=\"{v}\">{shown}</td></tr>",
            esc(&name),
            esc(&name)
        );
    }
    out += "</tbody></table>";
    let curves = card.metrics.as_ref().and_then(|f| f.get("curves"));
    let calibration = points(curves.and_then(|c| c.get("calibration")));
    let gains = points(curves.and_then(|c| c.get("gains")));
    if !calibration.is_empty() || !gains.is_empty() {
        out += "<div class=\"grid\">";
        if !calibration.is_empty() {
            let _ = write!(
                out,
                "<figure class=\"chart-calibration\" data-task=\"{}\">{}</figure>",
                esc(&card.task),
                line_chart(
                    "Calibration (validation)",
                    "mean predicted probability",
                    "observed rate",
                    &calibration
                )
            );
        }
        if !gains.is_empty() {
            let _ = write!(
                out,
                "<figure class=\"chart-gains\" data-task=\"{}\">{}</figure>",
                esc(&card.task),
                line_chart(
                    "Cumulative gains (validation)",
                    "share contacted, by score",
                    "share of positives reached",
                    &gains
                )
            );
        }
        out += "</div>";
    }
    out + "</div>"
}

fn drift_chart(d: &Drift) -> String {
    let groups: Vec<(String, f64, f64)> = d
        .shares
        .iter()
        .enumerate()
        .map(|(i, (a, b))| (format!("{:.1}", i as f64 / BINS as f64), *a, *b))
        .collect();
    let verdict = match d.psi {
        p if p < 0.1 => "stable",
        p if p < 0.25 => "moderate shift",
        _ => "large shift: check the inputs before trusting the scores",
    };
    format!(
        "<figure class=\"chart-drift\" data-score=\"{s}\" data-psi=\"{psi}\">{}<figcaption>Share of customers per score band \
         on {from} and now. Population stability index <b>{psi:.3}</b> ({verdict}).</figcaption></figure>",
        paired_bars(&format!("Drift of {}", d.score), "score band (from)", ("previous", "current"), &groups),
        s = d.score,
        psi = d.psi,
        from = esc(&d.from_as_of),
    )
}

fn models(board: &Board) -> String {
    let mut out =
        String::from("<section id=\"models\" aria-labelledby=\"models-h\"><h2 id=\"models-h\">Models</h2>\n");
    if board.models.is_empty() {
        out += "<p class=\"muted\">This snapshot does not carry its models' metrics (written by an older engage).</p>";
    }
    for card in &board.models {
        out += &model_card(card);
    }
    out += "<h3>Score drift since the previous snapshot</h3>";
    if board.drift.is_empty() {
        out += "<p class=\"muted\">Drift appears once there are two snapshots with the same score.</p>";
    } else {
        out += "<div class=\"grid\">";
        for d in &board.drift {
            out += &drift_chart(d);
        }
        out += "</div>";
    }
    out + "</section>\n"
}

fn quality(svc: &ScoreService, board: &Board) -> String {
    let mut out = String::from(
        "<section id=\"quality\" aria-labelledby=\"quality-h\"><h2 id=\"quality-h\">Data quality</h2>\n",
    );
    let Some(q) = &board.quality else {
        return out + "<p class=\"muted\">No run report in this snapshot.</p></section>\n";
    };
    let _ = write!(
        out,
        "<p class=\"muted\">The run that wrote snapshot {} (finished {}). Rejected rows are quarantined under \
         <code>rejects/</code> in the snapshot, with the rule each broke.</p><div class=\"grid\"><div class=\"scroll\">\
         <table id=\"inputs\"><thead><tr><th>table</th><th>rows</th><th>accepted</th><th>rejected</th><th>duplicates</th>\
         <th>rejected by rule</th></tr></thead><tbody>",
        esc(&svc.manifest().snapshot_id),
        esc(&q.finished_at)
    );
    let mut rejected: Vec<(String, f64)> = Vec::new();
    for t in &q.inputs {
        let rules: Vec<String> =
            t.rejected_by_rule.iter().map(|(r, n)| format!("{}: {}", esc(r), int(*n))).collect();
        for (rule, n) in &t.rejected_by_rule {
            rejected.push((format!("{} {}", t.table, rule), *n as f64));
        }
        let _ = write!(
            out,
            "<tr data-table=\"{table}\" data-rows=\"{}\" data-accepted=\"{}\" data-rejected=\"{}\"><th>{table}{}</th>\
             <td>{}</td><td>{}</td><td>{}</td><td>{}</td><td style=\"text-align:left\">{}</td></tr>",
            t.rows,
            t.accepted,
            t.rejected,
            if t.location.is_none() { " <span class=\"muted\">(absent)</span>" } else { "" },
            int(t.rows),
            int(t.accepted),
            int(t.rejected),
            int(t.duplicates),
            if rules.is_empty() { "–".into() } else { rules.join("<br>") },
            table = esc(&t.table),
        );
    }
    out += "</tbody></table></div>";
    if rejected.is_empty() {
        out += "<p>No row was rejected.</p>";
    } else {
        let _ = write!(
            out,
            "<figure id=\"chart-rejects\">{}</figure>",
            bars("Rejected rows by table and rule", &rejected)
        );
    }
    out += "</div>";
    for (title, id, stats) in [
        ("Identity matching", "identity", &q.identity),
        ("Events attributed to customers", "resolved", &q.resolved),
    ] {
        let Some(stats) = stats else { continue };
        let _ = write!(out, "<h3>{title}</h3><table id=\"{id}\"><tbody>");
        for (name, v) in stats {
            if let Some(v) = v.as_u64() {
                let _ = write!(
                    out,
                    "<tr><th>{}</th><td data-stat=\"{}\" data-value=\"{v}\">{}</td></tr>",
                    esc(&name.replace('_', " ")),
                    esc(name),
                    int(v)
                );
            }
        }
        out += "</tbody></table>";
    }
    out + "</section>\n"
}

fn lookup_form(selected: Option<(&str, &str)>) -> String {
    let (ty, id) = selected.unwrap_or(("email", ""));
    let mut options = String::new();
    for t in IdType::NAMES {
        let _ = write!(
            options,
            "<option value=\"{t}\"{}>{}</option>",
            if t == ty { " selected" } else { "" },
            t.replace('_', " ")
        );
    }
    format!(
        "<form class=\"lookup\" method=\"post\" action=\"/dashboard/customer\">\
         <div><label for=\"id_type\">Identifier type</label><select id=\"id_type\" name=\"id_type\">{options}</select></div>\
         <div><label for=\"id\">Identifier</label><input id=\"id\" name=\"id\" required value=\"{}\" \
         autocomplete=\"off\" spellcheck=\"false\"></div><div><button type=\"submit\">Look up</button></div></form>",
        esc(id)
    )
}

fn lookup_section(viewer: &Viewer, selected: Option<(&str, &str)>) -> String {
    let inner = match viewer {
        Viewer::Export => {
            "<p class=\"muted\">Customer lookups need the server: open <code>/dashboard</code> on \
                           <code>engage serve</code>.</p>"
                .to_string()
        }
        Viewer::Signed(_) => format!(
            "<p class=\"muted\">By customer id, email, phone or loyalty id, as the call center has it.</p>{}",
            lookup_form(selected)
        ),
    };
    format!(
        "<section id=\"lookup\" aria-labelledby=\"lookup-h\"><h2 id=\"lookup-h\">Customer lookup</h2>{inner}</section>\n"
    )
}

/// The customer page: the lookup's result, or why there is none.
pub fn customer(
    svc: &ScoreService,
    viewer: &Viewer,
    id_type: &str,
    id: &str,
    found: Result<u32, ApiError>,
) -> String {
    let mut body = lookup_section(viewer, Some((id_type, id)));
    let row = match found {
        Ok(row) => row,
        Err(e) => {
            let _ = write!(
                body,
                "<section id=\"customer\"><p class=\"note\" role=\"alert\" id=\"lookup-error\">{}</p></section>",
                esc(&e.to_string())
            );
            return shell("Customer lookup", &header(svc, viewer, "/dashboard"), &body);
        }
    };
    let c = svc.scores_at(row as usize);
    let board = svc.board();
    let _ = write!(
        body,
        "<section id=\"customer\" data-customer-id=\"{id}\" aria-labelledby=\"customer-h\"><h2 id=\"customer-h\">Customer {id}</h2>\
         <div class=\"kpis\"><div>stage<b id=\"c-stage\">{}</b></div><div>churn risk<b id=\"c-churn\">{}</b></div>\
         <div>value tier<b id=\"c-tier\">{}</b></div><div>CLV<b id=\"c-clv\">{}</b></div>\
         <div>contact strategy<b id=\"c-strategy\">{}</b></div><div>treatment<b id=\"c-treatment\">{}</b></div></div>",
        esc(c.lifecycle_stage.unwrap_or("–")),
        c.churn_probability.map_or("–".into(), |p| format!(
            "{:.1}% ({})",
            p * 100.0,
            c.risk_band.unwrap_or("–")
        )),
        esc(c.value_tier.unwrap_or("–")),
        num(c.clv, 2),
        esc(c.contact_strategy),
        esc(c.recommended_treatment),
        id = esc(c.customer_id),
    );
    body += "<div class=\"grid\"><div><h3>Scores</h3><table id=\"c-scores\"><tbody>";
    let mut offers = String::new();
    for (offer, u) in c.uplift_by_offer.iter() {
        let _ = write!(offers, "{}: {:+.3} ", esc(offer), u);
    }
    for (name, value) in [
        ("churn probability", num(c.churn_probability, 4)),
        ("response probability", num(c.response_probability, 4)),
        ("uplift (best offer)", num(c.uplift, 4)),
        ("best offer", c.best_offer.map_or("–".into(), esc)),
        ("uplift by offer", if offers.is_empty() { "–".into() } else { offers }),
        ("P(alive)", num(c.p_alive, 3)),
        ("expected purchases", num(c.expected_purchases, 2)),
        ("CLV", num(c.clv, 2)),
    ] {
        let _ = write!(body, "<tr><th>{name}</th><td>{value}</td></tr>");
    }
    body += "</tbody></table></div>";
    if c.reasons.is_empty() {
        body += "<p class=\"muted\">No churn reasons (no churn model).</p>";
    } else {
        let items: Vec<(String, f64)> = c.reasons.iter().map(|r| (r.feature.to_string(), r.impact)).collect();
        let _ = write!(
            body,
            "<figure id=\"c-reasons\">{}<figcaption>What raises this customer's churn score most: each feature's \
             contribution to the log-odds.</figcaption></figure>",
            bars("Churn reasons", &items)
        );
    }
    body += "</div><h3>Stage history</h3><table id=\"c-history\"><thead><tr><th>as of</th><th>stage</th></tr></thead><tbody>";
    for (as_of, stage) in board.stage_trail(row) {
        let _ = write!(
            body,
            "<tr data-as-of=\"{}\"><td>{}</td><td>{}</td></tr>",
            esc(as_of),
            esc(as_of),
            stage.unwrap_or("(not scored)")
        );
    }
    let m = svc.manifest();
    let _ = write!(
        body,
        "<tr data-as-of=\"{}\"><td>{}</td><td><b>{}</b></td></tr></tbody></table>",
        esc(&m.as_of),
        esc(&m.as_of),
        esc(c.lifecycle_stage.unwrap_or("–"))
    );
    body += "<h3>Contacts and responses (last 12 months)</h3>";
    let contacts = board.contacts(row);
    if contacts.is_empty() {
        body += "<p id=\"c-no-contacts\">No campaign contact in the last 12 months.</p>";
    } else {
        body += "<div class=\"scroll\"><table id=\"c-contacts\"><thead><tr><th>date</th><th>campaign</th><th>group</th>\
                 <th>channel</th><th>responses</th><th>deepest stage</th><th>revenue</th></tr></thead><tbody>";
        for k in &contacts {
            let _ = write!(
                body,
                "<tr data-campaign=\"{}\"><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"n\">{}</td><td>{}</td>\
                 <td class=\"n\">{:.2}</td></tr>",
                esc(k.campaign_id),
                k.contacted_on,
                esc(k.campaign_id),
                esc(k.group),
                esc(k.channel.unwrap_or("–")),
                k.responses,
                esc(k.deepest_stage.unwrap_or("–")),
                k.revenue
            );
        }
        body += "</tbody></table></div>";
    }
    let lists: Vec<String> = svc
        .audiences()
        .iter()
        .filter_map(|(campaign, a)| {
            a.entries.iter().find(|e| e.customer_id == c.customer_id).map(|e| {
                format!("{} ({}, {}, rank {})", esc(campaign), esc(&e.group), esc(&e.channel), e.rank)
            })
        })
        .collect();
    let _ = write!(
        body,
        "<h3>On today's contact lists</h3><p id=\"c-audiences\">{}</p></section>",
        if lists.is_empty() { "none".into() } else { lists.join("; ") }
    );
    shell(&format!("Customer {}", c.customer_id), &header(svc, viewer, "/dashboard"), &body)
}

/// The sign-in page; `problem` says why the last attempt failed.
pub fn sign_in(problem: Option<&str>) -> String {
    let alert = problem.map_or(String::new(), |p| {
        format!("<p class=\"note\" role=\"alert\" id=\"sign-in-error\">{}</p>", esc(p))
    });
    shell(
        "Sign in: engage dashboard",
        "<header><h1>engage lifecycle and campaigns</h1></header>",
        &format!(
            "<section aria-labelledby=\"sign-in-h\" style=\"max-width:32em\"><h2 id=\"sign-in-h\">Sign in</h2>\
             <p>Paste an API key with the <code>scores:read</code> scope (<code>engage serve keygen</code> makes one). \
             The key stays in this form: the browser gets a session cookie, never the key in a URL.</p>{alert}\
             <form method=\"post\" action=\"/dashboard/login\"><label for=\"key\">API key</label>\
             <input id=\"key\" name=\"key\" type=\"password\" autocomplete=\"current-password\" required style=\"width:100%\">\
             <p><button type=\"submit\">Sign in</button></p></form></section>"
        ),
    )
}

/// The page while no snapshot is loaded.
pub fn not_ready() -> String {
    shell(
        "engage dashboard",
        "<header><h1>engage lifecycle and campaigns</h1></header>",
        "<section><h2>No snapshot yet</h2><p>The server has not loaded a score snapshot: run \
         <code>engage nightly</code> (or see <code>/readyz</code>). This page does not refresh itself.</p></section>",
    )
}
