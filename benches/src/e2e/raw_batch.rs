//! The raw SQL baseline's batches: the workload's events turned into column arrays (untimed)
//! and written by hand-written `UNNEST` statements into a tenant schema's real tables (timed).
//!
//! No application code: no guards, rounds or per-event checks; one statement per table per
//! transaction, rows of a batch merged per key (last one wins, unread deltas add up), so that
//! no statement touches a row twice. The columns are the ones the product writes, with the
//! same JSON bodies and a `last_metadata` of the product's shape.

use std::collections::HashMap;

use chrono::{DateTime, NaiveDate, Utc};
use serde_json::{json, Value};
use sqlx::{PgConnection, Postgres};
use wa_shared::model::EventKind;

use super::error::{Context, Result};
use super::raw_statements::{
    INSERT_INBOX, UPDATE_RECEIPTS, UPSERT_AGENTS, UPSERT_CHATS, UPSERT_CONTACTS, UPSERT_MESSAGES,
};
use crate::Event;

/// An event with the stream position it would have had.
pub struct Stamped<'a> {
    pub event: &'a Event,
    pub sequence: i64,
    pub published: DateTime<Utc>,
}

/// Declares a row type and its column arrays (one `Vec` per field).
macro_rules! columns {
    ($row:ident => $cols:ident { $($field:ident: $ty:ty),* $(,)? }) => {
        #[derive(Debug, Clone)]
        pub struct $row { $(pub $field: $ty),* }

        #[derive(Debug, Default)]
        pub struct $cols { $(pub $field: Vec<$ty>),* }

        impl $cols {
            fn from_rows(rows: Vec<$row>) -> Self {
                let mut cols = Self::default();
                for row in rows {
                    $(cols.$field.push(row.$field);)*
                }
                cols
            }
        }
    };
}

columns!(MessageRow => MessageCols {
    message_id: String,
    message_date: NaiveDate,
    from_phone: Option<String>,
    to_phone: Option<String>,
    chat_id: Option<String>,
    jid: Option<String>,
    message_text: Option<String>,
    message_url: Option<String>,
    message_type: Option<String>,
    flow: Option<String>,
    agent_id: Option<String>,
    company_id: Option<String>,
    status: Option<String>,
    status_rank: Option<i16>,
    key: Option<String>,
    message_obj: Option<String>,
    edited_message_obj: Option<String>,
    message_timestamp: Option<i64>,
    meta: String,
});

columns!(ReceiptRow => ReceiptCols {
    message_id: String,
    status: Option<String>,
    status_rank: Option<i16>,
    edited_message_obj: Option<String>,
    is_deleted: Option<bool>,
    meta: String,
});

columns!(ChatRow => ChatCols {
    chat_id: String,
    jid: Option<String>,
    phone_number: Option<String>,
    push_name: Option<String>,
    agent_id: Option<String>,
    company_id: Option<String>,
    is_group: Option<bool>,
    unread: i32,
    last_message: Option<String>,
    conversation_timestamp: Option<i64>,
    meta: String,
});

columns!(ContactRow => ContactCols {
    agent_id: String,
    phone_number: String,
    chat_id: Option<String>,
    push_name: Option<String>,
    company_id: Option<String>,
    meta: String,
});

columns!(AgentRow => AgentCols {
    agent_id: String,
    status: Option<String>,
    host_name: Option<String>,
    version: Option<String>,
    qr_code: Option<String>,
    company_id: Option<String>,
    published: DateTime<Utc>,
    meta: String,
});

/// Rows keyed for merging: the first occurrence keeps its place, later ones update it.
struct Keyed<R> {
    rows: Vec<R>,
    index: HashMap<String, usize>,
}

impl<R> Default for Keyed<R> {
    fn default() -> Self {
        Keyed {
            rows: Vec::new(),
            index: HashMap::new(),
        }
    }
}

impl<R> Keyed<R> {
    /// Inserts `row`, or lets `merge` fold it into the row already there.
    fn put(&mut self, key: String, row: R, merge: impl FnOnce(&mut R, R)) {
        match self.index.get(&key) {
            Some(&i) => merge(&mut self.rows[i], row),
            None => {
                self.index.insert(key, self.rows.len());
                self.rows.push(row);
            }
        }
    }

    fn replace(&mut self, key: String, row: R) {
        self.put(key, row, |old, new| *old = new);
    }
}

/// The inbox rows of a batch (one per stream message).
#[derive(Default)]
struct Inbox {
    stream: &'static str,
    sequence: Vec<i64>,
    published_us: Vec<i64>,
}

impl Inbox {
    fn push(&mut self, e: &Stamped<'_>) {
        self.sequence.push(e.sequence);
        self.published_us.push(e.published.timestamp_micros());
    }

    async fn write(&self, conn: &mut PgConnection) -> Result<()> {
        sqlx::query::<Postgres>(INSERT_INBOX)
            .bind(self.stream)
            .bind(&self.sequence)
            .bind(&self.published_us)
            .execute(conn)
            .await
            .context("raw inbox insert")?;
        Ok(())
    }
}

/// A batch of realtime events as one transaction's statements.
pub struct RealtimeBatch {
    inbox: Inbox,
    chats: ChatCols,
    messages: MessageCols,
    receipts: ReceiptCols,
    contacts: ContactCols,
    agents: AgentCols,
}

impl RealtimeBatch {
    pub fn new(events: &[Stamped<'_>]) -> Result<Self> {
        let mut inbox = Inbox {
            stream: wa_shared::transport::streams::REALTIME_STREAM,
            ..Inbox::default()
        };
        let mut chats = Keyed::default();
        let mut messages = Keyed::default();
        let mut receipts = Keyed::default();
        let mut contacts = Keyed::default();
        let mut agents = Keyed::default();
        for e in events {
            inbox.push(e);
            let body: Value = serde_json::from_slice(&e.event.body).context("a workload body")?;
            let meta = metadata(e);
            match e.event.kind {
                EventKind::MessageUpsert => {
                    let row = message_row(&body, e.published, meta);
                    messages.replace(row.message_id.clone(), row);
                }
                EventKind::MessageUpdate => {
                    let status = text(&body, "status");
                    let row = ReceiptRow {
                        message_id: text(&body, "message_id").unwrap_or_default(),
                        status_rank: status.as_deref().and_then(status_rank),
                        status,
                        edited_message_obj: json_text(&body, "edited_message_obj"),
                        is_deleted: body.get("is_deleted").and_then(Value::as_bool),
                        meta,
                    };
                    receipts.replace(row.message_id.clone(), row);
                }
                EventKind::ChatUpsert | EventKind::ChatUpdate => {
                    let row = ChatRow {
                        chat_id: text(&body, "chat_id").unwrap_or_default(),
                        jid: text(&body, "jid"),
                        phone_number: text(&body, "phone_number"),
                        push_name: text(&body, "push_name"),
                        agent_id: text(&body, "agent_id"),
                        company_id: text(&body, "company_id"),
                        is_group: body.get("is_group").and_then(Value::as_bool),
                        unread: body["unread_count"].as_i64().unwrap_or(0).max(0) as i32,
                        last_message: json_text(&body, "last_message"),
                        conversation_timestamp: body["conversation_timestamp"].as_i64(),
                        meta,
                    };
                    chats.put(row.chat_id.clone(), row, |old, new| {
                        let unread = old.unread + new.unread;
                        *old = ChatRow { unread, ..new };
                    });
                }
                EventKind::ContactUpsert | EventKind::ContactUpdate => {
                    let row = ContactRow {
                        agent_id: text(&body, "agent_id").unwrap_or_default(),
                        phone_number: text(&body, "phone_number").unwrap_or_default(),
                        chat_id: text(&body, "chat_id"),
                        push_name: text(&body, "push_name"),
                        company_id: text(&body, "company_id"),
                        meta,
                    };
                    contacts.replace(format!("{}|{}", row.agent_id, row.phone_number), row);
                }
                EventKind::ConnectionUpdate => {
                    let row = AgentRow {
                        agent_id: text(&body, "agent_id").unwrap_or_default(),
                        status: text(&body, "status"),
                        host_name: text(&body, "host_name"),
                        version: text(&body, "version"),
                        qr_code: text(&body, "qr_code"),
                        company_id: text(&body, "company_id"),
                        published: e.published,
                        meta,
                    };
                    agents.replace(row.agent_id.clone(), row);
                }
                _ => {}
            }
        }
        Ok(RealtimeBatch {
            inbox,
            chats: ChatCols::from_rows(chats.rows),
            messages: MessageCols::from_rows(messages.rows),
            receipts: ReceiptCols::from_rows(receipts.rows),
            contacts: ContactCols::from_rows(contacts.rows),
            agents: AgentCols::from_rows(agents.rows),
        })
    }

    /// Dates of the message rows (their partitions must exist).
    pub fn dates(&self) -> impl Iterator<Item = NaiveDate> + '_ {
        self.messages.message_date.iter().copied()
    }

    /// Statements [`RealtimeBatch::write`] sends: one per table with rows, and the inbox's.
    pub fn statements(&self) -> u64 {
        let tables = [
            self.chats.chat_id.len(),
            self.messages.message_id.len(),
            self.receipts.message_id.len(),
            self.contacts.agent_id.len(),
            self.agents.agent_id.len(),
        ];
        1 + tables.iter().filter(|&&n| n > 0).count() as u64
    }

    /// The batch's statements, in the order the product writes: chats, messages, receipts,
    /// contacts, agents, inbox.
    pub async fn write(&self, conn: &mut PgConnection) -> Result<()> {
        if !self.chats.chat_id.is_empty() {
            let c = &self.chats;
            sqlx::query::<Postgres>(UPSERT_CHATS)
                .bind(&c.chat_id)
                .bind(&c.jid)
                .bind(&c.phone_number)
                .bind(&c.push_name)
                .bind(&c.agent_id)
                .bind(&c.company_id)
                .bind(&c.is_group)
                .bind(&c.unread)
                .bind(&c.last_message)
                .bind(&c.conversation_timestamp)
                .bind(&c.meta)
                .execute(&mut *conn)
                .await
                .context("raw chat upsert")?;
        }
        write_messages(conn, &self.messages).await?;
        if !self.receipts.message_id.is_empty() {
            let r = &self.receipts;
            sqlx::query::<Postgres>(UPDATE_RECEIPTS)
                .bind(&r.message_id)
                .bind(&r.status)
                .bind(&r.status_rank)
                .bind(&r.edited_message_obj)
                .bind(&r.is_deleted)
                .bind(&r.meta)
                .execute(&mut *conn)
                .await
                .context("raw receipt update")?;
        }
        if !self.contacts.agent_id.is_empty() {
            let c = &self.contacts;
            sqlx::query::<Postgres>(UPSERT_CONTACTS)
                .bind(&c.agent_id)
                .bind(&c.phone_number)
                .bind(&c.chat_id)
                .bind(&c.push_name)
                .bind(&c.company_id)
                .bind(&c.meta)
                .execute(&mut *conn)
                .await
                .context("raw contact upsert")?;
        }
        if !self.agents.agent_id.is_empty() {
            let a = &self.agents;
            sqlx::query::<Postgres>(UPSERT_AGENTS)
                .bind(&a.agent_id)
                .bind(&a.status)
                .bind(&a.host_name)
                .bind(&a.version)
                .bind(&a.qr_code)
                .bind(&a.company_id)
                .bind(&a.published)
                .bind(&a.meta)
                .execute(&mut *conn)
                .await
                .context("raw agent upsert")?;
        }
        self.inbox.write(conn).await
    }
}

impl RealtimeBatch {
    /// The same statements as [`RealtimeBatch::write`], in the same order, with every value
    /// rendered as an SQL literal (the arrays as `ARRAY[…]`), each ending in `;`: text for one
    /// multi-statement simple query, which sends any number of them in one round trip.
    pub fn sql(&self, out: &mut String, q: Quoting) {
        let c = &self.chats;
        if !c.chat_id.is_empty() {
            render(
                out,
                UPSERT_CHATS,
                &[
                    &array(&c.chat_id, q),
                    &array(&c.jid, q),
                    &array(&c.phone_number, q),
                    &array(&c.push_name, q),
                    &array(&c.agent_id, q),
                    &array(&c.company_id, q),
                    &array(&c.is_group, q),
                    &array(&c.unread, q),
                    &array(&c.last_message, q),
                    &array(&c.conversation_timestamp, q),
                    &array(&c.meta, q),
                ],
            );
        }
        let m = &self.messages;
        if !m.message_id.is_empty() {
            render(
                out,
                UPSERT_MESSAGES,
                &[
                    &array(&m.message_id, q),
                    &array(&m.message_date, q),
                    &array(&m.from_phone, q),
                    &array(&m.to_phone, q),
                    &array(&m.chat_id, q),
                    &array(&m.jid, q),
                    &array(&m.message_text, q),
                    &array(&m.message_url, q),
                    &array(&m.message_type, q),
                    &array(&m.flow, q),
                    &array(&m.agent_id, q),
                    &array(&m.company_id, q),
                    &array(&m.status, q),
                    &array(&m.status_rank, q),
                    &array(&m.key, q),
                    &array(&m.message_obj, q),
                    &array(&m.edited_message_obj, q),
                    &array(&m.message_timestamp, q),
                    &array(&m.meta, q),
                ],
            );
        }
        let r = &self.receipts;
        if !r.message_id.is_empty() {
            render(
                out,
                UPDATE_RECEIPTS,
                &[
                    &array(&r.message_id, q),
                    &array(&r.status, q),
                    &array(&r.status_rank, q),
                    &array(&r.edited_message_obj, q),
                    &array(&r.is_deleted, q),
                    &array(&r.meta, q),
                ],
            );
        }
        let c = &self.contacts;
        if !c.agent_id.is_empty() {
            render(
                out,
                UPSERT_CONTACTS,
                &[
                    &array(&c.agent_id, q),
                    &array(&c.phone_number, q),
                    &array(&c.chat_id, q),
                    &array(&c.push_name, q),
                    &array(&c.company_id, q),
                    &array(&c.meta, q),
                ],
            );
        }
        let a = &self.agents;
        if !a.agent_id.is_empty() {
            render(
                out,
                UPSERT_AGENTS,
                &[
                    &array(&a.agent_id, q),
                    &array(&a.status, q),
                    &array(&a.host_name, q),
                    &array(&a.version, q),
                    &array(&a.qr_code, q),
                    &array(&a.company_id, q),
                    &array(&a.published, q),
                    &array(&a.meta, q),
                ],
            );
        }
        let i = &self.inbox;
        render(
            out,
            INSERT_INBOX,
            &[
                &literal(&i.stream.to_owned(), q),
                &array(&i.sequence, q),
                &array(&i.published_us, q),
            ],
        );
    }
}

/// How text values are quoted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Quoting {
    /// `E'…'` with backslashes and quotes doubled.
    Escape,
    /// `$v$…$v$` (a tag the text does not contain): no escape processing for the server's
    /// lexer, which matters for long JSON.
    Dollar,
}

/// A value as an SQL literal.
pub trait Literal {
    fn write_literal(&self, out: &mut String, q: Quoting);
}

impl Literal for String {
    /// An escape string (`E'…'`): backslashes and quotes doubled, which reads back exactly,
    /// whatever `standard_conforming_strings` is; or a dollar-quoted string.
    fn write_literal(&self, out: &mut String, q: Quoting) {
        out.reserve(self.len() + 8);
        if q == Quoting::Dollar {
            let tag = dollar_tag(self);
            out.push_str(&tag);
            out.push_str(self);
            out.push_str(&tag);
            return;
        }
        out.push_str("E'");
        for ch in self.chars() {
            match ch {
                '\\' => out.push_str("\\\\"),
                '\'' => out.push_str("''"),
                _ => out.push(ch),
            }
        }
        out.push('\'');
    }
}

/// `$v$`, or `$v0$`, `$v1$`, … : the first tag that ends a dollar-quoted `text` exactly where
/// the text ends (none occurs in it, nor straddles its end).
fn dollar_tag(text: &str) -> String {
    // A tag has `$` only at its ends, so it can straddle the end of the text only as the
    // text's last characters followed by its own final `$`.
    let fits = |tag: &str| !text.contains(tag) && !text.ends_with(&tag[..tag.len() - 1]);
    if fits("$v$") {
        return "$v$".to_owned();
    }
    (0..)
        .map(|i| format!("$v{i}$"))
        .find(|t| fits(t))
        .unwrap_or_default()
}

impl<T: Literal> Literal for Option<T> {
    fn write_literal(&self, out: &mut String, q: Quoting) {
        match self {
            Some(v) => v.write_literal(out, q),
            None => out.push_str("NULL"),
        }
    }
}

macro_rules! number_literal {
    ($($t:ty),*) => {$(
        impl Literal for $t {
            fn write_literal(&self, out: &mut String, _: Quoting) {
                use std::fmt::Write;
                let _ = write!(out, "{self}");
            }
        }
    )*};
}
number_literal!(i16, i32, i64);

impl Literal for bool {
    fn write_literal(&self, out: &mut String, _: Quoting) {
        out.push_str(if *self { "TRUE" } else { "FALSE" });
    }
}

impl Literal for NaiveDate {
    fn write_literal(&self, out: &mut String, _: Quoting) {
        out.push('\'');
        out.push_str(&self.format("%Y-%m-%d").to_string());
        out.push('\'');
    }
}

impl Literal for DateTime<Utc> {
    fn write_literal(&self, out: &mut String, _: Quoting) {
        out.push('\'');
        out.push_str(&self.to_rfc3339_opts(chrono::SecondsFormat::Micros, true));
        out.push('\'');
    }
}

/// `value` as an SQL literal.
pub fn literal<T: Literal>(value: &T, q: Quoting) -> String {
    let mut out = String::new();
    value.write_literal(&mut out, q);
    out
}

/// `values` as an array constructor, `ARRAY[v1,v2,…]` (the statements cast it to its type).
pub fn array<T: Literal>(values: &[T], q: Quoting) -> String {
    let mut out = String::from("ARRAY[");
    for (i, v) in values.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        v.write_literal(&mut out, q);
    }
    out.push(']');
    out
}

/// Appends `statement` with each `$n` replaced by `params[n - 1]`, and a `;`. The statements
/// have no other `$` (no dollar quoting).
pub fn render(out: &mut String, statement: &str, params: &[&str]) {
    let mut rest = statement;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let digits = rest[at + 1..]
            .bytes()
            .take_while(u8::is_ascii_digit)
            .count();
        let n: usize = rest[at + 1..at + 1 + digits].parse().unwrap_or(0);
        match params.get(n.wrapping_sub(1)) {
            Some(p) => out.push_str(p),
            None => out.push_str(&rest[at..at + 1 + digits]),
        }
        rest = &rest[at + 1 + digits..];
    }
    out.push_str(rest);
    out.push_str(";\n");
}

/// One history batch (`history.messages`) as a bulk upsert of its items plus its inbox row.
pub struct HistoryBatch {
    inbox: Inbox,
    messages: MessageCols,
    /// Items in the batch as published (before merging repeated keys).
    pub items: u64,
}

impl HistoryBatch {
    pub fn new(e: &Stamped<'_>) -> Result<Self> {
        let mut inbox = Inbox {
            stream: wa_shared::transport::streams::HISTORY_STREAM,
            ..Inbox::default()
        };
        inbox.push(e);
        let body: Value = serde_json::from_slice(&e.event.body).context("a workload body")?;
        let meta = metadata(e);
        let items = body["messages"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or(&[]);
        let mut messages = Keyed::default();
        for item in items {
            let row = message_row(item, e.published, meta.clone());
            messages.replace(format!("{}|{}", row.message_id, row.message_date), row);
        }
        Ok(HistoryBatch {
            inbox,
            messages: MessageCols::from_rows(messages.rows),
            items: items.len() as u64,
        })
    }

    pub fn dates(&self) -> impl Iterator<Item = NaiveDate> + '_ {
        self.messages.message_date.iter().copied()
    }

    pub async fn write(&self, conn: &mut PgConnection) -> Result<()> {
        write_messages(conn, &self.messages).await?;
        self.inbox.write(conn).await
    }
}

async fn write_messages(conn: &mut PgConnection, m: &MessageCols) -> Result<()> {
    if m.message_id.is_empty() {
        return Ok(());
    }
    sqlx::query::<Postgres>(UPSERT_MESSAGES)
        .bind(&m.message_id)
        .bind(&m.message_date)
        .bind(&m.from_phone)
        .bind(&m.to_phone)
        .bind(&m.chat_id)
        .bind(&m.jid)
        .bind(&m.message_text)
        .bind(&m.message_url)
        .bind(&m.message_type)
        .bind(&m.flow)
        .bind(&m.agent_id)
        .bind(&m.company_id)
        .bind(&m.status)
        .bind(&m.status_rank)
        .bind(&m.key)
        .bind(&m.message_obj)
        .bind(&m.edited_message_obj)
        .bind(&m.message_timestamp)
        .bind(&m.meta)
        .execute(conn)
        .await
        .context("raw message upsert")?;
    Ok(())
}

fn message_row(m: &Value, published: DateTime<Utc>, meta: String) -> MessageRow {
    let timestamp =
        m["message_timestamp"]
            .as_i64()
            .map(|t| if t > 100_000_000_000 { t / 1000 } else { t });
    let date = timestamp
        .and_then(|t| DateTime::from_timestamp(t, 0))
        .unwrap_or(published)
        .date_naive();
    // History edits send `message_type` as an array of one type.
    let message_type = match &m["message_type"] {
        Value::Array(a) => a.first().and_then(Value::as_str).map(str::to_owned),
        v => v.as_str().map(str::to_owned),
    };
    let status = text(m, "status");
    MessageRow {
        message_id: text(m, "message_id").unwrap_or_default(),
        message_date: date,
        from_phone: text(m, "from_phone"),
        to_phone: text(m, "to_phone"),
        chat_id: text(m, "chat_id"),
        jid: text(m, "jid"),
        message_text: text(m, "message_text"),
        message_url: text(m, "message_url"),
        message_type,
        flow: text(m, "flow"),
        agent_id: text(m, "agent_id"),
        company_id: text(m, "company_id"),
        status_rank: status.as_deref().and_then(status_rank),
        status,
        key: json_text(m, "key"),
        message_obj: json_text(m, "message_obj"),
        edited_message_obj: json_text(m, "edited_message_obj"),
        message_timestamp: timestamp,
        meta,
    }
}

/// The product's `last_metadata` shape.
fn metadata(e: &Stamped<'_>) -> String {
    json!({
        "stream": match e.event.kind.category() {
            wa_shared::model::Category::Historical => wa_shared::transport::streams::HISTORY_STREAM,
            _ => wa_shared::transport::streams::REALTIME_STREAM,
        },
        "stream_sequence": e.sequence,
        "consumer": "raw_sql",
        "subject": e.event.subject,
        "delivered": 1,
        "processed_at": Utc::now().to_rfc3339(),
    })
    .to_string()
}

fn text(v: &Value, key: &str) -> Option<String> {
    v.get(key).and_then(Value::as_str).map(str::to_owned)
}

/// A JSON field as JSON text (cast to jsonb in SQL); absent and `null` are NULL.
fn json_text(v: &Value, key: &str) -> Option<String> {
    v.get(key).filter(|x| !x.is_null()).map(Value::to_string)
}

fn status_rank(s: &str) -> Option<i16> {
    s.parse().ok().filter(|r| (0..=5).contains(r))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Mix, Workload, WorkloadSettings};

    fn events(mix: Mix, n: usize) -> Vec<Event> {
        Workload::new(&WorkloadSettings {
            tenants: 2,
            agents_per_tenant: 2,
            company_prefix: "RAW".into(),
            mix,
            seed: 3,
        })
        .unwrap()
        .take(n)
        .collect()
    }

    fn stamped(events: &[Event]) -> Vec<Stamped<'_>> {
        events
            .iter()
            .enumerate()
            .map(|(i, event)| Stamped {
                event,
                sequence: i as i64 + 1,
                published: Utc::now(),
            })
            .collect()
    }

    #[test]
    fn a_realtime_batch_has_an_inbox_row_per_event_and_each_key_once() {
        let events = events(Mix::Realtime, 512);
        let batch = RealtimeBatch::new(&stamped(&events)).unwrap();
        assert_eq!(batch.inbox.sequence.len(), 512);
        for ids in [
            &batch.messages.message_id,
            &batch.chats.chat_id,
            &batch.receipts.message_id,
        ] {
            let mut unique = ids.clone();
            unique.sort();
            unique.dedup();
            assert_eq!(unique.len(), ids.len());
            assert!(!ids.is_empty());
        }
        assert!(batch.messages.message_obj.iter().all(Option::is_some));
        assert!(batch.chats.unread.iter().any(|&u| u > 0));
    }

    #[test]
    fn literals_are_escaped_and_placeholders_replaced() {
        let e = Quoting::Escape;
        assert_eq!(literal(&"it's a \\ b".to_owned(), e), "E'it''s a \\\\ b'");
        assert_eq!(literal(&None::<String>, e), "NULL");
        assert_eq!(array(&[Some(1_i64), None], e), "ARRAY[1,NULL]");
        assert_eq!(array(&[true, false], e), "ARRAY[TRUE,FALSE]");
        assert_eq!(
            array(&[NaiveDate::from_ymd_opt(2026, 1, 2).unwrap()], e),
            "ARRAY['2026-01-02']"
        );
        let d = Quoting::Dollar;
        assert_eq!(literal(&"it's \\ $".to_owned(), d), "$v$it's \\ $$v$");
        assert_eq!(literal(&"a $v$ b".to_owned(), d), "$v0$a $v$ b$v0$");
        assert_eq!(literal(&"ends $v".to_owned(), d), "$v0$ends $v$v0$");
        assert_eq!(literal(&"{\"x\": 1}".to_owned(), d), "$v${\"x\": 1}$v$");
        // The text ends exactly where its tag comes back.
        for text in ["$", "$v", "x$v0", "$v$$v0$", "a$v0$v1$"] {
            let lit = literal(&text.to_owned(), d);
            let tag = &lit[..lit[1..].find('$').unwrap() + 2];
            assert_eq!(
                lit[tag.len()..].find(tag),
                Some(text.len()),
                "{text}: {lit}"
            );
        }
        let mut out = String::new();
        let params: Vec<String> = (1..=11).map(|i| format!("p{i}")).collect();
        let refs: Vec<&str> = params.iter().map(String::as_str).collect();
        render(&mut out, "f($1, $10::int8[], $11, $2) $", &refs);
        assert_eq!(out, "f(p1, p10::int8[], p11, p2) $;\n");
    }

    #[test]
    fn a_realtime_batch_renders_every_statement_it_writes() {
        let events = events(Mix::Realtime, 300);
        let batch = RealtimeBatch::new(&stamped(&events)).unwrap();
        let mut sql = String::new();
        batch.sql(&mut sql, Quoting::Escape);
        for table in ["chats", "messages", "inbox", "UPDATE messages"] {
            assert!(sql.contains(table), "{table}");
        }
        assert!(!sql.contains("$1"), "a placeholder left");
        assert!(sql.contains("FROM unnest(ARRAY[1,2,3,"), "inbox sequences");
    }

    #[test]
    fn a_history_batch_counts_its_items() {
        let events: Vec<Event> = events(Mix::History, 200)
            .into_iter()
            .filter(|e| e.kind == EventKind::HistoryMessages)
            .collect();
        let stamped = stamped(&events);
        let batch = HistoryBatch::new(&stamped[0]).unwrap();
        assert!(batch.items >= 1 && batch.items <= 100);
        assert!(batch.messages.message_id.len() as u64 <= batch.items);
        assert_eq!(batch.inbox.sequence, vec![1]);
    }
}
