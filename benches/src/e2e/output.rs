//! The report files: the Markdown table, the JSON of every measurement, and the charts.

use std::path::{Path, PathBuf};

use super::error::{Context, Result};
use super::raw_tenants::Variant;
use super::{chart, table, Results};

/// Writes `e2e.md`, `e2e.json`, `e2e-throughput.png` and (with a sweep) `e2e-tenants.png`
/// into `dir`; returns their paths.
pub fn write_report(results: &Results, dir: &Path) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).context(format_args!("creating {}", dir.display()))?;
    let md = dir.join("e2e.md");
    std::fs::write(&md, table::markdown(results))
        .context(format_args!("writing {}", md.display()))?;
    let json = dir.join("e2e.json");
    let text = serde_json::to_string_pretty(&results.to_json()).context("report JSON")?;
    std::fs::write(&json, text).context(format_args!("writing {}", json.display()))?;
    let png = dir.join("e2e-throughput.png");
    let font = chart::load_font();
    if !font {
        eprintln!("warning: no TrueType font found (e.g. apt-get install fonts-dejavu-core); the chart has no text");
    }
    let lines = [
        chart::Line {
            label: "wa-realtime, committed events/s".into(),
            points: chart::rates(
                &results
                    .realtime
                    .samples
                    .iter()
                    .map(|s| (s.at.as_secs_f64(), s.events as f64))
                    .collect::<Vec<_>>(),
                1.0,
            ),
            color: chart::REALTIME,
        },
        chart::Line {
            label: format!(
                "wa-historical, committed rows/s ({})",
                results.history_subjects
            ),
            points: chart::rates(&results.history.row_samples(), 1.0),
            color: chart::HISTORY,
        },
    ];
    let limits = [
        chart::Limit {
            label: "raw SQL realtime events/s".into(),
            value: results.raw_realtime.events_per_sec(),
            color: chart::REALTIME,
        },
        chart::Limit {
            label: "raw SQL history rows/s".into(),
            value: results.raw_history.rows_per_sec(),
            color: chart::HISTORY,
        },
    ];
    chart::draw(&png, &lines, &limits, font)?;
    let mut files = vec![md, json, png];
    if !results.sweep.is_empty() {
        let png = dir.join("e2e-tenants.png");
        chart::draw_tenants(&png, &tenant_lines(results), font)?;
        files.push(png);
    }
    Ok(files)
}

/// The sweep's series: the function, the fastest raw SQL at each count, and every variant.
fn tenant_lines(results: &Results) -> Vec<chart::TenantLine> {
    let points = |f: &dyn Fn(&super::sweep::Step) -> Option<f64>| {
        results
            .sweep
            .iter()
            .filter_map(|s| f(s).map(|v| (s.tenants as f64, v)))
            .collect::<Vec<_>>()
    };
    let agents = results.sweep.first().map_or(0, |s| s.agents_per_tenant);
    let mut lines = vec![
        chart::TenantLine {
            label: format!("wa-realtime, committed events/s ({agents} agents per tenant)"),
            points: points(&|s| Some(s.events_per_sec())),
            color: chart::REALTIME,
            dashed: false,
        },
        chart::TenantLine {
            label: "raw SQL of the same writes, fastest variant".into(),
            points: points(&|s| Some(s.raw_per_sec())),
            color: chart::RAW,
            dashed: false,
        },
    ];
    for (variant, color) in Variant::ALL.iter().zip(chart::RAW_VARIANTS) {
        lines.push(chart::TenantLine {
            label: format!("raw SQL, {}", variant.name()),
            points: points(&|s| {
                s.raw
                    .iter()
                    .find(|r| r.variant == *variant)
                    .map(|r| r.events_per_sec())
            }),
            color,
            dashed: true,
        });
    }
    lines
}
