//! Subjects: `v1.<family>.<action>.<company_id>`, parsed once into an event kind and a tenant.

use std::fmt;

use super::tenant::{InvalidTenant, TenantId};

/// Which of the ten producer subjects an event came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventKind {
    ChatUpsert,
    ChatUpdate,
    MessageUpsert,
    MessageUpdate,
    ContactUpsert,
    ContactUpdate,
    ConnectionUpdate,
    HistoryChats,
    HistoryMessages,
    HistoryContacts,
}

/// The processing category a subject belongs to (and so the stream that carries it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Category {
    Realtime,
    Historical,
}

impl EventKind {
    /// Every kind, in the order in which the production agents publish: chats first appear as
    /// updates, then messages, receipts, contacts, agent status, and finally a history sync.
    pub const ALL: [EventKind; 10] = [
        EventKind::ChatUpdate,
        EventKind::ChatUpsert,
        EventKind::MessageUpsert,
        EventKind::MessageUpdate,
        EventKind::ContactUpsert,
        EventKind::ContactUpdate,
        EventKind::ConnectionUpdate,
        EventKind::HistoryChats,
        EventKind::HistoryMessages,
        EventKind::HistoryContacts,
    ];

    /// The order in which the production agents publish (that of [`EventKind::ALL`]).
    pub const PRODUCER_ORDER: [EventKind; 10] = Self::ALL;

    /// The subject without its tenant token, e.g. `v1.chats.upsert`.
    pub fn base(self) -> &'static str {
        match self {
            EventKind::ChatUpsert => "v1.chats.upsert",
            EventKind::ChatUpdate => "v1.chats.update",
            EventKind::MessageUpsert => "v1.messages.upsert",
            EventKind::MessageUpdate => "v1.messages.update",
            EventKind::ContactUpsert => "v1.contacts.upsert",
            EventKind::ContactUpdate => "v1.contacts.update",
            EventKind::ConnectionUpdate => "v1.connection.update",
            EventKind::HistoryChats => "v1.history.chats",
            EventKind::HistoryMessages => "v1.history.messages",
            EventKind::HistoryContacts => "v1.history.contacts",
        }
    }

    /// A short label for logs and metrics (`chats.upsert`).
    pub fn label(self) -> &'static str {
        &self.base()[3..]
    }

    pub fn category(self) -> Category {
        match self {
            EventKind::HistoryChats | EventKind::HistoryMessages | EventKind::HistoryContacts => {
                Category::Historical
            }
            _ => Category::Realtime,
        }
    }

    fn from_tokens(family: &str, action: &str) -> Option<Self> {
        EventKind::ALL
            .into_iter()
            .find(|k| k.base()[3..].split_once('.') == Some((family, action)))
    }
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

/// A parsed event subject.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subject {
    pub kind: EventKind,
    pub tenant: TenantId,
}

/// Why a subject could not be routed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubjectError {
    #[error("unknown subject {0:?}")]
    Unknown(String),
    #[error(transparent)]
    Tenant(#[from] InvalidTenant),
}

impl Subject {
    pub fn parse(raw: &str) -> Result<Self, SubjectError> {
        let mut it = raw.split('.');
        let (Some("v1"), Some(family), Some(action), Some(tenant), None) =
            (it.next(), it.next(), it.next(), it.next(), it.next())
        else {
            return Err(SubjectError::Unknown(raw.to_owned()));
        };
        let kind = EventKind::from_tokens(family, action)
            .ok_or_else(|| SubjectError::Unknown(raw.to_owned()))?;
        Ok(Subject {
            kind,
            tenant: TenantId::parse(tenant)?,
        })
    }

    /// The subject an event of `kind` for `tenant` is published on.
    pub fn format(kind: EventKind, tenant: &str) -> String {
        format!("{}.{}", kind.base(), tenant)
    }

    /// The dead-letter subject for a tenant token (`v1.dlq.<company>`).
    pub fn dead_letter(tenant: &str) -> String {
        format!("v1.dlq.{tenant}")
    }

    /// Every tenant's events of `kind` (`<base>.*`): a stream subject, a consumer filter.
    pub fn every_tenant(kind: EventKind) -> String {
        Self::format(kind, "*")
    }

    /// Every dead letter (`v1.dlq.*`).
    pub fn every_dead_letter() -> String {
        Self::dead_letter("*")
    }

    /// Every event of one tenant, whatever its subject (`v1.*.*.<company>`).
    pub fn every_kind_of(tenant: &TenantId) -> String {
        format!("v1.*.*.{tenant}")
    }

    /// The dead-letter stream's subjects.
    pub const DEAD_LETTERS: &'static str = "v1.dlq.>";

    /// The dead-letter subject for events whose tenant id is itself invalid.
    pub const INVALID_TENANT_DLQ: &'static str = "v1.dlq._invalid";

    /// The last token of any subject: the tenant as written, valid or not.
    pub fn last_token(raw: &str) -> &str {
        raw.rsplit('.').next().unwrap_or(raw)
    }
}

impl fmt::Display for Subject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.kind.base(), self.tenant)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_kind() {
        for kind in EventKind::ALL {
            let s = Subject::parse(&Subject::format(kind, "CMP001")).unwrap();
            assert_eq!(s.kind, kind);
            assert_eq!(s.tenant.as_str(), "CMP001");
            assert_eq!(s.to_string(), format!("{}.CMP001", kind.base()));
        }
        let t = TenantId::parse("CMP001").unwrap();
        assert_eq!(Subject::every_kind_of(&t), "v1.*.*.CMP001");
        assert_eq!(
            Subject::every_tenant(EventKind::MessageUpsert),
            "v1.messages.upsert.*"
        );
        assert_eq!(Subject::every_dead_letter(), "v1.dlq.*");
    }

    #[test]
    fn refuses_unknown_and_malformed() {
        for bad in [
            "v1.chats.delete.C",
            "v2.chats.upsert.C",
            "v1.chats.upsert",
            "v1.chats.upsert.C.D",
            "chats.upsert.C",
        ] {
            assert!(
                matches!(Subject::parse(bad), Err(SubjectError::Unknown(_))),
                "{bad}"
            );
        }
        assert!(matches!(
            Subject::parse("v1.chats.upsert.a'b"),
            Err(SubjectError::Tenant(_))
        ));
    }

    #[test]
    fn categories() {
        assert_eq!(EventKind::HistoryMessages.category(), Category::Historical);
        assert_eq!(EventKind::ConnectionUpdate.category(), Category::Realtime);
        assert_eq!(EventKind::ContactUpdate.label(), "contacts.update");
    }
}
