//! Every binary's `--help` (generated from the one declaration of each variable) against the
//! README's variable tables, so that the documentation cannot drift from the code.

use std::collections::BTreeMap;
use std::process::Command;

use wa_integration_tests::functions::binary;

const BINARIES: [&str; 6] = [
    "wa-realtime",
    "wa-historical",
    "wa-dlq-retry",
    "wa-onboarding",
    "wa-bridge",
    "wa-admin",
];

/// `(variable, default)` of every option in a `--help` text (clap's `[env: …]`/`[default: …]`).
fn help_variables(bin: &str) -> Vec<(String, Option<String>)> {
    let out = Command::new(binary(bin))
        .arg("--help")
        .env_clear()
        .output()
        .expect("run --help");
    assert!(out.status.success(), "{bin} --help failed");
    let text = String::from_utf8(out.stdout).expect("utf-8 help");
    let mut vars = Vec::new();
    for block in text.split("\n  ").filter(|b| b.contains("[env: ")) {
        let bracket = |tag: &str| {
            let start = block.find(tag)? + tag.len();
            let end = block[start..].find(']')? + start;
            Some(block[start..end].trim().to_owned())
        };
        // `[env: NAME]`, or `[env: NAME=value]` for a variable whose value is not hidden.
        let env = bracket("[env: ").expect("env name");
        let name = env.split('=').next().unwrap_or_default().to_owned();
        vars.push((name, bracket("[default: ")));
    }
    assert!(!vars.is_empty(), "{bin} --help lists no variables:\n{text}");
    vars
}

/// The README's variable tables: each row's backticked names, and its default cell.
fn readme_rows() -> Vec<(Vec<String>, String)> {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md"))
        .expect("README.md");
    let mut rows = Vec::new();
    let mut in_table = false;
    for line in readme.lines() {
        if line.starts_with("| variable |") {
            in_table = true;
            continue;
        }
        if !line.starts_with('|') {
            in_table = false;
        }
        if !in_table || line.starts_with("|---") {
            continue;
        }
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        let names = cells[1]
            .split('`')
            .skip(1)
            .step_by(2)
            .map(str::to_owned)
            .collect();
        rows.push((names, cells[2].to_owned()));
    }
    assert!(rows.len() > 20, "README variable tables not found");
    rows
}

#[test]
fn every_variable_in_help_is_in_the_readme_with_its_default() {
    let rows = readme_rows();
    let mut seen: BTreeMap<String, Vec<&str>> = BTreeMap::new();
    for bin in BINARIES {
        for (var, default) in help_variables(bin) {
            seen.entry(var.clone()).or_default().push(bin);
            let documented: Vec<&String> = rows
                .iter()
                .filter(|(names, _)| names.contains(&var))
                .map(|(_, d)| d)
                .collect();
            assert!(
                !documented.is_empty(),
                "{var} ({bin} --help) is missing from the README's variable tables"
            );
            if let Some(default) = default {
                assert!(
                    documented
                        .iter()
                        .any(|cell| cell.contains(&format!("`{default}`"))),
                    "{bin}'s default of {var}, `{default}`, is not in the README ({documented:?})"
                );
            }
        }
    }
    for (names, _) in &rows {
        let var = &names[0];
        assert!(
            seen.contains_key(var),
            "the README documents {var}, which no binary's --help lists"
        );
    }
}

#[test]
fn help_never_shows_a_secret() {
    let secret = "postgres://app:hunter2@db.internal:5432/wa";
    for bin in BINARIES {
        let out = Command::new(binary(bin))
            .arg("--help")
            .env_clear()
            .env("DATABASE_URL", secret)
            .env("NATS_URL", "nats://u:hunter2@nats:4222")
            .env("NATS_PASSWORD", "hunter2")
            .env("NATS_TOKEN", "hunter2")
            .output()
            .expect("run --help");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{bin}: {text}");
        assert!(
            !text.contains("hunter2"),
            "{bin} --help shows a secret:\n{text}"
        );
    }
}
