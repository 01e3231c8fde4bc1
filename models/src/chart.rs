//! Charts as inline SVG strings (no scripts, no external files), shared
//! by the training and campaign reports and the dashboard. Every chart
//! has a `<title>` (read by screen readers) and a `viewBox`, so it scales
//! down to a phone's width.

use std::fmt::Write;

/// The stylesheet of every report.
pub const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:2em;color:#222}\
     table{border-collapse:collapse}td,th{padding:2px 10px;text-align:right}\
     th{text-align:left}.warning{color:#a40;font-weight:600}.charts{display:flex;flex-wrap:wrap;gap:24px}\
     svg{background:#fff;border:1px solid #ddd;max-width:100%;height:auto}";

pub const W: f64 = 360.0;
pub const H: f64 = 300.0;
pub const PAD: f64 = 44.0;

/// Vertical bars in pairs per group: (group, first value, second value).
pub fn paired_bars(title: &str, x_label: &str, names: (&str, &str), groups: &[(String, f64, f64)]) -> String {
    let (width, height) = (W + 120.0, H);
    let max = groups.iter().map(|g| g.1.max(g.2)).fold(0.0, f64::max).max(1e-12);
    let slot = (width - 2.0 * PAD) / groups.len().max(1) as f64;
    let bar = slot * 0.38;
    let base = height - PAD;
    let scale = |v: f64| v / max * (height - 2.0 * PAD - 20.0);
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" viewBox=\"0 0 {width} {height}\" role=\"img\">\
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
    value_grid(&mut s, base, width - PAD, max, scale);
    for (i, (group, a, b)) in groups.iter().enumerate() {
        let x = PAD + slot * i as f64 + slot * 0.1;
        for (j, (v, color, series)) in
            [(*a, "#222", names.0), (*b, "#1f6fb4", names.1)].into_iter().enumerate()
        {
            let h = scale(v);
            let _ = write!(
                s,
                "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"{bar:.1}\" height=\"{h:.1}\" fill=\"{color}\" \
                 data-x=\"{g}\" data-series=\"{}\" data-value=\"{v}\"><title>{g}: {v:.3}</title></rect>",
                x + bar * j as f64,
                base - h,
                esc(series),
                g = esc(group),
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

/// Five horizontal grid lines from 0 to `max` with their values, over a
/// plot from x = [`PAD`] to `right` whose baseline is at y = `base`.
fn value_grid(s: &mut String, base: f64, right: f64, max: f64, scale: impl Fn(f64) -> f64) {
    for k in 0..=4 {
        let v = max * k as f64 / 4.0;
        let y = base - scale(v);
        let _ = write!(
            s,
            "<line x1=\"{PAD}\" y1=\"{y:.1}\" x2=\"{right:.1}\" y2=\"{y:.1}\" stroke=\"#eee\"/>\
             <text x=\"{:.1}\" y=\"{y:.1}\" font-size=\"10\" text-anchor=\"end\" dy=\"3\">{}</text>",
            PAD - 5.0,
            tick(v, max)
        );
    }
}

/// A matrix of values in [0, 1] as coloured cells (white 0 to blue 1),
/// `values[row][column]`, rows drawn bottom-up so the y axis grows upward.
pub fn heatmap(
    title: &str,
    x_label: &str,
    y_label: &str,
    xs: &[f64],
    ys: &[f64],
    values: &[Vec<f64>],
) -> String {
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
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" viewBox=\"0 0 {width} {height}\" role=\"img\">\
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
pub fn line_chart(title: &str, x_label: &str, y_label: &str, points: &[[f64; 2]]) -> String {
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
pub struct Series<'a> {
    /// Legend text, if the chart has a legend.
    pub label: Option<&'a str>,
    pub color: &'a str,
    pub dashed: bool,
    pub points: &'a [[f64; 2]],
}

/// Lines over x in [0, 1] and y in `y_range`, with grid and tick labels;
/// a solid line of at most 30 points gets markers.
pub fn chart(
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
pub fn tick(v: f64, span: f64) -> String {
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
pub fn bars(title: &str, items: &[(String, f64)]) -> String {
    let row = 16.0;
    let height = 40.0 + row * items.len() as f64;
    let (label_w, width) = (190.0, W + 120.0);
    let max = items.iter().map(|(_, v)| v.abs()).fold(0.0, f64::max).max(1e-12);
    let any_negative = items.iter().any(|(_, v)| *v < 0.0);
    let zero = if any_negative { label_w + (width - label_w - 50.0) / 2.0 } else { label_w };
    let span = if any_negative { (width - label_w - 50.0) / 2.0 } else { width - label_w - 50.0 };
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" viewBox=\"0 0 {width} {height}\" role=\"img\">\
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
             <rect x=\"{x:.1}\" y=\"{}\" width=\"{len:.1}\" height=\"{}\" fill=\"{color}\" data-x=\"{n}\" data-value=\"{v}\"/>\
             <text x=\"{}\" y=\"{}\" font-size=\"10\">{}</text>",
            label_w - 6.0,
            y + 11.0,
            esc(name),
            y + 2.0,
            row - 4.0,
            if *v < 0.0 { zero + 3.0 } else { zero + len + 3.0 },
            y + 11.0,
            if v.fract() == 0.0 && v.abs() < 1e15 { format!("{v:.0}") } else { format!("{v:.2}") },
            n = esc(name),
        );
    }
    let _ = writeln!(
        s,
        "<line x1=\"{zero}\" y1=\"26\" x2=\"{zero}\" y2=\"{}\" stroke=\"#666\"/></svg>",
        height - 6.0
    );
    s
}

pub fn svg_open(title: &str) -> String {
    format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{W}\" height=\"{H}\" viewBox=\"0 0 {W} {H}\" role=\"img\"><title>{t}</title>\
         <text x=\"{}\" y=\"18\" font-size=\"13\" font-weight=\"bold\" text-anchor=\"middle\">{t}</text>",
        W / 2.0,
        t = esc(title)
    )
}

pub fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// The colour-blind-safe palette (Okabe and Ito) for categories.
pub const PALETTE: [&str; 8] =
    ["#0072b2", "#e69f00", "#009e73", "#d55e00", "#cc79a7", "#56b4e9", "#8c7a00", "#000000"];

/// One category of [`stacked_bars`]: its name, colour and a value per bar.
pub struct Stack<'a> {
    pub name: &'a str,
    pub color: &'a str,
    pub values: Vec<f64>,
}

/// Vertical bars, one per `x` label, each stacked from `stacks` (bottom
/// first), with a legend. Every segment carries `data-x`, `data-series`
/// and `data-value`, and a `<title>` saying the same.
pub fn stacked_bars(title: &str, x_label: &str, xs: &[String], stacks: &[Stack]) -> String {
    let (width, height) = (W + 240.0, H + 20.0);
    let legend_w = 120.0;
    let plot_w = width - PAD - legend_w - 10.0;
    let base = height - PAD;
    let totals: Vec<f64> = (0..xs.len()).map(|i| stacks.iter().map(|s| s.values[i]).sum()).collect();
    let max = totals.iter().copied().fold(0.0, f64::max).max(1e-12);
    let scale = |v: f64| v / max * (height - 2.0 * PAD - 10.0);
    let slot = plot_w / xs.len().max(1) as f64;
    let bar = (slot * 0.7).min(60.0);
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" viewBox=\"0 0 {width} {height}\" role=\"img\">\
         <title>{t}</title><text x=\"{}\" y=\"18\" font-size=\"13\" font-weight=\"bold\" text-anchor=\"middle\">{t}</text>",
        width / 2.0,
        t = esc(title)
    );
    value_grid(&mut s, base, PAD + plot_w, max, scale);
    for (i, x_name) in xs.iter().enumerate() {
        let x = PAD + slot * i as f64 + (slot - bar) / 2.0;
        let mut top = base;
        for stack in stacks {
            let v = stack.values[i];
            let h = scale(v);
            top -= h;
            let _ = write!(
                s,
                "<rect x=\"{x:.1}\" y=\"{top:.1}\" width=\"{bar:.1}\" height=\"{h:.1}\" fill=\"{}\" \
                 data-x=\"{x_name}\" data-series=\"{name}\" data-value=\"{v}\"><title>{x_name}, {name}: {v}</title></rect>",
                stack.color,
                x_name = esc(x_name),
                name = esc(stack.name),
            );
        }
        let _ = write!(
            s,
            "<text x=\"{:.1}\" y=\"{}\" font-size=\"10\" text-anchor=\"middle\">{}</text>",
            x + bar / 2.0,
            base + 14.0,
            esc(x_name)
        );
    }
    for (k, stack) in stacks.iter().enumerate() {
        let y = 40.0 + 16.0 * k as f64;
        let _ = write!(
            s,
            "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"12\" height=\"10\" fill=\"{}\"/>\
             <text x=\"{:.1}\" y=\"{:.1}\" font-size=\"11\">{}</text>",
            width - legend_w,
            y - 9.0,
            stack.color,
            width - legend_w + 17.0,
            y,
            esc(stack.name)
        );
    }
    let _ = writeln!(
        s,
        "<line x1=\"{PAD}\" y1=\"{base}\" x2=\"{:.1}\" y2=\"{base}\" stroke=\"#666\"/>\
         <text x=\"{:.1}\" y=\"{}\" font-size=\"11\" text-anchor=\"middle\">{}</text></svg>",
        PAD + plot_w,
        PAD + plot_w / 2.0,
        height - 8.0,
        esc(x_label)
    );
    s
}

/// Estimates with their intervals, one row each: `(label, value, low,
/// high)` as a dot on a whisker, around a zero line. Each row carries
/// `data-label`, `data-value`, `data-low` and `data-high`.
pub fn intervals(title: &str, x_label: &str, items: &[(String, f64, f64, f64)]) -> String {
    let row = 24.0;
    let (label_w, width) = (150.0, W + 120.0);
    let height = 56.0 + row * items.len() as f64;
    let finite = |v: f64| if v.is_finite() { Some(v) } else { None };
    let lo = items.iter().filter_map(|i| finite(i.2).or(finite(i.1))).fold(0.0, f64::min);
    let hi = items.iter().filter_map(|i| finite(i.3).or(finite(i.1))).fold(0.0, f64::max);
    let (lo, hi) = if hi > lo { (lo, hi) } else { (lo - 1.0, hi + 1.0) };
    let plot = width - label_w - 20.0;
    let sx = |v: f64| label_w + (v - lo) / (hi - lo) * plot;
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" viewBox=\"0 0 {width} {height}\" role=\"img\">\
         <title>{t}</title><text x=\"8\" y=\"18\" font-size=\"13\" font-weight=\"bold\">{t}</text>",
        t = esc(title)
    );
    for k in 0..=4 {
        let v = lo + (hi - lo) * k as f64 / 4.0;
        let _ = write!(
            s,
            "<line x1=\"{x:.1}\" y1=\"28\" x2=\"{x:.1}\" y2=\"{:.1}\" stroke=\"#eee\"/>\
             <text x=\"{x:.1}\" y=\"{:.1}\" font-size=\"10\" text-anchor=\"middle\">{}</text>",
            height - 26.0,
            height - 14.0,
            tick(v, hi - lo),
            x = sx(v),
        );
    }
    let _ = write!(
        s,
        "<line x1=\"{x:.1}\" y1=\"28\" x2=\"{x:.1}\" y2=\"{:.1}\" stroke=\"#666\"/>",
        height - 26.0,
        x = sx(0.0)
    );
    for (i, (label, v, low, high)) in items.iter().enumerate() {
        let y = 40.0 + row * i as f64;
        let _ = write!(
            s,
            "<g data-label=\"{l}\" data-value=\"{v}\" data-low=\"{low}\" data-high=\"{high}\">\
             <title>{l}: {v:.4} (95 % interval {low:.4} to {high:.4})</title>\
             <text x=\"{:.1}\" y=\"{:.1}\" font-size=\"11\" text-anchor=\"end\">{l}</text>",
            label_w - 8.0,
            y + 4.0,
            l = esc(label),
        );
        if low.is_finite() && high.is_finite() {
            let _ = write!(
                s,
                "<line x1=\"{:.1}\" y1=\"{y:.1}\" x2=\"{:.1}\" y2=\"{y:.1}\" stroke=\"#0072b2\" stroke-width=\"2\"/>",
                sx(*low),
                sx(*high)
            );
        }
        if v.is_finite() {
            let _ = write!(s, "<circle cx=\"{:.1}\" cy=\"{y:.1}\" r=\"4\" fill=\"#0072b2\"/>", sx(*v));
        }
        s += "</g>";
    }
    let _ = writeln!(
        s,
        "<text x=\"{:.1}\" y=\"{:.1}\" font-size=\"11\" text-anchor=\"middle\">{}</text></svg>",
        label_w + plot / 2.0,
        height - 2.0,
        esc(x_label)
    );
    s
}
