//! Line charts against concurrency (events/s; CPU µs per event), one panel per body size,
//! y on a log scale.
//!
//! PNG through plotters' bitmap backend, with text drawn by `ab_glyph` from a font file found
//! on this machine (nothing is fetched). Without any font file, a plain SVG is written
//! instead (the viewer renders its text), so the chart never needs a font download.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use plotters::prelude::*;
use plotters::style::{FontStyle, register_font};

/// One line of one panel: `(concurrency, y)` points.
pub struct Line {
    pub system: String,
    /// Index into the palette, fixed per system so that panels agree.
    pub color: usize,
    pub points: Vec<(f64, f64)>,
}

/// One panel: a body size.
pub struct Panel {
    pub title: String,
    pub lines: Vec<Line>,
}

const COLORS: [(u8, u8, u8); 9] = [
    (31, 119, 180),
    (214, 39, 40),
    (44, 160, 44),
    (255, 127, 14),
    (148, 103, 189),
    (140, 86, 75),
    (23, 190, 207),
    (127, 127, 127),
    (188, 189, 34),
];

/// A sans-serif TrueType/OpenType font on this machine: `LOADTEST_FONT`, a few well-known
/// paths, else any regular `*.ttf`/`*.otf` under the usual font folders.
pub fn find_font() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("LOADTEST_FONT") {
        return Some(PathBuf::from(p));
    }
    const KNOWN: [&str; 5] = [
        "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
        "/usr/share/fonts/TTF/DejaVuSans.ttf",
        "/usr/share/fonts/dejavu/DejaVuSans.ttf",
        "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
        "/usr/share/fonts/truetype/noto/NotoSans-Regular.ttf",
    ];
    if let Some(p) = KNOWN.iter().map(PathBuf::from).find(|p| p.is_file()) {
        return Some(p);
    }
    let mut found = Vec::new();
    for dir in ["/usr/share/fonts", "/usr/local/share/fonts"] {
        walk(Path::new(dir), 0, &mut found);
    }
    let plain = |p: &PathBuf| {
        let n = p.file_name().map(|n| n.to_string_lossy().to_lowercase());
        let n = n.unwrap_or_default();
        !["bold", "italic", "oblique", "mono", "light", "condensed"]
            .iter()
            .any(|w| n.contains(w))
    };
    found.sort();
    found
        .iter()
        .find(|p| plain(p) && p.to_string_lossy().to_lowercase().contains("sans"))
        .or_else(|| found.iter().find(|p| plain(p)))
        .or_else(|| found.first())
        .cloned()
}

fn walk(dir: &Path, depth: usize, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() && depth < 6 {
            walk(&p, depth + 1, out);
        } else if p
            .extension()
            .is_some_and(|x| x.eq_ignore_ascii_case("ttf") || x.eq_ignore_ascii_case("otf"))
        {
            out.push(p);
        }
    }
}

/// Writes the chart: `<stem>.png` when a font is found, else `<stem>.svg`. Returns the path.
/// `y_desc` labels the y axis.
pub fn write(stem: &Path, title: &str, y_desc: &str, panels: &[Panel]) -> Result<PathBuf, String> {
    if let Some(font) = find_font() {
        // plotters keeps registered fonts for the life of the process.
        let bytes: &'static [u8] = match std::fs::read(&font) {
            Ok(b) => Box::leak(b.into_boxed_slice()),
            Err(_) => &[],
        };
        if register_font("sans-serif", FontStyle::Normal, bytes).is_ok() {
            let path = stem.with_extension("png");
            png(&path, title, y_desc, panels)
                .map_err(|e| format!("chart {}: {e}", path.display()))?;
            return Ok(path);
        }
        eprintln!(
            "loadtest: {} is not a usable font; writing an SVG chart",
            font.display()
        );
    } else {
        eprintln!("loadtest: no font file under /usr/share/fonts; writing an SVG chart");
    }
    let path = stem.with_extension("svg");
    std::fs::write(&path, svg(title, y_desc, panels))
        .map_err(|e| format!("chart {}: {e}", path.display()))?;
    Ok(path)
}

fn ranges(panels: &[Panel]) -> ((f64, f64), (f64, f64)) {
    let pts = || {
        panels
            .iter()
            .flat_map(|p| &p.lines)
            .flat_map(|l| &l.points)
            .filter(|p| p.1 > 0.0)
    };
    let x_max = pts().map(|p| p.0).fold(1.0, f64::max);
    let y_min = pts().map(|p| p.1).fold(f64::INFINITY, f64::min);
    let y_max = pts().map(|p| p.1).fold(0.0, f64::max);
    let (y_min, y_max) = if y_max > 0.0 {
        // A spare decade and a bit at the bottom for the legend.
        (y_min / 12.0, y_max * 2.0)
    } else {
        (1.0, 10.0)
    };
    ((0.8, x_max * 1.25), (y_min, y_max))
}

fn si(v: f64) -> String {
    if v >= 1e6 {
        let m = format!("{:.3}", v / 1e6);
        format!("{}M", m.trim_end_matches('0').trim_end_matches('.'))
    } else if v >= 1e3 {
        format!("{:.0}k", v / 1e3)
    } else if v >= 10.0 {
        format!("{v:.0}")
    } else {
        // CPU µs per event: 0.1, 0.25, 1.5.
        let s = format!("{v:.2}");
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    }
}

fn png(
    path: &Path,
    title: &str,
    y_desc: &str,
    panels: &[Panel],
) -> Result<(), Box<dyn std::error::Error>> {
    let width = 620 * panels.len().max(1) as u32;
    let root = BitMapBackend::new(path, (width, 520)).into_drawing_area();
    root.fill(&WHITE)?;
    let root = root.titled(title, ("sans-serif", 22))?;
    // x is log2(concurrency) on a linear axis, so the ticks fall on 1, 2, 4, ... only.
    let ((_, x1), (y0, y1)) = ranges(panels);
    let x_max = (x1 / 1.25).log2().ceil().max(1.0);
    let areas = root.split_evenly((1, panels.len().max(1)));
    for (area, panel) in areas.iter().zip(panels) {
        let mut chart = ChartBuilder::on(area)
            .caption(&panel.title, ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(45)
            .y_label_area_size(70)
            .build_cartesian_2d(-0.3..x_max, (y0..y1).log_scale())?;
        chart
            .configure_mesh()
            .x_labels(x_max as usize + 2)
            .x_max_light_lines(0)
            .x_desc("concurrency (keep-alive connections)")
            .y_desc(y_desc)
            .x_label_formatter(&|x| {
                if (x - x.round()).abs() < 1e-6 && *x >= 0.0 {
                    format!("{}", 1u64 << (x.round() as u32))
                } else {
                    String::new()
                }
            })
            .y_label_formatter(&|y| si(*y))
            .label_style(("sans-serif", 13))
            .draw()?;
        for line in &panel.lines {
            let (r, g, b) = COLORS[line.color % COLORS.len()];
            let color = RGBColor(r, g, b);
            let pts: Vec<(f64, f64)> = line
                .points
                .iter()
                .filter(|p| p.1 > 0.0 && p.0 >= 1.0)
                .map(|&(c, y)| (c.log2(), y))
                .collect();
            chart
                .draw_series(LineSeries::new(pts.clone(), color.stroke_width(2)))?
                .label(line.system.as_str())
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
                });
            chart.draw_series(pts.iter().map(|&p| Circle::new(p, 4, color.filled())))?;
        }
        chart
            .configure_series_labels()
            .label_font(("sans-serif", 13))
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .position(SeriesLabelPosition::LowerRight)
            .draw()?;
    }
    root.present()?;
    Ok(())
}

/// The same chart as a plain SVG, for machines without any font file.
fn svg(title: &str, y_desc: &str, panels: &[Panel]) -> String {
    let (pw, ph) = (620.0, 480.0);
    let (left, right, top, bottom) = (80.0, 20.0, 40.0, 60.0);
    let ((x0, x1), (y0, y1)) = ranges(panels);
    let sx = |x: f64| left + (x.ln() - x0.ln()) / (x1.ln() - x0.ln()) * (pw - left - right);
    let sy = |y: f64| top + (1.0 - (y.ln() - y0.ln()) / (y1.ln() - y0.ln())) * (ph - top - bottom);
    let width = pw * panels.len().max(1) as f64;
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{h}" font-family="sans-serif">
<rect width="100%" height="100%" fill="white"/>
<text x="{cx}" y="24" font-size="20" text-anchor="middle">{title}</text>
"#,
        h = ph + 30.0,
        cx = width / 2.0,
        title = esc(title)
    );
    for (k, panel) in panels.iter().enumerate() {
        let _ = write!(
            s,
            r#"<g transform="translate({dx},30)">
<text x="{cx}" y="20" font-size="16" text-anchor="middle">{t}</text>
<rect x="{left}" y="{top}" width="{w}" height="{h}" fill="none" stroke="black"/>
<text x="{cx}" y="{xl}" font-size="13" text-anchor="middle">concurrency (keep-alive connections)</text>
<text x="16" y="{cy}" font-size="13" text-anchor="middle" transform="rotate(-90 16 {cy})">{yd}</text>
"#,
            dx = k as f64 * pw,
            cx = left + (pw - left - right) / 2.0,
            t = esc(&panel.title),
            yd = esc(y_desc),
            w = pw - left - right,
            h = ph - top - bottom,
            xl = ph - 15.0,
            cy = top + (ph - top - bottom) / 2.0,
        );
        let mut c = 1.0;
        while c <= x1 {
            let _ = writeln!(
                s,
                r#"<text x="{x:.1}" y="{y}" font-size="12" text-anchor="middle">{c}</text>"#,
                x = sx(c),
                y = ph - bottom + 16.0
            );
            c *= 2.0;
        }
        let mut d = 10f64.powf(y0.log10().ceil());
        while d <= y1 {
            let _ = writeln!(
                s,
                r##"<line x1="{left}" x2="{r}" y1="{y:.1}" y2="{y:.1}" stroke="#ddd"/><text x="{tx}" y="{ty:.1}" font-size="12" text-anchor="end">{v}</text>"##,
                r = pw - right,
                y = sy(d),
                tx = left - 6.0,
                ty = sy(d) + 4.0,
                v = si(d)
            );
            d *= 10.0;
        }
        for (i, line) in panel.lines.iter().enumerate() {
            let (r, g, b) = COLORS[line.color % COLORS.len()];
            let pts: Vec<String> = line
                .points
                .iter()
                .filter(|p| p.1 > 0.0)
                .map(|&(x, y)| format!("{:.1},{:.1}", sx(x), sy(y)))
                .collect();
            let _ = writeln!(
                s,
                r#"<polyline points="{}" fill="none" stroke="rgb({r},{g},{b})" stroke-width="2"/>"#,
                pts.join(" ")
            );
            for p in &pts {
                let (x, y) = p.split_once(',').unwrap_or(("0", "0"));
                let _ = writeln!(
                    s,
                    r#"<circle cx="{x}" cy="{y}" r="4" fill="rgb({r},{g},{b})"/>"#
                );
            }
            let ly = ph - bottom - 20.0 - 18.0 * (panel.lines.len() - 1 - i) as f64;
            let _ = writeln!(
                s,
                r#"<line x1="{a}" x2="{b2}" y1="{ly}" y2="{ly}" stroke="rgb({r},{g},{b})" stroke-width="2"/><text x="{tx}" y="{ty}" font-size="12">{name}</text>"#,
                a = pw - right - 150.0,
                b2 = pw - right - 130.0,
                tx = pw - right - 125.0,
                ty = ly + 4.0,
                name = esc(&line.system)
            );
        }
        s.push_str("</g>\n");
    }
    s.push_str("</svg>\n");
    s
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn svg_fallback_has_every_line() {
        let panels = vec![Panel {
            title: "30 events".into(),
            lines: vec![
                Line {
                    system: "event-ingest".into(),
                    color: 0,
                    points: vec![(1.0, 1e5), (32.0, 4e5)],
                },
                Line {
                    system: "ch-direct".into(),
                    color: 3,
                    points: vec![(1.0, 3e3), (32.0, 0.0)],
                },
            ],
        }];
        let s = svg("t", "events/s (log)", &panels);
        assert_eq!(s.matches("<polyline").count(), 2);
        assert!(s.contains("event-ingest") && s.contains("ch-direct"));
    }

    #[test]
    fn si_labels() {
        assert_eq!(si(1e6), "1M");
        assert_eq!(si(2.5e6), "2.5M");
        assert_eq!(si(1e4), "10k");
        assert_eq!(si(100.0), "100");
        assert_eq!(si(1.0), "1");
        assert_eq!(si(0.1), "0.1");
        assert_eq!(si(0.25), "0.25");
    }
}
