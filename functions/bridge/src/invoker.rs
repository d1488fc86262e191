//! Invokes a Lambda function with a batch and reads its `batchItemFailures` back into outcomes.

use std::time::Duration;

use aws_sdk_lambda::primitives::Blob;
use tracing::Instrument;
use wa_shared::lambda::{from_response, BatchRequest, BatchResponse, Record};
use wa_shared::pipeline::{Handler, InboundEvent, Outcome, Unavailable};
use wa_shared::telemetry::spans;

/// A route's function, seen by the runner as a handler. A failed, erroring or timed-out
/// invocation is `Unavailable`: the runner keeps the batch alive and invokes again with backoff.
pub struct LambdaInvoker {
    pub client: aws_sdk_lambda::Client,
    pub function: String,
    pub timeout: Duration,
}

impl Handler for LambdaInvoker {
    async fn handle(&self, events: &[InboundEvent]) -> Result<Vec<Outcome>, Unavailable> {
        let records: Vec<Record> = events
            .iter()
            .enumerate()
            .map(|(i, e)| Record::from_event(i.to_string(), e))
            .collect();
        // The function's handler span continues this one.
        let span = spans::lambda_invoke(&self.function, records.len());
        let trace = spans::trace_headers(&span);
        let body = serde_json::to_vec(&BatchRequest {
            records,
            traceparent: trace.as_ref().map(|t| t.traceparent.clone()),
            tracestate: trace.and_then(|t| t.tracestate),
        })
        .map_err(|e| Unavailable(e.to_string()))?;
        let answer = self.invoke(body, events).instrument(span.clone()).await;
        if answer.is_err() {
            spans::failed(&span);
        }
        answer
    }
}

impl LambdaInvoker {
    /// One invocation with `body`, the batch of `events`.
    async fn invoke(
        &self,
        body: Vec<u8>,
        events: &[InboundEvent],
    ) -> Result<Vec<Outcome>, Unavailable> {
        let call = self
            .client
            .invoke()
            .function_name(&self.function)
            .payload(Blob::new(body))
            .send();
        let out = match tokio::time::timeout(self.timeout, call).await {
            Err(_) => {
                return Err(Unavailable(format!(
                    "{} did not answer within {:?}",
                    self.function, self.timeout
                )))
            }
            Ok(Err(e)) => {
                return Err(Unavailable(format!(
                    "invoking {}: {}",
                    self.function,
                    aws_sdk_lambda::error::DisplayErrorContext(&e)
                )))
            }
            Ok(Ok(out)) => out,
        };
        let payload = out.payload().map(|b| b.as_ref()).unwrap_or(b"{}");
        if let Some(kind) = out.function_error() {
            return Err(Unavailable(format!(
                "{} failed ({kind}): {}",
                self.function,
                String::from_utf8_lossy(&payload[..payload.len().min(500)])
            )));
        }
        let response: BatchResponse = serde_json::from_slice(payload).map_err(|e| {
            Unavailable(format!(
                "{} answered something unreadable: {e}",
                self.function
            ))
        })?;
        let records: Vec<Record> = events
            .iter()
            .enumerate()
            .map(|(i, e)| Record::from_event(i.to_string(), e))
            .collect();
        Ok(from_response(&records, &response))
    }
}
