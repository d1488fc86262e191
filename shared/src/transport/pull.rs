//! One pull request, read to its real end.
//!
//! async-nats's fetch ends at the first status the server sends. On a replicated consumer the
//! current server sends a pull's messages only once their delivery is replicated, but its
//! `409 Batch Completed` / `409 Message Size Exceeds MaxBytes` at once, so the status can arrive
//! *before* the messages: the fetch then ends empty and its messages go to an inbox nobody
//! reads, to come back only after the ack wait, again and again. Here a status ends the request
//! but not the reading: messages still arriving shortly after it are taken into the batch.
//!
//! A request must also end without waiting long for a status that never comes (issue #14).
//! nats-server before 2.9.16 (Debian's 2.9.10 among them) drops a request that has expired
//! when it next picks a message for it, without a word: its `408` is sent only when its expiry
//! timer fires first. A request expires that way while a batch is still being delivered, or as
//! a message arrives at the moment it expires. With `BATCH_MAX_WAIT=20ms` and a steady stream
//! (10,000 4 kB messages a second, in bursts every 50 ms) three or four pulls in four seconds
//! ended so, each waiting a second past its expiry. So:
//!
//! * The server is never asked to wait less than [`MIN_EXPIRES`], long enough to deliver a
//!   batch. With `no_wait` a request still ends as soon as what is available has been
//!   delivered, so only an idle pull (nothing to deliver) lasts that long: a trickle of events
//!   is never held back by it, and a stopping runner waits about that long for its last pull.
//! * Past the expiry, a server that ends requests silently is waited for only [`STRAGGLERS`]:
//!   it picks nothing for a request after its expiry, so only messages already sent can still
//!   come. A current server always answers (a replicated consumer only once the messages are
//!   replicated, which can take a while) and is given [`SILENCE`].
//!
//! The short wait alone still let 11 to 14 pulls end silently in the four seconds above (150 ms
//! each); the longer expiry alone made that rare (none measured) but each would still cost a
//! second; together, none in 6 runs, and one would cost 150 ms. Idle heartbeats do not help:
//! the server allows at most half the expiry, and reading two missed ones as the end declared
//! live requests over (at 5 ms, 2,300 to 3,300 messages went to abandoned inboxes, back only
//! after the ack wait), while a replicated consumer on a current server goes quiet while it
//! replicates. Nor does a second request kept in flight: the runner already overlaps a pull
//! with the write of the batch before it, and both servers answer a further `no_wait` request
//! `408 Requests Pending` at once while fewer messages are pending than the waiting requests
//! ask for.

use std::time::Duration;

use async_nats::jetstream::{self, Context};
use async_nats::{Client, StatusCode};
use futures::StreamExt;
use tokio::time::{timeout_at, Instant};

/// How long to keep reading after the server has said the request is over, and after the
/// expiry of a request to a server that may end it silently.
const STRAGGLERS: Duration = Duration::from_millis(150);

/// The same after `404 No Messages`, which says nothing of what was sent: every message the
/// server had was sent before it, so only a replicated consumer's last few can still be on the
/// way. Short, so that a trickle of events is not delayed by it, and only for a replicated
/// consumer ([`PullRequest::replicated`]): the current server ends every `no_wait` request that
/// did not fill its batch with a `404`, so this wait would otherwise follow every pull of a
/// trickle (at 2,000 events/s it made publish→commit p50 about 45 ms instead of 9).
pub const NO_MESSAGES_GRACE: Duration = Duration::from_millis(20);

/// How long past its expiry a request is waited for when a server that always answers says
/// nothing (a consumer leader lost with the request, for one).
const SILENCE: Duration = Duration::from_secs(1);

/// The shortest expiry the server is asked for. On nats-server 2.9.10 with a steady stream of
/// 4 kB messages and batches of 1,024, pulls ended silently at 5 ms and 20 ms and none did at
/// 100 ms or 250 ms; this leaves a margin for a loaded machine.
pub const MIN_EXPIRES: Duration = Duration::from_millis(250);

/// What to ask for.
#[derive(Debug, Clone, Copy)]
pub struct PullRequest {
    pub batch: usize,
    /// 0: no byte limit.
    pub max_bytes: usize,
    /// How long an idle request waits for messages (`BATCH_MAX_WAIT`); the server is asked for
    /// at least [`MIN_EXPIRES`].
    pub expires: Duration,
    /// The consumer has replicas: its messages can arrive after the status that ends the
    /// request (see the module). An unreplicated consumer's messages all come before it.
    pub replicated: bool,
}

impl PullRequest {
    /// Whether the consumer `info` describes has replicas.
    pub fn is_replicated(info: &jetstream::consumer::Info) -> bool {
        info.cluster
            .as_ref()
            .is_some_and(|cluster| !cluster.replicas.is_empty())
    }

    /// The expiry the server is asked for.
    pub fn server_expires(&self) -> Duration {
        self.expires.max(MIN_EXPIRES)
    }

    fn body(&self) -> String {
        // no_wait: the request ends as soon as what is available has been delivered (waiting
        // up to `expires` only when nothing is), so a trickle of events is not held back
        // until a batch fills.
        let mut body = serde_json::json!({
            "batch": self.batch.max(1),
            "expires": self.server_expires().as_nanos() as u64,
            "no_wait": true,
        });
        if self.max_bytes > 0 {
            body["max_bytes"] = self.max_bytes.into();
        }
        body.to_string()
    }
}

/// What one pull request delivered, and how it went.
#[derive(Debug)]
pub struct Pulled {
    pub messages: Vec<jetstream::Message>,
    /// The expiry the server was asked for ([`PullRequest::server_expires`]).
    pub expires: Duration,
    /// From sending the request until the reading stopped.
    pub elapsed: Duration,
    /// From sending the request until the server's last message or status.
    pub heard_last: Duration,
    pub end: PullEnd,
}

impl Pulled {
    /// How long the reading went on past both the expiry and the server's last word: the
    /// time spent waiting for nothing. A server that answers late (a busy machine) costs
    /// none of it; a status that never comes costs the whole wait for it.
    pub fn stalled(&self) -> Duration {
        self.elapsed
            .saturating_sub(self.expires.max(self.heard_last))
    }
}

/// How a pull request ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PullEnd {
    /// Its batch was delivered in full.
    Full,
    /// The server said it is over (`404`, `408`, `409`: code and description).
    Status(String),
    /// The server said nothing more, past the expiry.
    Silence,
    /// The connection's subscription ended.
    Closed,
}

/// Whether a server of this version can end an expired request without a status: nats-server
/// before 2.9.16 ("Fix Pull Consumer not sending request timeout", nats-io/nats-server
/// df282a2). An unknown version is taken to answer.
fn ends_requests_silently(version: &str) -> bool {
    let mut parts = version
        .trim_start_matches('v')
        .split(|c: char| !c.is_ascii_digit())
        .map(str::parse::<u32>);
    match (parts.next(), parts.next(), parts.next()) {
        (Some(Ok(major)), Some(Ok(minor)), Some(Ok(patch))) => (major, minor, patch) < (2, 9, 16),
        _ => false,
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
) -> Result<Pulled, String> {
    let inbox = client.new_inbox();
    let mut replies = client
        .subscribe(inbox.clone())
        .await
        .map_err(|e| e.to_string())?;
    let started = Instant::now();
    client
        .publish_with_reply(
            format!("$JS.API.CONSUMER.MSG.NEXT.{stream}.{consumer}"),
            inbox,
            request.body().into(),
        )
        .await
        .map_err(|e| e.to_string())?;
    let expires = request.server_expires();
    let past_expiry = if ends_requests_silently(&client.server_info().version) {
        STRAGGLERS
    } else {
        SILENCE
    };
    let mut out = Vec::new();
    let mut until = started + expires + past_expiry;
    let mut ended: Option<String> = None;
    // How many messages the server says it sent, once it has said the request is over.
    let mut sent: Option<usize> = None;
    let mut heard_last = Duration::ZERO;
    let end = loop {
        if out.len() >= sent.unwrap_or(request.batch) {
            break match &ended {
                Some(why) => PullEnd::Status(why.clone()),
                None => PullEnd::Full,
            };
        }
        let Ok(next) = timeout_at(until, replies.next()).await else {
            break match &ended {
                Some(why) => PullEnd::Status(why.clone()),
                None => PullEnd::Silence,
            };
        };
        let Some(message) = next else {
            break PullEnd::Closed;
        };
        heard_last = started.elapsed();
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
                    let grace = if status != StatusCode::NOT_FOUND {
                        STRAGGLERS
                    } else if request.replicated {
                        NO_MESSAGES_GRACE
                    } else {
                        Duration::ZERO
                    };
                    until = Instant::now() + grace;
                }
            }
        }
    };
    let elapsed = started.elapsed();
    let _ = replies.unsubscribe().await;
    // 404, 408 or batch completed with nothing: an ordinary end; anything else is reported.
    if let Some(why) = ended.filter(|why| {
        out.is_empty()
            && !why.starts_with("404")
            && !why.starts_with("408")
            && !why.contains("Batch Completed")
    }) {
        return Err(why);
    }
    Ok(Pulled {
        messages: out,
        expires,
        elapsed,
        heard_last,
        end,
    })
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
            replicated: false,
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

    #[test]
    fn the_server_is_never_asked_for_less_than_the_shortest_expiry() {
        let r = PullRequest {
            batch: 10,
            max_bytes: 0,
            expires: Duration::from_millis(20),
            replicated: false,
        };
        assert_eq!(r.server_expires(), MIN_EXPIRES);
        let body: serde_json::Value = serde_json::from_str(&r.body()).unwrap();
        assert_eq!(body["expires"], MIN_EXPIRES.as_nanos() as u64);
        assert_eq!(body["no_wait"], true);
        let r = PullRequest {
            expires: Duration::from_secs(2),
            ..r
        };
        assert_eq!(r.server_expires(), Duration::from_secs(2));
    }

    #[test]
    fn servers_before_2_9_16_can_end_a_request_silently() {
        for old in ["2.9.10", "2.9.15", "v2.9.0", "2.8.4", "2.9.15-beta.1"] {
            assert!(ends_requests_silently(old), "{old}");
        }
        for answers in [
            "2.9.16",
            "2.9.25",
            "2.10.0-beta.1",
            "2.10.29",
            "2.15.1",
            "3.0.0",
            "",
        ] {
            assert!(!ends_requests_silently(answers), "{answers}");
        }
    }
}
