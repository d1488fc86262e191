//! The opt-in CloudWatch `PutMetricData` sink of standalone mode.

#[cfg(feature = "cloudwatch")]
pub use sink::CloudWatchSink;

/// Without the `cloudwatch` feature there is no sink (settings refuse `METRICS_SINK=cloudwatch`),
/// so no value of this type exists.
#[cfg(not(feature = "cloudwatch"))]
pub enum CloudWatchSink {}

#[cfg(not(feature = "cloudwatch"))]
impl CloudWatchSink {
    pub fn add(&self, _metric: &str, _consumer_type: &'static str, _event_type: &str, _value: f64) {
        match *self {}
    }
}

#[cfg(feature = "cloudwatch")]
mod sink {
    use std::collections::HashMap;
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    /// An opt-in CloudWatch sink for standalone mode: counts are summed in memory and sent in
    /// batched `PutMetricData` calls.
    pub struct CloudWatchSink {
        client: aws_sdk_cloudwatch::Client,
        namespace: String,
        pending: Mutex<HashMap<(String, &'static str, String), f64>>,
    }

    impl CloudWatchSink {
        /// Credentials and region from the usual AWS sources; `endpoint` overrides the service URL.
        pub async fn new(namespace: String, endpoint: Option<String>) -> Self {
            let config = crate::aws::load_config(endpoint.as_deref()).await;
            CloudWatchSink {
                client: aws_sdk_cloudwatch::Client::new(&config),
                namespace,
                pending: Mutex::default(),
            }
        }

        pub fn add(&self, metric: &str, consumer_type: &'static str, event_type: &str, value: f64) {
            *self
                .pending
                .lock()
                .expect("lock")
                .entry((metric.to_owned(), consumer_type, event_type.to_owned()))
                .or_default() += value;
        }

        /// Sends everything summed so far; returns how many datums were sent.
        pub async fn flush(&self) -> Result<usize, String> {
            use aws_sdk_cloudwatch::types::{Dimension, MetricDatum, StandardUnit};
            let pending: Vec<_> = std::mem::take(&mut *self.pending.lock().expect("lock"))
                .into_iter()
                .collect();
            let now = aws_sdk_cloudwatch::primitives::DateTime::from_millis(
                chrono::Utc::now().timestamp_millis(),
            );
            let data: Vec<MetricDatum> = pending
                .iter()
                .map(|((metric, consumer_type, event_type), value)| {
                    MetricDatum::builder()
                        .metric_name(metric)
                        .dimensions(
                            Dimension::builder()
                                .name("consumer_type")
                                .value(*consumer_type)
                                .build(),
                        )
                        .dimensions(
                            Dimension::builder()
                                .name("event_type")
                                .value(event_type)
                                .build(),
                        )
                        .value(*value)
                        .unit(StandardUnit::Count)
                        .timestamp(now)
                        .build()
                })
                .collect();
            for chunk in data.chunks(500) {
                self.client
                    .put_metric_data()
                    .namespace(&self.namespace)
                    .set_metric_data(Some(chunk.to_vec()))
                    .send()
                    .await
                    .map_err(|e| {
                        format!(
                            "PutMetricData: {}",
                            aws_sdk_cloudwatch::error::DisplayErrorContext(&e)
                        )
                    })?;
            }
            Ok(data.len())
        }

        /// Flushes every `every` until the process ends.
        pub fn spawn_flusher(self: Arc<Self>, every: Duration) {
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(every);
                tick.tick().await;
                loop {
                    tick.tick().await;
                    if let Err(e) = self.flush().await {
                        tracing::warn!(error = %e, "sending metrics to CloudWatch");
                    }
                }
            });
        }
    }
}
