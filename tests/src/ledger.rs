//! What became of each of a tenant's stream messages: read back from the stream itself, the
//! tenant's inbox (one row per applied `(stream, stream_sequence)`) and the tenant's dead
//! letters (`Nats-Msg-Id` `<stream>:<sequence>`), so that a test can check that every message
//! was applied exactly once or dead-lettered, whatever the broker went through.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use async_nats::jetstream::consumer::{pull, AckPolicy, DeliverPolicy};
use async_nats::jetstream::Context;
use futures::{StreamExt, TryStreamExt};
use sqlx::PgPool;
use wa_shared::model::{EventKind, Subject};

use crate::broker::{self, StoredDeadLetter};
use crate::publisher::Published;
use crate::{schema_exists, schema_ident, schema_name};

/// How long reading back a subject's messages may take.
const READ_WITHIN: Duration = Duration::from_secs(60);

/// A tenant's messages in one stream, and what was done with each.
pub struct Ledger {
    pub stream: String,
    /// The sequences the stream holds for the tenant.
    pub stored: BTreeSet<u64>,
    /// Inbox rows per sequence.
    pub applied: BTreeMap<u64, i64>,
    /// Dead letters per sequence.
    pub dead: BTreeMap<u64, usize>,
    pub dead_letters: Vec<StoredDeadLetter>,
}

impl Ledger {
    /// Reads the tenant's messages of `kinds` in `stream`, its inbox rows for `stream` and its
    /// dead letters.
    pub async fn read(
        js: &Context,
        pool: &PgPool,
        tenant: &str,
        stream: &str,
        kinds: &[EventKind],
    ) -> Self {
        let mut stored = BTreeSet::new();
        for kind in kinds {
            stored.extend(stored_sequences(js, stream, &Subject::format(*kind, tenant)).await);
        }
        let sql = format!(
            "SELECT stream_sequence, count(*) FROM {}.inbox WHERE stream = $1 GROUP BY 1",
            schema_ident(tenant)
        );
        // No schema yet: nothing of the tenant's was ever applied.
        let applied: BTreeMap<u64, i64> = if schema_exists(pool, &schema_name(tenant)).await {
            sqlx::query_as::<_, (i64, i64)>(&sql)
                .bind(stream)
                .fetch_all(pool)
                .await
                .unwrap_or_else(|e| panic!("{sql}: {e}"))
                .into_iter()
                .map(|(seq, n)| (seq as u64, n))
                .collect()
        } else {
            BTreeMap::new()
        };
        let dead_letters = broker::dead_letters(js, &Subject::dead_letter(tenant)).await;
        let mut dead = BTreeMap::new();
        let prefix = format!("{stream}:");
        for d in &dead_letters {
            let seq = d
                .msg_id
                .as_deref()
                .and_then(|id| id.strip_prefix(&prefix))
                .and_then(|rest| rest.split(':').next())
                .and_then(|seq| seq.parse::<u64>().ok());
            if let Some(seq) = seq {
                *dead.entry(seq).or_default() += 1;
            }
        }
        Ledger {
            stream: stream.to_owned(),
            stored,
            applied,
            dead,
            dead_letters,
        }
    }

    /// Stored sequences with neither an inbox row nor a dead letter (lost, once the consumer
    /// has drained).
    pub fn unaccounted(&self) -> Vec<u64> {
        self.stored
            .iter()
            .filter(|s| !self.applied.contains_key(s) && !self.dead.contains_key(s))
            .copied()
            .collect()
    }

    /// One line: stored / applied / dead-lettered / neither.
    pub fn summary(&self) -> String {
        format!(
            "{}: {} stored, {} applied, {} dead-lettered, {} neither",
            self.stream,
            self.stored.len(),
            self.applied.len(),
            self.dead_letters.len(),
            self.unaccounted().len()
        )
    }

    /// Asserts that every acknowledged publish is stored, and that every stored message was
    /// applied exactly once or dead-lettered once (never both), and nothing else was applied.
    pub fn assert_exactly_once(&self, published: &Published) {
        let acked: BTreeSet<u64> = published.sequences.values().copied().collect();
        let unstored: Vec<u64> = acked.difference(&self.stored).copied().collect();
        assert!(
            unstored.is_empty(),
            "{}: {} acknowledged publishes are not in the stream: {}",
            self.summary(),
            unstored.len(),
            sample(&unstored)
        );
        let lost = self.unaccounted();
        assert!(
            lost.is_empty(),
            "{}: {} stored messages were neither applied nor dead-lettered: {}",
            self.summary(),
            lost.len(),
            sample(&lost)
        );
        let twice: Vec<u64> = self
            .applied
            .iter()
            .filter(|(_, n)| **n > 1)
            .map(|(s, _)| *s)
            .chain(self.dead.iter().filter(|(_, n)| **n > 1).map(|(s, _)| *s))
            .collect();
        assert!(
            twice.is_empty(),
            "{}: applied or dead-lettered more than once: {}",
            self.summary(),
            sample(&twice)
        );
        let both: Vec<u64> = self
            .applied
            .keys()
            .filter(|s| self.dead.contains_key(s))
            .copied()
            .collect();
        assert!(
            both.is_empty(),
            "{}: applied and also dead-lettered: {}",
            self.summary(),
            sample(&both)
        );
        let foreign: Vec<u64> = self
            .applied
            .keys()
            .chain(self.dead.keys())
            .filter(|s| !self.stored.contains(s))
            .copied()
            .collect();
        assert!(
            foreign.is_empty(),
            "{}: applied or dead-lettered but not in the stream: {}",
            self.summary(),
            sample(&foreign)
        );
    }

    /// Asserts that nothing was dead-lettered (for a workload of valid events, whatever was
    /// dead-lettered was the fault's doing).
    pub fn assert_nothing_dead(&self) {
        let reasons: Vec<String> = self
            .dead_letters
            .iter()
            .take(5)
            .map(|d| {
                format!(
                    "{:?}: {} {}",
                    d.msg_id, d.envelope["error_type"], d.envelope["error"]
                )
            })
            .collect();
        assert!(
            self.dead_letters.is_empty(),
            "{}: valid events were dead-lettered, e.g. {reasons:#?}",
            self.summary()
        );
    }
}

/// The first few of `seqs`, for a failure message.
fn sample(seqs: &[u64]) -> String {
    let head: Vec<String> = seqs.iter().take(20).map(u64::to_string).collect();
    let more = seqs.len().saturating_sub(head.len());
    if more > 0 {
        format!("[{}, … {more} more]", head.join(", "))
    } else {
        format!("[{}]", head.join(", "))
    }
}

/// The sequences `stream` holds on `subject`, read with an ephemeral consumer (one subject per
/// consumer, which nats-server 2.9 accepts). A cluster that is electing leaders may refuse a
/// read (503) or lose the consumer: the reading goes on from the last sequence read, with a
/// new consumer, until [`READ_WITHIN`].
async fn stored_sequences(js: &Context, stream: &str, subject: &str) -> Vec<u64> {
    let mut out = Vec::new();
    let mut want: Option<usize> = None;
    let start = std::time::Instant::now();
    while want.is_none_or(|w| out.len() < w) {
        assert!(
            start.elapsed() < READ_WITHIN,
            "read {} of the {want:?} messages on {subject} within {READ_WITHIN:?}",
            out.len()
        );
        if let Err(e) = read_on(js, stream, subject, &mut out, &mut want).await {
            eprintln!("reading {subject} of {stream}: {e}; reading on with a new consumer");
            // A pause before the next try, so a cluster without a leader is not asked in a
            // tight loop (the deadline above bounds the whole read).
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    out
}

/// Reads on from the sequence after the last in `out`; how many there are to read (`want`) is
/// the stream leader's count of the subject. (A consumer's pending count is its own replica's:
/// on a 2.9 cluster, one placed on a follower still catching up after a restart counted 2,982
/// of 3,000 messages, and the last 18 looked lost.)
async fn read_on(
    js: &Context,
    stream: &str,
    subject: &str,
    out: &mut Vec<u64>,
    want: &mut Option<usize>,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let stream = js.get_stream(stream).await?;
    let deliver_policy = match out.last() {
        Some(last) => DeliverPolicy::ByStartSequence {
            start_sequence: last + 1,
        },
        None => DeliverPolicy::All,
    };
    let consumer = stream
        .create_consumer(pull::Config {
            filter_subject: subject.to_owned(),
            deliver_policy,
            ack_policy: AckPolicy::None,
            inactive_threshold: Duration::from_secs(30),
            ..Default::default()
        })
        .await?;
    if want.is_none() {
        let mut subjects = stream.info_with_subjects(subject).await?;
        let mut count = 0;
        while let Some((_, n)) = subjects.try_next().await? {
            count += n;
        }
        *want = Some(count);
    }
    while want.is_some_and(|w| out.len() < w) {
        let mut batch = consumer
            .fetch()
            .max_messages(1000)
            .expires(Duration::from_secs(1))
            .messages()
            .await?;
        let before = out.len();
        while let Some(m) = batch.next().await {
            out.push(m?.info()?.stream_sequence);
        }
        if out.len() == before {
            return Err("an empty fetch".into());
        }
    }
    Ok(())
}
