//! One pull request, read to its real end.
//!
//! async-nats's fetch ends at the first status the server sends. On a replicated consumer the
//! current server sends a pull's messages only once their delivery is replicated, but its
//! `409 Batch Completed` / `409 Message Size Exceeds MaxBytes` at once, so the status can arrive
//! *before* the messages: the fetch then ends empty and its messages go to an inbox nobody
//! reads, to come back only after the ack wait, again and again. Here a status ends the request
//! but not the reading: messages still arriving shortly after it are taken into the batch. A
//! server that never answers (a pull it ended part-way on 2.9) costs one second past the
//! request's expiry, not five.

use std::time::Duration;

use async_nats::jetstream::{self, Context};
use async_nats::{Client, StatusCode};
use futures::StreamExt;
use tokio::time::{timeout_at, Instant};

/// How long to keep reading after the server has said the request is over.
const STRAGGLERS: Duration = Duration::from_millis(150);

/// The same after `404 No Messages`, which says nothing of what was sent: every message the
/// server had was sent before it, so only a replicated consumer's last few can still be on the
/// way. Short, so that a trickle of events is not delayed by it.
const NO_MESSAGES_GRACE: Duration = Duration::from_millis(20);

/// How long past its expiry a request is waited for when the server says nothing.
const SILENCE: Duration = Duration::from_secs(1);

/// What to ask for.
#[derive(Debug, Clone, Copy)]
pub struct PullRequest {
    pub batch: usize,
    /// 0: no byte limit.
    pub max_bytes: usize,
    pub expires: Duration,
}

impl PullRequest {
    fn body(&self) -> String {
        // no_wait: the request ends as soon as what is available has been delivered (waiting
        // up to `expires` only when nothing is), so a trickle of events is not held back
        // until a batch fills.
        let mut body = serde_json::json!({
            "batch": self.batch.max(1),
            "expires": self.expires.as_nanos() as u64,
            "no_wait": true,
        });
        if self.max_bytes > 0 {
            body["max_bytes"] = self.max_bytes.into();
        }
        body.to_string()
    }
}

/// Sends one pull request for `consumer` of `stream` and returns what it delivered. An error
/// only when nothing was delivered.
pub async fn pull(
    client: &Client,
    js: &Context,
    stream: &str,
    consumer: &str,
    request: PullRequest,
) -> Result<Vec<jetstream::Message>, String> {
    let inbox = client.new_inbox();
    let mut replies = client
        .subscribe(inbox.clone())
        .await
        .map_err(|e| e.to_string())?;
    client
        .publish_with_reply(
            format!("$JS.API.CONSUMER.MSG.NEXT.{stream}.{consumer}"),
            inbox,
            request.body().into(),
        )
        .await
        .map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    let mut until = Instant::now() + request.expires + SILENCE;
    let mut ended: Option<String> = None;
    // How many messages the server says it sent, once it has said the request is over.
    let mut sent: Option<usize> = None;
    while out.len() < sent.unwrap_or(request.batch) {
        let Ok(next) = timeout_at(until, replies.next()).await else {
            break;
        };
        let Some(message) = next else { break };
        match message.status {
            None | Some(StatusCode::OK) => {
                out.push(jetstream::Message {
                    message,
                    context: js.clone(),
                });
                if ended.is_some() {
                    until = Instant::now() + STRAGGLERS;
                }
            }
            Some(StatusCode::IDLE_HEARTBEAT) => {}
            Some(status) => {
                // 404 no messages, 408 expired, 409 batch completed / size exceeded / leader
                // changed: the request is over, but its replicated messages may still come.
                if ended.is_none() {
                    ended = Some(format!(
                        "{status}: {}",
                        message.description.as_deref().unwrap_or("")
                    ));
                    // The status says how much of the request is left undelivered: the rest
                    // was sent, and is waited for only if it has not all arrived yet.
                    let left = message
                        .headers
                        .as_ref()
                        .and_then(|h| h.get("Nats-Pending-Messages"))
                        .and_then(|v| v.as_str().parse::<usize>().ok());
                    // Without it, whatever comes within the grace joins the batch.
                    sent = left.map(|left| request.batch.saturating_sub(left));
                    let grace = if status == StatusCode::NOT_FOUND {
                        NO_MESSAGES_GRACE
                    } else {
                        STRAGGLERS
                    };
                    until = Instant::now() + grace;
                }
            }
        }
    }
    let _ = replies.unsubscribe().await;
    match ended {
        Some(why) if out.is_empty() && !why.starts_with("404") && !why.starts_with("408") => {
            // Batch completed with nothing: an ordinary end; anything else is reported.
            if why.contains("Batch Completed") {
                Ok(out)
            } else {
                Err(why)
            }
        }
        _ => Ok(out),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_without_a_byte_limit_leaves_it_out() {
        let r = PullRequest {
            batch: 10,
            max_bytes: 0,
            expires: Duration::from_millis(500),
        };
        let body: serde_json::Value = serde_json::from_str(&r.body()).unwrap();
        assert_eq!(
            body,
            serde_json::json!({"batch": 10, "expires": 500_000_000u64, "no_wait": true})
        );
        let r = PullRequest { max_bytes: 64, ..r };
        let body: serde_json::Value = serde_json::from_str(&r.body()).unwrap();
        assert_eq!(body["max_bytes"], 64);
    }
}
