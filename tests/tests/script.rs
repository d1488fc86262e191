//! A batch's values travel as SQL literals inside its multi-statement queries. Property: any
//! string (but NUL, which Postgres text cannot hold and the boundary refuses) reaches Postgres
//! exactly as it was, in a text array and as a scalar, whatever quotes, backslashes, braces,
//! dollar signs or delimiters it holds; nothing in it can end a literal early.

use proptest::prelude::*;
use sqlx::Row;
use wa_integration_tests::pool;
use wa_shared::store::script::{Script, Statement};

/// Strings built from the characters that mean something to SQL literals, array literals and
/// dollar quotes, mixed with anything else.
fn tricky() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        Just("'".to_string()),
        Just("\"".to_string()),
        Just("\\".to_string()),
        Just("$".to_string()),
        Just("$v$".to_string()),
        Just("$v".to_string()),
        Just("$$".to_string()),
        Just("{".to_string()),
        Just("}".to_string()),
        Just(",".to_string()),
        Just("NULL".to_string()),
        Just(";".to_string()),
        Just("--".to_string()),
        Just("\n".to_string()),
        Just("\u{1F600}".to_string()),
        "[^\u{0}]{0,3}",
    ];
    prop::collection::vec(piece, 0..12).prop_map(|p| p.concat())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn any_string_reaches_postgres_unchanged(
        values in prop::collection::vec(proptest::option::of(tricky()), 0..6),
        scalar in tricky(),
    ) {
        let rt = tokio::runtime::Runtime::new().expect("runtime");
        rt.block_on(async {
            let pool = pool().await;
            let mut conn = pool.acquire().await.expect("connection");
            let column: Vec<Option<&str>> = values.iter().map(|v| v.as_deref()).collect();
            let mut script: Script<usize> = Script::default();
            script
                .push(0, &Statement::new("SELECT u FROM unnest($1::text[]) WITH ORDINALITY AS t(u, n) ORDER BY n").bind(column))
                .expect("renders");
            script.push(1, &Statement::new("SELECT $1").bind(scalar.as_str())).expect("renders");
            let rows = script.run(&mut conn).await.expect("runs");
            let back: Vec<Option<String>> = rows[0].iter().map(|r| r.get(0)).collect();
            assert_eq!(back, values);
            let back: String = rows[1][0].get(0);
            assert_eq!(back, scalar);
        });
    }
}
