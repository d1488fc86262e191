//! Every producer fixture decodes, validates and lands as SPEC §4 says.

use wa_integration_tests::expect::*;
use wa_integration_tests::*;
use wa_shared::model::{decode, EventKind, Payload, Subject};

#[test]
fn every_fixture_line_parses_and_validates() {
    let mut total = 0;
    for kind in EventKind::ALL {
        let subject = Subject::parse(&format!("{}.CMP001", kind.base())).unwrap();
        for (n, line) in fixture_lines(kind, "CMP001").iter().enumerate() {
            let payload = decode(&subject, line.as_bytes(), 1 << 20)
                .unwrap_or_else(|e| panic!("{} line {}: {e}", kind.base(), n + 1));
            if let Payload::History(items) = payload {
                for (i, item) in items.iter().enumerate() {
                    assert!(
                        item.is_ok(),
                        "{} line {} item {i}: {:?}",
                        kind.base(),
                        n + 1,
                        item
                    );
                }
            }
            total += 1;
        }
    }
    assert!(total >= 30, "only {total} fixture lines found");
}

/// All fixtures, batch by batch in the producer's order.
#[tokio::test]
async fn fixtures_land_as_the_contract_says() {
    let pool = pool().await;
    let tenant = unique_tenant("fx");
    let ev = Events::new(&tenant);
    let p = processor(&pool);
    for kind in FIXTURE_ORDER {
        run_ok(&p, &ev.fixtures(kind)).await;
    }

    assert_fixture_state(&pool, &tenant).await;
}

#[tokio::test]
async fn applying_the_same_batch_twice_leaves_identical_rows() {
    let pool = pool().await;
    let tenant = unique_tenant("twice");
    let ev = Events::new(&tenant);
    let p = processor(&pool);
    let mut batch = Vec::new();
    for kind in EventKind::ALL {
        batch.extend(ev.fixtures(kind));
    }
    let first = run(&p, &batch).await;
    let after_first = snapshot(&pool, &tenant).await;
    let again: Vec<_> = batch.iter().map(redelivered).collect();
    let second = run(&p, &again).await;
    assert_eq!(first, second, "a redelivery has the same outcomes");
    assert_eq!(after_first, snapshot(&pool, &tenant).await);
}
