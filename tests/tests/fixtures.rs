//! Every producer fixture decodes, validates and lands as SPEC §4 says.

use wa_integration_tests::expect::*;
use wa_integration_tests::*;
use wa_shared::model::{decode, EventKind, Payload, Subject};

#[test]
fn every_fixture_line_parses_and_validates() {
    let mut total = 0;
    for kind in EventKind::ALL {
        let subject = Subject::parse(&Subject::format(kind, "CMP001")).unwrap();
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
    let f = Fixture::new("fx").await;
    for kind in FIXTURE_ORDER {
        f.run_ok(&f.events.fixtures(kind)).await;
    }

    assert_fixture_state(&f.pool, &f.tenant).await;
}

#[tokio::test]
async fn applying_the_same_batch_twice_leaves_identical_rows() {
    let f = Fixture::new("twice").await;
    let batch: Vec<_> = EventKind::ALL
        .into_iter()
        .flat_map(|kind| f.events.fixtures(kind))
        .collect();
    let first = f.run(&batch).await;
    let after_first = snapshot(&f.pool, &f.tenant).await;
    let again: Vec<_> = batch.iter().map(redelivered).collect();
    let second = f.run(&again).await;
    assert_eq!(first, second, "a redelivery has the same outcomes");
    assert_eq!(after_first, snapshot(&f.pool, &f.tenant).await);
}
