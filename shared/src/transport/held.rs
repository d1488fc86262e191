//! Messages a runner holds (fetched, not yet settled), kept alive with in-progress acks so the
//! server does not redeliver them while their batch is written or held.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_nats::jetstream::AckKind;
use async_nats::{Client, Subject as NatsSubject};

/// Messages this process holds (fetched, not yet settled), kept alive with in-progress acks.
#[derive(Default)]
pub struct Held {
    next: AtomicU64,
    replies: Mutex<HashMap<u64, (NatsSubject, Instant)>>,
}

impl Held {
    pub fn hold(&self, reply: NatsSubject) -> u64 {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        self.replies
            .lock()
            .expect("lock")
            .insert(id, (reply, Instant::now()));
        id
    }

    pub fn release(&self, id: u64) {
        self.replies.lock().expect("lock").remove(&id);
    }

    /// Replies held for longer than `age`.
    pub fn older_than(&self, age: Duration) -> Vec<NatsSubject> {
        let now = Instant::now();
        self.replies
            .lock()
            .expect("lock")
            .values()
            .filter(|(_, since)| now.duration_since(*since) >= age)
            .map(|(r, _)| r.clone())
            .collect()
    }
}

/// Sends in-progress acks for every message held longer than `every`.
pub async fn keep_alive(client: Client, held: Arc<Held>, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        for reply in held.older_than(every) {
            let _ = client.publish(reply, AckKind::Progress.into()).await;
        }
    }
}
