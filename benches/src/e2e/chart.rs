//! The charts: committed events/s (realtime) and rows/s (history) over the time of their
//! phases, with the raw SQL limits as dashed lines ([`draw`]); and the tenant sweep, events/s
//! against the tenant count on a logarithmic axis, the function next to raw SQL
//! ([`draw_tenants`]). Text needs a TrueType font read at run time (plotters' ab_glyph backend
//! embeds none); without one the charts have no text.

use std::path::Path;

use plotters::prelude::*;
use plotters::style::{register_font, FontStyle};

use super::error::{Error, Result};

/// Fonts tried in order (Debian/Ubuntu, Fedora, Arch, Alpine paths).
const FONTS: &[&str] = &[
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu-sans-fonts/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
    "/usr/share/fonts/liberation-sans/LiberationSans-Regular.ttf",
    "/usr/share/fonts/truetype/freefont/FreeSans.ttf",
    "/usr/share/fonts/noto/NotoSans-Regular.ttf",
    "/usr/share/fonts/truetype/noto/NotoSans-Regular.ttf",
];

/// A line of the chart: (seconds, per-second value) points.
pub struct Line {
    pub label: String,
    pub points: Vec<(f64, f64)>,
    pub color: RGBColor,
}

/// A horizontal reference line (a raw limit).
pub struct Limit {
    pub label: String,
    pub value: f64,
    pub color: RGBColor,
}

pub const REALTIME: RGBColor = RGBColor(31, 119, 180);
pub const HISTORY: RGBColor = RGBColor(214, 39, 40);
pub const RAW: RGBColor = RGBColor(255, 127, 14);
pub const RAW_VARIANTS: [RGBColor; 4] = [
    RGBColor(140, 140, 140),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
];

/// A series of the tenant chart: (tenants, events/s) points.
pub struct TenantLine {
    pub label: String,
    pub points: Vec<(f64, f64)>,
    pub color: RGBColor,
    /// Thin and dashed (a raw variant) instead of bold with markers.
    pub dashed: bool,
}

/// Registers the first font found as `sans-serif`; false when there is none.
pub fn load_font() -> bool {
    for path in FONTS {
        if let Ok(bytes) = std::fs::read(path) {
            // plotters keeps fonts for the life of the process: leak the one we register.
            let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
            if register_font("sans-serif", FontStyle::Normal, bytes).is_ok() {
                return true;
            }
        }
    }
    false
}

/// Per-second rates of cumulative (seconds, total) samples, each over the last `window` s.
pub fn rates(samples: &[(f64, f64)], window: f64) -> Vec<(f64, f64)> {
    let mut out = Vec::with_capacity(samples.len());
    let mut j = 0;
    for (i, &(t, v)) in samples.iter().enumerate() {
        while j + 1 < i && t - samples[j + 1].0 >= window {
            j += 1;
        }
        if i == 0 {
            out.push((t, 0.0));
            continue;
        }
        let (t0, v0) = samples[j];
        let dt = t - t0;
        out.push((t, if dt > 0.0 { (v - v0) / dt } else { 0.0 }));
    }
    out
}

/// Draws the chart as a PNG; `text` false draws axes and lines without any text.
pub fn draw(path: &Path, lines: &[Line], limits: &[Limit], text: bool) -> Result<()> {
    draw_inner(path, lines, limits, text).map_err(|e| Error::new(format!("chart: {e}")))
}

fn draw_inner(
    path: &Path,
    lines: &[Line],
    limits: &[Limit],
    text: bool,
) -> Result<(), Box<dyn std::error::Error>> {
    let root = BitMapBackend::new(path, (1200, 600)).into_drawing_area();
    root.fill(&WHITE)?;
    let max_t = lines
        .iter()
        .flat_map(|l| l.points.iter().map(|p| p.0))
        .fold(1.0_f64, f64::max);
    let max_y = lines
        .iter()
        .flat_map(|l| l.points.iter().map(|p| p.1))
        .chain(limits.iter().map(|l| l.value))
        .fold(1.0_f64, f64::max)
        // Head room for the legend, which sits in the upper right corner.
        * if text { 1.4 } else { 1.1 };
    let mut builder = ChartBuilder::on(&root);
    builder.margin(20);
    if text {
        builder
            .caption(
                "WA Events Processor: committed throughput over time",
                ("sans-serif", 24),
            )
            .x_label_area_size(45)
            .y_label_area_size(80);
    }
    let mut chart = builder.build_cartesian_2d(0.0..max_t, 0.0..max_y)?;
    let mut mesh = chart.configure_mesh();
    if text {
        mesh.x_desc("seconds since publishing started")
            .y_desc("per second")
            .y_label_formatter(&|v| format!("{v:.0}"));
    }
    mesh.draw()?;
    for line in lines {
        let series = chart.draw_series(LineSeries::new(
            line.points.iter().copied(),
            line.color.stroke_width(2),
        ))?;
        if text {
            let color = line.color;
            series.label(line.label.as_str()).legend(move |(x, y)| {
                PathElement::new([(x, y), (x + 20, y)], color.stroke_width(2))
            });
        }
    }
    for limit in limits {
        let style = limit.color.mix(0.8).stroke_width(2);
        let series = chart.draw_series(DashedLineSeries::new(
            [(0.0, limit.value), (max_t, limit.value)],
            8,
            6,
            style,
        ))?;
        if text {
            series
                .label(limit.label.as_str())
                .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], style));
        }
    }
    if text {
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .position(SeriesLabelPosition::UpperRight)
            .draw()?;
    }
    root.present()?;
    Ok(())
}

/// Draws events/s against tenants (logarithmic x axis) as a PNG; `text` false draws no text.
pub fn draw_tenants(path: &Path, lines: &[TenantLine], text: bool) -> Result<()> {
    draw_tenants_inner(path, lines, text).map_err(|e| Error::new(format!("chart: {e}")))
}

fn draw_tenants_inner(
    path: &Path,
    lines: &[TenantLine],
    text: bool,
) -> Result<(), Box<dyn std::error::Error>> {
    let root = BitMapBackend::new(path, (1200, 600)).into_drawing_area();
    root.fill(&WHITE)?;
    let xs = || lines.iter().flat_map(|l| l.points.iter().map(|p| p.0));
    let min_x = xs().fold(f64::INFINITY, f64::min).max(1.0);
    let max_x = xs().fold(1.0_f64, f64::max).max(min_x);
    // Room on both sides of the outer counts, so their markers are not on the frame.
    let (lo, hi) = (min_x / 1.5, max_x * 1.5);
    let max_y = lines
        .iter()
        .flat_map(|l| l.points.iter().map(|p| p.1))
        .fold(1.0_f64, f64::max)
        * if text { 1.35 } else { 1.1 };
    let mut builder = ChartBuilder::on(&root);
    builder.margin(20);
    if text {
        builder
            .caption(
                "WA Events Processor: realtime events/s against the tenant count",
                ("sans-serif", 24),
            )
            .x_label_area_size(45)
            .y_label_area_size(80);
    }
    // Ticks at the measured counts (a log axis would label only powers of ten and their
    // multiples, and draw a dense mesh).
    let mut counts: Vec<f64> = xs().collect();
    counts.sort_by(f64::total_cmp);
    counts.dedup();
    let mut chart =
        builder.build_cartesian_2d((lo..hi).log_scale().with_key_points(counts), 0.0..max_y)?;
    let mut mesh = chart.configure_mesh();
    if text {
        mesh.x_desc("tenants (log scale)")
            .y_desc("events per second")
            .x_label_formatter(&|v| format!("{v:.0}"))
            .y_label_formatter(&|v| format!("{v:.0}"));
    }
    mesh.draw()?;
    for line in lines {
        let color = line.color;
        let points = line.points.iter().copied();
        let series = if line.dashed {
            chart.draw_series(DashedLineSeries::new(
                points,
                6,
                5,
                color.mix(0.9).stroke_width(1),
            ))?
        } else {
            chart.draw_series(LineSeries::new(points, color.stroke_width(3)).point_size(5))?
        };
        if text {
            let width = if line.dashed { 1 } else { 3 };
            series.label(line.label.as_str()).legend(move |(x, y)| {
                PathElement::new([(x, y), (x + 20, y)], color.stroke_width(width))
            });
        }
    }
    if text {
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .position(SeriesLabelPosition::UpperRight)
            .draw()?;
    }
    root.present()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines() -> (Vec<Line>, Vec<Limit>) {
        let points: Vec<(f64, f64)> = (0..40)
            .map(|i| (i as f64 * 0.25, i as f64 * 500.0))
            .collect();
        (
            vec![Line {
                label: "realtime e2e events/s".into(),
                points: rates(&points, 1.0),
                color: REALTIME,
            }],
            vec![Limit {
                label: "raw SQL realtime events/s".into(),
                value: 3000.0,
                color: REALTIME,
            }],
        )
    }

    #[test]
    fn rates_are_differences_over_the_window() {
        let samples = [
            (0.0, 0.0),
            (0.5, 500.0),
            (1.0, 1000.0),
            (1.5, 2000.0),
            (2.0, 3000.0),
        ];
        let r = rates(&samples, 1.0);
        assert_eq!(r[0], (0.0, 0.0));
        assert_eq!(r[1], (0.5, 1000.0));
        assert_eq!(r[2], (1.0, 1000.0));
        assert_eq!(r[4], (2.0, 2000.0));
    }

    #[test]
    fn a_tenant_chart_is_drawn_for_one_count_or_many() {
        let dir = std::env::temp_dir().join(format!("wa-tchart-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let font = load_font();
        for counts in [vec![4.0_f64], vec![1.0, 4.0, 64.0, 512.0, 2000.0]] {
            let line = |label: &str, f: f64, color, dashed| TenantLine {
                label: label.into(),
                points: counts.iter().map(|&t| (t, f / t.sqrt())).collect(),
                color,
                dashed,
            };
            let lines = [
                line("wa-realtime", 20_000.0, REALTIME, false),
                line("raw SQL, fastest", 40_000.0, RAW, false),
                line("raw SQL, tx per tenant", 30_000.0, RAW_VARIANTS[0], true),
            ];
            let png = dir.join(format!("t{}.png", counts.len()));
            draw_tenants(&png, &lines, font).unwrap();
            assert!(std::fs::metadata(&png).unwrap().len() > 1000);
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_chart_is_drawn_with_or_without_a_font() {
        let dir = std::env::temp_dir().join(format!("wa-chart-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (l, m) = lines();
        let bare = dir.join("bare.png");
        draw(&bare, &l, &m, false).unwrap();
        assert!(std::fs::metadata(&bare).unwrap().len() > 1000);
        if load_font() {
            let full = dir.join("text.png");
            draw(&full, &l, &m, true).unwrap();
            assert!(std::fs::metadata(&full).unwrap().len() > 1000);
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
