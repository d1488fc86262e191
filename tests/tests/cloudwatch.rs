//! The opt-in CloudWatch sink sends well-formed PutMetricData requests (to a local stand-in).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use wa_integration_tests::stack::Stack;
use wa_integration_tests::*;
use wa_shared::model::EventKind::*;

/// A stand-in for CloudWatch that records every request (head and body) and answers success
/// in the RPC v2 CBOR protocol the SDK speaks.
async fn fake_cloudwatch() -> (u16, Arc<Mutex<Vec<(String, Vec<u8>)>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let store = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            let store = store.clone();
            tokio::spawn(async move {
                loop {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 8192];
                    // Read the head, then the body by Content-Length.
                    let head_end = loop {
                        let Ok(n) = sock.read(&mut chunk).await else {
                            return;
                        };
                        if n == 0 {
                            return;
                        }
                        buf.extend_from_slice(&chunk[..n]);
                        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            break i + 4;
                        }
                    };
                    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
                    let len = head
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-length:")
                                .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                        })
                        .unwrap_or(0);
                    while buf.len() < head_end + len {
                        let Ok(n) = sock.read(&mut chunk).await else {
                            return;
                        };
                        if n == 0 {
                            return;
                        }
                        buf.extend_from_slice(&chunk[..n]);
                    }
                    store
                        .lock()
                        .unwrap()
                        .push((head, buf[head_end..head_end + len].to_vec()));
                    let reply = b"HTTP/1.1 200 OK\r\ncontent-type: application/cbor\r\nsmithy-protocol: rpc-v2-cbor\r\ncontent-length: 1\r\n\r\n\xa0";
                    if sock.write_all(reply).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (port, seen)
}

#[tokio::test]
async fn the_cloudwatch_sink_sends_put_metric_data_with_low_cardinality_dimensions() {
    let (port, seen) = fake_cloudwatch().await;
    let s = Stack::new("cw").await;
    let endpoint = format!("http://127.0.0.1:{port}");
    let _rt = s
        .start(
            "wa-realtime",
            &[
                ("METRICS_SINK", "cloudwatch"),
                ("CLOUDWATCH_ENDPOINT", &endpoint),
                ("METRICS_FLUSH_INTERVAL", "300ms"),
                ("METRICS_NAMESPACE", "WATest"),
                ("AWS_REGION", "us-east-1"),
                ("AWS_ACCESS_KEY_ID", "local"),
                ("AWS_SECRET_ACCESS_KEY", "local"),
            ],
        )
        .await;
    s.publish(ChatUpdate, json!({"chat_id": "AG_1", "unread_count": 1}))
        .await;
    s.publish_raw(&s.subject(ChatUpdate), "not json").await;
    let (head, body) = eventually(
        Duration::from_secs(60),
        "a PutMetricData request",
        || async {
            let requests = seen.lock().unwrap().clone();
            requests.into_iter().find(|(_, body)| {
                body.windows(8)
                    .any(|w| w == b"WATest\x00\x00" || w.starts_with(b"WATest"))
            })
        },
    )
    .await;
    assert!(head.starts_with("POST "), "{head}");
    assert!(
        head.contains("PutMetricData"),
        "the operation is named in the request: {head}"
    );
    assert!(
        head.to_ascii_lowercase()
            .contains("authorization: aws4-hmac-sha256"),
        "requests are signed: {head}"
    );
    let text = String::from_utf8_lossy(&body);
    for needle in [
        "WATest",
        "message_event_service_events_received_total",
        "message_event_service_events_processed_total",
        "message_event_service_events_failed_total",
        "consumer_type",
        "realtime",
        "event_type",
        "chats.update",
    ] {
        assert!(
            text.contains(needle),
            "{needle} missing from the request body: {text:?}"
        );
    }
    assert!(
        !text.contains(&s.tenant),
        "tenant ids are not CloudWatch dimensions"
    );
}
