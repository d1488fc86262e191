//! SQL lives in `shared/src/store/`: no string literal elsewhere in the library or the function
//! binaries holds an SQL statement.

use std::path::{Path, PathBuf};

/// Every `.rs` file below `dir`.
fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.expect("directory entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The string literals of Rust source (plain, byte and raw), skipping comments and chars.
fn string_literals(src: &str) -> Vec<String> {
    let b = src.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'/' if b.get(i + 1) == Some(&b'/') => {
                i = src[i..].find('\n').map_or(b.len(), |n| i + n);
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                i = src[i + 2..].find("*/").map_or(b.len(), |n| i + 2 + n + 2);
            }
            // A char literal ('x', '\n', '"'); otherwise a lifetime.
            b'\'' if b.get(i + 1) == Some(&b'\\') => {
                i = src[i + 3..].find('\'').map_or(b.len(), |n| i + 3 + n + 1);
            }
            b'\'' if b.get(i + 2) == Some(&b'\'') => i += 3,
            b'r' if matches!(b.get(i + 1), Some(b'"' | b'#'))
                && (i == 0 || !(b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'_')) =>
            {
                let hashes = b[i + 1..].iter().take_while(|&&c| c == b'#').count();
                if b.get(i + 1 + hashes) != Some(&b'"') {
                    i += 1;
                    continue;
                }
                let start = i + 2 + hashes;
                let end = format!("\"{}", "#".repeat(hashes));
                let len = src[start..].find(&end).expect("raw string ends");
                out.push(src[start..start + len].to_owned());
                i = start + len + end.len();
            }
            b'"' => {
                let mut j = i + 1;
                while j < b.len() && b[j] != b'"' {
                    j += if b[j] == b'\\' { 2 } else { 1 };
                }
                out.push(src[i + 1..j.min(b.len())].to_owned());
                i = j + 1;
            }
            _ => i += 1,
        }
    }
    out
}

/// Whether a literal holds an SQL statement: upper-case statement keywords, the way this
/// codebase writes SQL (prose and log messages are lower case).
fn is_sql(s: &str) -> bool {
    const ALWAYS: [&str; 12] = [
        "INSERT INTO",
        "DELETE FROM",
        "SAVEPOINT",
        "CREATE TABLE",
        "CREATE SCHEMA",
        "CREATE INDEX",
        "ALTER ",
        "DROP ",
        "TRUNCATE ",
        "BEGIN;",
        "set_config(",
        "pg_advisory",
    ];
    let word = |w: &str| {
        s.match_indices(w).any(|(at, _)| {
            at == 0 || !s.as_bytes()[at - 1].is_ascii_alphanumeric() && s.as_bytes()[at - 1] != b'_'
        })
    };
    ALWAYS.iter().any(|k| word(k))
        || s.trim() == "BEGIN"
        || word("SELECT ")
        || s.find("UPDATE ")
            .is_some_and(|at| s[at..].contains(" SET "))
}

#[test]
fn the_detector_tells_statements_from_prose() {
    for sql in [
        "SELECT 1",
        "SELECT count(*) FROM {q}.chats",
        "INSERT INTO inbox (stream) VALUES ($1)",
        "UPDATE contacts SET tags = $2 WHERE id = $1",
        "DELETE FROM inbox WHERE true",
        "SAVEPOINT item",
        "BEGIN",
        "BEGIN; SELECT set_config('search_path', 'x', true)",
        "CREATE TABLE IF NOT EXISTS x (a int)",
        "ALTER TABLE x ADD COLUMN y int",
    ] {
        assert!(is_sql(sql), "{sql}");
    }
    for prose in [
        "select a tenant with --tenant",
        "database unavailable; holding the batch",
        "message to update not found yet",
        "the update was set aside",
        "BEGINNER",
        "RESELECT the row",
        "v1.messages.update",
    ] {
        assert!(!is_sql(prose), "{prose}");
    }
    let src =
        "let a = r#\"SELECT 1\"#; // \"INSERT INTO x\"\nlet c = '\"'; let d = \"DELETE FROM t\";";
    assert_eq!(string_literals(src), ["SELECT 1", "DELETE FROM t"]);
}

#[test]
fn sql_statements_live_only_in_the_store() {
    let shared = Path::new(env!("CARGO_MANIFEST_DIR"));
    let store = shared.join("src").join("store");
    let mut files = Vec::new();
    rust_files(&shared.join("src"), &mut files);
    let workspace = shared.parent().expect("shared/ is in the workspace");
    rust_files(&workspace.join("functions"), &mut files);
    let offenders: Vec<String> = files
        .iter()
        .filter(|f| !f.starts_with(&store))
        .flat_map(|f| {
            let src = std::fs::read_to_string(f).expect("source file");
            string_literals(&src)
                .into_iter()
                .filter(|s| is_sql(s))
                .map(|s| format!("{}: {s:?}", f.display()))
                .collect::<Vec<_>>()
        })
        .collect();
    assert!(
        offenders.is_empty(),
        "SQL belongs in shared/src/store/, found:\n{}",
        offenders.join("\n")
    );
}
