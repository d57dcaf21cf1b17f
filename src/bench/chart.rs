//! SVG line charts of saved results, written by hand: two kinds of chart
//! do not justify a plotting library in the server's binary.

use std::fmt::Write as _;
use std::path::PathBuf;

use clap::{Args, ValueEnum};

use super::Outcome;

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ChartKind {
    /// p99 (solid) and p50 (dashed) delivery latency against deliveries
    /// per second, from fan-out runs.
    Latency,
    /// Server RSS against connections held, from idle runs.
    Memory,
}

#[derive(Args, Debug, Clone)]
pub struct ChartArgs {
    #[arg(long, value_enum)]
    pub kind: ChartKind,
    /// The SVG file to write.
    #[arg(long)]
    pub out: PathBuf,
    #[arg(long, default_value = "")]
    pub title: String,
    /// Top of the y axis; higher points are drawn at the top as open
    /// circles (an overloaded step would otherwise flatten the rest).
    #[arg(long)]
    pub y_max: Option<f64>,
    /// Series as LABEL=RESULT.json (files written with --out).
    #[arg(required = true)]
    pub series: Vec<String>,
}

pub struct Series {
    pub label: String,
    pub points: Vec<(f64, f64)>,
    /// A second, dashed line in the same colour (p50 under p99).
    pub dashed: Vec<(f64, f64)>,
}

pub fn run(a: &ChartArgs) -> Result<(), String> {
    let mut series = Vec::new();
    for s in &a.series {
        let (label, path) = s
            .split_once('=')
            .ok_or_else(|| format!("{s:?}: give LABEL=FILE"))?;
        let text = std::fs::read_to_string(path).map_err(|e| format!("reading {path}: {e}"))?;
        let o: Outcome =
            serde_json::from_str(&text).map_err(|e| format!("{path} is not a result: {e}"))?;
        series.push(match a.kind {
            ChartKind::Latency => Series {
                label: label.into(),
                points: o
                    .steps
                    .iter()
                    .filter(|s| s.latency.count > 0)
                    .map(|s| (s.deliveries_per_sec, s.latency.p99_ms))
                    .collect(),
                dashed: o
                    .steps
                    .iter()
                    .filter(|s| s.latency.count > 0)
                    .map(|s| (s.deliveries_per_sec, s.latency.p50_ms))
                    .collect(),
            },
            ChartKind::Memory => Series {
                label: label.into(),
                points: o
                    .idle
                    .map(|i| {
                        i.memory
                            .iter()
                            .map(|&(n, b)| (n as f64, b as f64 / 1048576.0))
                            .collect()
                    })
                    .unwrap_or_default(),
                dashed: Vec::new(),
            },
        });
    }
    let (x, y) = match a.kind {
        ChartKind::Latency => (
            "deliveries per second",
            "latency, ms (solid p99, dashed p50)",
        ),
        ChartKind::Memory => ("connections held", "server RSS, MiB"),
    };
    let svg = render(&a.title, x, y, &series, a.y_max);
    std::fs::write(&a.out, svg).map_err(|e| format!("writing {}: {e}", a.out.display()))
}

/// A "nice" tick step (1, 2 or 5 × 10^k) giving about `n` ticks.
fn nice_step(max: f64, n: f64) -> f64 {
    let raw = (max / n).max(f64::MIN_POSITIVE);
    let mag = 10f64.powf(raw.log10().floor());
    let f = raw / mag;
    let nice = if f <= 1.0 {
        1.0
    } else if f <= 2.0 {
        2.0
    } else if f <= 5.0 {
        5.0
    } else {
        10.0
    };
    nice * mag
}

fn label(v: f64) -> String {
    if v >= 1000.0 && (v / 1000.0).fract() == 0.0 {
        format!("{}k", v / 1000.0)
    } else if v.fract() == 0.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

pub fn render(
    title: &str,
    xlabel: &str,
    ylabel: &str,
    series: &[Series],
    y_max: Option<f64>,
) -> String {
    const W: f64 = 720.0;
    const H: f64 = 420.0;
    const L: f64 = 70.0;
    const R: f64 = 20.0;
    const T: f64 = 40.0;
    const B: f64 = 55.0;
    const COLOURS: [&str; 6] = [
        "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b",
    ];
    let all = series.iter().flat_map(|s| s.points.iter().chain(&s.dashed));
    let (mut xmax, mut ymax) = (0.0f64, 0.0f64);
    for &(x, y) in all {
        if x.is_finite() && y.is_finite() {
            xmax = xmax.max(x);
            ymax = ymax.max(y);
        }
    }
    if let Some(cap) = y_max.filter(|c| c.is_finite() && *c > 0.0) {
        ymax = ymax.min(cap);
    }
    let xstep = nice_step(xmax.max(1.0), 6.0);
    let ystep = nice_step(ymax.max(1.0), 5.0);
    let xtop = (xmax / xstep).ceil().max(1.0) * xstep;
    let ytop = (ymax / ystep).ceil().max(1.0) * ystep;
    let px = |x: f64| L + (x / xtop) * (W - L - R);
    let py = |y: f64| H - B - (y.min(ytop) / ytop) * (H - T - B);
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="12">
<rect width="100%" height="100%" fill="white"/>
<text x="{}" y="22" text-anchor="middle" font-size="15">{}</text>
"#,
        W / 2.0,
        esc(title)
    );
    // Grid and ticks: at most 40 of each, whatever the data.
    let mut v = 0.0;
    for _ in 0..40 {
        if v > xtop + xstep / 2.0 {
            break;
        }
        let x = px(v);
        let _ = writeln!(
            s,
            r##"<line x1="{x:.1}" y1="{T}" x2="{x:.1}" y2="{:.1}" stroke="#e5e5e5"/><text x="{x:.1}" y="{:.1}" text-anchor="middle">{}</text>"##,
            H - B,
            H - B + 16.0,
            label(v)
        );
        v += xstep;
    }
    let mut v = 0.0;
    for _ in 0..40 {
        if v > ytop + ystep / 2.0 {
            break;
        }
        let y = py(v);
        let _ = writeln!(
            s,
            r##"<line x1="{L}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#e5e5e5"/><text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"##,
            W - R,
            L - 6.0,
            y + 4.0,
            label(v)
        );
        v += ystep;
    }
    let _ = writeln!(
        s,
        r##"<line x1="{L}" y1="{T}" x2="{L}" y2="{:.1}" stroke="#333"/><line x1="{L}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="#333"/>"##,
        H - B,
        H - B,
        W - R,
        H - B
    );
    let _ = writeln!(
        s,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
        (L + W - R) / 2.0,
        H - 12.0,
        esc(xlabel)
    );
    let _ = writeln!(
        s,
        r#"<text x="16" y="{:.1}" text-anchor="middle" transform="rotate(-90 16 {:.1})">{}</text>"#,
        (T + H - B) / 2.0,
        (T + H - B) / 2.0,
        esc(ylabel)
    );
    for (i, ser) in series.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        for (points, dash) in [
            (&ser.points, ""),
            (&ser.dashed, r#" stroke-dasharray="5 4""#),
        ] {
            if points.is_empty() {
                continue;
            }
            let path: Vec<String> = points
                .iter()
                .map(|&(x, y)| format!("{:.1},{:.1}", px(x), py(y)))
                .collect();
            let _ = writeln!(
                s,
                r#"<polyline fill="none" stroke="{colour}" stroke-width="2"{dash} points="{}"/>"#,
                path.join(" ")
            );
            for &(x, y) in points.iter() {
                let fill = if y > ytop { "white" } else { colour };
                let _ = writeln!(
                    s,
                    r#"<circle cx="{:.1}" cy="{:.1}" r="3" fill="{fill}" stroke="{colour}"/>"#,
                    px(x),
                    py(y)
                );
            }
        }
        let ly = T + 8.0 + 18.0 * i as f64;
        let _ = writeln!(
            s,
            r#"<rect x="{:.1}" y="{:.1}" width="14" height="4" fill="{colour}"/><text x="{:.1}" y="{:.1}">{}</text>"#,
            L + 12.0,
            ly,
            L + 32.0,
            ly + 5.0,
            esc(&ser.label)
        );
    }
    s.push_str("</svg>\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_well_formed_svg() {
        let svg = render(
            "t <1>",
            "x",
            "y",
            &[Series {
                label: "a&b".into(),
                points: vec![(0.0, 1.0), (1000.0, 20.0)],
                dashed: vec![(1000.0, 5.0)],
            }],
            Some(10.0),
        );
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert!(svg.contains("t &lt;1&gt;") && svg.contains("a&amp;b"));
        assert_eq!(svg.matches("<polyline").count(), 2);
        assert!(svg.contains(r#"fill="white""#), "the clipped point is open");
        assert_eq!(nice_step(95.0, 5.0), 20.0);
        assert_eq!(label(20000.0), "20k");
    }
}
