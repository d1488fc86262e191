//! The report files: the Markdown table, the JSON of every measurement, and the chart.

use std::path::{Path, PathBuf};

use super::error::{Context, Result};
use super::{chart, table, Results};

/// Writes `e2e.md`, `e2e.json` and `e2e-throughput.png` into `dir`; returns their paths.
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
    Ok(vec![md, json, png])
}
