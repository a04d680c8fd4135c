//! Minimal SVG charts (no dependency): line/scatter plots and grouped bar charts.

use std::fmt::Write;

/// A named series of points.
pub struct Series {
    /// Legend label.
    pub label: String,
    /// Colour (CSS).
    pub color: String,
    /// Points `(x, y)`.
    pub points: Vec<(f64, f64)>,
}

/// A stable colour for series `i`.
pub fn color(i: usize) -> String {
    [
        "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#17becf",
    ][i % 7]
        .to_string()
}

/// Escapes text for XML.
pub fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn nice_range(lo: f64, hi: f64) -> (f64, f64) {
    if (hi - lo).abs() < 1e-12 {
        (lo - 1.0, hi + 1.0)
    } else {
        let pad = 0.06 * (hi - lo);
        (lo - pad, hi + pad)
    }
}

const W: f64 = 640.0;
const H: f64 = 360.0;
const L: f64 = 64.0;
const R: f64 = 150.0;
const T: f64 = 30.0;
const B: f64 = 48.0;

/// A line-and-marker plot of `series`, with an optional horizontal reference line.
pub fn line_plot(
    id: &str,
    title: &str,
    xlabel: &str,
    ylabel: &str,
    series: &[Series],
    hline: Option<(f64, &str)>,
) -> String {
    let pts: Vec<(f64, f64)> = series
        .iter()
        .flat_map(|s| s.points.iter().copied())
        .chain(hline.map(|(y, _)| (f64::NAN, y)))
        .collect();
    let xs: Vec<f64> = pts.iter().map(|p| p.0).filter(|x| x.is_finite()).collect();
    let ys: Vec<f64> = pts.iter().map(|p| p.1).filter(|y| y.is_finite()).collect();
    let (x0, x1) = nice_range(
        xs.iter().copied().fold(f64::INFINITY, f64::min),
        xs.iter().copied().fold(f64::NEG_INFINITY, f64::max),
    );
    let (y0, y1) = nice_range(
        ys.iter().copied().fold(f64::INFINITY, f64::min),
        ys.iter().copied().fold(f64::NEG_INFINITY, f64::max),
    );
    let px = |x: f64| L + (x - x0) / (x1 - x0) * (W - L - R);
    let py = |y: f64| H - B - (y - y0) / (y1 - y0) * (H - T - B);
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg id="{id}" class="chart" xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="11">"#
    );
    let _ = write!(
        s,
        r#"<text x="{}" y="18" font-size="14" font-weight="bold">{}</text>"#,
        L,
        esc(title)
    );
    let _ = write!(
        s,
        r##"<rect x="{L}" y="{T}" width="{}" height="{}" fill="none" stroke="#999"/>"##,
        W - L - R,
        H - T - B
    );
    for i in 0..=5 {
        let fx = x0 + (x1 - x0) * i as f64 / 5.0;
        let fy = y0 + (y1 - y0) * i as f64 / 5.0;
        let _ = write!(
            s,
            r##"<text x="{:.1}" y="{:.1}" text-anchor="middle" fill="#444">{:.2}</text>"##,
            px(fx),
            H - B + 15.0,
            fx
        );
        let _ = write!(
            s,
            r##"<text x="{:.1}" y="{:.1}" text-anchor="end" fill="#444">{:.2}</text>"##,
            L - 5.0,
            py(fy) + 4.0,
            fy
        );
        let _ = write!(
            s,
            r##"<line x1="{L}" x2="{:.1}" y1="{:.1}" y2="{:.1}" stroke="#eee"/>"##,
            W - R,
            py(fy),
            py(fy)
        );
    }
    let _ = write!(
        s,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
        L + (W - L - R) / 2.0,
        H - 10.0,
        esc(xlabel)
    );
    let _ = write!(
        s,
        r#"<text x="14" y="{:.1}" text-anchor="middle" transform="rotate(-90 14 {:.1})">{}</text>"#,
        T + (H - T - B) / 2.0,
        T + (H - T - B) / 2.0,
        esc(ylabel)
    );
    if let Some((y, label)) = hline {
        let _ = write!(
            s,
            r##"<line x1="{L}" x2="{:.1}" y1="{:.1}" y2="{:.1}" stroke="#555" stroke-dasharray="4 3"/><text x="{:.1}" y="{:.1}" fill="#555">{}</text>"##,
            W - R,
            py(y),
            py(y),
            W - R + 4.0,
            py(y) + 4.0,
            esc(label)
        );
    }
    for (i, ser) in series.iter().enumerate() {
        let mut sorted = ser.points.clone();
        sorted.sort_by(|a, b| a.0.total_cmp(&b.0));
        let path: Vec<String> = sorted
            .iter()
            .map(|(x, y)| format!("{:.1},{:.1}", px(*x), py(*y)))
            .collect();
        let _ = write!(
            s,
            r#"<g class="series" data-label="{}"><polyline points="{}" fill="none" stroke="{}" stroke-width="2"/>"#,
            esc(&ser.label),
            path.join(" "),
            ser.color
        );
        for (x, y) in &sorted {
            let _ = write!(
                s,
                r#"<circle cx="{:.1}" cy="{:.1}" r="3.5" fill="{}"><title>{}: ({x:.3}, {y:.3})</title></circle>"#,
                px(*x),
                py(*y),
                ser.color,
                esc(&ser.label)
            );
        }
        let ly = T + 14.0 + 16.0 * i as f64;
        let _ = write!(
            s,
            r#"<rect x="{:.1}" y="{:.1}" width="12" height="3" fill="{}"/><text x="{:.1}" y="{:.1}">{}</text></g>"#,
            W - R + 10.0,
            ly - 4.0,
            ser.color,
            W - R + 26.0,
            ly,
            esc(&ser.label)
        );
    }
    s.push_str("</svg>");
    s
}

/// Grouped bars: one group per category (layer), one bar per series (method).
pub fn bar_chart(
    id: &str,
    title: &str,
    categories: &[String],
    series: &[(String, String, Vec<f64>)],
    ylabel: &str,
) -> String {
    let ymax = series
        .iter()
        .flat_map(|s| s.2.iter().copied())
        .fold(1.0, f64::max);
    let width = (L + R + categories.len() as f64 * (series.len() as f64 * 9.0 + 8.0)).max(W);
    let plot_w = width - L - R;
    let group = plot_w / categories.len().max(1) as f64;
    let bar = (group - 6.0) / series.len().max(1) as f64;
    let h = H + 60.0;
    let py = |y: f64| h - B - 60.0 - y / ymax * (h - T - B - 60.0);
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg id="{id}" class="chart" xmlns="http://www.w3.org/2000/svg" width="{width:.0}" height="{h}" viewBox="0 0 {width:.0} {h}" font-family="sans-serif" font-size="10">"#
    );
    let _ = write!(
        s,
        r#"<text x="{L}" y="18" font-size="14" font-weight="bold">{}</text>"#,
        esc(title)
    );
    for v in [2.0, 4.0, 6.0, 8.0].iter().filter(|v| **v <= ymax) {
        let _ = write!(
            s,
            r##"<line x1="{L}" x2="{:.1}" y1="{:.1}" y2="{:.1}" stroke="#eee"/><text x="{:.1}" y="{:.1}" text-anchor="end">{v}</text>"##,
            width - R,
            py(*v),
            py(*v),
            L - 5.0,
            py(*v) + 4.0
        );
    }
    let _ = write!(
        s,
        r#"<text x="14" y="{:.1}" text-anchor="middle" transform="rotate(-90 14 {:.1})">{}</text>"#,
        h / 2.0 - 30.0,
        h / 2.0 - 30.0,
        esc(ylabel)
    );
    for (ci, cat) in categories.iter().enumerate() {
        let gx = L + ci as f64 * group + 3.0;
        for (si, (label, color, vals)) in series.iter().enumerate() {
            let v = vals.get(ci).copied().unwrap_or(0.0);
            let _ = write!(
                s,
                r#"<rect class="bar" x="{:.1}" y="{:.1}" width="{:.1}" height="{:.1}" fill="{color}"><title>{} {}: {v}</title></rect>"#,
                gx + si as f64 * bar,
                py(v),
                (bar - 1.0).max(1.0),
                py(0.0) - py(v),
                esc(label),
                esc(cat)
            );
        }
        let lx = gx + group / 2.0;
        let ly = h - B - 52.0;
        let _ = write!(
            s,
            r#"<text x="{lx:.1}" y="{ly:.1}" text-anchor="end" transform="rotate(-45 {lx:.1} {ly:.1})">{}</text>"#,
            esc(cat)
        );
    }
    for (si, (label, color, _)) in series.iter().enumerate() {
        let ly = T + 14.0 + 16.0 * si as f64;
        let _ = write!(
            s,
            r#"<rect x="{:.1}" y="{:.1}" width="12" height="8" fill="{color}"/><text x="{:.1}" y="{:.1}">{}</text>"#,
            width - R + 10.0,
            ly - 8.0,
            width - R + 26.0,
            ly,
            esc(label)
        );
    }
    s.push_str("</svg>");
    s
}
