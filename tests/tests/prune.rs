//! Inbox pruning everywhere (SPEC §9): `wa-admin prune` and the scheduled Lambda invocation run
//! the standalone functions' pruning pass — processed-message ids and processing attempts older
//! than the retention — and report what they removed per tenant schema. Each test has a
//! private Postgres, so the pass sees its tenants only.

use std::process::Command;
use std::time::Duration;

use serde_json::{json, Value};
use sqlx::PgPool;
use wa_integration_tests::functions::binary;
use wa_integration_tests::lambda::LocalLambda;
use wa_integration_tests::servers::PrivatePostgres;
use wa_integration_tests::stack::Stack;
use wa_integration_tests::*;
use wa_shared::lambda::PRUNE_REQUEST;
use wa_shared::model::EventKind::ChatUpdate;
use wa_shared::store::attempts::{self, AttemptKey};

/// Two tenants with processed events (`old` of the first's three ids and one of two processing
/// attempts aged past 30 days); the tenants' schema names.
async fn aged_inboxes(pool: &PgPool, old: i64) -> (String, String) {
    let p = processor(pool);
    let (a, b) = (unique_tenant("prunea"), unique_tenant("pruneb"));
    for (tenant, n) in [(&a, 3), (&b, 2)] {
        let events = Events::new(tenant);
        let batch: Vec<_> = (0..n)
            .map(|i| {
                events.json(
                    ChatUpdate,
                    json!({"chat_id": format!("AG_{i}"), "unread_count": 1}),
                )
            })
            .collect();
        run_ok(&p, &batch).await;
    }
    let sql = format!(
        "UPDATE {}.inbox SET processed_at = now() - interval '40 days'
         WHERE stream_sequence IN (SELECT stream_sequence FROM {0}.inbox ORDER BY 1 LIMIT $1)",
        schema_ident(&a)
    );
    sqlx::query(&sql)
        .bind(old)
        .execute(pool)
        .await
        .expect("age");
    let key = |sequence| AttemptKey {
        consumer: "wa_realtime".into(),
        stream: "wa_events_stream".into(),
        sequence,
        published_us: 1,
    };
    attempts::record(pool, &[(key(1), 1), (key(2), 1)])
        .await
        .expect("record attempts");
    sqlx::query(
        "UPDATE wa_system.delivery_attempts SET updated_at = now() - interval '40 days'
         WHERE stream_sequence = 1",
    )
    .execute(pool)
    .await
    .expect("age attempts");
    (schema_name(&a), schema_name(&b))
}

async fn inbox_rows(pool: &PgPool, schema: &str) -> i64 {
    sqlx::query_scalar(&format!("SELECT count(*) FROM \"{schema}\".inbox"))
        .fetch_one(pool)
        .await
        .expect("count")
}

/// The rows a pass removed from `schema`, from its JSON report.
fn removed(report: &Value, schema: &str) -> u64 {
    report["inbox"]
        .as_array()
        .expect("inbox")
        .iter()
        .find(|s| s["schema"] == schema)
        .unwrap_or_else(|| panic!("{schema} not in {report}"))["rows"]
        .as_u64()
        .expect("rows")
}

async fn private_pool(pg: &PrivatePostgres) -> PgPool {
    sqlx::postgres::PgPoolOptions::new()
        .max_connections(2)
        .acquire_timeout(Duration::from_secs(10))
        .connect(&pg.url())
        .await
        .expect("connect")
}

fn wa_admin(database_url: &str, args: &[&str]) -> (String, String) {
    let out = Command::new(binary("wa-admin"))
        .args(args)
        .env_clear()
        .env("DATABASE_URL", database_url)
        .output()
        .expect("run wa-admin");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    assert!(
        out.status.success(),
        "wa-admin {args:?}: {stderr}\n{stdout}"
    );
    (stdout, stderr)
}

#[tokio::test]
async fn wa_admin_prune_forgets_old_ids_and_reports_them_per_tenant() {
    let pg = PrivatePostgres::start();
    let pool = private_pool(&pg).await;
    let (a, b) = aged_inboxes(&pool, 2).await;
    let (out, _) = wa_admin(&pg.url(), &["prune", "--json"]);
    let report: Value = serde_json::from_str(&out).expect("JSON");
    assert_eq!((removed(&report, &a), removed(&report, &b)), (2, 0));
    assert_eq!(report["inbox_rows"], 2);
    assert_eq!(report["attempt_rows"], 1);
    assert_eq!(
        (inbox_rows(&pool, &a).await, inbox_rows(&pool, &b).await),
        (1, 2)
    );
    // For people: the tenants with rows removed, and the totals.
    let (out, _) = wa_admin(&pg.url(), &["prune"]);
    assert!(
        out.contains("removed 0 inbox rows in 0 of 2 tenant schemas"),
        "{out}"
    );
    // --older-than below the streams' retention removes more, with a warning.
    let (out, err) = wa_admin(&pg.url(), &["prune", "--older-than", "0s", "--json"]);
    let report: Value = serde_json::from_str(&out).expect("JSON");
    assert_eq!((removed(&report, &a), removed(&report, &b)), (1, 2));
    assert!(err.contains("may apply twice"), "{err}");
    let bad = Command::new(binary("wa-admin"))
        .args(["prune", "--older-than", "soon"])
        .env_clear()
        .env("DATABASE_URL", pg.url())
        .output()
        .expect("run wa-admin");
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(
        !bad.status.success() && err.contains("--older-than"),
        "{err}"
    );
}

#[tokio::test]
async fn a_scheduled_lambda_invocation_prunes_the_inboxes() {
    let pg = PrivatePostgres::start();
    let pool = private_pool(&pg).await;
    let (a, b) = aged_inboxes(&pool, 2).await;
    let s = Stack::new("lprune").await;
    let lambda = LocalLambda::start(&s, "wa-realtime", &[("DATABASE_URL", &pg.url())]);
    let answer = invoke(&lambda, PRUNE_REQUEST);
    let report = &answer["pruned"];
    assert_eq!(
        (removed(report, &a), removed(report, &b)),
        (2, 0),
        "{answer}"
    );
    assert_eq!(report["attempt_rows"], 1);
    assert_eq!(
        (inbox_rows(&pool, &a).await, inbox_rows(&pool, &b).await),
        (1, 2)
    );
    // Anything else is refused with an error saying what is expected, and prunes nothing.
    let refused = invoke(&lambda, r#"{"prune": {"older_than": "0s"}}"#);
    assert!(
        refused.to_string().contains("invalid pruning request"),
        "{refused}"
    );
    assert_eq!(inbox_rows(&pool, &a).await, 1);
}

/// Invokes the function served by `lambda` with `payload` (`cargo lambda invoke`): its answer,
/// or the function error it returned.
fn invoke(lambda: &LocalLambda, payload: &str) -> Value {
    let out = Command::new("cargo")
        .args([
            "lambda",
            "invoke",
            "--invoke-address",
            "127.0.0.1",
            "--invoke-port",
            &lambda.port.to_string(),
            "--data-ascii",
            payload,
            "--output-format",
            "json",
            "_",
        ])
        .output()
        .expect("run `cargo lambda invoke` (pip install cargo-lambda)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    serde_json::from_str(stdout.trim())
        .unwrap_or_else(|_| json!({"error": format!("{stdout}{stderr}")}))
}
