//! Plain-text tables for people.

use serde_json::Value;

/// Prints `rows` (JSON objects) under `columns`, each column as wide as its widest cell.
pub fn print(columns: &[&str], rows: &[Value]) {
    let cell = |row: &Value, c: &str| match &row[c] {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let widths: Vec<usize> = columns
        .iter()
        .map(|c| {
            rows.iter()
                .map(|r| cell(r, c).chars().count())
                .chain([c.len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |cells: Vec<String>| {
        cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_owned()
    };
    println!("{}", line(columns.iter().map(|c| c.to_string()).collect()));
    println!("{}", line(widths.iter().map(|w| "-".repeat(*w)).collect()));
    for r in rows {
        println!("{}", line(columns.iter().map(|c| cell(r, c)).collect()));
    }
    if rows.is_empty() {
        println!("(none)");
    }
}
