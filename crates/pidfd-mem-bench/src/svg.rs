//! `throughput.svg`: sequential throughput against size, one line per method
//! (reads solid, writes dashed), log-log axes, min–max as error bars. Written
//! by hand: a few dozen SVG elements do not need a plotting crate.

use std::fmt::Write as _;

use crate::report::{group as g, method as m, method_label, Report};
use crate::size_label;

const W: f64 = 1160.0;
const H: f64 = 560.0;
const LEFT: f64 = 80.0;
const RIGHT: f64 = 420.0;
const TOP: f64 = 50.0;
const BOTTOM: f64 = 60.0;

/// Line colours, assigned to methods in order of first appearance.
const PALETTE: &[&str] = &[
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
    "#17becf", "#bcbd22",
];

/// Escapes text for XML.
pub fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// One line of the plot: (size, median, min, max) points.
struct Series {
    label: String,
    colour: &'static str,
    dashed: bool,
    points: Vec<(f64, f64, f64, f64)>,
}

fn series(r: &Report) -> Vec<Series> {
    let mut methods: Vec<String> = Vec::new();
    let mut out = Vec::new();
    for (group, dashed, suffix) in [(g::SEQ_READ, false, "read"), (g::SEQ_WRITE, true, "write")] {
        for method in r.methods(group) {
            // A write method takes the colour of its read counterpart.
            let key = match method.as_str() {
                m::PWRITE_MEM => m::PREAD_MEM.to_string(),
                m::PVW => m::PVR.to_string(),
                other => other.to_string(),
            };
            let idx = methods.iter().position(|x| *x == key).unwrap_or_else(|| {
                methods.push(key);
                methods.len() - 1
            });
            let mut points: Vec<(f64, f64, f64, f64)> = r
                .figures
                .iter()
                .filter(|f| f.group == group && f.method == method)
                .filter_map(|f| Some((f.size? as f64, f.stats.median, f.stats.min, f.stats.max)))
                .filter(|p| p.0 > 0.0 && p.1 > 0.0 && p.2 > 0.0 && p.3 > 0.0)
                .collect();
            points.sort_by(|a, b| a.0.total_cmp(&b.0));
            if points.is_empty() {
                continue;
            }
            out.push(Series {
                label: format!("{} ({suffix})", method_label(group, &method)),
                colour: PALETTE[idx % PALETTE.len()],
                dashed,
                points,
            });
        }
    }
    out
}

/// The plot as an SVG document.
pub fn render(r: &Report) -> String {
    let series = series(r);
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="{W}" height="{H}" fill="white"/>"#);
    let title = match r.machine.get("kernel") {
        Some(k) => format!(
            "pidfd_mem: sequential throughput vs size (kernel {k}, QEMU TCG: relative figures)"
        ),
        None => "pidfd_mem: sequential throughput vs size (QEMU TCG: relative figures)".into(),
    };
    let _ = writeln!(
        s,
        r#"<text x="{}" y="24" text-anchor="middle" font-size="15">{}</text>"#,
        (LEFT + W - RIGHT) / 2.0,
        escape(&title)
    );

    let xs: Vec<f64> = series
        .iter()
        .flat_map(|x| x.points.iter().map(|p| p.0))
        .collect();
    let ys: Vec<f64> = series
        .iter()
        .flat_map(|x| x.points.iter().flat_map(|p| [p.2, p.3]))
        .collect();
    if xs.is_empty() {
        let _ = writeln!(
            s,
            r#"<text x="{}" y="{}" text-anchor="middle">no throughput figures</text>"#,
            W / 2.0,
            H / 2.0
        );
        s.push_str("</svg>\n");
        return s;
    }
    let (x0, x1) = min_max(&xs);
    let (x0, x1) = if x1 > x0 {
        (x0.log2(), x1.log2())
    } else {
        (x0.log2() - 1.0, x0.log2() + 1.0)
    };
    let (y0, y1) = min_max(&ys);
    let (y0, y1) = (
        y0.log10().floor(),
        y1.log10().ceil().max(y0.log10().floor() + 1.0),
    );
    let pw = W - LEFT - RIGHT;
    let ph = H - TOP - BOTTOM;
    let px = |x: f64| LEFT + (x.log2() - x0) / (x1 - x0) * pw;
    let py = |y: f64| TOP + ph - (y.log10() - y0) / (y1 - y0) * ph;

    // Axes, grid, ticks.
    let _ = writeln!(
        s,
        r##"<rect x="{LEFT}" y="{TOP}" width="{pw}" height="{ph}" fill="none" stroke="#444"/>"##
    );
    let mut sizes: Vec<f64> = xs.clone();
    sizes.sort_by(f64::total_cmp);
    sizes.dedup();
    for x in &sizes {
        let sx = px(*x);
        let _ = writeln!(
            s,
            r##"<line x1="{sx:.1}" y1="{TOP}" x2="{sx:.1}" y2="{:.1}" stroke="#ddd"/>"##,
            TOP + ph
        );
        let _ = writeln!(
            s,
            r#"<text x="{sx:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
            TOP + ph + 18.0,
            size_label(*x as u64)
        );
    }
    let mut d = y0;
    while d <= y1 + 1e-9 {
        let sy = py(10f64.powf(d));
        let _ = writeln!(
            s,
            r##"<line x1="{LEFT}" y1="{sy:.1}" x2="{:.1}" y2="{sy:.1}" stroke="#ddd"/>"##,
            LEFT + pw
        );
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"#,
            LEFT - 6.0,
            sy + 4.0,
            decade_label(d)
        );
        d += 1.0;
    }
    let _ = writeln!(
        s,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">size (log scale)</text>"#,
        LEFT + pw / 2.0,
        H - 14.0
    );
    let _ = writeln!(
        s,
        r#"<text x="18" y="{:.1}" text-anchor="middle" transform="rotate(-90 18 {:.1})">MiB/s (median, log scale; bars: min–max)</text>"#,
        TOP + ph / 2.0,
        TOP + ph / 2.0
    );

    // Lines, points, error bars, legend.
    for (i, se) in series.iter().enumerate() {
        let dash = if se.dashed {
            r#" stroke-dasharray="6 4""#
        } else {
            ""
        };
        let pts: Vec<String> = se
            .points
            .iter()
            .map(|p| format!("{:.1},{:.1}", px(p.0), py(p.1)))
            .collect();
        let _ = writeln!(s, r#"<g stroke="{}" fill="{}">"#, se.colour, se.colour);
        let _ = writeln!(
            s,
            r#"<polyline points="{}" fill="none" stroke-width="2"{dash}/>"#,
            pts.join(" ")
        );
        for p in &se.points {
            let (cx, cy) = (px(p.0), py(p.1));
            let _ = writeln!(s, r#"<circle cx="{cx:.1}" cy="{cy:.1}" r="3"/>"#);
            let _ = writeln!(
                s,
                r#"<line x1="{cx:.1}" y1="{:.1}" x2="{cx:.1}" y2="{:.1}" stroke-width="1"/>"#,
                py(p.2),
                py(p.3)
            );
        }
        let ly = TOP + 8.0 + 18.0 * i as f64;
        let lx = W - RIGHT + 16.0;
        let _ = writeln!(
            s,
            r#"<line x1="{lx}" y1="{ly}" x2="{}" y2="{ly}" stroke-width="2"{dash}/>"#,
            lx + 28.0
        );
        let _ = writeln!(
            s,
            r#"<text x="{}" y="{}" stroke="none">{}</text>"#,
            lx + 34.0,
            ly + 4.0,
            escape(&se.label)
        );
        s.push_str("</g>\n");
    }
    s.push_str("</svg>\n");
    s
}

fn min_max(v: &[f64]) -> (f64, f64) {
    v.iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), x| {
            (a.min(*x), b.max(*x))
        })
}

/// `10^d` written plainly for the y axis.
fn decade_label(d: f64) -> String {
    let v = 10f64.powf(d);
    if v >= 1.0 {
        format!("{v:.0}")
    } else {
        format!("{v}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::tests::sample_report;

    #[test]
    fn valid_looking_svg() {
        let r = sample_report();
        let svg = render(&r);
        assert!(svg.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\""));
        assert!(svg.ends_with("</svg>\n"));
        // One polyline per (group, method) with throughput figures: 6 reads, 1 write.
        assert_eq!(svg.matches("<polyline").count(), 7);
        assert_eq!(svg.matches("<g ").count(), svg.matches("</g>").count());
        assert_eq!(
            svg.matches("stroke-dasharray").count(),
            2,
            "writes dashed (line + legend)"
        );
        assert!(!svg.contains("NaN") && !svg.contains("inf"));
        assert!(svg.contains("process_vm_readv (read)"));
        assert!(svg.contains(">256 MiB</text>"));
        // Every coordinate lies inside the canvas.
        for attr in ["cx=\"", "cy=\""] {
            for part in svg.split(attr).skip(1) {
                let v: f64 = part.split('"').next().unwrap().parse().unwrap();
                assert!((0.0..=W.max(H)).contains(&v), "{attr}{v}");
            }
        }
        // Opening tags are closed: self-closing or with a matching end tag.
        for tag in ["text", "g", "svg"] {
            assert_eq!(
                svg.matches(&format!("<{tag} ")).count(),
                svg.matches(&format!("</{tag}>")).count(),
                "{tag}"
            );
        }
    }

    #[test]
    fn empty_report_still_renders() {
        let svg = render(&Report::default());
        assert!(svg.contains("no throughput figures"));
        assert!(svg.ends_with("</svg>\n"));
        assert_eq!(escape("a<b&c"), "a&lt;b&amp;c");
    }
}
